"""Fixtures: a real PostgreSQL and Redis for the whole run (scripts/stack.sh),
a fresh database per test module (CREATE DATABASE ... TEMPLATE of the migrated
one), a billingd per module, and helpers to run the CLIs.

BILLING_IT_REDIS=cluster (make integration-cluster) also starts a three-master
Redis Cluster (scripts/redis_cluster.sh) and points every billingd and CLI at
its seeds instead of the single Redis; helpers that talk to Redis directly
(env.redis_cli, env.redis_flushall, env.redis_port_for) follow the slots."""
import datetime
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import psycopg2
import psycopg2.extensions
import pytest
import requests

import openapi_check

# every answer the suite receives is checked against docs/openapi.yaml
openapi_check.install(requests)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("BILLING_BIN", os.path.join(ROOT, "bin"))
# the binaries under test were built with ASan/UBSan (make asan): much slower
SANITIZED = os.path.basename(os.path.dirname(os.path.abspath(BIN))).startswith("build-asan")
# the suite against a Redis Cluster (make integration-cluster)
CLUSTER = os.environ.get("BILLING_IT_REDIS", "") == "cluster"
# Env.sql cancels a statement that runs longer than this (seconds)
SQL_WATCHDOG_S = 300
GATEWAY_TOKEN = "gw-test-token-0123456789"
ADMIN_TOKEN = "admin-test-token-9876543210"
ITEST = os.environ.get("BILLING_ITEST_BIN", os.path.join(ROOT, "build", "itest"))
PGBIN = "/usr/lib/postgresql/15/bin" if os.path.isdir("/usr/lib/postgresql/15/bin") else \
    os.path.dirname(shutil.which("postgres") or "/usr/bin/postgres")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_gone(pid, seconds=5.0):
    """True once process pid has exited (kill 0 fails), False after seconds."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def fresh_db(stack, name):
    """An empty database `name` owned by billing_owner, as `stack.sh` makes
    the suite's own (no CREATE for PUBLIC in its public schema)."""
    c = psycopg2.connect(stack.conninfo("postgres", "postgres"))
    c.autocommit = True
    c.cursor().execute(f"CREATE DATABASE {name} TEMPLATE template0 OWNER billing_owner")
    c.close()
    c = psycopg2.connect(stack.conninfo(name, "postgres"))
    c.autocommit = True
    c.cursor().execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC; ALTER SCHEMA public OWNER TO billing_owner")
    c.close()


def db_before_migration(stack, name, tmp_path, first_left_out):
    """A fresh database `name` migrated with the migrations before
    `first_left_out` ("0009") only: (Env, the CLI environment that sees those
    migrations only, the output of that migrate).  The shared Redis is
    emptied for it: one Redis per billing database (a billingd refuses a
    Redis another database claimed, test_redis_owner.py); the caller empties
    it again when done, for the module's own database."""
    fresh_db(stack, name)
    e = Env(stack, name, str(tmp_path))
    e.redis_flushall()
    old = tmp_path / "migrations"
    old.mkdir()
    for f in sorted(os.listdir(os.path.join(ROOT, "migrations"))):
        if f < first_left_out:
            shutil.copy(os.path.join(ROOT, "migrations", f), old / f)
    old_env = e.cli_env(BILLING_MIGRATIONS_DIR=str(old))
    out = e.admin("migrate", env=old_env).stdout
    assert first_left_out not in out, out
    return e, old_env, out


def read_env(path):
    env = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.strip().partition("=")
            env[k] = v.strip('"')
    return env


