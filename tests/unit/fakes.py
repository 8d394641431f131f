"""The one builder of fakes: the in-memory world the unit tests run handlers and the door in
(the twin of `quotaflow/compose.py`, over `quotaflow/adapters/memory/`), and payload builders.

`World.ports(step, model)` answers a consumer step's ports bundle as `compose.wire` does, and
`World.door_ports()` the door's as `compose.connect_door` does, all over one ledger, projection
and request store on one fixed clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from quotaflow.adapters.clock import FixedClock
from quotaflow.adapters.memory.gate import MemoryAdmissionGate
from quotaflow.adapters.memory.ledger import MemoryLedger
from quotaflow.adapters.memory.outbox import MemoryOutbox
from quotaflow.adapters.memory.projection import MemoryProjection
from quotaflow.adapters.memory.publisher import MemoryPublisher
from quotaflow.adapters.memory.requests import MemoryRequestStore
from quotaflow.adapters.memory.stream import MemoryTokenStream
from quotaflow.adapters.memory.tenants import MemoryTenants
from quotaflow.analytics.store import UsageReader
from quotaflow.events.payloads import Admitted, Estimated, Message, Reserved
from quotaflow.functions.estimate.handler import EstimatePorts
from quotaflow.functions.infer.handler import InferPorts
from quotaflow.functions.record.handler import RecordPorts
from quotaflow.functions.reserve.handler import ReservePorts
from quotaflow.functions.settle.handler import SettlePorts
from quotaflow.ports import NewRequest, Publisher
from quotaflow.runtime.door.ports import DoorPorts

ADMITTED_AT = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@dataclass
class World:
    """One ledger, its projection and outbox, the request store, the door's tenants, gate,
    publisher and token stream, on a fixed clock."""

    clock: FixedClock = field(default_factory=FixedClock)
    projection: MemoryProjection = field(default_factory=MemoryProjection)
    requests: MemoryRequestStore = field(init=False)
    ledger: MemoryLedger = field(init=False)
    outbox: MemoryOutbox = field(init=False)
    tenants: MemoryTenants = field(default_factory=MemoryTenants)
    gate: MemoryAdmissionGate = field(init=False)
    publisher: MemoryPublisher = field(default_factory=MemoryPublisher)
    stream: MemoryTokenStream = field(default_factory=MemoryTokenStream)

    def __post_init__(self) -> None:
        self.ledger = MemoryLedger(self.clock)
        self.outbox = MemoryOutbox(self.ledger)
        self.requests = MemoryRequestStore(self.clock)
        self.gate = MemoryAdmissionGate(self.projection)

    def tenant(self, name: str, tokens: int, rate_limit_per_min: int = 600,
               time_zone: str = "UTC") -> str:
        """A tenant granted `tokens` a month (its months counted in `time_zone`), projected;
        answers a new API key of it."""
        self.ledger.add_tenant(name, tokens, time_zone=time_zone)
        self.projection.catch_up(self.ledger)
        key = self.tenants.create_key(name, rate_limit_per_min, time_zone=time_zone)
        self.ledger.add_key(name, key.split("_")[1])
        return key

    def ports(self, step: str, model: Any = None) -> Any:
        """The ports bundle of consumer step `step`, as `quotaflow.compose.wire` opens it."""
        bundles: dict[str, Any] = {
            "estimate": lambda: EstimatePorts(model),
            "reserve": lambda: ReservePorts(self.ledger, self.projection, self.requests,
                                            self.gate),
            "infer": lambda: InferPorts(model, self.stream),
            "settle": lambda: SettlePorts(self.ledger, self.projection, self.outbox, 300,
                                          slots=self.gate),
            "record": lambda: RecordPorts(self.requests, self.gate)}
        return bundles[step]()

    def door_ports(self, publisher: Publisher | None = None,
                   usage: UsageReader | None = None) -> DoorPorts:
        """The door's ports, as `quotaflow.compose.connect_door` opens them."""
        return DoorPorts(self.tenants, self.gate, self.projection, self.requests,
                         publisher or self.publisher, self.clock, stream=self.stream,
                         usage=usage, ledger=self.ledger, levels=self.ledger)

    def queue(self, *payloads: Admitted) -> None:
        """Store each request as admit does: `queued`, with its data and admission time."""
        for p in payloads:
            data = {"model": p.model, "max_tokens": p.max_tokens,
                    "messages": [{"role": m.role, "content": m.content} for m in p.messages],
                    "temperature": p.temperature, "top_p": p.top_p, "seed": p.seed}
            self.requests.insert(NewRequest(p.request_id, p.tenant, p.key_id, "/test",
                                            p.request_id, "hash", p.model, data,
                                            p.admitted_at_ms))

    def status(self, tenant: str, request_id: str) -> str:
        view = self.requests.fetch(tenant, request_id)
        assert view is not None, request_id
        return view.status


def admitted(request_id: str, content: str = "what is the capital of France",
             tenant: str = "acme", max_tokens: int = 10) -> Admitted:
    return Admitted(request_id, tenant, "key-1", "standin", (Message("user", content),),
                    max_tokens, None, None, None, ADMITTED_AT)


def estimated(request_id: str, estimate_tokens: int, tenant: str = "acme",
              prompt_tokens: int = 4) -> Estimated:
    a = admitted(request_id, tenant=tenant, max_tokens=estimate_tokens - prompt_tokens)
    return Estimated(**a.request_fields(), prompt_tokens=prompt_tokens,
                     estimate_tokens=estimate_tokens)


def reserved(request_id: str, content: str, reserved_tokens: int, max_tokens: int = 10,
             tenant: str = "acme") -> Reserved:
    a = admitted(request_id, content, tenant, max_tokens)
    return Reserved(**a.request_fields(), prompt_tokens=0, reserved_tokens=reserved_tokens,
                    period="2026-11", ledger_seq=1)
