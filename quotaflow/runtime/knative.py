"""The function instance Knative's Python runtime serves (the `func-python` middleware wraps
`function.new()`): an ASGI `handle` over the step's Flask app, with `start`, `stop`, `alive`
and `ready` hooks. Readiness stays false until start-up has opened connections and loaded
the model, so Knative sends no traffic before."""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from quotaflow.adapters import kafka
from quotaflow.runtime import metrics
from quotaflow.runtime.entry import create_app, resources_of
from quotaflow.runtime.step import Resources
from quotaflow.settings import Settings

log = logging.getLogger("quotaflow.knative")
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def build_app(step: str, settings: Settings) -> tuple[Any, Resources]:
    """The step's Flask app and what it holds open ("all": admit plus every step's Kafka
    loop)."""
    if step == "all":
        return _all_in_one(settings)
    app = create_app(step, settings)
    return app, resources_of(app)


class _AllInOne:
    """Alive while every step's thread is (a dead loop makes Kubernetes restart the
    container: nothing else would bring it back); ready while alive and admit is ready."""

    def __init__(self, admit: Resources, workers: list[threading.Thread],
                 stop: threading.Event) -> None:
        self.admit, self.workers, self.stop = admit, workers, stop

    def alive(self) -> bool:
        return all(w.is_alive() for w in self.workers)

    def ready(self) -> bool:
        return self.alive() and bool(self.admit.ready())

    def close(self) -> None:
        self.stop.set()
        for w in self.workers:
            w.join(15)
        self.admit.close()


def _all_in_one(settings: Settings) -> tuple[Any, Resources]:
    """Small installs: admit's HTTP door plus the five steps as Kafka loops in one process
    (keep it at min-scale 1: Kafka records do not wake a scaled-to-zero HTTP service)."""
    from quotaflow.runtime.steps import CONSUMER_STEPS, load_step
    from quotaflow.runtime.worker import KafkaWorker

    app = create_app("admit", settings)
    stop = threading.Event()
    workers = []
    for name in CONSUMER_STEPS:
        worker = KafkaWorker(load_step(name), settings)
        thread = threading.Thread(target=worker.run, args=(stop,), name=f"step-{name}",
                                  daemon=True)
        thread.start()
        workers.append(thread)
    return app, _AllInOne(resources_of(app), workers, stop)


class KnativeFunction:
    """One function instance: `step` is a step name, or "all"."""

    def __init__(self, step: str) -> None:
        self.step = step
        self._asgi: Any = None
        self._resources: Resources | None = None

    def start(self, cfg: Mapping[str, str]) -> None:
        from asgiref.wsgi import WsgiToAsgi

        settings = Settings.from_env(cfg)
        logging.getLogger().setLevel(settings.log_level)
        kafka.check_brokers(settings)  # a wrong password or CA ends start-up with one line
        metrics.serve(settings)  # its own port (QF_METRICS_PORT), never the serving one
        app, self._resources = build_app(self.step, settings)
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
        if isinstance(self._resources, _AllInOne) and not self._resources.alive():
            dead = [w.name for w in self._resources.workers if not w.is_alive()]
            return False, f"step thread(s) died: {', '.join(dead)}"
        return True, "alive"

    def ready(self) -> tuple[bool, str]:
        if self._resources is None:
            return False, "starting"
        if self._resources.ready():
            return True, "ready"
        return False, "backing services unreachable"

    def stop(self) -> None:
        if self._resources is not None:
            self._resources.close()
        log.info("function %s stopped", self.step)

