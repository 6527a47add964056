"""Calendar edges on a faked clock: the year's last seconds, the last second of
a leap day, a grant that expires at a month boundary, a discount window over
midnight at year end, trial balances exactly at a boundary, partitions made
for a new year.

PostgreSQL, billingd and the CLIs run under libfaketime with one relative
FAKETIME offset, so their clocks agree with each other and tick in real time;
Redis and this Python process keep the real clock (libfaketime does not work
inside them).  The instants are explicit (years ahead of any real date), so
the suite means the same whatever day it runs on.  A timeline's set-up runs
minutes before its instants; then billingd and PostgreSQL stop, the clock
moves forward to a few seconds before them and both start again
(Calendar.jump): the set-up takes what it takes on any machine, and nobody
waits for a clock.  Run it alone with
`PYTEST_ARGS="tests/integration/test_calendar.py" scripts/run_integration.sh`
(after `make`)."""
import datetime as dt
import glob
import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from conftest import ITEST, Billingd, Env, Stack, set_price

UTC = dt.timezone.utc
MODEL = "cal-model"
IN_PRICE = 1_000_000_000          # nanos per million input tokens (1 CNY)
FAKETIME_LIB = (glob.glob("/usr/lib/*/faketime/libfaketime.so.1") or [None])[0]


def at(s):
    return dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%f%z") if "." in s else \
        dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S%z")


def z(t):
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FakeClock:
    """A constant offset from the real clock: the stack's clock reads `start`
    when the clock is made and ticks in real time from there."""

    def __init__(self, start):
        self.offset = round(start.timestamp() - time.time())

    def now(self):
        return dt.datetime.fromtimestamp(time.time() + self.offset, UTC)

    def faketime(self):
        return f"{self.offset:+d}"

    def wait_until(self, t):
        while True:
            left = (t - self.now()).total_seconds()
            if left <= 0:
                return
            time.sleep(min(left, 0.5))


class FakeEnv(Env):
    def __init__(self, stack, tmp, clock):
        super().__init__(stack, "billing", tmp)
        self.clock = clock

    def proc_env(self):
        e = dict(os.environ, LD_PRELOAD=FAKETIME_LIB, FAKETIME=self.clock.faketime(),
                 FAKETIME_DONT_FAKE_MONOTONIC="1")
        # under ASan, libasan must otherwise come first in the preload list
        e["ASAN_OPTIONS"] = ":".join(x for x in (os.environ.get("ASAN_OPTIONS", ""), "verify_asan_link_order=0") if x)
        return e


class Calendar:
    """A whole stack (PostgreSQL, Redis, billingd) whose clock starts at `start`."""

    def __init__(self, start):
        assert FAKETIME_LIB, "libfaketime is missing (apt-get install faketime; scripts/deps.sh installs it)"
        self.clock = FakeClock(start)
        self.dir = tempfile.mkdtemp(prefix="billing-cal-")
        self.stack = Stack(self.dir, pg_faketime=self.clock.faketime())
        self.env = FakeEnv(self.stack, self.dir, self.clock)
        self.billingd = None
        try:
            self.env.admin("migrate")
            # the stack's clock is the faked one, in PostgreSQL too
            assert abs((self.env.one("SELECT now()") - self.clock.now()).total_seconds()) < 5
            self.billingd = Billingd(self.env, {"expiry_interval_s": 1})
        except BaseException:
            self.stop()
            raise

    def jump(self, to):
        """Stops billingd and PostgreSQL, moves the stack's clock forward so
        that it reads `to` now, and starts both again (on the same data,
        ports and configuration): the clock reads `to` plus the restart's
        time when this returns.  As a server down for that long would see
        it: the clock only moves forward."""
        self.billingd.stop()
        self.stack.stop_pg()
        offset = round(to.timestamp() - time.time())
        assert offset > self.clock.offset, "the set-up ran past the instant to jump to (the clock moves forward only)"
        self.clock.offset = offset
        self.stack.start_pg(env=self.env.proc_env())
        assert abs((self.env.one("SELECT now()") - self.clock.now()).total_seconds()) < 5
        self.billingd.start()

    def stop(self):
        if self.billingd:
            self.billingd.stop()
        self.stack.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def usage(self, rid, account, started_at, tokens=1_000_000):
        r = self.billingd.post("/v1/usage", {"request_id": rid, "account_id": account, "model": MODEL,
                                             "input_tokens": tokens, "cached_input_tokens": 0, "output_tokens": 0,
                                             "started_at": z(started_at)})
        assert r.status_code == 200, r.text
        return r.json()

    def booked(self, rid):
        """(created_at, journal partition, usage_records partition) of a usage record."""
        e = self.env
        created, jpart = e.one("SELECT created_at, tableoid::regclass::text FROM journal"
                               " WHERE idempotency_key = %s", ("usage:" + rid,), user="postgres")
        upart = e.one("SELECT tableoid::regclass::text FROM usage_records WHERE request_id = %s", (rid,),
                      user="postgres")
        return created.astimezone(UTC), jpart, upart

    def statement(self, account, month):
        return json.loads(self.env.ledger("statement", "--account", account, "--month", month, "--json").stdout)

    def trial(self, when):
        t = json.loads(self.env.ledger("trial-balance", "--at", when, "--json").stdout)
        assert t["balanced"], t
        return {a["type"]: (a["debits_nanos"], a["credits_nanos"]) for a in t["accounts"]}

    def trial_by_sql(self, when):
        """The trial balance at `when` (inclusive), from the postings themselves."""
        rows = self.env.sql("SELECT la.type, coalesce(sum(-p.amount) FILTER (WHERE p.amount < 0), 0),"
                            " coalesce(sum(p.amount) FILTER (WHERE p.amount > 0), 0)"
                            " FROM postings p JOIN ledger_accounts la USING (ledger_account_id)"
                            " WHERE p.created_at <= %s GROUP BY 1", (when,), user="postgres")
        return {t: (int(d), int(c)) for t, d, c in rows if int(d) or int(c)}


