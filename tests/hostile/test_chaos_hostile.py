"""Rule 9 of issue 26: the chaos harness's hostile clients (rules 7 and 8), planned once each a
run under a tenant of their own, and the checks that judge them: floods over a key's cap and
rate answered 429, never 5xx; a hung-up request billed only up to the hang-up; a call retried
after 5xx answers billed at most once. The clients are run against a door on a socket: the
floods over in-memory ports, the hang-ups and the retry on the local stack."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest
from werkzeug.serving import make_server

from quotaflow.chaos import plan
from quotaflow.chaos.checks import judge
from quotaflow.chaos.door_checks import hostile_findings
from quotaflow.chaos.facts import LedgerRow, Outcome
from quotaflow.chaos.load import hostile_client
from quotaflow.runtime.door.app import create_app
from tests.chaos.test_checks import clean
from tests.openai.memory_pipeline import MODEL, MemoryDoor


def send(name: str, tenant: str = "acme", index: int = 7) -> plan.Send:
    return plan.Send(index, "hostile", tenant, "openai", f"hostile-{index}", bad=name)


def test_rule9_a_run_plans_each_hostile_client_once_under_a_tenant_of_their_own() -> None:
    sends = [s for s in plan.sends(300, ["t0", "t1"], "m", seed=7) if s.kind == "hostile"]
    assert sorted(s.bad for s in sends) == sorted(plan.HOSTILE_INPUTS)
    assert {s.tenant for s in sends} == {plan.HOSTILE_TENANT}


def ledger(rid: str, reserved: int, *settled: int) -> list[LedgerRow]:
    return [LedgerRow(90, "h", "2026-11", "TokensReserved", rid, reserved),
            *(LedgerRow(91 + n, "h", "2026-11", "ReservationSettled", rid, amount)
              for n, amount in enumerate(settled))]


@pytest.mark.parametrize(("outcome", "rows", "finding"), [
    (Outcome(5, "hostile", 200, bad="wait-flood"), [], "never limited"),
    (Outcome(5, "hostile", 503, bad="get-flood"), [], "answered 503"),
    (Outcome(5, "hostile", None, bad="get-flood"), [], "answered nothing"),
    (Outcome(5, "hostile", 499, "r", bad="hangup-mid-wait"), ledger("r", 800, 800), "past"),
    (Outcome(5, "hostile", 499, "r", bad="hangup-mid-stream"), ledger("r", 800, 60, 60),
     "past"),
    (Outcome(5, "hostile", 200, bad="retry-after-5xx", attempts=("r1", "r2")),
     ledger("r1", 30, 20) + ledger("r2", 30, 20), "billed 2 times"),
])
def test_rule9_the_checks_find_a_hostile_client_answered_or_billed_against_the_rules(
        outcome: Outcome, rows: list[LedgerRow], finding: str) -> None:
    snap, outcomes = clean()
    snap.ledger += rows
    assert hostile_findings(snap, outcomes) == []
    found = hostile_findings(snap, [*outcomes, outcome])
    assert len(found) == 1 and finding in found[0], found
    assert found[0] in judge(snap, [*outcomes, outcome]).door  # the verdict carries it


def test_rule9_hostile_clients_answered_by_the_rules_have_no_findings() -> None:
    snap, outcomes = clean()
    snap.ledger += ledger("r", 800, 120) + ledger("r1", 30) + ledger("r2", 30, 20)
    fine = [Outcome(5, "hostile", 429, bad="wait-flood"),
            Outcome(6, "hostile", 429, bad="get-flood"),
            Outcome(7, "hostile", 499, "r", bad="hangup-mid-wait"),
            Outcome(8, "hostile", 200, bad="retry-after-5xx", attempts=("r1", "r2"))]
    assert hostile_findings(snap, [*outcomes, *fine]) == []


@pytest.fixture
def served() -> Iterator[tuple[str, MemoryDoor]]:
    """The door over in-memory ports on a socket, caps small: 2 waits, 5 reads a second."""
    door = MemoryDoor(token_delay_s=0.02)
    settings = replace(door.settings, waits_per_key=2, reads_per_s_per_key=5,
                       max_tokens_limit=512, max_body_bytes=65536)
    server = make_server("127.0.0.1", 0, create_app(settings, door.ports), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", door
    server.shutdown()
    door.pipeline.close()


@pytest.mark.parametrize("name", ["wait-flood", "get-flood"])
def test_rule9_the_harness_floods_are_answered_429_never_5xx(
        served: tuple[str, MemoryDoor], name: str) -> None:
    url, door = served
    out = hostile_client(send(name), url, door.keys["acme"], MODEL, (2, 5), 10)
    assert out.status == 429, out  # a 5xx or silence would be the status (`hostile._worst`)
    assert hostile_findings(clean()[0], [out]) == []