class Stack:
    def __init__(self, d, pg_faketime=None):
        """pg_faketime: a libfaketime FAKETIME offset for PostgreSQL alone."""
        self.dir = d
        e = dict(os.environ, STACK_PG_FAKETIME=pg_faketime) if pg_faketime else None
        subprocess.run([os.path.join(ROOT, "scripts", "stack.sh"), "start", d], check=True, env=e)
        self.env = read_env(os.path.join(d, "env"))
        self.pgport = int(self.env["PGPORT"])
        self.redis_port = int(self.env["REDIS_PORT"])
        self.pg_home = self.env["PG_HOME"]  # data/, postgres.log (stack.sh: DIR/pg or outside DIR)
        self.pepper = os.path.join(d, "key.pepper")
        self.n = 0
        self.cluster = None  # a RedisCluster when BILLING_IT_REDIS=cluster

    def stop(self):
        subprocess.run([os.path.join(ROOT, "scripts", "stack.sh"), "stop", self.dir])

    def remove(self):  # stop, then delete the folder and PostgreSQL's files (which may be outside it)
        subprocess.run([os.path.join(ROOT, "scripts", "stack.sh"), "remove", self.dir])

    # PostgreSQL alone, for outage tests: stop it and start it again on the
    # same port with exactly the options stack.sh gave it (postmaster.opts).
    def _as_pg(self, args, env=None):
        if os.getuid() == 0:
            args = ["runuser", "-u", "postgres", "--"] + args
        return subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)

    def _pg_ctl(self):
        return os.path.join(PGBIN, "pg_ctl")

    def stop_pg(self):
        data = os.path.join(self.pg_home, "data")
        with open(os.path.join(data, "postmaster.opts")) as f:
            self._pg_opts = f.read()
        p = self._as_pg([self._pg_ctl(), "-D", data, "-m", "fast", "-w", "-t", "60", "stop"])
        assert p.returncode == 0, p.stdout + p.stderr

    def start_pg(self, env=None):
        """env: the server's environment (the calendar suite's libfaketime)."""
        import shlex
        data = os.path.join(self.pg_home, "data")
        words = shlex.split(self._pg_opts)[1:]  # drop the postgres binary
        opts, i = [], 0
        while i < len(words):
            if words[i] == "-D":
                i += 2
                continue
            opts.append(words[i])
            i += 1
        assert f"port={self.pgport}" in " ".join(opts), opts
        p = self._as_pg([self._pg_ctl(), "-D", data, "-l", os.path.join(self.pg_home, "postgres.log"), "-w",
                         "-t", "60", "start", "-o", " ".join(shlex.quote(w) for w in opts)], env=env)
        assert p.returncode == 0, p.stdout + p.stderr + self.pg_log()
        with open(os.path.join(data, "postmaster.pid")) as f, open(os.path.join(self.dir, "pg.pid"), "w") as o:
            o.write(f.readline())

    def pg_log(self):
        try:
            with open(os.path.join(self.pg_home, "postgres.log")) as f:
                return f.read()[-5000:]
        except OSError:
            return ""

    def conninfo(self, db, user):
        return f"host=127.0.0.1 port={self.pgport} dbname={db} user={user}"

    def new_database(self):
        self.n += 1
        name = f"billing_t{self.n}"
        c = psycopg2.connect(self.conninfo("postgres", "postgres"))
        c.autocommit = True
        c.cursor().execute(f"CREATE DATABASE {name} TEMPLATE billing OWNER billing_owner")
        c.close()
        return name


