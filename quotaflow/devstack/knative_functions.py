"""The functions of `quotaflow dev up --knative`, each as a pod of its Knative Service would run
it: `functions/<step>/function`'s `new()` served by func-python's middleware (hypercorn) on a
port of its own, started on demand and stopped after `QF_KNATIVE_IDLE_S` without a delivery,
as scale-to-zero does (`autoscaling.knative.dev/min-scale: "0"`).

The delivery process (`knative_mode`) plays the activator: a delivery to a stopped function
starts it and waits for its readiness (a cold start), and one to a function that died starts it
again (as Kubernetes restarts a pod's container)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from quotaflow.devstack.kafka_source import Answer
from quotaflow.devstack.process import DevStackError, http_ok, wait_for
from quotaflow.runtime.timeouts import TIMEOUT_S

log = logging.getLogger("quotaflow.knative")
READY_TIMEOUT_S = 60.0


def serve_argv(step: str) -> list[str]:
    """How a pod runs the function: func-python's `serve` over `function.new()`."""
    return [sys.executable, "-c", "from func_python.http import serve; "
            f"from quotaflow.functions.{step}.function import new; serve(new)"]


class FunctionProcess:
    """One function's instance (0 or 1 process): started by `acquire`, stopped by `reap` when
    idle; `cold_starts_s` holds each start's time to readiness."""

    def __init__(self, step: str, port: int, env: dict[str, str], logs: Path,
                 idle_s: float, argv: list[str] | None = None) -> None:
        self.step, self.port, self.env, self.idle_s = step, port, env, idle_s
        self.argv = argv or serve_argv(step)
        self.log_path = logs / f"fn-{step}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.in_flight = 0
        self.last_used = time.monotonic()
        self.cold_starts_s: list[float] = []
        self.restarts = 0  # starts after the instance died (not after scaling to zero)
        self._lock = threading.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def state(self) -> str:
        """ready, starting or scaled-to-zero (no process)."""
        if self.proc is None:
            return "scaled-to-zero"
        return "ready" if self._running() and http_ok(self.url + "/health/readiness") \
            else "starting"

    def acquire(self) -> None:
        """Count one delivery in flight, starting the instance first if it is not running and
        waiting for its readiness (the activator holds the request meanwhile)."""
        with self._lock:
            self.in_flight += 1
            try:
                if not self._running():
                    self._start()
            except BaseException:
                self.in_flight -= 1
                raise

    def release(self) -> None:
        with self._lock:
            self.in_flight -= 1
            self.last_used = time.monotonic()

    def _start(self) -> None:
        died = self.proc is not None
        began = time.monotonic()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            # In the delivery process's own process group: stopping the stack (or killing the
            # group) takes its functions too, never leaving one holding its port.
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, **self.env, "LISTEN_ADDRESS": f"127.0.0.1:{self.port}"})
        try:
            wait_for(f"function {self.step}", lambda: http_ok(self.url + "/health/readiness"),
                     READY_TIMEOUT_S, self.proc, self.log_path)
        except DevStackError:
            self._stop()
            raise
        took = time.monotonic() - began
        self.cold_starts_s.append(took)
        self.restarts += died
        log.info("function %s ready on port %d in %.2f s (%s)", self.step, self.port, took,
                 "restarted after it died" if died else "cold start")

    def reap(self) -> bool:
        """Stop the instance if it has served nothing for `idle_s`; True if it did."""
        with self._lock:
            idle = time.monotonic() - self.last_used
            if not self._running() or self.in_flight or idle < self.idle_s:
                if self.proc is not None and not self._running() and not self.in_flight:
                    self.proc = None  # died while idle: nothing to keep
                return False
            self._stop()
            log.info("function %s scaled to zero after %.0f s idle", self.step, idle)
            return True

    def _stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()  # func-python's stop(): connections closed
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait(5)  # reaped, whether stopped here or dead already

    def stop(self) -> None:
        with self._lock:
            self._stop()

    def post(self, headers: dict[str, str], body: bytes) -> Answer:
        """POST one CloudEvent to the instance (no answer: status None)."""
        req = urllib.request.Request(self.url + "/", data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT_S) as r:
                return Answer(r.status, r.read())
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, exc.read())
        except OSError as exc:
            return Answer(None, f"{type(exc).__name__}: {exc}".encode())

    def describe(self) -> dict[str, Any]:
        """What `quotaflow dev status --json` shows of it."""
        pid = self.proc.pid if self.proc is not None else None
        return {"name": self.step, "url": self.url, "pid": pid, "state": self.state(),
                "in_flight": self.in_flight, "cold_starts": len(self.cold_starts_s),
                "last_cold_start_s": round(self.cold_starts_s[-1], 3)
                if self.cold_starts_s else None, "restarts": self.restarts}