def month_of(t):
    return f"{t.year:04d}-{t.month:02d}"


def partition(table, t):
    return f"{table}_y{t.year:04d}m{t.month:02d}"


def chained(sts):
    """Each month's closing balance is the next month's opening; movements add up."""
    for st in sts:
        assert st["balanced"] is True
        for side in ("paid_nanos", "promo_nanos"):
            assert st["opening"][side] + sum(m[side] for m in st["movements"]) == st["closing"][side]
    for a, b in zip(sts, sts[1:]):
        assert sides(a["closing"]) == sides(b["opening"])


def sides(x):
    return x["paid_nanos"], x["promo_nanos"]


def usage_cost(st):
    return -sum(m["paid_nanos"] + m["promo_nanos"] for m in st["movements"] if m["kind"] == "usage")


# ---- the year's last seconds ----

NEW_YEAR = at("2031-01-01T00:00:00Z")


@pytest.fixture(scope="module")
def year_end():
    """One run across midnight UTC of 31 December 2030, the timeline of the
    tests below.  Returns what it saw; the tests assert on it."""
    cal = Calendar(NEW_YEAR - dt.timedelta(minutes=10))
    e, b, seen = cal.env, cal.billingd, {}
    try:
        # a half-price window from 23:30 to 00:02, across midnight and the year's end
        set_price(e, MODEL, IN_PRICE, 0, 0, effective="2030-12-01T00:00:00Z", windows=["23:30-00:02=5000"])
        time.sleep(1.2)   # billingd reloads prices every second
        paid = json.loads(e.admin("account", "create", "--external-id", "cal-paid", "--json").stdout)["account_id"]
        e.admin("topup", "--account", paid, "--amount", "100", "--payment-ref", "cal-pay")
        promo = json.loads(e.admin("account", "create", "--external-id", "cal-promo", "--json").stdout)["account_id"]
        e.admin("grant", "--account", promo, "--amount", "5", "--reason", "year-end trial",
                "--expires", z(NEW_YEAR))
        seen.update(paid=paid, promo=promo)
        # rows written at explicit instants around the boundary (one exactly at midnight)
        p = subprocess.run([os.path.join(ITEST, "export_load"), e.pg, "2", "10", "31", z(NEW_YEAR),
                            z(NEW_YEAR + dt.timedelta(seconds=1))], capture_output=True, text=True, timeout=300,
                           env=e.proc_env())
        assert p.returncode == 0, p.stderr
        seen["partitions_before"] = {r[0] for r in e.sql("SELECT relname FROM pg_class WHERE relname LIKE"
                                                         " 'journal_y%%'", user="postgres")}
        # the last seconds of the year
        cal.jump(NEW_YEAR - dt.timedelta(seconds=20))
        cal.clock.wait_until(NEW_YEAR - dt.timedelta(seconds=6))
        assert cal.clock.now() < NEW_YEAR - dt.timedelta(seconds=3), "setup ran past the year's last seconds"
        seen["dec"] = cal.usage("cal-dec-last", paid, cal.clock.now())
        cal.usage("cal-promo-dec", promo, cal.clock.now(), tokens=1_000_000)
        e.admin("expire")                        # the grant has not expired yet
        seen["promo_before"] = e.admin_json("account", "show", promo)
        seen["breakage_before"] = e.one("SELECT count(*) FROM journal WHERE kind = 'breakage'")
        # midnight passes; a call started before it is reported after it
        cal.clock.wait_until(NEW_YEAR + dt.timedelta(seconds=1))
        seen["jan_late"] = cal.usage("cal-jan-late", paid, NEW_YEAR - dt.timedelta(seconds=2))
        seen["w_2329"] = cal.usage("cal-w-2329", paid, at("2030-12-31T23:29:59.999999Z"))
        seen["w_2330"] = cal.usage("cal-w-2330", paid, at("2030-12-31T23:30:00Z"))
        seen["w_0001"] = cal.usage("cal-w-0001", paid, at("2031-01-01T00:01:59.999999Z"))
        seen["w_0002"] = cal.usage("cal-w-0002", paid, at("2031-01-01T00:02:00Z"))
        # billingd's own maintenance (every second here): the grant's expiry, the new year's partitions
        deadline = time.time() + 30
        while time.time() < deadline:
            if e.one("SELECT count(*) FROM journal WHERE kind = 'breakage'") > seen["breakage_before"] and \
                    e.one("SELECT count(*) FROM pg_class WHERE relname = 'journal_y2031m04'", user="postgres"):
                break
            time.sleep(0.3)
        seen["partitions_after"] = {r[0] for r in e.sql("SELECT relname FROM pg_class WHERE relname LIKE"
                                                        " 'journal_y%%'", user="postgres")}
        seen["promo_after"] = e.admin_json("account", "show", promo)
        yield cal, seen
    finally:
        cal.stop()


