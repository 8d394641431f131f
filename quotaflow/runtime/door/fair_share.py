"""Fair share of one admit process between keys: no key may hold all of its threads, or flood
it with calls the rate limit does not see.

admit serves with a fixed number of threads (granian's `--blocking-threads`, 16 a worker:
quotaflow/devstack/serving.py), and a call that waits for its answer holds one for as long as
it waits: a non-streamed OpenAI call, a streamed one, `GET /v1/requests/{id}/events`. So each
key may hold at most `waits_per_key` of them at once in one process; past that, a 429 with
`Retry-After`. The per-minute rate limit counts new requests only (at the `AdmissionGate`),
so reads (GETs), resends of an accepted request and 409s (a reused id with another payload)
are counted here, `reads_per_s_per_key` a second in a fixed one-second window.

Both are counted in process memory: the threads are the process's own, and the point is
that one key cannot starve the others of them; a key may make as many calls in all as there
are admit processes times these numbers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import has_request_context, request

from quotaflow.ports import Principal
from quotaflow.runtime.door.auth import Authenticator
from quotaflow.runtime.problem import Problem

RETRY_AFTER_S = 1


@dataclass
class Slot:
    """One wait held by a key; `release` is idempotent (a body's close may come twice)."""

    share: FairShare
    key_id: str
    released: bool = False

    def release(self) -> None:
        with self.share.lock:
            if self.released:
                return
            self.released = True
            self.share.holding[self.key_id] -= 1
            if self.share.holding[self.key_id] == 0:
                del self.share.holding[self.key_id]


class FairShare:
    """The per-key cap on open waits and the per-key rate of reads, resends and 409s."""

    def __init__(self, waits_per_key: int, reads_per_s_per_key: int,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.waits_per_key = waits_per_key
        self.reads_per_s_per_key = reads_per_s_per_key
        self.monotonic = monotonic
        self.lock = threading.Lock()
        self.holding: dict[str, int] = {}
        self.window = -1
        self.counts: dict[str, int] = {}

    def hold(self, key_id: str) -> Slot:
        """A wait for `key_id`, or a 429 when it holds `waits_per_key` already."""
        with self.lock:
            held = self.holding.get(key_id, 0)
            if held >= self.waits_per_key:
                raise Problem(429, "Too many open answers", f"key {key_id} already has "
                              f"{held} answers open (waits and streams) on this server, the "
                              f"most one key may hold at once; wait for one to end",
                              slug="rate-limited", headers={"Retry-After": str(RETRY_AFTER_S)})
            self.holding[key_id] = held + 1
        return Slot(self, key_id)

    def count(self, key_id: str, what: str) -> None:
        """Count one read, resend or 409 of `key_id` (`what`, for the message), or a 429."""
        now = self.monotonic()
        with self.lock:
            window = int(now)
            if window != self.window:
                self.window, self.counts = window, {}
            n = self.counts.get(key_id, 0) + 1
            self.counts[key_id] = n
        if n > self.reads_per_s_per_key:
            raise Problem(429, "Rate limit exceeded", f"key {key_id} may make "
                          f"{self.reads_per_s_per_key} reads, resends and reused ids a second "
                          f"on this server; this {what} is over it",
                          slug="rate-limited", headers={"Retry-After": str(RETRY_AFTER_S)})


class ReadCounting(Authenticator):
    """The door's authenticator, counting each GET it lets through as one of the key's reads:
    every read route authenticates through it, so none can be missed."""

    def __init__(self, share: FairShare, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.share = share

    def principal(self, authorization: str, address: str = "") -> Principal:
        found = super().principal(authorization, address)
        if has_request_context() and request.method in ("GET", "HEAD"):
            self.share.count(found.key_id, "read")
        return found
