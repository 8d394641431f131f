"""The verdict of a chaos run, computed from what the door answered and what the stack holds at
the end. Pure: no I/O, so each check is tested on synthetic data and cannot pass silently."""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field

from quotaflow.chaos.door_checks import door_findings, hostile_findings
from quotaflow.chaos.facts import (
    TERMINAL,
    Balances,
    LedgerRow,
    Outcome,
    RequestRow,
    Snapshot,
)
from quotaflow.chaos.level_checks import (
    expected_crossings,
    find_alert_errors,
    find_level_overshoot,
    find_price_errors,
)
from quotaflow.chaos.order import find_order_breaks
from quotaflow.events.status import LedgerKind, RequestStatus

_RANK: dict[str, int] = {RequestStatus.QUEUED: 0, RequestStatus.RESERVED: 1,
                         **{s: 2 for s in TERMINAL}}


@dataclass
class Verdict:
    """Each kind of finding, as readable lines."""

    lost: list[str] = field(default_factory=list)
    status_changes: list[str] = field(default_factory=list)
    double_charges: list[str] = field(default_factory=list)
    overshoot: list[str] = field(default_factory=list)
    leaked: list[str] = field(default_factory=list)
    projection: list[str] = field(default_factory=list)
    audit: list[str] = field(default_factory=list)
    door: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    levels: list[str] = field(default_factory=list)  # a key, team or tenant over a limit
    prices: list[str] = field(default_factory=list)  # money not at the version in force
    alerts: list[str] = field(default_factory=list)  # a crossing not delivered once, signed

    def counts(self) -> dict[str, int]:
        """How many findings of each kind."""
        return {k: len(v) for k, v in vars(self).items()}

    @property
    def ok(self) -> bool:
        return not any(vars(self).values())


def find_lost(snap: Snapshot) -> list[str]:
    """Accepted requests with no record, and records not terminal at the end."""
    out = [f"request {r} accepted (202) but has no record" for r in sorted(snap.accepted)
           if r not in snap.requests]
    out += [f"request {r.request_id} ({r.tenant}) still {r.status}"
            for r in sorted(snap.requests.values(), key=lambda r: r.request_id)
            if r.status not in TERMINAL]
    return out


def find_status_changes(history: dict[str, list[str]]) -> list[str]:
    """A status that moved backwards, or a terminal status replaced by another."""
    out = []
    for request_id, seen in sorted(history.items()):
        terminal = list(dict.fromkeys(s for s in seen if s in TERMINAL))
        if len(terminal) > 1:
            out.append(f"request {request_id} ended {' then '.join(terminal)}")
            continue
        ranks = [_RANK.get(s, -1) for s in seen]
        if any(b < a for a, b in itertools.pairwise(ranks)):
            out.append(f"request {request_id} went back: {' -> '.join(seen)}")
    return out


def find_charge_errors(requests: dict[str, RequestRow], ledger: list[LedgerRow]) -> list[str]:
    """Requests the ledger charged more than once or reserved more than once, and records whose
    charge is not the ledger's (including a ledger charge with no record)."""
    settled: dict[str, list[int]] = defaultdict(list)
    reserved: dict[str, int] = defaultdict(int)
    for ev in ledger:
        if ev.request_id is None:
            continue
        if ev.kind == LedgerKind.RESERVATION_SETTLED:
            settled[ev.request_id].append(ev.amount)
        elif ev.kind == LedgerKind.TOKENS_RESERVED:
            reserved[ev.request_id] += 1
    out = [f"request {r} reserved {n} times" for r, n in sorted(reserved.items()) if n > 1]
    out += [f"request {r} charged {len(a)} times ({'+'.join(map(str, a))})"
            for r, a in sorted(settled.items()) if len(a) > 1]
    for request_id in sorted(set(settled) | set(requests)):
        ledger_charge = sum(settled.get(request_id, ()))
        row = requests.get(request_id)
        if row is None:
            out.append(f"request {request_id}: the ledger charged {ledger_charge}, no record")
        elif row.charged != ledger_charge:
            out.append(f"request {request_id} ({row.tenant}) recorded {row.status} charged "
                       f"{row.charged}, the ledger charged {ledger_charge}")
    return out


