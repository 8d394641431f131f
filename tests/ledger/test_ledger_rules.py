"""The ledger's guarantees on real PostgreSQL and Redis: exact under a burst, idempotent under
redelivery, every reservation ended exactly once, expiry final, projection = replay."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from quotaflow.ledger.commands import Outcome, ReleaseReservation, ReserveTokens, SettleReservation
from quotaflow.ledger.projection import RedisProjection
from quotaflow.ledger.store import PostgresLedger
from tests.ledger.conftest import make_tenant


def count(conn: psycopg.Connection[Any], kind: str) -> int:
    row = conn.execute("SELECT count(*) FROM ledger_events WHERE kind = %s", (kind,)).fetchone()
    return int(row[0]) if row else 0


def test_burst_of_1000_concurrent_reservations_never_overshoots_the_grant(
        ledger_url: str, conn: psycopg.Connection[Any], projection: RedisProjection) -> None:
    make_tenant(conn, "burst", 1000)  # covers exactly 100 requests of 10 tokens
    local = threading.local()

    def reserve(i: int) -> Outcome:
        if not hasattr(local, "ledger"):
            local.ledger = PostgresLedger.connect(ledger_url)
        ledger: PostgresLedger = local.ledger
        return ledger.reserve([ReserveTokens("burst", f"b{i}", 10, "h")])[0]

    with ThreadPoolExecutor(32) as pool:
        outcomes = list(pool.map(reserve, range(1000)))
    accepted = [o for o in outcomes if o.accepted]
    rejected = [o for o in outcomes if o.kind == "RequestRejected"]
    assert len(accepted) == 100
    assert len(rejected) == 900
    assert all(o.reason == "quota_exceeded" for o in rejected)
    ledger = PostgresLedger(conn)
    period = ledger.current_period("burst")
    balance = ledger.balance("burst", period)
    assert (balance.granted, balance.reserved, balance.spent) == (1000, 1000, 0)
    assert count(conn, "TokensReserved") == 100
    assert count(conn, "RequestRejected") == 900
    projection.catch_up(ledger)
    assert projection.balance("burst", period) == balance


def test_redelivering_any_fraction_of_the_inputs_changes_nothing(
        conn: psycopg.Connection[Any], ledger: PostgresLedger) -> None:
    make_tenant(conn, "redo", 500)
    commands = [ReserveTokens("redo", f"r{i}", 30, "h") for i in range(30)]
    first = ledger.reserve(commands)
    events_before = conn.execute("SELECT count(*) FROM ledger_events").fetchone()
    rng = random.Random(7)
    for _ in range(5):
        again = rng.sample(commands, k=rng.randint(1, len(commands)))
        outcomes = ledger.reserve(again)
        assert outcomes == [first[commands.index(c)] for c in again]
    assert conn.execute("SELECT count(*) FROM ledger_events").fetchone() == events_before


def test_a_rejection_stays_a_rejection_after_tokens_free_up(
        conn: psycopg.Connection[Any], ledger: PostgresLedger) -> None:
    make_tenant(conn, "tight", 100)
    (big,) = ledger.reserve([ReserveTokens("tight", "big", 80, "h")])
    (late,) = ledger.reserve([ReserveTokens("tight", "late", 50, "h")])
    assert big.accepted and late.kind == "RequestRejected"
    ledger.end([ReleaseReservation("tight", "big", "failed", "x")])
    (again,) = ledger.reserve([ReserveTokens("tight", "late", 50, "h")])
    assert again == late
    (fresh,) = ledger.reserve([ReserveTokens("tight", "fresh", 50, "h")])
    assert fresh.accepted


def test_same_request_id_with_a_different_payload_is_refused(
        conn: psycopg.Connection[Any], ledger: PostgresLedger) -> None:
    make_tenant(conn, "conf", 100)
    (ok,) = ledger.reserve([ReserveTokens("conf", "x", 10, "payload-a")])
    (clash,) = ledger.reserve([ReserveTokens("conf", "x", 20, "payload-b")])
    assert ok.accepted
    assert clash.kind is None and clash.reason is not None
    assert clash.reason.startswith("idempotency_conflict")
    assert count(conn, "TokensReserved") == 1


def test_a_batch_rerun_after_a_crash_between_commit_and_offset_commit_is_harmless(
        conn: psycopg.Connection[Any], ledger: PostgresLedger) -> None:
    make_tenant(conn, "crash", 1000)
    reserve = [ReserveTokens("crash", f"c{i}", 40, "h") for i in range(10)]
    reserved = ledger.reserve(reserve)
    settle = [SettleReservation("crash", f"c{i}", 15, "s") for i in range(10)]
    settled = ledger.end(settle)
    # The consumer died before committing offsets: the same batches come again.
    assert ledger.reserve(reserve) == reserved
    assert ledger.end(settle) == settled
    b = ledger.balance("crash", ledger.current_period("crash"))
    assert (b.reserved, b.spent) == (0, 150)
    assert count(conn, "ReservationSettled") == 10


def test_settlement_charges_actual_tokens_and_never_more_than_reserved(
        conn: psycopg.Connection[Any], ledger: PostgresLedger) -> None:
    make_tenant(conn, "settle", 1000)
    ledger.reserve([ReserveTokens("settle", "a", 100, "h"), ReserveTokens("settle", "b", 50, "h")])
    a, b = ledger.end([SettleReservation("settle", "a", 30, "s"),
                       SettleReservation("settle", "b", 80, "s")])
    assert (a.amount, a.released) == (30, 70)
    assert (b.amount, b.released) == (50, 0)  # clamped to the reservation
    bal = ledger.balance("settle", ledger.current_period("settle"))
    assert (bal.reserved, bal.spent, bal.remaining) == (0, 80, 920)


def test_every_reservation_ends_exactly_once(
        conn: psycopg.Connection[Any], ledger: PostgresLedger) -> None:
    make_tenant(conn, "once", 1000)
    ledger.reserve([ReserveTokens("once", "r", 100, "h")])
    (released,) = ledger.end([ReleaseReservation("once", "r", "inference failed", "rel")])
    (settle_after,) = ledger.end([SettleReservation("once", "r", 10, "set")])
    assert released.kind == "ReservationReleased"
    assert settle_after.kind is None  # a different command for an ended reservation
    assert count(conn, "ReservationSettled") + count(conn, "ReservationReleased") == 1


def test_an_expired_reservation_cannot_be_settled_and_the_refusal_is_recorded(
        conn: psycopg.Connection[Any], ledger: PostgresLedger) -> None:
    make_tenant(conn, "exp", 1000)
    ledger.reserve([ReserveTokens("exp", "slow", 100, "h"), ReserveTokens("exp", "fast", 10, "h")])
    conn.execute("UPDATE reservations SET reserved_at = now() - interval '1 hour' "
                 "WHERE request_id = 'slow'")
    expired = ledger.expire_stale(ttl_s=60)
    assert [(o.request_id, o.kind) for o in expired] == [("slow", "ReservationExpired")]
    (late,) = ledger.end([SettleReservation("exp", "slow", 50, "late")])
    assert late.kind is None and late.reason == "reservation_expired"
    assert ledger.end([SettleReservation("exp", "slow", 50, "late")]) == [late]
    recorded = conn.execute("SELECT reason FROM ledger_commands "
                            "WHERE request_id = 'slow' AND command = 'end'").fetchone()
    assert recorded == ("reservation_expired",)
    bal = ledger.balance("exp", ledger.current_period("exp"))
    assert (bal.reserved, bal.spent) == (10, 0)
    # Expiry is a ledger event with the ledger's own time: replay never reads the clock.
    assert count(conn, "ReservationExpired") == 1
    assert ledger.expire_stale(ttl_s=60) == []


def test_projection_equals_a_replay_after_interleavings_reapplies_and_a_rebuild(
        conn: psycopg.Connection[Any], ledger: PostgresLedger,
        projection: RedisProjection) -> None:
    rng = random.Random(11)
    for t in ("p1", "p2", "p3"):
        make_tenant(conn, t, 2000)
    open_ids: list[tuple[str, str]] = []
    for i in range(200):
        tenant = rng.choice(["p1", "p2", "p3"])
        action = rng.random()
        if action < 0.5 or not open_ids:
            ledger.reserve([ReserveTokens(tenant, f"q{i}", rng.randint(1, 120), "h")])
            open_ids.append((tenant, f"q{i}"))
        elif action < 0.8:
            t, r = open_ids.pop(rng.randrange(len(open_ids)))
            ledger.end([SettleReservation(t, r, rng.randint(0, 150), "s")])
        else:
            t, r = open_ids.pop(rng.randrange(len(open_ids)))
            ledger.end([ReleaseReservation(t, r, "failed", "r")])
        if rng.random() < 0.2:
            projection.catch_up(ledger)
        if rng.random() < 0.05:  # re-apply an old slice: must change nothing
            projection.apply(ledger.events_after(0, 50))
    projection.catch_up(ledger)
    snapshot = {k: v for k, v in projection.balances().items()}
    tables = {(t, p): ledger.balance(t, p) for (t, p) in snapshot}
    assert snapshot == tables
    projection.redis.flushdb()
    projection.rebuild(ledger)
    assert projection.balances() == snapshot


def test_a_reader_tailing_the_sequence_never_skips_an_event_that_commits_late(
        ledger_url: str, conn: psycopg.Connection[Any]) -> None:
    # One tenant per writer, so no stream lock orders them: only the ledger-wide append lock
    # keeps commit order equal to sequence order.
    writers, batches, size = 6, 40, 8
    for w in range(writers):
        make_tenant(conn, f"tail{w}", 10**9)
    (start,) = conn.execute("SELECT coalesce(max(seq), 0) FROM ledger_events").fetchone() or (0,)
    done = threading.Event()
    seen: list[int] = []

    def tail() -> None:
        reader = PostgresLedger.connect(ledger_url)
        last = start
        while True:
            finished = done.is_set()
            for ev in reader.events_after(last):
                seen.append(ev.seq)
                last = ev.seq
            if finished:
                break
        reader.close()

    def write(w: int) -> None:
        ledger = PostgresLedger.connect(ledger_url)
        for b in range(batches):
            ledger.reserve([ReserveTokens(f"tail{w}", f"tail{w}-{b}-{i}", 1, "h")
                            for i in range(size)])
        ledger.close()

    reader = threading.Thread(target=tail)
    reader.start()
    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(write, range(writers)))
    done.set()
    reader.join()
    committed = [r[0] for r in conn.execute(
        "SELECT seq FROM ledger_events WHERE seq > %s ORDER BY seq", (start,)).fetchall()]
    assert len(committed) == writers * batches * size
    assert seen == committed
