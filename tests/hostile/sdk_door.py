"""The official `openai` client over the in-memory door, with the door's ports swapped for ones
that fail on cue: the SDK's own retries (no Idempotency-Key, two retries of a 5xx) run as they
would against a server, through a WSGI transport, without a socket or a wait between tries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import httpx2
import redis
from openai import OpenAI

from quotaflow.events.envelope import Envelope
from quotaflow.events.payloads import Admitted, Estimated, Reserved
from quotaflow.functions.estimate.handler import handle as estimate
from quotaflow.functions.infer.handler import handle as infer
from quotaflow.functions.record.handler import handle as record
from quotaflow.functions.reserve.handler import handle as reserve
from quotaflow.functions.settle.handler import handle as settle
from quotaflow.ports import PublishTimeout, RequestView
from quotaflow.runtime.door.app import create_app
from tests.openai.memory_pipeline import MemoryDoor


class Held:
    """A publisher whose first call is held back (a late delivery, sent by `deliver`); the
    first call then raises `PublishTimeout` if `fail` is set, after the request was stored."""

    def __init__(self, door: MemoryDoor, fail: bool) -> None:
        self.door = door
        self.fail = fail
        self.held: list[Envelope] = []
        self.calls = 0

    def publish(self, envelopes: Sequence[Envelope]) -> None:
        self.calls += 1
        if self.calls > 1:
            self.door.pipeline.publish(envelopes)
            return
        self.held = list(envelopes)
        if self.fail:
            raise PublishTimeout("the broker did not confirm in time")

    def deliver(self) -> None:
        """The held request, late: through the whole pipeline, then wait for it to end."""
        self.door.pipeline.publish(self.held)
        self.door.pipeline.close()


def reserve_now(door: MemoryDoor, envelopes: Sequence[Envelope]) -> list[Reserved]:
    """Estimate and reserve what was published, at once: the request is `reserved`."""
    w = door.world
    payloads = [e.payload for e in envelopes if isinstance(e.payload, Admitted)]
    model = door.pipeline.model
    estimated = [e for e in estimate(payloads, w.ports("estimate", model))
                 if isinstance(e, Estimated)]
    return [r for r in reserve(estimated, w.ports("reserve")) if isinstance(r, Reserved)]


def finish(door: MemoryDoor, reserved: Sequence[Reserved]) -> None:
    """infer, settle and record what `reserve_now` reserved: its late completion."""
    w = door.world
    settled = settle(infer(reserved, w.ports("infer", door.pipeline.model)), w.ports("settle"))
    record(settled, w.ports("record"))


class FailingReads:
    """The door's request store, whose first `fetch` fails as a lost Redis/PostgreSQL would
    (a 503 after the request was stored)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.failed = False

    def fetch(self, tenant: str, request_id: str) -> RequestView | None:
        if not self.failed:
            self.failed = True
            raise redis.exceptions.ConnectionError("connection reset")
        view: RequestView | None = self.inner.fetch(tenant, request_id)
        return view

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def sdk(door: MemoryDoor, tenant: str = "acme", **ports: Any) -> tuple[OpenAI, list[int]]:
    """The official client on the door with `ports` replaced; the list collects one entry per
    retry the SDK decided to make (it does not sleep between them here)."""
    app = create_app(door.settings, replace(door.ports, **ports))
    client = OpenAI(base_url="http://door.test/v1", api_key=door.keys[tenant],
                    http_client=httpx2.Client(transport=httpx2.WSGITransport(app=app)))
    retries: list[int] = []

    def no_wait(*, retries_taken: int, **_: Any) -> None:
        retries.append(retries_taken)

    client._sleep_for_retry = no_wait  # type: ignore[method-assign]
    return client, retries