class HAStack:
    """scripts/ha_stack.sh: a pg_auto_failover monitor, a primary and two
    synchronous standbys, and a Redis; used where a Stack is (conninfo is the
    multi-host string that always reaches the current primary)."""

    def __init__(self, d):
        self.dir = d
        subprocess.run([os.path.join(ROOT, "scripts", "ha_stack.sh"), "start", d], check=True, timeout=600)
        self.env = read_env(os.path.join(d, "env"))
        self.ports = {n: int(self.env[f"HA_NODE_{n}_PORT"]) for n in (1, 2, 3)}
        self.redis_port = int(self.env["REDIS_PORT"])
        self.pepper = os.path.join(d, "key.pepper")
        self.cluster = None
        self.dead = set()  # nodes killed and not restarted

    def stop(self):
        subprocess.run([os.path.join(ROOT, "scripts", "ha_stack.sh"), "stop", self.dir], timeout=600)

    def conninfo(self, db, user, attrs="read-write"):
        hosts = ",".join("127.0.0.1" for _ in self.ports)
        ports = ",".join(str(self.ports[n]) for n in sorted(self.ports))
        return f"host={hosts} port={ports} target_session_attrs={attrs} dbname={db} user={user}"

    def monitor_sql(self, q):
        c = psycopg2.connect(self.env["PG_MONITOR"])
        c.autocommit = True
        try:
            cur = c.cursor()
            cur.execute(q)
            return cur.fetchall()
        finally:
            c.close()

    def states(self):
        """{node number: (reported state, goal state)} as the monitor sees them."""
        return {int(n.split("_")[1]): (rep, goal) for n, rep, goal in
                self.monitor_sql("SELECT nodename, reportedstate::text, goalstate::text FROM pgautofailover.node")}

    def primary(self):
        """The node number of the primary (reported and goal state primary), or None."""
        for n, (rep, goal) in self.states().items():
            if rep == goal == "primary":
                return n
        return None

    def kill_node(self, n):
        """The machine dies: SIGKILL to the node's process group (pg_autoctl,
        its postmaster and every backend)."""
        if n in self.dead:
            return
        self.dead.add(n)
        # the postmaster first: pg_autoctl may have restarted it in another
        # process group (a standby that follows a new primary)
        try:
            with open(os.path.join(self.env[f"HA_NODE_{n}_PGDATA"], "postmaster.pid")) as f:
                pm = int(f.readline())
            pgid = os.getpgid(pm)
            os.kill(pm, signal.SIGKILL)
            os.killpg(pgid, signal.SIGKILL)
        except (OSError, ValueError):
            pass
        with open(os.path.join(self.dir, "pids", f"node_{n}.autoctl")) as f:
            try:
                os.killpg(int(f.read()), signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.time() + 20
        while time.time() < deadline:  # dead: its port refuses connections
            try:
                socket.create_connection(("127.0.0.1", self.ports[n]), timeout=1).close()
            except OSError:
                return
            time.sleep(0.1)
        raise AssertionError(f"node_{n} still accepts connections after SIGKILL")

    def restart_node(self, n):
        """The node comes back and rejoins as a standby."""
        subprocess.run([os.path.join(ROOT, "scripts", "ha_stack.sh"), "restart-node", self.dir, str(n)],
                       check=True, timeout=120)
        self.dead.discard(n)


class RedisCluster:
    """Three masters on loopback (scripts/redis_cluster.sh), started and
    stopped by their PIDs; masters are numbered 1..3."""
    SCRIPT = os.path.join(ROOT, "scripts", "redis_cluster.sh")

    def __init__(self, d):
        self.dir = d
        subprocess.run([self.SCRIPT, "start", d], check=True)
        e = read_env(os.path.join(d, "env"))
        self.ports = [int(p) for p in e["CLUSTER_PORTS"].split()]
        self.seeds = e["CLUSTER_SEEDS"]

    def stop(self):
        subprocess.run([self.SCRIPT, "stop", self.dir])

    def cli(self, port, *args, check=True):
        p = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port)] + [str(a) for a in args],
                           capture_output=True, text=True, timeout=30)
        if check:
            assert p.returncode == 0 and not p.stdout.startswith("ERR"), p.stdout + p.stderr
        return p.stdout.strip()

    def keyslot(self, key):
        return int(self.cli(self.ports[0], "CLUSTER", "KEYSLOT", key))

    def node_id(self, i):
        return self.cli(self.ports[i - 1], "CLUSTER", "MYID")

    def owner(self, slot, ask=None):
        """The master (1..3) serving slot, as node `ask` (default: any up) sees it."""
        for i in ([ask] if ask else range(1, len(self.ports) + 1)):
            try:
                nodes = self.cli(self.ports[i - 1], "CLUSTER", "NODES")
            except (AssertionError, subprocess.TimeoutExpired):
                continue
            for line in nodes.splitlines():
                f = line.split()
                if "master" not in f[2]:
                    continue
                port = int(f[1].split("@")[0].rsplit(":", 1)[1])
                for r in f[8:]:
                    if r.startswith("["):
                        continue
                    a, _, b = r.partition("-")
                    if int(a) <= slot <= int(b or a):
                        return self.ports.index(port) + 1
        raise AssertionError(f"no master serves slot {slot}")

    def port_for(self, key):
        return self.ports[self.owner(self.keyslot(key)) - 1]

    def pid(self, i):
        with open(os.path.join(self.dir, f"n{i}", "redis.pid")) as f:
            return int(f.read())

    def kill(self, i, sig=signal.SIGKILL):
        pid = self.pid(i)
        os.kill(pid, sig)
        if not wait_gone(pid, 5.0):
            raise AssertionError(f"redis master {i} (pid {pid}) did not exit")

    def start_node(self, i):
        subprocess.run([self.SCRIPT, "start-node", self.dir, str(i)], check=True)


