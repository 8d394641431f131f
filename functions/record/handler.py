"""record: write each request's final state and output to the read model clients poll.

A status only moves forward and a terminal one is never overwritten (the store guards it), so a
redelivered or late record changes nothing. What could stop a request from ending here is a
value PostgreSQL cannot store: text with U+0000 or a lone surrogate is stored with U+FFFD in
their place, and a record that still cannot be written is written without its output and usage
(`on_poison`). If even that fails, the reconciler ends the request at its deadline.

Once a request's terminal state is written, its key's in-flight slot (`quotaflow.runtime.door.
limits`) is freed: after, so the door never lets in a request beyond the cap while one is still
open. A release lost to a crash between the two is made up by the slot's own deadline."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from quotaflow.events.payloads import Recorded, Rejected, Settled
from quotaflow.events.status import RequestStatus
from quotaflow.ports import FinalRecord, InflightSlots, RequestStore
from quotaflow.runtime.slots import release_slots
from quotaflow.runtime.step import Step

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


@dataclass(frozen=True)
class RecordPorts:
    requests: RequestStore
    slots: InflightSlots | None = None  # None: no key's requests in flight are capped here


def storable(text: str | None) -> str | None:
    """`text` as PostgreSQL can store it: U+0000 and lone surrogates become U+FFFD."""
    return None if text is None else _UNSTORABLE.sub("\ufffd", text)


def final_record(p: Settled | Rejected) -> FinalRecord:
    """The request's terminal state as the read model keeps it."""
    if isinstance(p, Rejected):
        return FinalRecord(p.request_id, RequestStatus.REJECTED, storable(p.reason),
                           charged_tokens=0)
    return FinalRecord(p.request_id, p.status.request_status, storable(p.reason), p.charged_tokens,
                       output=storable(p.text), prompt_tokens=p.prompt_tokens,
                       completion_tokens=p.completion_tokens, reserved_tokens=p.reserved_tokens,
                       model_version=storable(p.model_version) or None)


def handle(payloads: Sequence[Settled | Rejected], ports: RecordPorts) -> list[Recorded]:
    """Write the whole batch at once (all or none); one `recorded` per input, in order."""
    records = [final_record(p) for p in payloads]
    ports.requests.finish(records)
    release_slots(ports.slots, [(p.tenant, p.request_id) for p in payloads])
    return [Recorded(r.request_id, p.tenant, r.status)
            for p, r in zip(payloads, records, strict=True)]


def on_poison(p: Settled | Rejected, reason: str, ports: RecordPorts) -> list[Recorded]:
    """End the request with what the ledger decided (its status and charge), without the
    output and usage that could not be written."""
    full = final_record(p)
    why = storable(f"unrecordable: {reason}")
    ports.requests.finish([FinalRecord(full.request_id, full.status, (why or "")[:500],
                                       full.charged_tokens)])
    release_slots(ports.slots, [(p.tenant, p.request_id)])
    return [Recorded(p.request_id, p.tenant, full.status)]


STEP = Step(name="record", consumes=("settled", "rejected"), produces=("recorded",),
            handle=handle, on_poison=on_poison, batch_max=lambda s: 256)
