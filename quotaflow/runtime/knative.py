"""The function instance Knative's Python runtime serves (the `func-python` middleware wraps
`function.new()`): an ASGI `handle` over the step's Flask app, with `start`, `stop`, `alive`
and `ready` hooks. Readiness stays false until start-up has opened connections and loaded
the model, so Knative sends no traffic before.

The app runs on a pool of as many threads as the Service's `containerConcurrency` (the sizing
table), so every request Knative lets in runs at once (`asgi_bridge`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from quotaflow.adapters import kafka
from quotaflow.runtime import metrics
from quotaflow.runtime.asgi_bridge import Receive, Scope, Send, WsgiOnThreads, send_problem
from quotaflow.runtime.entry import create_app, resources_of
from quotaflow.runtime.step import Resources
from quotaflow.settings import Settings

log = logging.getLogger("quotaflow.knative")
AppBuilder = Callable[[str, Settings], tuple[Any, Resources]]


def build_app(step: str, settings: Settings) -> tuple[Any, Resources]:
    """The step's Flask app and what it holds open ("all": admit plus every step's Kafka
    loop)."""
    kafka.check_brokers(settings)  # a wrong password or CA ends start-up with one line
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


def body_limit_bytes(settings: Settings) -> int:
    """The largest body a function takes: what the steps' Flask apps allow (the door refuses
    its own calls at `max_body_bytes`, with its own errors)."""
    return settings.max_body_bytes * 16


class KnativeFunction:
    """One function instance: `step` is a step name, or "all". `concurrency` defaults to the
    step's `containerConcurrency`; `build` (tests) makes the app."""

    def __init__(self, step: str, concurrency: int | None = None,
                 build: AppBuilder = build_app) -> None:
        from quotaflow.deploy.sizing import SIZING

        self.step = step
        self.concurrency = concurrency or SIZING[step].concurrency
        self._build = build
        self._asgi: WsgiOnThreads | None = None
        self._resources: Resources | None = None

    def start(self, cfg: Mapping[str, str]) -> None:
        settings = Settings.from_env(cfg)
        logging.getLogger().setLevel(settings.log_level)
        metrics.serve(settings)  # its own port (QF_METRICS_PORT), never the serving one
        app, self._resources = self._build(self.step, settings)
        self._asgi = WsgiOnThreads(app, self.concurrency, body_limit_bytes(settings))
        log.info("function %s started: %d requests at once", self.step, self.concurrency)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._asgi is None:
            await send_problem(send, 503, "Starting", "the function is still starting")
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
        if self._asgi is not None:
            self._asgi.close()
        if self._resources is not None:
            self._resources.close()
        log.info("function %s stopped", self.step)