@pytest.fixture(scope="session")
def stack():
    d = tempfile.mkdtemp(prefix="billing-it-")
    st = Stack(d)
    try:
        if CLUSTER:
            st.cluster = RedisCluster(os.path.join(d, "cluster"))
        env = dict(os.environ, BILLING_PG_OWNER=st.conninfo("billing", "billing_owner"),
                   BILLING_MIGRATIONS_DIR=os.path.join(ROOT, "migrations"))
        subprocess.run([os.path.join(BIN, "billing-admin"), "migrate"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        yield st
    finally:
        if st.cluster:
            st.cluster.stop()
        st.remove()


class Env:
    """One database (and the shared Redis) for a test module, plus CLI helpers."""

    def __init__(self, stack, dbname, tmp):
        self.stack = stack
        self.db = dbname
        self.tmp = tmp
        self.pg = stack.conninfo(dbname, "billing")
        self.pg_owner = stack.conninfo(dbname, "billing_owner")
        self.pg_super = stack.conninfo(dbname, "postgres")
        self.cluster = stack.cluster
        self.redis = stack.cluster.seeds if stack.cluster else f"127.0.0.1:{stack.redis_port}"
        self.gw_tokens = os.path.join(tmp, "gateway.tokens")
        self.admin_tokens = os.path.join(tmp, "admin.tokens")
        with open(self.gw_tokens, "w") as f:
            f.write(f"# test gateway\n{GATEWAY_TOKEN}\n")
        with open(self.admin_tokens, "w") as f:
            f.write(f"{ADMIN_TOKEN}\n")
        self.signing_key = os.path.join(tmp, "ledger.key")

    def redis_port_for(self, key):
        """The port of the Redis serving key (the single one, or its slot's master)."""
        return self.cluster.port_for(key) if self.cluster else self.stack.redis_port

    def redis_cli(self, *args):
        """redis-cli; in a cluster with -c (follows MOVED/ASK from the first master)."""
        port = self.cluster.ports[0] if self.cluster else self.stack.redis_port
        c = ["-c"] if self.cluster else []
        return subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port)] + c + [str(a) for a in args],
                              capture_output=True, text=True, check=True, timeout=30).stdout.strip()

    def redis_flushall(self):
        for port in (self.cluster.ports if self.cluster else [self.stack.redis_port]):
            subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), "FLUSHALL"], capture_output=True,
                           check=True, timeout=30)

    def proc_env(self):
        """The environment of billingd and the CLIs (the calendar suite adds a fake clock)."""
        return dict(os.environ)

    def cli_env(self, **extra):
        env = self.proc_env()
        env.update(BILLING_PG=self.pg, BILLING_PG_OWNER=self.pg_owner, BILLING_REDIS=self.redis,
                   BILLING_KEY_PEPPER_FILE=self.stack.pepper, BILLING_GATEWAY_TOKENS_FILE=self.gw_tokens,
                   BILLING_ADMIN_TOKENS_FILE=self.admin_tokens, BILLING_SIGNING_KEY_FILE=self.signing_key,
                   BILLING_MIGRATIONS_DIR=os.path.join(ROOT, "migrations"), BILLING_OPERATOR="tester",
                   BILLING_CONFIG="")  # never a make run stack's var/billingd.conf
        env.update(extra)
        return env

    def run(self, prog, *args, check=True, env=None, timeout=120):
        p = subprocess.run([os.path.join(BIN, prog)] + [str(a) for a in args], capture_output=True, text=True,
                           env=env or self.cli_env(), timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"{prog} {' '.join(map(str, args))} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
        return p

    def admin(self, *args, **kw):
        return self.run("billing-admin", *args, **kw)

    def ledger(self, *args, **kw):
        return self.run("ledger", *args, **kw)

    def admin_json(self, *args):
        return json.loads(self.admin(*args, "--json").stdout)

    def sql(self, q, params=None, user="billing"):
        """One statement in a connection of its own.  A watchdog cancels it
        after SQL_WATCHDOG_S: under libfaketime (the calendar suite)
        PostgreSQL's own lock_timeout and deadlock detection never fire, so
        a statement stuck behind a lock would otherwise hang the suite until
        CI's limit instead of failing here with the statement named."""
        c = psycopg2.connect(self.stack.conninfo(self.db, user))
        c.autocommit = True
        dog = threading.Timer(SQL_WATCHDOG_S, c.cancel)
        dog.daemon = True
        dog.start()
        try:
            cur = c.cursor()
            try:
                cur.execute(q, params)
            except psycopg2.extensions.QueryCanceledError as e:
                raise AssertionError(f"statement still running after {SQL_WATCHDOG_S} s, cancelled: {q}") from e
            return cur.fetchall() if cur.description else None
        finally:
            dog.cancel()
            c.close()

    def one(self, q, params=None, user="billing"):
        rows = self.sql(q, params, user)
        assert rows and len(rows) == 1, rows
        return rows[0][0] if len(rows[0]) == 1 else rows[0]

    def assert_books_sound(self):
        tb = self.ledger("trial-balance", "--json")
        t = json.loads(tb.stdout)
        assert t["balanced"] and t["total_debits_nanos"] == t["total_credits_nanos"]
        assert self.sql("SELECT * FROM ledger_balance_mismatches()") == []
        v = self.ledger("verify", check=False)
        assert v.returncode == 0, v.stdout + v.stderr


@pytest.fixture(scope="module")
def env(stack, tmp_path_factory):
    """A module's own database, and the shared Redis emptied: account ids
    start again at 1 in every database, and an earlier module's mirror of
    its account 1 (live for up to 5 minutes) would otherwise be trusted as
    this module's account 1: test_quota's race for 14 admitted 28 once, and
    13 after a module that left a mirror of its account 1."""
    tmp = str(tmp_path_factory.mktemp("env"))
    e = Env(stack, stack.new_database(), tmp)
    e.redis_flushall()
    return e


class Billingd:
    def __init__(self, env, extra_cfg=None, port=None):
        self.env = env
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(env.tmp, f"billingd-{self.port}.log")
        self.cfg_path = os.path.join(env.tmp, f"billingd-{self.port}.conf")
        cfg = {
            "listen": f"127.0.0.1:{self.port}",
            "pg": env.pg,
            "redis": env.redis,
            "gateway_tokens_file": env.gw_tokens,
            "admin_tokens_file": env.admin_tokens,
            "key_pepper_file": env.stack.pepper,
            "migrations_dir": os.path.join(ROOT, "migrations"),
            "tokenizer_file": os.path.join(ROOT, "data", "tokenizer.json"),
            "model_file": os.path.join(ROOT, "data", "internal-tiny.bin"),
            "log_level": "info",
        }
        cfg.update(extra_cfg or {})
        with open(self.cfg_path, "w") as f:
            for k, v in cfg.items():
                f.write(f"{k} = {v}\n")
        self.proc = None
        self.start()

    def start(self, wait=True):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([os.path.join(BIN, "billingd"), "--config", self.cfg_path],
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT, env=self.env.proc_env())
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"billingd exited {self.proc.returncode}:\n{self.logs()}")
            try:
                if requests.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise AssertionError("billingd not ready:\n" + self.logs())

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.log.close()

    def stop(self):
        """SIGTERM: billingd must drain and exit 0, and (under the sanitizers)
        report nothing."""
        running = self.proc and self.proc.poll() is None
        self.kill(signal.SIGTERM)
        if not running:
            return
        logs = self.logs()
        if self.proc.returncode != 0:
            raise AssertionError(f"billingd exited {self.proc.returncode} on SIGTERM:\n{logs}")
        for bad in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            if bad in logs:
                raise AssertionError(f"billingd sanitizer report ({bad}):\n{logs}")

    def logs(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-20000:]
        except OSError:
            return ""

    def h(self, token=GATEWAY_TOKEN):
        return {"Authorization": f"Bearer {token}"}

    def post(self, path, body, token=GATEWAY_TOKEN, **kw):
        return requests.post(self.url + path, json=body, headers=self.h(token), timeout=kw.pop("timeout", 30), **kw)

    def get(self, path, token=GATEWAY_TOKEN):
        return requests.get(self.url + path, headers=self.h(token), timeout=30)

    def metric(self, name):
        """One unlabelled sample of /metrics (0.0 when absent)."""
        for ln in requests.get(self.url + "/metrics", timeout=5).text.splitlines():
            if ln.startswith(name + " "):
                return float(ln.split()[1])
        return 0.0


