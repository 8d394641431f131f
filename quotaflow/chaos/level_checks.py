"""The chaos checks on budget levels, prices and threshold alerts, from the ledger's rows, the
configured limits, price versions and alerts, and what the harness's webhook receiver took.
Pure: each check is tested on synthetic data (tests/chaos/test_checks.py).

A request is held at its key, its key's team and its tenant (`quotaflow.ledger.budgets`); the
replays here follow the reservation's own levels to its ending, by this module's arithmetic,
so a ledger that wrote an ending to the wrong level or skipped one shows up as an excess."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable

from quotaflow.chaos.facts import AlertRule, LedgerRow, Limits, PriceRow, Receipt
from quotaflow.events.status import LedgerKind
from quotaflow.ledger.budgets import Price, format_usd, settled_usd, worst_case_usd

_ENDINGS = (LedgerKind.RESERVATION_SETTLED, LedgerKind.RESERVATION_RELEASED,
            LedgerKind.RESERVATION_EXPIRED)
UNITS = ("tokens", "usd")
# (scope, id as the alert's CloudEvent names it, unit, threshold percent, period)
CrossingKey = tuple[str, str, str, int, str]


def levels_of(ev: LedgerRow) -> list[tuple[str, str]]:
    """The levels an event's request is held at, as `Limits` keys: tenant, team, key."""
    out = [("tenant", ev.tenant)]
    if ev.team_id is not None:
        out.append(("team", f"{ev.tenant}/{ev.team_id}"))
    if ev.key_id is not None:
        out.append(("key", ev.key_id))
    return out


def _amount(unit: str, value: int) -> str:
    return f"${format_usd(value)}" if unit == "usd" else f"{value} tokens"


def find_level_overshoot(ledger: list[LedgerRow], limits: Limits) -> list[str]:
    """Replay in sequence order: a level whose open reservations plus spending ever exceeded
    its limit, in tokens or in money, after any event (its worst excess, per period). A
    tenant's token limit is its grant, which `checks.find_overshoot` judges."""
    used: dict[tuple[str, str, str, str], int] = defaultdict(int)  # scope, id, period, unit
    held: dict[str, tuple[list[tuple[str, str]], int, int]] = {}
    peak: dict[tuple[str, str, str, str], int] = {}
    for ev in sorted(ledger, key=lambda e: e.seq):
        if ev.kind == LedgerKind.TOKENS_RESERVED and ev.request_id is not None:
            levels = levels_of(ev)
            held[ev.request_id] = (levels, ev.amount, ev.usd)
            deltas = (ev.amount, ev.usd)
        elif ev.request_id in held and ev.kind in _ENDINGS:
            assert ev.request_id is not None
            levels, tokens, usd = held.pop(ev.request_id)
            settled = ev.kind == LedgerKind.RESERVATION_SETTLED
            deltas = (-tokens + (ev.amount if settled else 0), -usd + (ev.usd if settled else 0))
        else:
            continue
        for level in levels:
            for i, unit in enumerate(UNITS):
                key = (*level, ev.period, unit)
                used[key] += deltas[i]
                limit = limits.get(level, (None, None))[i]
                if limit is not None and used[key] > limit:
                    peak[key] = max(peak.get(key, 0), used[key] - limit)
    return [f"{scope} {level_id} {period}: {_amount(unit, over)} over its limit of "
            f"{_amount(unit, limits[(scope, level_id)][UNITS.index(unit)] or 0)}"
            for (scope, level_id, period, unit), over in sorted(peak.items())]


