"""The local stack behind `quotaflow dev up`: Kafka (`brokers`), PostgreSQL and Redis (the running
ones when reachable, else embedded), moto's S3, topics, migrations, and the six functions and the
analytics consumer as processes, restarted when they die once up."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from quotaflow.adapters import kafka
from quotaflow.adapters import postgres as db
from quotaflow.devstack import brokers as local_kafka
from quotaflow.devstack import functions, knative_mode, replicas
from quotaflow.devstack import services as svc
from quotaflow.devstack.process import (
    DevStackError,
    free_port,
    http_ok,
    port_open,
    stop_pids,
    wait_for,
)
from quotaflow.devstack.supervisor import Supervisor
from quotaflow.settings import Settings

log = logging.getLogger("quotaflow.dev")


@dataclass
class DevStack:
    """Processes of one local stack; `state_dir` holds their logs and a state file."""

    state_dir: Path
    settings: Settings
    admit_port: int = 8080
    kafka_port: int = 9092
    s3_port: int = 0
    admit_workers: int = 2
    admit_access_log: bool = False
    # One consumer runs each step here (unless `replicas`), so a topic's partitions beyond the
    # first only cost: the local broker reads every partition of a consumer's topics on each
    # fetch, idle or not (BENCHMARKS.md, "One partition a topic on the local stack"). With
    # several members a step, the declared counts (`replicas.partitions`); a cluster gets
    # kafka/topics.yaml's counts (`quotaflow topics create`, the Strimzi resources).
    partitions: int = 1
    # kafka (Apache Kafka, `brokers` nodes), tansu, or "": Apache Kafka where it runs (brokers.py)
    broker: str = ""
    brokers: int = 3
    secure: bool = True  # Apache Kafka with SASL_SSL, a user per function and ACLs (brokers.py)
    replicas: int = 1  # members of each consumer step's group (`replicas`)
    knative: bool = False  # `dev up --knative`: functions fed as KafkaSource feeds them
    kafka: local_kafka.LocalBroker | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)
    child_env: dict[str, str] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)  # by the supervisor or `restart`
    ready: bool = False
    _argv: dict[str, tuple[list[str], dict[str, str] | None, str | None]] = field(
        default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _supervisor: Supervisor | None = None
    _wrote_state: bool = False

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None,
               user: str | None = None, append: bool = False) -> subprocess.Popen[bytes]:
        self._argv[name] = (argv, env, user)
        self.logs.mkdir(parents=True, exist_ok=True)
        # A fresh log per start: readiness is read from it.
        if user and os.geteuid() == 0:
            argv = ["runuser", "-u", user, "--", *argv]
        with (self.logs / f"{name}.log").open("ab" if append else "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, **(env or {})}, start_new_session=True)
        self.procs[name] = proc
        return proc

    def start_kafka(self, progress: Callable[[str], None]) -> None:
        self.kafka = local_kafka.LocalBroker(
            self.broker, self.kafka_port, self.brokers, self.state_dir / "kafka",
            self.logs, lambda n, argv, app: self._spawn(n, argv, append=app), self.secure)
        progress(f"starting {self.kafka.describe()} ...")
        self.settings = self.kafka.start(self.settings)

    def start_s3(self) -> None:
        self.s3_port = self.s3_port or free_port()
        proc = self._spawn("s3", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                  "-p", str(self.s3_port)])
        wait_for("S3 (moto server)", lambda: port_open("127.0.0.1", self.s3_port), 30, proc,
                 self.logs / "s3.log")
        self.settings = replace(self.settings, s3_endpoint_url=f"http://127.0.0.1:{self.s3_port}")
        # The local S3 (moto) accepts any credentials; boto3 only needs some to sign with.
        self.child_env.update({"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"})

    def ensure_postgres(self, explicit: bool) -> None:
        if svc.postgres_reachable(self.settings.postgres_url):
            log.info("using PostgreSQL at %s", svc.redact(self.settings.postgres_url))
            return
        if explicit:
            raise DevStackError(f"POSTGRES_URL {svc.redact(self.settings.postgres_url)} "
                                "is not reachable")
        port = free_port()
        bindir, pgdata, user = svc.embedded_pgdata(self.state_dir)
        proc = self._spawn("postgres", [str(bindir / "postgres"), "-D", str(pgdata), "-h",
                                        "127.0.0.1", "-p", str(port), "-k", "/tmp"], user=user)
        url = f"postgresql://postgres@127.0.0.1:{port}/quotaflow"
        wait_for("embedded PostgreSQL", lambda: svc.postgres_reachable(url), 60, proc,
                 self.logs / "postgres.log")
        self.settings = replace(self.settings, postgres_url=url)

    def ensure_redis(self, explicit: bool) -> None:
        if svc.redis_reachable(self.settings.redis_url):
            log.info("using Redis at %s", svc.redact(self.settings.redis_url))
            return
        if explicit:
            raise DevStackError(f"REDIS_URL {svc.redact(self.settings.redis_url)} is not reachable")
        binary = shutil.which("redis-server")
        if binary is None:
            raise DevStackError("no Redis reachable and no redis-server on PATH: start one or "
                                "set REDIS_URL (Debian: apt-get install redis-server)")
        port = free_port()
        proc = self._spawn("redis", [binary, "--bind", "127.0.0.1", "--port", str(port),
                                     "--save", "", "--appendonly", "no"])
        url = f"redis://127.0.0.1:{port}/0"
        wait_for("embedded Redis", lambda: svc.redis_reachable(url), 30, proc,
                 self.logs / "redis.log")
        self.settings = replace(self.settings, redis_url=url)

    def start_functions(self) -> None:
        functions.start_all(self)

    def start_process(self, name: str, function: str) -> None:
        """Start process `name` of `function` (`functions.start_process`)."""
        functions.start_process(self, name, function)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill one process abruptly (chaos tests); the supervisor restarts it once up."""
        proc = self.procs[name]
        os.killpg(proc.pid, sig)
        proc.wait(10)

    def respawn(self, name: str) -> bool:
        """Start `name` again unless it runs (a broker: `LocalBroker`); True if it was started."""
        with self._lock:
            if self.procs[name].poll() is None:
                return False
            broker = self.kafka if self.kafka and name in self.kafka.names else None
            proc = (broker.restart(name) if broker else
                    self._spawn(name, *self._argv[name], append=True))
            self.restarts[name] = self.restarts.get(name, 0) + 1  # counted once it runs
            if broker:
                broker.await_restarted(name, proc, self.settings, self.partitions)
            self.write_state()
            return True

    def supervise(self, say: Callable[[str], None]) -> None:
        """Restart any process that exits from now on, until `down`."""
        if self._supervisor is None:
            self._supervisor = Supervisor(self, say)
            self._supervisor.start()

    def wait_ready(self, timeout_s: float = 300) -> None:
        url = f"http://127.0.0.1:{self.admit_port}/health/readiness"
        wait_for("admit", lambda: http_ok(url), 60, self.procs["admit"],
                 self.logs / "admit.log")
        if self.knative:
            return knative_mode.wait_assigned(self, timeout_s)
        replicas.wait_assigned(self.logs, self.procs, self.replicas, timeout_s)

    def up(self, explicit_pg: bool, explicit_redis: bool, progress: Callable[[str], None]) -> None:
        try:
            self._start(explicit_pg, explicit_redis, progress)
        except BaseException:  # a stack that fails to come up stops what did start
            self.down()
            raise

    def _start(self, explicit_pg: bool, explicit_redis: bool, progress: Callable[[str], None]
               ) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.start_kafka(progress)
        self.partitions = replicas.partitions(self.kafka, self.replicas, self.partitions)
        progress("checking PostgreSQL and Redis ...")
        self.ensure_postgres(explicit_pg)
        self.ensure_redis(explicit_redis)
        progress("starting S3 (moto server) ...")
        self.start_s3()
        progress("creating topics and applying migrations ...")
        kafka.create_topics(self.settings, partitions=self.partitions)
        db.migrate(self.settings.postgres_url)
        progress("starting admit, estimate, reserve, infer, settle, record ...")
        self.start_functions()
        self.write_state()
        self.wait_ready()
        self.ready = True
        self.write_state()
        self.supervise(progress)

    def write_state(self) -> None:
        state = {"pids": {n: p.pid for n, p in self.procs.items()},
                 **(self.kafka.state() if self.kafka else {}),
                 "supervisor": os.getpid(), "ready": self.ready,
                 "restarts": {n: self.restarts.get(n, 0) for n in self.procs},
                 "env": self.settings.as_env(), "admit_url": self.admit_url,
                 "metrics": {s: f"http://127.0.0.1:{p}/metrics"
                             for s, p in self.metrics_ports.items()}}
        with self._lock:
            path = self.state_dir / "state.json"
            path.with_suffix(".tmp").write_text(json.dumps(state, indent=2))
            path.with_suffix(".tmp").replace(path)  # readers never see half a file
            self._wrote_state = True

    @property
    def admit_url(self) -> str:
        return f"http://127.0.0.1:{self.admit_port}"

    def down(self) -> None:
        if self._supervisor is not None:
            self._supervisor.stop()
        nodes = self.kafka.names if self.kafka and self.kafka.cluster else []
        stop_pids({n: p.pid for n, p in self.procs.items() if n not in nodes})
        if self.kafka:  # a cluster's data goes too: no controlled shutdown to wait for
            self.kafka.stop()
        for p in self.procs.values():
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        if self._wrote_state:  # never another stack's, left in the same folder
            (self.state_dir / "state.json").unlink(missing_ok=True)
        # Tansu keeps topics in memory only; an embedded database goes too.
        marker = self.state_dir / "pgdata-path"
        if marker.exists():
            shutil.rmtree(marker.read_text().strip(), ignore_errors=True)
            marker.unlink()