@pytest.fixture(scope="module")
def billingd(env, request):
    b = Billingd(env)
    yield b
    b.stop()
    failed = getattr(request.node, "_failed", False)
    if failed:
        sys.stderr.write("---- billingd log ----\n" + b.logs() + "\n")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        item.module.__dict__.setdefault("_any_failed", True)
        setattr(item.parent, "_failed", True)


# ---- helpers of the usage tests (test_usage*.py, test_http_errors.py) ----

UNIT = 10 ** 9  # nanos per currency unit


def units(nanos):
    """nanos -> the exact decimal string the CLI takes ("0.000000001")."""
    sign = "-" if nanos < 0 else ""
    n = abs(nanos)
    return f"{sign}{n // UNIT}.{n % UNIT:09d}"


def rfc3339(dt):
    """An aware datetime -> "2026-11-27T22:00:00.000000Z"."""
    import datetime as _dt
    return dt.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def set_price(env, model, input_nanos, cached_nanos, output_nanos, effective="2020-01-01T00:00:00Z",
              windows=(), paid_only=False):
    """billing-admin price set; returns the new price_version.  billingd sees
    it within a second (wait_prices())."""
    import re
    args = ["price", "set", "--model", model, "--input", units(input_nanos), "--cached-input", units(cached_nanos),
            "--output", units(output_nanos), "--effective", effective]
    for w in windows:
        args += ["--window", w]
    if paid_only:
        args.append("--paid-only")
    out = env.admin(*args).stdout
    m = re.search(r"price version (\d+)", out)
    assert m, out
    return int(m.group(1))


