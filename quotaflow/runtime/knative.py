"""The function instance Knative's Python runtime serves (the `func-python` middleware wraps
`function.new()`): an ASGI `handle` over the step's Flask app, with `start`, `stop`, `alive`
and `ready` hooks. Readiness stays false until start-up has opened connections and loaded
the model, so Knative sends no traffic before."""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from quotaflow.settings import Settings

log = logging.getLogger("quotaflow.knative")
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def build_app(step: str, settings: Settings) -> tuple[Any, Any]:
    """The step's Flask app and its ports ("all": admit plus every step's Kafka loop)."""
    if step == "all":
        return _all_in_one(settings)
    if step == "admit":
        from quotaflow.door.app import create_app as admit_app

        app = admit_app(settings)
    else:
        from quotaflow.runtime.http_entry import create_app
        from quotaflow.runtime.steps import load_step

        app = create_app(load_step(step), settings)
    return app, app.extensions["quotaflow"]["ports"]


class _AllPorts:
    def __init__(self, admit_ports: Any, workers: list[Any], stop: threading.Event) -> None:
        self.admit_ports, self.workers, self.stop = admit_ports, workers, stop

    def ready(self) -> bool:
        return bool(self.admit_ports.ready()) and all(w.is_alive() for w in self.workers)

    def close(self) -> None:
        self.stop.set()
        for w in self.workers:
            w.join(15)


def _all_in_one(settings: Settings) -> tuple[Any, Any]:
    """Small installs: admit's HTTP door plus the five steps as Kafka loops in one process
    (keep it at min-scale 1: Kafka records do not wake a scaled-to-zero HTTP service)."""
    from quotaflow.door.app import create_app as admit_app
    from quotaflow.runtime.steps import CONSUMER_STEPS, load_step
    from quotaflow.runtime.worker import KafkaWorker

    app = admit_app(settings)
    stop = threading.Event()
    workers = []
    for name in CONSUMER_STEPS:
        worker = KafkaWorker(load_step(name), settings)
        thread = threading.Thread(target=worker.run, args=(stop,), name=f"step-{name}",
                                  daemon=True)
        thread.start()
        workers.append(thread)
    return app, _AllPorts(app.extensions["quotaflow"]["ports"], workers, stop)


class KnativeFunction:
    def __init__(self, step: str) -> None:
        self.step = step
        self._asgi: Any = None
        self._ports: Any = None

    def start(self, cfg: Mapping[str, str]) -> None:
        from asgiref.wsgi import WsgiToAsgi

        settings = Settings.from_env(cfg)
        logging.getLogger().setLevel(settings.log_level)
        app, self._ports = build_app(self.step, settings)
        self._asgi = WsgiToAsgi(app)  # type: ignore[no-untyped-call]
        log.info("function %s started", self.step)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._asgi is None:
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"application/problem+json")]})
            await send({"type": "http.response.body",
                        "body": b'{"title": "Starting", "status": 503, '
                                b'"detail": "the function is still starting"}'})
            return
        await self._asgi(scope, receive, send)

    def alive(self) -> tuple[bool, str]:
        return True, "alive"

    def ready(self) -> tuple[bool, str]:
        if self._ports is None:
            return False, "starting"
        return (True, "ready") if self._ports.ready() else (False, "backing services unreachable")

    def stop(self) -> None:
        close = getattr(self._ports, "close", None)
        if close is not None:
            close()
        log.info("function %s stopped", self.step)

