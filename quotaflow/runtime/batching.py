"""Micro-batching for HTTP entries: concurrent requests are gathered for a few milliseconds
(or until the batch is full) and handled as one batch, as the Kafka loop does with a poll."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
In = TypeVar("In")
Out = TypeVar("Out")


class MicroBatcher(Generic[In, Out]):
    """Runs `process(items) -> results` (one result per item, in order) on gathered batches in
    one background thread; `submit` blocks until its item's result is ready."""

    def __init__(self, process: Callable[[Sequence[In]], Sequence[Out]], max_size: int,
                 max_wait_ms: float) -> None:
        self._process = process
        self._max_size = max(1, max_size)
        self._max_wait_s = max_wait_ms / 1000
        self._queue: queue.Queue[tuple[In, Future[Out]]] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="micro-batcher", daemon=True)
        self._thread.start()

    def submit(self, item: In, timeout_s: float | None = None) -> Out:
        future: Future[Out] = Future()
        self._queue.put((item, future))
        return future.result(timeout_s)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            deadline = time.monotonic() + self._max_wait_s
            while len(batch) < self._max_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(self._queue.get(timeout=remaining))
                except queue.Empty:
                    break
            try:
                results = self._process([item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
            except Exception as exc:
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                future.set_result(result)
