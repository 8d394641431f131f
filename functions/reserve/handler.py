"""reserve: the authoritative quota check. The whole batch is decided in one ledger call;
each request gets TokensReserved (-> `reserved`) or RequestRejected (-> `rejected`).
A redelivered or resent request gets its first outcome again: the command's digest covers only
the client's request and its estimate (`quotaflow.runtime.idempotency`).

The door held an upper bound of each request's tokens in its key's rolling minute (it cannot
count prompt tokens); once the ledger has decided, that is lowered to what was reserved, or to
nothing for a rejection, so a key's tokens per minute counts what its requests reserved."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from quotaflow.events.payloads import Estimated, Rejected, Reserved
from quotaflow.ports import (
    Ledger,
    Projection,
    RequestStore,
    ReservedMark,
    ReservedTokens,
    ReserveTokens,
    TokenWindow,
)
from quotaflow.runtime import metrics
from quotaflow.runtime.idempotency import reserve_digest
from quotaflow.runtime.step import Step


@dataclass(frozen=True)
class ReservePorts:
    ledger: Ledger
    projection: Projection
    requests: RequestStore
    window: TokenWindow | None = None  # None: no key's tokens per minute is trimmed here


def handle(payloads: Sequence[Estimated], ports: ReservePorts) -> list[Reserved | Rejected]:
    """Reserve each request's worst case, or reject it; one output per input, in order."""
    outcomes = ports.ledger.reserve([
        ReserveTokens(p.tenant, p.request_id, p.estimate_tokens,
                      reserve_digest(p, p.estimate_tokens), p.key_id, p.model, p.prompt_tokens)
        for p in payloads])
    ports.projection.catch_up(ports.ledger)
    out: list[Reserved | Rejected] = []
    marks: list[ReservedMark] = []
    for p, o in zip(payloads, outcomes, strict=True):
        metrics.LEDGER_DECISIONS.labels(o.kind or "refused").inc()
        if o.accepted:
            marks.append(ReservedMark(o.request_id, o.amount, p.prompt_tokens))
            out.append(Reserved(**p.request_fields(), prompt_tokens=p.prompt_tokens,
                                reserved_tokens=o.amount, period=o.period, ledger_seq=o.seq))
        else:
            out.append(Rejected(o.request_id, o.tenant, p.estimate_tokens,
                                o.reason or "rejected", o.period, o.seq))
    ports.requests.mark_reserved(marks)
    if ports.window is not None:
        ports.window.trim([ReservedTokens(p.tenant, p.key_id, p.request_id,
                                          o.amount if o.accepted else 0)
                           for p, o in zip(payloads, outcomes, strict=True)])
    return out


def on_poison(p: Estimated, reason: str, ports: ReservePorts) -> list[Rejected]:
    """Nothing was reserved: reject the request so its record ends instead of staying queued."""
    if ports.window is not None:
        ports.window.trim([ReservedTokens(p.tenant, p.key_id, p.request_id, 0)])
    return [Rejected(p.request_id, p.tenant, p.estimate_tokens,
                     f"unprocessable: {reason}"[:500])]


STEP = Step(name="reserve", consumes=("estimated",), produces=("reserved", "rejected"),
            handle=handle, on_poison=on_poison, batch_max=lambda s: 256)
