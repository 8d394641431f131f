"""What the door talks to: its ports bundle. `quotaflow.compose.connect_door` opens the real
ones from `Settings`; the unit tests pass in-memory fakes (`tests/unit/fakes.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from quotaflow.analytics.store import UsageReader
from quotaflow.ports import (
    AdmissionGate,
    Clock,
    Ledger,
    LevelReader,
    Publisher,
    RequestStore,
    TenantDirectory,
    TokenStream,
)
from quotaflow.runtime.door.limits import Balances
from quotaflow.runtime.step import Held, Resources


@dataclass(frozen=True)
class DoorPorts:
    """Everything the door talks to; `resources` answers readiness and closes them."""

    tenants: TenantDirectory
    gate: AdmissionGate
    balances: Balances
    requests: RequestStore
    publisher: Publisher
    clock: Clock  # the ledger's
    resources: Resources = field(default_factory=Held)
    # Token deltas the OpenAI door and GET /v1/requests/{id}/events relay; None: no streaming
    # (the relay falls back to the request record).
    stream: TokenStream | None = None
    # The usage roll-ups `GET /v1/usage` reads; None: the door does not serve that route.
    usage: UsageReader | None = None
    # The ledger, for voiding a stored request the door answered 5xx (`door.void`); None: such
    # a request is only cancelled.
    ledger: Ledger | None = None
    # Each key's budget levels, `GET /v1/quota`'s `levels`; None: that list is empty.
    levels: LevelReader | None = None
