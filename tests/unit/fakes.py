"""The in-memory world the unit tests run handlers in, and payload builders."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from events.payloads import Admitted, Estimated, Message, Reserved
from quotaflow.adapters.clock import FixedClock
from quotaflow.adapters.memory.ledger import MemoryLedger
from quotaflow.adapters.memory.outbox import MemoryOutbox
from quotaflow.adapters.memory.projection import MemoryProjection
from quotaflow.adapters.memory.requests import MemoryRequestStore
from quotaflow.ports import NewRequest

ADMITTED_AT = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@dataclass
class World:
    """One ledger, its projection and outbox, and the request store, on a fixed clock."""

    clock: FixedClock = field(default_factory=FixedClock)
    projection: MemoryProjection = field(default_factory=MemoryProjection)
    requests: MemoryRequestStore = field(init=False)
    ledger: MemoryLedger = field(init=False)
    outbox: MemoryOutbox = field(init=False)

    def __post_init__(self) -> None:
        self.ledger = MemoryLedger(self.clock)
        self.outbox = MemoryOutbox(self.ledger)
        self.requests = MemoryRequestStore(self.clock)

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
