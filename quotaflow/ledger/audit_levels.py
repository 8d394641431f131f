"""`quotaflow audit`, budget levels and prices: replays every reservation event into each of
its levels (key, team, tenant) with `budgets.apply_hold`, compares the replay with the
`level_balances` snapshot the decisions read, and prices every reservation and settlement
again at the price version it names: a reservation's money is its worst case at that version,
a settlement's charge its actual tokens at that same version, and an ending returns exactly
what its reservation held; and compares the replay with the Redis projection's levels, field by
field (`compare_level_projection`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg

from quotaflow.events.status import LedgerKind, LevelScope
from quotaflow.ledger.audit import Audit
from quotaflow.ledger.budgets import (
    FREE,
    Hold,
    LevelBalance,
    Price,
    apply_hold,
    settled_usd,
    worst_case_usd,
)
from quotaflow.ledger.level_projection import LEVEL_FIELDS, LevelKey

_ENDINGS = (LedgerKind.RESERVATION_SETTLED, LedgerKind.RESERVATION_RELEASED,
            LedgerKind.RESERVATION_EXPIRED)


def _levels(tenant: str, key_id: str | None, team_id: str | None,
            period: str) -> list[LevelKey]:
    out = [(LevelScope.TENANT.value, tenant, period)]
    if key_id is not None:
        out.append((LevelScope.KEY.value, key_id, period))
    if team_id is not None:
        out.append((LevelScope.TEAM.value, f"{tenant}/{team_id}", period))
    return out


def compare_levels(audit: Audit, conn: psycopg.Connection[Any],
                   tenant: str | None) -> dict[LevelKey, LevelBalance]:
    """Replay every level of every period, check each event's money against its price
    version, and compare the replay with `level_balances`. Findings go to `audit`; the
    replayed levels are returned (for `compare_level_projection`)."""
    prices = {(p[0], p[1]): Price(*p) for p in conn.execute(
        "SELECT model, version, input_per_mtok, output_per_mtok FROM prices").fetchall()}
    book: dict[LevelKey, LevelBalance] = {}
    held: dict[str, tuple[Hold, Price, int]] = {}  # open reservations: hold, price, input
    rows = conn.execute(
        "SELECT seq, tenant_id, kind, request_id, period, amount, released, key_id, team_id, "
        "usd, usd_released, model, price_version, input_tokens FROM ledger_events "
        "WHERE kind <> 'QuotaGranted' AND (%s::text IS NULL OR tenant_id = %s) ORDER BY seq",
        (tenant, tenant))
    for (seq, t, kind, rid, period, amount, released, key_id, team_id, usd, usd_released,
         model, version, input_tokens) in rows:
        kind = LedgerKind(kind)
        if kind is LedgerKind.REQUEST_REJECTED:
            continue
        if kind is LedgerKind.TOKENS_RESERVED:
            price = FREE if version is None else prices.get((model, version))
            if price is None:
                audit.findings.append(f"seq {seq}: price version {model} v{version} is gone")
                price = FREE
            want = worst_case_usd(price, input_tokens or 0, amount - (input_tokens or 0))
            if usd != want:
                audit.findings.append(f"seq {seq}: {rid} reserved {usd} micro-USD, its worst "
                                      f"case at {model} v{version} is {want}")
            hold = Hold(amount, usd)
            held[rid] = (hold, price, input_tokens or 0)
        else:
            opened = held.pop(rid, None)
            if opened is None:
                if kind in _ENDINGS and usd:  # a reservation from before the levels existed
                    audit.findings.append(f"seq {seq}: {rid} ends a reservation never replayed")
                continue
            reserved, price, input_n = opened
            if kind is LedgerKind.RESERVATION_SETTLED:
                want = settled_usd(price, input_n, amount, reserved.usd)
                if usd != want or usd + usd_released != reserved.usd:
                    audit.findings.append(f"seq {seq}: {rid} settled {usd} micro-USD (returned "
                                          f"{usd_released}); at its price it owes {want} of "
                                          f"{reserved.usd}")
                hold = Hold(amount + released, usd + usd_released, amount, usd)
            else:
                if usd != reserved.usd:
                    audit.findings.append(f"seq {seq}: {rid} returned {usd} micro-USD of "
                                          f"{reserved.usd} held")
                hold = Hold(amount, usd)
        for lk in _levels(t, key_id, team_id, period):
            book[lk] = apply_hold(book.get(lk, LevelBalance()), kind, hold)
    _compare_snapshot(audit, conn, tenant, dict(book))
    return book


def compare_level_projection(audit: Audit, projected: Mapping[LevelKey, LevelBalance],
                             replayed: Mapping[LevelKey, LevelBalance],
                             period: str | None) -> None:
    """Each level's projected balance against the replay, a finding per field that differs
    (a level missing on one side is zero there): `key k1 2026-11: reserved_usd projected in
    Redis 0 != ledger replay 290`. Both sides hold the levels of the same tenant(s)."""
    for scope, level_id, p in sorted(set(projected) | set(replayed)):
        if period and p != period:
            continue
        got = projected.get((scope, level_id, p), LevelBalance())
        want = replayed.get((scope, level_id, p), LevelBalance())
        for field in LEVEL_FIELDS:
            if getattr(got, field) != getattr(want, field):
                audit.findings.append(f"{scope} {level_id} {p}: {field} projected in Redis "
                                      f"{getattr(got, field)} != ledger replay "
                                      f"{getattr(want, field)}")


def _compare_snapshot(audit: Audit, conn: psycopg.Connection[Any], tenant: str | None,
                      book: dict[LevelKey, LevelBalance]) -> None:
    rows = conn.execute(
        "SELECT scope, level_id, period, reserved_tokens, spent_tokens, reserved_usd, "
        "spent_usd FROM level_balances").fetchall()
    for scope, level_id, period, *values in rows:
        if tenant and not (level_id == tenant or level_id.startswith(f"{tenant}/")
                           or scope == LevelScope.KEY.value):
            continue
        stored = LevelBalance(*values)
        replayed = book.pop((scope, level_id, period), LevelBalance())
        if tenant and scope == LevelScope.KEY.value and replayed == LevelBalance():
            continue  # another tenant's key
        if stored != replayed:
            audit.findings.append(f"{scope} {level_id} {period}: level_balances {stored} != "
                                  f"replay {replayed}")
    for (scope, level_id, period), b in sorted(book.items()):
        if b != LevelBalance():
            audit.findings.append(f"{scope} {level_id} {period}: no level_balances row for "
                                  f"a replayed level")
