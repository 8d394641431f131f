"""record: write each request's final state and output to the read model clients poll."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from events.envelope import Event
from quotaflow.adapters import request_store as requests
from quotaflow.runtime.bootstrap import open_postgres
from quotaflow.runtime.emit import emit
from quotaflow.runtime.step import Step
from quotaflow.settings import Settings

FINAL = ("completed", "failed", "expired", "rejected")


@dataclass
class RecordPorts:
    db: psycopg.Connection[Any]

    def ready(self) -> bool:
        return not self.db.closed

    def close(self) -> None:
        self.db.close()


def make_ports(settings: Settings) -> RecordPorts:
    return RecordPorts(open_postgres(settings))


def handle(events: Sequence[Event], ports: RecordPorts) -> list[Event]:
    out = []
    with ports.db.transaction():
        for ev in events:
            d = ev.data
            if ev.type.name == "rejected":
                status = "rejected"
                requests.mark(ports.db, str(d["request_id"]), status,
                              only_from=("queued", "reserved"), reason=d["reason"],
                              charged_tokens=0)
            else:
                status = str(d["status"])
                requests.mark(ports.db, str(d["request_id"]), status,
                              only_from=("queued", "reserved"),
                              output=d["text"], reason=d["reason"],
                              prompt_tokens=d["prompt_tokens"],
                              completion_tokens=d["completion_tokens"],
                              reserved_tokens=d["reserved_tokens"],
                              charged_tokens=d["charged_tokens"],
                              model_version=d["model_version"] or None)
            out.append(emit("recorded", "record", {"request_id": d["request_id"],
                                                   "tenant": ev.tenant, "status": status}))
    return out


STEP = Step(name="record", consumes=("settled", "rejected"), produces=("recorded",),
            handle=handle, make_ports=make_ports, batch_max=lambda s: 256)
