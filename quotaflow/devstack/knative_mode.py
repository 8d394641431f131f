"""The delivery process of `quotaflow dev up --knative`: what a cluster's Knative data plane
does for the five consumer steps, on one machine (`python -m quotaflow.devstack.knative_mode`).

- a KafkaSource (`kafka_source`) per manifest in knative/sources/, each a consumer thread that
  delivers its topic's records to the step's function;
- the functions themselves (`knative_functions`), started on a delivery and stopped when idle;
- PingSource (knative/pingsource.yaml): the sweep event to settle every `QF_SWEEP_INTERVAL_S`
  (a minute on a cluster; the same event);
- `knative.json` in the state folder: the functions and their state, for `dev status`."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any, Protocol

from confluent_kafka import KafkaException, Message, TopicPartition

from quotaflow.adapters import kafka
from quotaflow.devstack.kafka_source import (
    Answer,
    SourceSpec,
    Stopped,
    dead_letter_headers,
    deliver,
    http_headers,
    load_sources,
)
from quotaflow.devstack.knative_functions import FunctionProcess, serve_argv
from quotaflow.devstack.process import free_port, wait_for
from quotaflow.settings import Settings


class Stack(Protocol):
    """What this mode needs of the stack that starts it (`DevStack`)."""

    admit_port: int
    state_dir: Path
    metrics_ports: dict[str, int]
    procs: dict[str, subprocess.Popen[bytes]]

    @property
    def logs(self) -> Path: ...

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None,
               user: str | None = None, append: bool = False) -> subprocess.Popen[bytes]: ...

log = logging.getLogger("quotaflow.knative")
STATE_FILE = "knative.json"
PING = {"ce-specversion": "1.0", "ce-type": "dev.knative.sources.ping",
        "ce-source": "/apis/v1/namespaces/quotaflow/pingsources/quotaflow-sweep",
        "Content-Type": "application/json"}
PING_DATA = b'{"sweep": "reservations"}'


class SourceLoop:
    """One KafkaSource: poll a record, deliver it (retries, then the dead-letter topic), and
    only then commit its offset; the next record waits (ordered delivery)."""

    def __init__(self, spec: SourceSpec, fn: FunctionProcess, settings: Settings) -> None:
        self.spec, self.fn, self.settings = spec, fn, settings
        self.consumer = kafka.make_consumer(settings, settings.consumer_group_prefix + spec.group)
        self.producer = kafka.make_producer(settings)
        self.delivered = 0
        self.dead_lettered = 0

    def run(self, stop: threading.Event) -> None:
        topic = self.settings.topic(self.spec.topic)
        self.consumer.subscribe([topic], on_assign=lambda _c, parts: log.info(
            "source %s assigned %d partitions", self.spec.name, len(parts)))
        try:
            while not stop.is_set():
                msg = self.consumer.poll(0.2)
                if msg is None:
                    continue
                if msg.error():
                    log.warning("source %s: %s", self.spec.name, msg.error())
                    continue
                try:
                    self._deliver(msg, stop)
                    # Only now: the function answered 2xx (its outputs are flushed) or the
                    # record is on the dead-letter topic. Synchronous, so the next record is
                    # not delivered before this one is committed.
                    self.consumer.commit(message=msg, asynchronous=False)
                except Stopped:
                    return
                except Exception as exc:  # a thread that died would stop its topic for good
                    # A commit after the group moved on (this member's session lapsed on a
                    # loaded machine: UNKNOWN_MEMBER_ID), or a dead-letter write that failed.
                    # The offset stays uncommitted and the record is delivered again, here
                    # after the rewind or by the partition's next owner: at least once, as
                    # KafkaSource delivers (the functions are idempotent).
                    log.warning("source %s: %s[%s]@%s not committed, delivered again: %s",
                                self.spec.name, msg.topic(), msg.partition(), msg.offset(), exc)
                    self._rewind(msg)
                    stop.wait(0.5)
        finally:
            self.consumer.close()

    def _rewind(self, msg: Message) -> None:
        """Poll `msg` again next; a partition no longer this member's is left to its owner."""
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if topic is not None and partition is not None and offset is not None:
            with contextlib.suppress(KafkaException):
                self.consumer.seek(TopicPartition(topic, partition, offset))

    def _deliver(self, msg: Message, stop: threading.Event) -> None:
        record = msg.headers() or []
        record = list(record.items()) if isinstance(record, dict) else record
        headers = http_headers(record)
        body = msg.value() or b""

        def post() -> Answer:
            try:
                self.fn.acquire()
            except Exception as exc:  # the function could not start: retried like no answer
                return Answer(None, f"{type(exc).__name__}: {exc}".encode())
            try:
                return self.fn.post(headers, body)
            finally:
                self.fn.release()

        outcome = deliver(post, self.spec.delivery, stop.wait, stop.is_set)
        if outcome.delivered:
            self.delivered += 1
            return
        dead = dead_letter_headers(record, self.fn.url + "/", outcome.last.status,
                                   outcome.last.body)
        self.producer.produce(self.settings.topic(self.spec.dead_letter_topic), value=msg.value(),
                              key=msg.key(), headers=dead)
        kafka.flush(self.producer)
        self.dead_lettered += 1
        log.warning("source %s: %s[%s]@%s dead-lettered after %d attempt(s): %s %s",
                    self.spec.name, msg.topic(), msg.partition(), msg.offset(), outcome.attempts,
                    outcome.last.status, outcome.last.body[:200])


