"""A function for func-python's real middleware to serve in tests: `KnativeFunction` (the entry
every step's `function.new()` returns) over a probe app instead of a step's. Served as
`from func_python.http import serve; from tests.deploy.knative_probe import new; serve(new)`.

- `POST /slow`: waits until `PEERS` calls are in at once (or `WAIT_S` passed) and answers the
  most it saw at once.
- `GET /stream`: a keep-alive every 50 ms until the client hangs up; the hang-up (the body's
  `close()` before its end, the local door's cancel path) touches `$PROBE_DIR/hung-up`.
- `POST /wait`: answers nothing for up to `WAIT_S`, as a call that does not stream waits for its
  answer; the client leaving meanwhile (`environ[DISCONNECTED]`, what the door's wait reads)
  touches `$PROBE_DIR/gone`."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request

from quotaflow.runtime.asgi_bridge import DISCONNECTED
from quotaflow.runtime.door.openai_api.streaming import HangupBody
from quotaflow.runtime.knative import KnativeFunction
from quotaflow.settings import Settings

PEERS = 16
WAIT_S = 20.0


class _Held:
    def ready(self) -> bool:
        return True

    def close(self) -> None:
        pass


def probe_app(_step: str, _settings: Settings) -> tuple[Any, _Held]:
    app = Flask("probe")
    seen = threading.Condition()
    counts = {"now": 0, "most": 0}

    @app.post("/slow")
    def slow() -> Response:
        with seen:
            counts["now"] += 1
            counts["most"] = max(counts["most"], counts["now"])
            seen.notify_all()
            seen.wait_for(lambda: counts["most"] >= PEERS, WAIT_S)
            most = counts["most"]
        with seen:
            counts["now"] -= 1
        return jsonify(most=most)

    @app.get("/stream")
    def stream() -> Response:
        def beats() -> Iterator[bytes]:
            while True:
                yield b": keep-alive\n\n"
                time.sleep(0.05)

        def hung_up() -> None:
            (Path(os.environ["PROBE_DIR"]) / "hung-up").touch()

        return Response(HangupBody(beats(), hung_up), mimetype="text/event-stream")

    @app.post("/wait")
    def wait() -> Response:
        gone: threading.Event = request.environ[DISCONNECTED]
        if gone.wait(WAIT_S):
            (Path(os.environ["PROBE_DIR"]) / "gone").touch()
        return jsonify(waited=True)

    return app, _Held()


def new() -> KnativeFunction:
    """The probe, with the admit function's concurrency (100): well above `PEERS`."""
    return KnativeFunction("admit", build=probe_app)
