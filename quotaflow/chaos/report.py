"""A chaos run's result: the table it prints (Markdown, to paste into BENCHMARKS.md) and the
JSON it writes."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from quotaflow.chaos.checks import Verdict
from quotaflow.chaos.facts import TERMINAL, Outcome, Snapshot
from quotaflow.chaos.faults import FaultRecord
from quotaflow.chaos.plan import FAULT_KINDS, LEVELS_TENANT
from quotaflow.events.status import LedgerKind

_DETAIL_LINES = 20  # per kind of finding, in the printed report


@dataclass
class Result:
    """Everything a run produced."""

    config: dict[str, Any]
    faults: list[FaultRecord]
    outcomes: list[Outcome]
    snapshot: Snapshot
    verdict: Verdict
    quiet: bool  # every request ended before the timeout
    last_recovery_s: float | None
    seconds: dict[str, float] = field(default_factory=dict)
    planned_faults: int | None = None  # None: as many as were injected

    @property
    def ok(self) -> bool:
        """Nothing found, every request ended, every planned fault injected and the pipeline
        working again after the last."""
        planned = len(self.faults) if self.planned_faults is None else self.planned_faults
        recovered = planned == 0 or (len(self.faults) == planned
                                     and self.last_recovery_s is not None)
        return self.quiet and self.verdict.ok and recovered


def load_counts(outcomes: list[Outcome]) -> dict[str, int]:
    """Sends by kind and how the door answered them (probes and hostile clients apart: a
    hostile client's outcome stands for many calls, judged by `door_checks.hostile_findings`)."""
    sent = [o for o in outcomes if o.kind not in ("probe", "hostile")]
    return {"sent": len(sent),
            "resends": sum(o.kind == "resend" for o in sent),
            "bad inputs": sum(o.kind == "bad" for o in sent),
            "accepted (202)": sum(o.status == 202 for o in sent),
            "requests accepted": len({o.request_id for o in sent if o.status == 202}),
            "refused at the door (4xx)": sum(o.status is not None and 400 <= o.status < 500
                                             for o in sent),
            "unanswered": sum(o.status is None or o.status >= 500 for o in sent),
            "left at 503": sum(o.status == 503 for o in sent),
            "answered after a retry": sum(o.retried > 0 and o.status is not None
                                          and o.status < 500 for o in sent),
            "hostile clients": sum(o.kind == "hostile" for o in outcomes),
            "probes": sum(o.kind == "probe" for o in outcomes)}


def final_statuses(snap: Snapshot) -> dict[str, int]:
    """Request records by final status."""
    counts = Counter(r.status for r in snap.requests.values())
    return {s: counts.get(s, 0) for s in (*TERMINAL, *sorted(set(counts) - set(TERMINAL)))}


def levels_summary(snap: Snapshot) -> str:
    """What the levels tenant did: reservations at each price version, rejections, and the
    alerts' distinct webhook-ids and attempts."""
    mine = [e for e in snap.ledger if e.tenant == LEVELS_TENANT]
    if not mine:
        return "-"
    versions = Counter(e.price_version for e in mine if e.kind == LedgerKind.TOKENS_RESERVED)
    refused = Counter(refused_by(e.reason or "") for e in mine
                      if e.kind == LedgerKind.REQUEST_REJECTED)
    receipts = snap.receipts or []
    return (", ".join(f"{n} reserved at v{v}" for v, n in sorted(
        versions.items(), key=lambda x: x[0] or 0)) + f"; {refused.total()} rejected"
        + "".join(f", {n} by {level}" for level, n in sorted(refused.items()))
        + f"; alerts: {len({r.webhook_id for r in receipts})} webhook-ids, "
        f"{len(receipts)} attempts")


def refused_by(reason: str) -> str:
    """The level and unit a rejection's reason names: `quota_exceeded: team 'ml' of tenant
    't' has $0.000100 of $0.002000 left this period` -> `team 'ml' usd`."""
    level, _, left = reason.removeprefix("quota_exceeded: ").partition(" has ")
    if not left:  # the tenant's grant keeps the reason it had before levels
        return "tenant tokens" if reason == "quota_exceeded" else reason or "?"
    return f"{level.split(' of tenant')[0]} {'usd' if left.startswith('$') else 'tokens'}"


def fault_rows(faults: list[FaultRecord]) -> list[tuple[str, int, str]]:
    """(kind, count, longest recovery) per kind injected."""
    rows = []
    for kind in FAULT_KINDS:
        mine = [f for f in faults if f.kind == kind]
        if not mine:
            continue
        times = [f.recovered_s for f in mine if f.recovered_s is not None]
        longest = f"{max(times):.1f} s" if times else "-"
        if len(times) < len(mine):
            longest += f" ({len(mine) - len(times)} not before the next fault)"
        if kind == "kill":
            kind = "kill (" + ", ".join(f"{n} {t}" for t, n in sorted(
                Counter(f.target for f in mine).items())) + ")"
        rows.append((kind, len(mine), longest))
    return rows


def table(result: Result) -> str:
    """The result table, Markdown."""
    v = result.verdict.counts()
    load = load_counts(result.outcomes)
    lines = ["| fault | injected | longest recovery |", "|---|---|---|"]
    if result.planned_faults is not None and result.planned_faults != len(result.faults):
        lines.insert(0, f"only {len(result.faults)} of {result.planned_faults} planned faults "
                     "were injected\n")
    lines += [f"| {k} | {n} | {r} |" for k, n, r in fault_rows(result.faults)] or [
        "| (none) | 0 | - |"]
    rec = result.last_recovery_s
    rows: list[tuple[str, object]] = [
        ("requests sent (POSTs, both copies of a twin)", load["sent"]),
        ("  of which exact resends / bad inputs",
         f"{load['resends']} / {load['bad inputs']}"),
        ("hostile clients (floods, hang-ups, retries after 5xx; door findings if mis-answered)",
         str(load["hostile clients"])),
        ("accepted (202)", f"{load['accepted (202)']} answers, "
                           f"{load['requests accepted']} requests"),
        ("refused at the door (4xx)", load["refused at the door (4xx)"]),
        ("unanswered (no answer or 5xx after retries; each a door finding)",
         load["unanswered"]),
        ("  of which still 503 after the client's retries", load["left at 503"]),
        ("answered 202 or 4xx only after a 5xx or no answer (the client sent again)",
         load["answered after a retry"]),
        ("final statuses", ", ".join(f"{s} {n}" for s, n in
                                     final_statuses(result.snapshot).items())),
        ("**lost** (accepted, not ended)", v["lost"]),
        ("**double charges** (charged twice, or record != ledger)", v["double_charges"]),
        ("**overshoot** (tenants over their grant)", v["overshoot"]),
        ("**leaked reservations**", v["leaked"]),
        ("terminal status changed", v["status_changes"]),
        ("projection != replay", v["projection"]),
        ("audit differences", v["audit"]),
        ("door findings", v["door"]),
        ("per-tenant order broken (topics, ledger)", v["order"]),
        (f"{LEVELS_TENANT} (teams, keys, a price change, alerts)",
         levels_summary(result.snapshot)),
        ("**levels over a limit** (key, team, tenant; tokens or usd, event by event)",
         v["levels"]),
        ("money not at the price version in force (reserved, settled, returned)", v["prices"]),
        ("alert crossings not delivered exactly once with a valid signature", v["alerts"]),
        ("restarts by the stack's supervisor", ", ".join(
            f"{n} {c}" for n, c in result.config.get("restarts", {}).items() if c) or "none"),
        ("processes dead at the end", ", ".join(result.config.get("dead_at_end", [])) or "none"),
        ("seconds to recover after the last fault",
         "-" if not result.faults else (f"{rec:.1f}" if rec is not None else "not recovered")),
    ]
    lines += ["", "| check | result |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    verdict = "PASS" if result.ok else "FAIL"
    if not result.quiet:
        verdict += " (requests still open at the timeout)"
    lines += ["", f"{verdict}: {result.config.get('summary', '')}".rstrip(": ")]
    for kind, found in vars(result.verdict).items():
        for line in found[:_DETAIL_LINES]:
            lines.append(f"{kind.upper()}: {line}")
        if len(found) > _DETAIL_LINES:
            lines.append(f"{kind.upper()}: ... and {len(found) - _DETAIL_LINES} more")
    return "\n".join(lines) + "\n"


def as_json(result: Result) -> dict[str, Any]:
    """The result for `--json`: settings, faults, counts and every finding."""
    return {"ok": result.ok, "config": result.config, "quiet": result.quiet,
            "planned_faults": result.planned_faults,
            "faults": [asdict(f) for f in result.faults],
            "last_recovery_s": result.last_recovery_s,
            "load": load_counts(result.outcomes),
            "final_statuses": final_statuses(result.snapshot),
            "findings": {**vars(result.verdict)}, "counts": result.verdict.counts(),
            "seconds": result.seconds}