def model_billingd(env, extra_cfg):
    """A billingd with the embedded model and its price in force (0.1 input and
    cached, 0.2 output, units per 1M tokens), prices seen; stop() it."""
    set_price(env, "internal-tiny", UNIT // 10, UNIT // 10, UNIT // 5, effective="2026-01-01T00:00:00Z")
    b = Billingd(env, extra_cfg)
    wait_prices()
    return b


def new_api_key(env, external_id):
    """A new account and an API key of it: (account_id, key)."""
    acct = new_account(env, external_id)
    return acct, json.loads(env.admin("key", "create", "--account", acct, "--json").stdout)["api_key"]


def now_rfc3339(delta_s=0.0):
    """The clock of the test, as billingd reads instants (RFC 3339, microseconds, UTC)."""
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=delta_s)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# The mirror suites' calls (test_settle_lost, test_redis_replaced,
# test_notify_drop_lost, test_commit_notify_lost): an authorize or a usage
# of `tokens` input tokens of `model`, nothing else.
def post_authorize(bd, acct, rid, tokens, model):
    return bd.post("/v1/authorize", {"request_id": rid, "account_id": acct, "model": model,
                                     "input_tokens": tokens, "max_output_tokens": 0})


def post_usage(bd, acct, rid, tokens, model, started_at=None):
    return bd.post("/v1/usage", {"request_id": rid, "account_id": acct, "model": model, "input_tokens": tokens,
                                 "cached_input_tokens": 0, "output_tokens": 0,
                                 "started_at": started_at or now_rfc3339()})