def test_usage_before_midnight_is_booked_in_december(year_end):
    cal, seen = year_end
    created, jpart, upart = cal.booked("cal-dec-last")
    assert NEW_YEAR - dt.timedelta(seconds=10) <= created < NEW_YEAR, created
    assert (jpart, upart) == ("journal_y2030m12", "usage_records_y2030m12")
    dec = cal.statement(seen["paid"], "2030-12")
    jan = cal.statement(seen["paid"], "2031-01")
    assert usage_cost(dec) == seen["dec"]["cost_nanos"] == IN_PRICE // 2     # inside the 23:30-00:02 window
    assert usage_cost(jan) == sum(seen[k]["cost_nanos"] for k in ("jan_late", "w_2329", "w_2330", "w_0001",
                                                                   "w_0002"))


def test_usage_after_midnight_is_booked_in_january(year_end):
    cal, seen = year_end
    for rid in ("cal-jan-late", "cal-w-0002"):
        created, jpart, upart = cal.booked(rid)
        assert NEW_YEAR <= created < NEW_YEAR + dt.timedelta(minutes=5), (rid, created)
        assert (jpart, upart) == ("journal_y2031m01", "usage_records_y2031m01")


def test_statements_of_december_and_january_chain(year_end):
    cal, seen = year_end
    for a in (seen["paid"], seen["promo"]):
        sts = [cal.statement(a, m) for m in ("2030-11", "2030-12", "2031-01", "2031-02")]
        chained(sts)
        # the closing balance of the last month is the account's balance now
        bal = cal.env.admin_json("account", "show", a)["balance"]
        assert (sts[-1]["closing"]["paid_nanos"], sts[-1]["closing"]["promo_nanos"]) == \
            (bal["paid_nanos"], bal["promo_nanos"])
    assert sides(cal.statement(seen["paid"], "2030-12")["opening"]) == (0, 0)


def test_discount_window_spans_midnight_at_year_end(year_end):
    _, seen = year_end
    half, full = IN_PRICE // 2, IN_PRICE
    assert [seen[k]["cost_nanos"] for k in ("w_2329", "w_2330", "jan_late", "w_0001", "w_0002")] == \
        [full, half, half, half, full]


