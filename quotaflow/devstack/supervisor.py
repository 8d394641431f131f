"""Keeps a local stack's processes running, as Kubernetes keeps a pod's containers: a process
that exits is started again after a pause that doubles with each exit in a row (from
`first_s` to `max_s`, and back to `first_s` once it has run `stable_s`). The stack counts the
restarts (`DevStack.restarts`, the state file, `quotaflow dev status`)."""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("quotaflow.dev")


class Supervised(Protocol):
    """What the supervisor needs of a stack (`DevStack`)."""

    procs: dict[str, subprocess.Popen[bytes]]
    restarts: dict[str, int]

    def respawn(self, name: str) -> bool:
        """Start `name` again unless it is running; True if it was started."""
        ...


class Supervisor:
    """A background thread that restarts the processes of `stack` that exit."""

    def __init__(self, stack: Supervised, say: Callable[[str], None] = log.info,
                 first_s: float = 0.5, max_s: float = 10.0, stable_s: float = 30.0,
                 poll_s: float = 0.2) -> None:
        self.stack = stack
        self.say = say
        self.first_s, self.max_s, self.stable_s, self.poll_s = first_s, max_s, stable_s, poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._in_a_row: dict[str, int] = {}
        self._due: dict[str, float] = {}
        self._since: dict[str, float] = {}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dev-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop restarting (before the stack is stopped on purpose)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(60)

    def delay_s(self, exits_in_a_row: int) -> float:
        """The pause before restarting a process that exited this many times in a row."""
        return float(min(self.max_s, self.first_s * 2 ** min(exits_in_a_row, 20)))

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            for name in list(self.stack.procs):
                try:
                    self._check(name)
                except Exception:  # keep supervising the others
                    log.exception("could not restart %s; will try again", name)
                    self._due.pop(name, None)

    def _check(self, name: str) -> None:
        now = time.monotonic()
        proc = self.stack.procs.get(name)
        if proc is None:  # left the stack on purpose (a member scaled in): not restarted
            self._due.pop(name, None)
            return
        if proc.poll() is None:  # running (maybe restarted by hand meanwhile)
            self._due.pop(name, None)
            if now - self._since.get(name, now) >= self.stable_s:
                self._in_a_row[name] = 0
            self._since.setdefault(name, now)
            return
        if name not in self._due:
            delay = self.delay_s(self._in_a_row.get(name, 0))
            self._due[name] = now + delay
            self.say(f"{name} exited with code {proc.returncode}; restarting it in "
                     f"{delay:.1f} s")
            return
        if now < self._due[name] or self._stop.is_set():
            return
        del self._due[name]
        self._in_a_row[name] = self._in_a_row.get(name, 0) + 1
        self._since[name] = time.monotonic()
        if self.stack.respawn(name):
            self.say(f"restarted {name} (restart {self.stack.restarts.get(name, 0)})")