class DeliveryProcess:
    """Every source, function, the ping and the reaper of one stack."""

    def __init__(self, settings: Settings, state_dir: Path) -> None:
        self.settings, self.state_dir = settings, state_dir
        env = {**settings.as_env(), "PYTHONUNBUFFERED": "1"}
        specs = load_sources()
        self.functions = {s.step: FunctionProcess(s.step, free_port(), env, state_dir / "logs",
                                                  settings.knative_idle_s)
                          for s in specs}
        self.loops = [SourceLoop(s, self.functions[s.step], settings) for s in specs]
        self.stop = threading.Event()

    def run(self) -> None:
        threads = [threading.Thread(target=loop.run, args=(self.stop,), daemon=True,
                                    name=f"source-{loop.spec.name}") for loop in self.loops]
        threads.append(threading.Thread(target=self._ping, daemon=True, name="pingsource"))
        for t in threads:
            t.start()
        log.info("delivering %d sources to %d functions (idle %d s)", len(self.loops),
                 len(self.functions), self.settings.knative_idle_s)
        try:
            while not self.stop.wait(0.5):
                for fn in self.functions.values():
                    fn.reap()
                self.write_state()
        finally:
            self.stop.set()
            for t in threads:
                t.join(30)
            for fn in self.functions.values():
                fn.stop()
            (self.state_dir / STATE_FILE).unlink(missing_ok=True)

    def _ping(self) -> None:
        settle = self.functions["settle"]
        while not self.stop.wait(float(self.settings.sweep_interval_s)):
            headers = {**PING, "ce-id": str(uuid.uuid4())}
            try:
                settle.acquire()
            except Exception:
                log.exception("PingSource: settle did not start")
                continue
            try:
                answer = settle.post(headers, PING_DATA)
            finally:
                settle.release()
            if answer.status != 200:
                log.warning("PingSource: settle answered %s %s", answer.status, answer.body[:200])

    def write_state(self) -> None:
        state: dict[str, Any] = {
            "idle_s": self.settings.knative_idle_s,
            "functions": [fn.describe() for fn in self.functions.values()],
            "sources": [{"name": loop.spec.name, "delivered": loop.delivered,
                         "dead_lettered": loop.dead_lettered} for loop in self.loops]}
        path = self.state_dir / STATE_FILE
        path.with_suffix(".tmp").write_text(json.dumps(state, indent=2))
        path.with_suffix(".tmp").replace(path)


def spawn(stack: Stack, env: dict[str, str]) -> None:
    """The stack's processes in this mode: admit's function under func-python on the stack's
    port (the door: fed by clients, never scaled to zero here: nothing local would wake it),
    the delivery process (which runs the five others), and the analytics consumer (a KEDA
    Deployment on a cluster, not a function)."""
    metrics = free_port()
    stack.metrics_ports["admit"] = metrics
    stack._spawn("admit", serve_argv("admit"), {
        **env, "LISTEN_ADDRESS": f"127.0.0.1:{stack.admit_port}",
        "QF_METRICS_PORT": str(metrics)})
    stack._spawn("kafkasource", [sys.executable, "-m", "quotaflow.devstack.knative_mode",
                                  "--state-dir", str(stack.state_dir)], env)
    stack.metrics_ports["analytics"] = free_port()
    stack._spawn("analytics", [sys.executable, "-m", "quotaflow", "analytics", "run"],
                 {**env, "QF_METRICS_PORT": str(stack.metrics_ports["analytics"])})


def wait_assigned(stack: Stack, timeout_s: float) -> None:
    """Wait until every source's consumer was handed its partitions."""
    path = stack.logs / "kafkasource.log"
    for spec in load_sources():
        wait_for(f"source {spec.name}", lambda n=spec.name:  # type: ignore[misc]
                 path.exists() and f"source {n} assigned" in path.read_text(errors="replace"),
                 timeout_s, stack.procs["kafkasource"], path)


def read_state(state_dir: Path) -> dict[str, Any] | None:
    """What the delivery process last wrote of its functions (None: not in this mode)."""
    path = state_dir / STATE_FILE
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args()
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    process = DeliveryProcess(settings, args.state_dir)
    signal.signal(signal.SIGTERM, lambda *_: process.stop.set())
    process.run()


if __name__ == "__main__":
    main()