def find_price_errors(ledger: list[LedgerRow], prices: list[PriceRow]) -> list[str]:
    """Reservations not at the price version in force when the ledger decided them (older
    than one committed before, or older than an earlier reservation of the same tenant), or
    whose money is not their worst case at it; settlements not charged their actual tokens at
    their reservation's version; endings that return other than what was held."""
    versions = {(p.model, p.version): p for p in prices}
    out: list[str] = []
    held: dict[str, tuple[Price, int, int]] = {}  # price, input tokens, usd reserved
    latest: dict[tuple[str, str], int] = {}  # (tenant, model): newest version reserved at
    for ev in sorted(ledger, key=lambda e: e.seq):
        rid = ev.request_id
        if ev.kind == LedgerKind.TOKENS_RESERVED and rid is not None and ev.model:
            in_force = max((p.version for p in prices if p.model == ev.model
                            and p.in_force_at is not None and p.in_force_at <= ev.at),
                           default=0)
            version = ev.price_version or 0
            row = versions.get((ev.model, version))
            if version and row is None:
                out.append(f"seq {ev.seq}: {rid} reserved at {ev.model} v{version}, "
                           "which does not exist")
                continue
            if version < in_force:
                out.append(f"seq {ev.seq}: {rid} reserved at {ev.model} v{version}; "
                           f"v{in_force} was in force before it")
            if version < latest.get((ev.tenant, ev.model), 0):
                out.append(f"seq {ev.seq}: {rid} reserved at {ev.model} v{version} after "
                           f"{ev.tenant} reserved at v{latest[(ev.tenant, ev.model)]}")
            latest[(ev.tenant, ev.model)] = max(version, latest.get((ev.tenant, ev.model), 0))
            price = (Price(row.model, row.version, row.input_per_mtok, row.output_per_mtok)
                     if row else Price(ev.model, 0, 0, 0))
            n_in = ev.input_tokens or 0
            want = worst_case_usd(price, n_in, ev.amount - n_in)
            if ev.usd != want:
                out.append(f"seq {ev.seq}: {rid} reserved ${format_usd(ev.usd)}, its worst "
                           f"case at v{version} is ${format_usd(want)}")
            held[rid] = (price, n_in, ev.usd)
        elif rid in held and ev.kind in _ENDINGS:
            assert rid is not None
            price, n_in, reserved = held.pop(rid)
            if ev.kind == LedgerKind.RESERVATION_SETTLED:
                want = settled_usd(price, n_in, ev.amount, reserved)
                if ev.usd != want or ev.usd + ev.usd_released != reserved:
                    out.append(f"seq {ev.seq}: {rid} charged ${format_usd(ev.usd)} (returned "
                               f"${format_usd(ev.usd_released)}) for {ev.amount} tokens; at "
                               f"v{price.version} it owes ${format_usd(want)} of "
                               f"${format_usd(reserved)}")
            elif ev.usd != reserved:
                out.append(f"seq {ev.seq}: {rid} ended returning ${format_usd(ev.usd)} of "
                           f"${format_usd(reserved)} held")
    return out


def expected_crossings(ledger: list[LedgerRow], limits: Limits,
                       rules: Iterable[AlertRule]) -> set[CrossingKey]:
    """The crossings the ledger made: an alert's level whose spent (tokens or usd, summed over
    its settlements in the period) reached its threshold of the level's limit. Levels without
    a limit in `limits` cross nothing."""
    by_level: dict[tuple[str, str, str], list[AlertRule]] = defaultdict(list)
    for rule in rules:
        by_level[(rule.tenant, rule.scope, rule.scope_id)].append(rule)
    spent: dict[tuple[str, str, str, str, str], int] = defaultdict(int)
    out: set[CrossingKey] = set()
    for ev in sorted(ledger, key=lambda e: e.seq):
        if ev.kind != LedgerKind.RESERVATION_SETTLED:
            continue
        for scope, level_id in levels_of(ev):
            alert_id = level_id.split("/", 1)[1] if scope == "team" else level_id
            for i, unit in enumerate(UNITS):
                key = (ev.tenant, scope, alert_id, ev.period, unit)
                spent[key] += ev.amount if unit == "tokens" else ev.usd
                limit = limits.get((scope, level_id), (None, None))[i]
                for rule in by_level.get((ev.tenant, scope, alert_id), []):
                    if limit and spent[key] * 100 >= rule.threshold_percent * limit:
                        out.add((scope, alert_id, unit, rule.threshold_percent, ev.period))
    return out


def _crossing_of(body: str) -> CrossingKey | None:
    try:
        data = json.loads(body)["data"]
        return (str(data["scope"]), str(data["id"]), str(data["unit"]),
                int(data["threshold_percent"]), str(data["period"]))
    except (ValueError, KeyError, TypeError):
        return None


def find_alert_errors(receipts: list[Receipt] | None, expected: set[CrossingKey]) -> list[str]:
    """Deliveries whose signature does not verify or whose body is not a threshold event; a
    crossing delivered under more than one webhook-id (a retry must keep its id) or never
    answered 2xx; a webhook-id sent with two bodies; a crossing the ledger never made."""
    if receipts is None:
        return []
    out: list[str] = []
    ids: dict[CrossingKey, set[str]] = defaultdict(set)
    bodies: dict[str, set[str]] = defaultdict(set)
    answered: set[CrossingKey] = set()
    for r in receipts:
        if not r.signature_ok:
            out.append(f"webhook {r.webhook_id}: the signature does not verify")
        crossing = _crossing_of(r.body)
        if crossing is None:
            out.append(f"webhook {r.webhook_id}: not a threshold event: {r.body[:80]!r}")
            continue
        ids[crossing].add(r.webhook_id)
        bodies[r.webhook_id].add(r.body)
        if 200 <= r.answered < 300 and r.signature_ok:
            answered.add(crossing)
    out += [f"webhook {w}: sent with {len(b)} different bodies"
            for w, b in sorted(bodies.items()) if len(b) > 1]
    for crossing, found in sorted(ids.items()):
        name = "{} {} {} at {}% in {}".format(*crossing)
        if len(found) > 1:
            out.append(f"alert {name}: delivered {len(found)} times (distinct webhook-ids)")
        if crossing not in expected:
            out.append(f"alert {name}: delivered, but the ledger never crossed it")
    out += ["alert {} {} {} at {}% in {}: crossed, never delivered".format(*c)
            for c in sorted(expected - answered)]
    return out
