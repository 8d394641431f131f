"""Group commit: concurrent callers share one statement and one commit. Each caller hands its
item to one committer thread and waits for its own item's result; the thread takes whatever
has queued since its last statement (at most `max_batch`), so under load the batch grows by
itself and an idle caller waits for no timer."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class GroupCommitter(Generic[T, R]):
    """Runs `commit` (a batch in, one result per item out, in order) on its own thread.
    A batch whose `commit` raises fails every caller in it with that error."""

    def __init__(self, commit: Callable[[Sequence[T]], Sequence[R]], max_batch: int = 256,
                 name: str = "group-commit") -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._name = name
        self._queue: queue.SimpleQueue[tuple[T, Future[R]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batches = 0
        self.items = 0

    def submit(self, item: T, timeout_s: float | None = None) -> R:
        """Commit `item` with whatever else is waiting; its result, or the batch's error
        (`TimeoutError` past `timeout_s`)."""
        self._start()
        future: Future[R] = Future()
        self._queue.put((item, future))
        return future.result(timeout_s)

    def _start(self) -> None:
        # Started on first use, never at import or construction: a server that forks its
        # workers after building the app gives each worker a thread of its own.
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self._name,
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._settle(batch)

    def _settle(self, batch: list[tuple[T, Future[R]]]) -> None:
        try:
            results = self._commit([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} committed {len(results)} results")
        except BaseException as exc:  # every caller hears of it; the thread carries on
            log.debug("a batch of %d failed: %s", len(batch), exc)
            for _, future in batch:
                future.set_exception(exc)
            return
        self.batches += 1
        self.items += len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)
