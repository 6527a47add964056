"""`billing-admin migrate` against a database that was not
prepared (docs/deployment.md, "Preparing a production database") names what is missing
and how to create it, applies nothing, and succeeds once it is there.  Runs
against a PostgreSQL of its own: the role `billing` is cluster-wide."""
import os
import shutil
import subprocess
import tempfile

import psycopg2
import pytest

from conftest import BIN, PGBIN, ROOT, free_port


def as_pg(args, **kw):
    if os.getuid() == 0:
        args = ["runuser", "-u", "postgres", "--"] + args
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kw)


@pytest.fixture(scope="module")
def bare_pg():
    d = tempfile.mkdtemp(prefix="billing-bare-pg-")
    shutil.chown(d, "postgres") if os.getuid() == 0 else None
    data = os.path.join(d, "data")
    port = free_port()
    p = as_pg([os.path.join(PGBIN, "initdb"), "--nosync", "-A", "trust", "-U", "postgres", "-D", data])
    assert p.returncode == 0, p.stderr
    p = as_pg([os.path.join(PGBIN, "pg_ctl"), "-D", data, "-l", os.path.join(d, "log"), "-w", "-t", "60", "start",
               "-o", f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={d} -c fsync=off"])
    assert p.returncode == 0, p.stdout + p.stderr
    yield port
    as_pg([os.path.join(PGBIN, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"])
    shutil.rmtree(d, ignore_errors=True)


def sql(port, db, q):
    c = psycopg2.connect(f"host=127.0.0.1 port={port} dbname={db} user=postgres")
    c.autocommit = True
    try:
        c.cursor().execute(q)
    finally:
        c.close()


def migrate(port):
    env = dict(os.environ, BILLING_PG=f"host=127.0.0.1 port={port} dbname=prod user=prod_owner",
               BILLING_PG_OWNER=f"host=127.0.0.1 port={port} dbname=prod user=prod_owner",
               BILLING_MIGRATIONS_DIR=os.path.join(ROOT, "migrations"))
    return subprocess.run([os.path.join(BIN, "billing-admin"), "migrate"], capture_output=True, text=True,
                          env=env, timeout=300)


def tables(port):
    c = psycopg2.connect(f"host=127.0.0.1 port={port} dbname=prod user=postgres")
    try:
        cur = c.cursor()
        cur.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        return cur.fetchone()[0]
    finally:
        c.close()


def test_migrate_names_what_is_missing(bare_pg):
    port = bare_pg
    sql(port, "postgres", "CREATE ROLE prod_owner LOGIN")
    sql(port, "postgres", "CREATE DATABASE prod")  # owned by postgres: public is not prod_owner's
    sql(port, "prod", "REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    # no role billing: named, with the statement that creates it
    p = migrate(port)
    assert p.returncode == 1, p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("billing-admin: "), p.stderr
    assert 'role "billing" does not exist' in lines[0] and "CREATE ROLE billing" in lines[0], lines[0]
    assert tables(port) <= 1  # at most schema_migrations: nothing applied
    # the role exists, but the migrating role may not create in public
    sql(port, "postgres", "CREATE ROLE billing LOGIN")
    p = migrate(port)
    assert p.returncode == 1 and 'may not create tables in schema "public"' in p.stderr, p.stderr
    assert "ALTER SCHEMA public OWNER TO" in p.stderr
    # prepared as the README says: every migration applies
    sql(port, "prod", "ALTER SCHEMA public OWNER TO prod_owner")
    p = migrate(port)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "applied 0001_ledger.sql" in p.stdout
    assert tables(port) > 10
