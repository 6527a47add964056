"""Grouped authorize (quota.h quota_authorize; quota.lua.h
quota_lua_authorize_group), review6: one account's decision must not decide
the others' of the same loop turn.  Before grouping, a decision that Redis
could not run (a script error on that account's keys) failed that request
alone; in a group, the script stops at the first error and Redis answers the
whole call with that error, so every decision of the call got 503; now each
decision runs under pcall and only the broken one gets 503."""
from conftest import UNIT
from test_quota_group import bd, body, burst, new_account, warm  # noqa: F401 (bd: the same module fixture)


def test_an_account_redis_cannot_serve_does_not_fail_the_others_of_its_turn(env, bd):
    broken = new_account(env, "grp-iso-broken")
    others = [new_account(env, f"grp-iso-{i}") for i in range(5)]
    for a in [broken] + others:
        warm(bd, a, f"grp-iso-warm-{a}")
    # the broken account's hold records are no longer a hash: every script
    # call on its keys fails (WRONGTYPE), as any Redis error would
    env.redis_cli("DEL", f"{{a:{broken}}}:hold")
    env.redis_cli("SET", f"{{a:{broken}}}:hold", "not-a-hash")
    bodies = [body(a, f"grp-iso-{a}-1", 2) for a in others[:3]] + [body(broken, "grp-iso-b-1", 1)] + \
        [body(a, f"grp-iso-{a}-1", 2) for a in others[3:]]
    res, (decisions, calls) = burst(bd, bodies)
    assert decisions == len(bodies) and calls < decisions, (decisions, calls)  # they were grouped
    for b, (status, j, _) in zip(bodies, res):
        if b["account_id"] == broken:
            assert status == 503 and j["error"]["code"] == "unavailable", (status, j)
        else:
            assert status == 200, (b["account_id"], status, j)
            assert (j["hold_id"], j["held_nanos"], j["available_nanos"]) == (b["request_id"], 2 * UNIT, 11 * UNIT), j
