"""The chaos run's seeded plan, its bad inputs and its report. No services needed."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from quotaflow.chaos import plan
from quotaflow.chaos.checks import judge
from quotaflow.chaos.faults import FaultRecord
from quotaflow.chaos.harness import ChaosConfig, chaos_settings
from quotaflow.chaos.load import bad_request
from quotaflow.chaos.report import Result, as_json, table
from quotaflow.devstack.process import DevStackError
from quotaflow.settings import Settings
from tests.chaos.test_checks import clean


def test_the_same_seed_gives_the_same_plan_and_another_seed_another() -> None:
    a = plan.sends(300, ["t0", "t1"], "m", seed=7)
    assert a == plan.sends(300, ["t0", "t1"], "m", seed=7)
    assert a != plan.sends(300, ["t0", "t1"], "m", seed=8)
    f = plan.faults(list(plan.FAULT_KINDS), 3, 2.0, seed=7)
    assert f == plan.faults(list(plan.FAULT_KINDS), 3, 2.0, seed=7)


def test_a_tenth_of_the_sends_are_exact_resends_of_an_earlier_event() -> None:
    sends = plan.sends(1000, ["t0", "t1", "t2"], "m", seed=1)
    resends = [s for s in sends if s.kind == "resend"]
    assert len(resends) == 100
    assert any(s.twin for s in resends) and not all(s.twin for s in resends)
    for s in resends:
        assert s.original is not None and s.original < s.index
        first = sends[s.original]
        assert first.kind == "new"
        assert (first.tenant, first.source, first.ce_id, first.data) == (
            s.tenant, s.source, s.ce_id, s.data)
    new_ids = [(s.tenant, s.source, s.ce_id) for s in sends if s.kind == "new"]
    assert len(new_ids) == len(set(new_ids))  # a new event is never an accidental resend


def test_every_bad_input_is_sent_and_built() -> None:
    sends = plan.sends(150, ["t0"], "m", seed=3)
    bad = [s for s in sends if s.kind == "bad"]
    assert {s.bad for s in bad} == set(plan.BAD_INPUTS)
    for s in bad:
        path, headers, body = bad_request(s.bad, "qf_k_s", s, "m")
        assert path == "/" and body is not None and headers
    nul = next(s for s in bad if s.bad == "nul-in-id")
    assert json.loads(bad_request("nul-in-id", "k", nul, "m")[2])["id"].endswith("\x00x")


def test_faults_come_per_kind_at_increasing_times_and_kills_pick_functions() -> None:
    faults = plan.faults(["kill", "pg"], 20, 1.0, seed=5)
    assert Counter(f.kind for f in faults) == {"kill": 20, "pg": 20}
    times = [f.at_s for f in faults]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert {f.target for f in faults if f.kind == "kill"} <= set(plan.FUNCTIONS)
    assert len({f.target for f in faults if f.kind == "kill"}) > 1


def test_small_grant_tenants_exist_and_fault_kinds_are_checked() -> None:
    assert [t.tokens for t in plan.tenants(3)] == [plan.LARGE_GRANT, plan.LARGE_GRANT,
                                                   plan.SMALL_GRANT]
    assert plan.parse_kinds("pg,redis,pg") == ["pg", "redis"]
    assert plan.parse_kinds("none") == []
    assert plan.parse_kinds("broker,broker-pause") == ["broker", "broker-pause"]
    assert "broker-pause" not in plan.DEFAULT_KINDS  # a cluster's fault, asked for by name
    with pytest.raises(ValueError, match="disk"):
        plan.parse_kinds("pg,disk")


def test_the_report_shows_every_column_and_fails_on_a_finding() -> None:
    snap, outcomes = clean()
    faults = [FaultRecord("kill", "infer", 1.0, "SIGKILL infer", 2.5),
              FaultRecord("pg", "pg", 3.0, "terminated 9", 1.25)]
    good = Result({"summary": "s"}, faults, outcomes, snap, judge(snap, outcomes), True, 1.25)
    text = table(good)
    for column in ("kill (1 infer)", "| pg | 1 | 1.2 s |", "both copies of a twin) | 5 |",
                   "**lost**", "**double charges**", "**overshoot**", "**leaked reservations**",
                   "seconds to recover after the last fault | 1.2"):
        assert column in text, column
    assert "PASS" in text and good.ok
    snap.requests["a"] = snap.requests["a"].__class__("a", "t", "queued", 0)
    bad = Result({}, faults, outcomes, snap, judge(snap, outcomes), True, 1.25)
    assert not bad.ok and "FAIL" in table(bad) and "LOST: request a (t) still queued" in table(bad)
    assert as_json(bad)["counts"]["lost"] == 1
    unrecovered = Result({}, [*faults[:1], FaultRecord("pg", "pg", 3, "", None)], outcomes,
                         snap, judge(*clean()), True, None)
    assert not unrecovered.ok and "not recovered" in table(unrecovered)


def test_a_run_that_injected_fewer_faults_than_planned_fails() -> None:
    snap, outcomes = clean()
    faults = [FaultRecord("pg", "pg", 1.0, "terminated 3", 0.5)]
    short = Result({}, faults, outcomes, snap, judge(snap, outcomes), True, 0.5,
                   planned_faults=2)
    assert not short.ok and "only 1 of 2 planned faults" in table(short)
    assert Result({}, faults, outcomes, snap, judge(snap, outcomes), True, 0.5,
                  planned_faults=1).ok


def test_the_stack_gets_its_own_database_redis_index_and_short_timers() -> None:
    cfg = ChaosConfig(database="qf_x", redis_db=8)
    s = chaos_settings(Settings(postgres_url="postgresql://u@127.0.0.1:5432/quotaflow?x=1",
                                redis_url="redis://localhost:6379/0"), cfg, 4321)
    assert s.postgres_url == "postgresql://u@127.0.0.1:5432/qf_x?x=1"
    assert s.redis_url == "redis://localhost:6379/8"
    assert s.public_url == "http://127.0.0.1:4321"
    assert s.redrive_after_s < s.reservation_ttl_s < s.request_deadline_s <= 60
    assert s.sweep_interval_s <= 1
    s.validate()


def test_a_chaos_run_refuses_servers_off_this_machine() -> None:
    with pytest.raises(DevStackError, match="POSTGRES_URL must be on this machine"):
        chaos_settings(Settings(postgres_url="postgresql://u@db.example:5432/q"),
                       ChaosConfig(), 1)
    with pytest.raises(DevStackError, match="REDIS_URL"):
        chaos_settings(Settings(redis_url="redis://cache.example:6379/0"), ChaosConfig(), 1)


def _levels_plan(n: int, seed: int) -> tuple[plan.LevelsSpec, list[plan.Send]]:
    sends = plan.sends(n, ["t0", "t1", plan.LEVELS_TENANT], "m", seed,
                       team_keys=plan.level_key_names())
    return plan.levels(sends), sends


@pytest.mark.parametrize(("requests", "seed"), [(150, 11), (1200, 7), (10, 1)])
def test_each_teams_limits_are_below_the_sum_of_its_keys_and_the_tenants_below_its_teams(
        requests: int, seed: int) -> None:
    spec, _ = _levels_plan(requests, seed)
    assert [t[0] for t in spec.teams] == ["ml", "ops"]
    for team, tokens, usd in spec.teams:
        mine = [k for k in spec.keys if k[1] == team]
        assert len(mine) == 2
        assert tokens < sum(k[2] for k in mine)
        assert usd < sum(k[3] for k in mine)
        assert all(0 < k[2] < tokens and 0 < k[3] < usd for k in mine)
    assert spec.usd < sum(t[2] for t in spec.teams)
    names = {t[0] for t in spec.teams} | {k[0] for k in spec.keys}
    assert {a[1] for a in spec.alerts} <= names
    assert len(spec.prices) == 2 and spec.prices[0] != spec.prices[1]


def test_team_ml_runs_out_of_tokens_and_team_ops_of_money_after_the_price_change() -> None:
    spec, sends = _levels_plan(300, 5)
    limits = {team: (tokens, usd) for team, tokens, usd in spec.teams}
    spent = {team: [0, 0] for team in limits}
    out_at: dict[tuple[str, int], int] = {}  # (team, unit) -> the send that goes over
    for s in sends:
        if s.kind != "new" or not s.key:
            continue
        team = s.key.split("/")[1].split("-")[0]
        charge = plan.planned_charge(s, spec.prices[0] if s.index < 150 else spec.prices[1])
        for unit in (0, 1):
            spent[team][unit] += charge[unit]
            if spent[team][unit] > limits[team][unit]:
                out_at.setdefault((team, unit), s.index)
    assert set(out_at) == {("ml", 0), ("ops", 1)}, out_at
    assert all(i >= 150 for i in out_at.values()), out_at  # after the middle, by plan


def test_the_levels_tenants_sends_go_with_its_team_keys_and_resends_keep_theirs() -> None:
    _, sends = _levels_plan(300, 3)
    new = [s for s in sends if s.kind == "new"]
    mine = [s for s in new if s.tenant == plan.LEVELS_TENANT]
    assert {s.key for s in mine} == set(plan.level_key_names())
    assert all(s.key == "" for s in new if s.tenant != plan.LEVELS_TENANT)
    by_index = {s.index: s for s in sends}
    resends = [s for s in sends if s.kind == "resend"]
    assert resends and all(s.key == by_index[s.original].key for s in resends
                           if s.original is not None)


def test_the_report_names_the_price_versions_reserved_at_and_the_levels_that_refused() -> None:
    from quotaflow.chaos.facts import LedgerRow, Receipt
    from quotaflow.chaos.report import levels_summary

    snap, _ = clean()
    t, p = plan.LEVELS_TENANT, "2026-12"
    snap.ledger += [
        LedgerRow(10, t, p, "TokensReserved", "a", 9, price_version=1),
        LedgerRow(11, t, p, "TokensReserved", "b", 9, price_version=2),
        LedgerRow(12, t, p, "RequestRejected", "c", 9, reason=(
            f"quota_exceeded: team 'ml' of tenant '{t}' has 3 of 77 left this period")),
        LedgerRow(13, t, p, "RequestRejected", "d", 9, reason=(
            f"quota_exceeded: team 'ops' of tenant '{t}' has $0.000100 of $0.002685 left "
            "this period")),
        LedgerRow(14, t, p, "RequestRejected", "e", 9, reason="quota_exceeded")]
    snap.receipts = [Receipt("msg_1", "{}", True, 503), Receipt("msg_1", "{}", True, 204)]
    assert levels_summary(snap) == (
        "1 reserved at v1, 1 reserved at v2; 3 rejected, 1 by team 'ml' tokens, 1 by team "
        "'ops' usd, 1 by tenant tokens; alerts: 1 webhook-ids, 2 attempts")
