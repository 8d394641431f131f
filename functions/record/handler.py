"""record: write each request's final state and output to the read model clients poll."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from events.payloads import Recorded, Rejected, Settled
from quotaflow.ports import FinalRecord, RequestStore
from quotaflow.runtime.step import Step


@dataclass(frozen=True)
class RecordPorts:
    requests: RequestStore


def final_record(p: Settled | Rejected) -> FinalRecord:
    """The request's terminal state as the read model keeps it."""
    if isinstance(p, Rejected):
        return FinalRecord(p.request_id, "rejected", p.reason, charged_tokens=0)
    return FinalRecord(p.request_id, p.status, p.reason, p.charged_tokens, output=p.text,
                       prompt_tokens=p.prompt_tokens, completion_tokens=p.completion_tokens,
                       reserved_tokens=p.reserved_tokens, model_version=p.model_version or None)


def handle(payloads: Sequence[Settled | Rejected], ports: RecordPorts) -> list[Recorded]:
    """Write the whole batch at once (all or none); one `recorded` per input, in order."""
    records = [final_record(p) for p in payloads]
    ports.requests.finish(records)
    return [Recorded(r.request_id, p.tenant, r.status)
            for p, r in zip(payloads, records, strict=True)]


STEP = Step(name="record", consumes=("settled", "rejected"), produces=("recorded",),
            handle=handle, batch_max=lambda s: 256)
