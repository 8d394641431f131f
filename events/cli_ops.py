"""`quotaflow run STEP` and `quotaflow topics ...`."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any

from events import kafka
from events.settings import Settings

log = logging.getLogger("quotaflow")


def register(sub: Any) -> None:
    r = sub.add_parser("run", help="run one pipeline step as a Kafka consumer loop",
                       description="Runs STEP until SIGINT/SIGTERM. Configuration comes from the "
                       "environment (see README: Configuration).")
    r.add_argument("step", choices=("estimate", "reserve", "infer", "settle", "record"))
    r.set_defaults(func=_run)
    t = sub.add_parser("topics", help="Kafka topics from kafka/topics.yaml")
    tsub = t.add_subparsers(dest="topics_command", metavar="ACTION", required=True)
    c = tsub.add_parser("create", help="create missing topics and dead-letter topics")
    c.set_defaults(func=_create_topics)


def _run(args: argparse.Namespace) -> int:
    from prometheus_client import start_http_server

    from events.worker import KafkaWorker
    from functions.steps import load_step

    settings = Settings.from_env()
    logging.getLogger().setLevel(settings.log_level)
    step = load_step(args.step)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr="127.0.0.1")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    log.info("starting step %s", step.name)
    worker = KafkaWorker(step, settings)
    log.info("step %s ready", step.name)
    worker.run(stop)
    return 0


def _create_topics(args: argparse.Namespace) -> int:
    created = kafka.create_topics(Settings.from_env())
    print(f"created {len(created)} topics" + (": " + ", ".join(created) if created else ""))
    return 0
