"""ledger/db.c's pipeline mode: a batch given up before its sync point (the
usage writer's failure paths: an allocation of its own, or a statement libpq
refused, after other statements were queued) must not leave db_pipeline_end
waiting for answers the server was never asked to send, and the connection
must serve the next query (tests/integration/db_pipeline.c)."""
import os
import subprocess

from conftest import ROOT

ITEST = os.environ.get("BILLING_ITEST_BIN", os.path.join(ROOT, "build", "itest"))


def test_a_batch_given_up_before_its_sync_point_ends_and_the_connection_serves_on(env):
    p = subprocess.run([os.path.join(ITEST, "db_pipeline"), env.pg], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout == "ok\n", (p.returncode, p.stdout, p.stderr)