def test_grant_expiring_at_midnight_lives_until_then(year_end):
    cal, seen = year_end
    before, after = seen["promo_before"]["balance"], seen["promo_after"]["balance"]
    # 14 CNY signup credit and a 5 CNY grant expiring at midnight, which burns first: 0.5 CNY used in
    # December (half price); the rest of the grant expired at midnight, not before
    assert before["promo_nanos"] == 18_500_000_000 and after["promo_nanos"] == 14_000_000_000
    brk = cal.env.sql("SELECT created_at FROM journal WHERE kind = 'breakage' AND account_id = %s",
                      (seen["promo"],), user="postgres")
    assert len(brk) == 1 and brk[0][0] >= NEW_YEAR
    dec, jan = cal.statement(seen["promo"], "2030-12"), cal.statement(seen["promo"], "2031-01")
    assert all(m["promo_nanos"] == 0 for m in dec["movements"] if m["kind"] == "breakage")
    assert sum(m["promo_nanos"] for m in jan["movements"] if m["kind"] == "breakage") == -4_500_000_000


def test_trial_balance_at_the_boundary_is_inclusive(year_end):
    cal, _ = year_end
    last_us = NEW_YEAR - dt.timedelta(microseconds=1)
    # export_load wrote a transaction exactly at midnight
    assert cal.env.one("SELECT count(*) FROM journal WHERE created_at = %s", (NEW_YEAR,), user="postgres") >= 1
    for when in (last_us, NEW_YEAR, NEW_YEAR + dt.timedelta(microseconds=1)):
        assert cal.trial(z(when)) == cal.trial_by_sql(when), when
    assert cal.trial(z(last_us)) != cal.trial(z(NEW_YEAR))


def test_partitions_roll_into_the_new_year(year_end):
    cal, seen = year_end
    # made three months ahead: in December up to March, after midnight up to April
    assert {"journal_y2030m12", "journal_y2031m01", "journal_y2031m03"} <= seen["partitions_before"]
    assert "journal_y2031m04" not in seen["partitions_before"]
    assert "journal_y2031m04" in seen["partitions_after"]
    assert cal.env.sql("SELECT created_at, kind FROM journal_default", user="postgres") == []


def test_books_sound_after_the_year_end(year_end):
    cal, _ = year_end
    cal.env.assert_books_sound()


# ---- the last second of a leap day ----

MARCH = at("2032-03-01T00:00:00Z")


def test_last_second_of_a_leap_day():
    cal = Calendar(MARCH - dt.timedelta(minutes=10))
    e = cal.env
    try:
        set_price(e, MODEL, IN_PRICE, 0, 0, effective="2032-02-01T00:00:00Z")
        time.sleep(1.2)
        a = json.loads(e.admin("account", "create", "--external-id", "cal-leap", "--json").stdout)["account_id"]
        e.admin("topup", "--account", a, "--amount", "100", "--payment-ref", "cal-leap-pay")
        # calls every 100 ms from 23:59:58.5 to 00:00:00.7 of 29 February 2032
        cal.jump(MARCH - dt.timedelta(seconds=15))
        cal.clock.wait_until(MARCH - dt.timedelta(seconds=1.5))
        assert cal.clock.now() < MARCH - dt.timedelta(seconds=1), "setup ran past the leap day"
        rids, i = [], 0
        while cal.clock.now() < MARCH + dt.timedelta(seconds=0.7):
            rid = f"cal-leap-{i}"
            cal.usage(rid, a, cal.clock.now())
            rids.append(rid)
            i += 1
            time.sleep(0.1)
        booked = {rid: cal.booked(rid) for rid in rids}
        last_second = [r for r, (c, _, _) in booked.items() if MARCH - dt.timedelta(seconds=1) <= c < MARCH]
        after = [r for r, (c, _, _) in booked.items() if c >= MARCH]
        assert last_second and after, booked
        for rid, (created, jpart, upart) in booked.items():
            assert jpart == partition("journal", created) and upart == partition("usage_records", created), rid
        feb, mar = e.ledger("statement", "--account", a, "--month", "2032-02", "--json"), \
            e.ledger("statement", "--account", a, "--month", "2032-03", "--json")
        feb, mar = json.loads(feb.stdout), json.loads(mar.stdout)
        n_feb = sum(1 for c, _, _ in booked.values() if month_of(c) == "2032-02")
        assert usage_cost(feb) == n_feb * IN_PRICE and usage_cost(mar) == (len(rids) - n_feb) * IN_PRICE
        chained([feb, mar])
        assert cal.trial(z(MARCH - dt.timedelta(microseconds=1))) == \
            cal.trial_by_sql(MARCH - dt.timedelta(microseconds=1))
        e.assert_books_sound()
    finally:
        cal.stop()
