"""The door over in-memory ports with the real handlers behind it: what the door publishes goes
through estimate, reserve, infer (the stand-in model, streaming into an in-memory token
stream), settle and record on a worker thread, so the unit tests of the OpenAI door see
deltas arrive while they read, hang up mid-stream, and check the ledger's charge."""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from flask.testing import FlaskClient

from quotaflow.adapters.clock import FixedClock
from quotaflow.events.envelope import Envelope
from quotaflow.events.payloads import Admitted, Estimated, Rejected, Reserved
from quotaflow.functions.estimate.handler import handle as estimate
from quotaflow.functions.infer.handler import handle as infer
from quotaflow.functions.record.handler import handle as record
from quotaflow.functions.reserve.handler import handle as reserve
from quotaflow.functions.settle.handler import handle as settle
from quotaflow.model.standin import StandInModel
from quotaflow.runtime.door.app import create_app
from quotaflow.settings import Settings
from tests.unit.fakes import World

MODEL = "standin"
PERIOD = "2026-11"


class Pipeline:
    """A `Publisher` that runs each published request through the five steps on its thread;
    `paused` holds requests back (set it to let them go)."""

    def __init__(self, door: MemoryDoor, model: StandInModel) -> None:
        self.door = door
        self.model = model
        self.published: list[Envelope] = []
        self.paused = threading.Event()
        self.paused.set()
        self._work: queue.Queue[Admitted | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def publish(self, envelopes: Sequence[Envelope]) -> None:
        self.published.extend(envelopes)
        for e in envelopes:
            assert isinstance(e.payload, Admitted)
            self._work.put(e.payload)

    def close(self) -> None:
        self.paused.set()
        self._work.put(None)
        self._thread.join(10)

    def _run(self) -> None:
        w = self.door.world
        while (p := self._work.get()) is not None:
            self.paused.wait()
            model = self.model  # read each time: a test may swap the model
            estimated = estimate([p], w.ports("estimate", model))
            decided = [*[e for e in estimated if isinstance(e, Rejected)],
                       *reserve([e for e in estimated if isinstance(e, Estimated)],
                                w.ports("reserve"))]
            ok = [r for r in decided if isinstance(r, Reserved)]
            refused = [r for r in decided if isinstance(r, Rejected)]
            settled = settle(infer(ok, w.ports("infer", model)), w.ports("settle")) if ok else []
            record([*settled, *refused], w.ports("record"))


class MemoryDoor:
    """The door (Flask test client) over in-memory ports, a ledger and the `Pipeline`; tenant
    `acme` has plenty of quota, `tiny` 10 tokens."""

    def __init__(self, token_delay_s: float = 0.0, rate_limit: int = 1000) -> None:
        self.world = w = World(FixedClock(datetime(2026, 11, 29, 12, 0, 45, tzinfo=UTC)))
        self.clock, self.requests, self.ledger, self.stream = w.clock, w.requests, w.ledger, \
            w.stream
        self.keys = {tenant: w.tenant(tenant, tokens, rate_limit)
                     for tenant, tokens in (("acme", 100_000), ("tiny", 10))}
        self.pipeline = Pipeline(self, StandInModel(token_delay_s))
        self.ports = w.door_ports(publisher=self.pipeline)
        self.settings = replace(Settings(), model_name=MODEL, max_body_bytes=8192,
                                max_tokens_limit=64, public_url="http://door.test")
        self.client: FlaskClient = create_app(self.settings, self.ports).test_client()

    def headers(self, tenant: str = "acme", **over: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}", **over}

    def spent(self, tenant: str = "acme") -> int:
        return self.ledger.balance(tenant, PERIOD).spent

    def reserved(self, tenant: str = "acme") -> int:
        return self.ledger.balance(tenant, PERIOD).reserved