def load_generation(env, acct):
    """The mirror's load generation (bal.lg), "" when there is no mirror."""
    return env.redis_cli("HGET", f"{{a:{acct}}}:bal", "lg")


def wait_prices():
    """The contract gives billingd one second to see a CLI change."""
    time.sleep(1.2)


def new_account(env, external_id):
    return json.loads(env.admin("account", "create", "--external-id", external_id, "--json").stdout)["account_id"]


def expected_cost(in_price, cached_price, out_price, tin, tcached, tout, m=10000):
    """CONTRACT.md section 2, in exact integers: floor(x * m / 10^10 + 1/2)."""
    num = ((tin - tcached) * in_price + tcached * cached_price + tout * out_price) * m
    q, r = divmod(num, 10 ** 10)
    return q + (1 if 2 * r >= 10 ** 10 else 0)


def ledger_counts(env):
    """(journal rows, postings rows, usage_records rows, sum of |balances|) in one snapshot."""
    return env.one("""SELECT (SELECT count(*) FROM journal), (SELECT count(*) FROM postings),
                             (SELECT count(*) FROM usage_records),
                             (SELECT coalesce(sum(abs(balance)), 0) FROM ledger_balances)""")


def run_load(billingd, plan, tmpdir, name, error_sleep_ms=0, gap_ms=0, background=False):
    """Runs build/itest/usage_load over plan: a list of (client, path, body dict).
    Returns {line: (status, retry_after or None, parsed body or None)}, or the
    Popen and a collector when background."""
    plan_path = os.path.join(tmpdir, f"{name}.plan")
    out_path = os.path.join(tmpdir, f"{name}.out")
    with open(plan_path, "w") as f:
        for client, path, body in plan:
            f.write(f"{client}\t{path}\t{json.dumps(body, separators=(',', ':'))}\n")
    cmd = [os.path.join(ITEST, "usage_load"), "127.0.0.1", str(billingd.port), GATEWAY_TOKEN, plan_path, out_path,
           str(error_sleep_ms), str(gap_ms)]

    def collect(p):
        assert p.returncode == 0, f"usage_load exited {p.returncode}"
        res = {}
        with open(out_path) as f:
            for line in f:
                no, status, ra, body = line.rstrip("\n").split("\t", 3)
                try:
                    parsed = json.loads(body) if body.strip() else None
                except ValueError:
                    parsed = {"_raw": body}
                res[int(no)] = (int(status), None if ra == "-" else ra, parsed)
        assert len(res) == len(plan), (len(res), len(plan))
        return res

    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if background:
        return p, lambda: (p.wait(timeout=300), collect(p))[1]
    p.wait(timeout=300)
    return collect(p)


def result_lines(path):
    try:
        with open(path) as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def journal_hash(prev, writer, seq, kind, key, account_id, actor, reason, details, created_us, postings):
    """The hash chain encoding of docs/ledger.md, in Python: BLAKE2b-256 of one journal
    transaction; postings are (ledger_account_id, amount) pairs in line order."""
    def s(x):
        b = x.encode()
        return struct.pack(">I", len(b)) + b
    out = (b"billing-ledger-v1\0" + prev + s(writer) + struct.pack(">q", seq) + s(kind) + s(key) +
           struct.pack(">q", account_id) + s(actor) + s(reason) + s(details) + struct.pack(">q", created_us) +
           struct.pack(">I", len(postings)))
    for la, amount in postings:
        out += struct.pack(">qq", la, amount)
    return hashlib.blake2b(out, digest_size=32).digest()