def find_overshoot(ledger: list[LedgerRow], grants: dict[str, int]) -> list[str]:
    """Replay in sequence order: a tenant whose open reservations plus spending ever exceeded
    its grant (the configured grant, so a doubled QuotaGranted counts too)."""
    open_: dict[tuple[str, str], int] = defaultdict(int)
    spent: dict[tuple[str, str], int] = defaultdict(int)
    granted: dict[tuple[str, str], int] = defaultdict(int)
    held: dict[str, tuple[tuple[str, str], int]] = {}
    peak: dict[tuple[str, str], int] = {}
    for ev in sorted(ledger, key=lambda e: e.seq):
        key = (ev.tenant, ev.period)
        if ev.kind == LedgerKind.QUOTA_GRANTED:
            granted[key] += ev.amount
        elif ev.kind == LedgerKind.TOKENS_RESERVED and ev.request_id is not None:
            held[ev.request_id] = (key, ev.amount)
            open_[key] += ev.amount
        elif ev.request_id in held and ev.kind in (LedgerKind.RESERVATION_SETTLED,
                                                   LedgerKind.RESERVATION_RELEASED,
                                                   LedgerKind.RESERVATION_EXPIRED):
            hkey, amount = held.pop(ev.request_id)
            open_[hkey] -= amount
            if ev.kind == LedgerKind.RESERVATION_SETTLED:
                spent[hkey] += ev.amount
        limit = min(granted[key], grants.get(ev.tenant, granted[key]))
        over = open_[key] + spent[key] - limit
        if over > 0:
            peak[key] = max(peak.get(key, 0), over)
    return [f"{t} {p}: {over} tokens over its grant of {grants.get(t, granted[(t, p)])}"
            for (t, p), over in sorted(peak.items())]


def find_leaks(snap: Snapshot) -> list[str]:
    """Reservations still open past their TTL (and a sweep), or open for a request that has
    already ended."""
    out = []
    for r in sorted(snap.open_reservations, key=lambda r: r.request_id):
        row = snap.requests.get(r.request_id)
        if r.age_s > snap.ttl_s + snap.sweep_s:
            out.append(f"reservation {r.request_id} ({r.tenant}) open {r.age_s:.0f} s, "
                       f"TTL {snap.ttl_s:.0f} s")
        elif row is not None and row.status in TERMINAL:
            out.append(f"reservation {r.request_id} ({r.tenant}) open, its request {row.status}")
    return out


def replay_balances(ledger: list[LedgerRow]) -> Balances:
    """(granted, open, spent) per (tenant, period), by this module's own arithmetic."""
    out: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    held: dict[str, tuple[tuple[str, str], int]] = {}
    for ev in sorted(ledger, key=lambda e: e.seq):
        b = out[(ev.tenant, ev.period)]
        if ev.kind == LedgerKind.QUOTA_GRANTED:
            b[0] += ev.amount
        elif ev.kind == LedgerKind.TOKENS_RESERVED and ev.request_id is not None:
            held[ev.request_id] = ((ev.tenant, ev.period), ev.amount)
            b[1] += ev.amount
        elif ev.request_id in held and ev.kind != LedgerKind.REQUEST_REJECTED:
            key, amount = held.pop(ev.request_id)
            out[key][1] -= amount
            if ev.kind == LedgerKind.RESERVATION_SETTLED:
                out[key][2] += ev.amount
    return {k: (g, o, s) for k, (g, o, s) in out.items()}


def compare_projection(ledger: list[LedgerRow], projection: Balances) -> list[str]:
    """Every (tenant, period) whose projected balance is not the replay's."""
    replayed = replay_balances(ledger)
    out = []
    for key in sorted(set(replayed) | set(projection)):
        want, got = replayed.get(key, (0, 0, 0)), projection.get(key, (0, 0, 0))
        if want != got:
            out.append(f"{key[0]} {key[1]}: projection (granted, reserved, spent) {got} != "
                       f"replay {want}")
    return out


# What an answer's detail must never name: a stack trace, an exception, a source file.
def judge(snap: Snapshot, outcomes: list[Outcome]) -> Verdict:
    """Every check on the run."""
    return Verdict(
        lost=find_lost(snap),
        status_changes=find_status_changes(snap.history),
        double_charges=find_charge_errors(snap.requests, snap.ledger),
        overshoot=find_overshoot(snap.ledger, snap.grants),
        leaked=find_leaks(snap),
        projection=(["the projection could not be read"] if snap.projection is None
                    else compare_projection(snap.ledger, snap.projection)),
        audit=[] if snap.audit_ok else (snap.audit_findings or ["quotaflow audit failed"]),
        door=door_findings(outcomes) + hostile_findings(snap, outcomes),
        order=[] if snap.records is None else find_order_breaks(snap.records, snap.ledger),
        levels=find_level_overshoot(snap.ledger, snap.limits),
        prices=find_price_errors(snap.ledger, snap.prices),
        alerts=find_alert_errors(snap.receipts, expected_crossings(
            snap.ledger, snap.limits, snap.alert_rules)))
