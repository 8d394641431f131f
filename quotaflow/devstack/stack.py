"""The local stack behind `quotaflow dev up`: Kafka (an Apache Kafka cluster where Java runs, else
Tansu, an embedded Kafka-protocol broker), PostgreSQL and Redis (the running ones when reachable,
else embedded), moto's S3, topics, migrations, and the six functions and the analytics consumer as
processes, restarted when they die once up."""

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
from quotaflow.devstack import kafka_cluster
from quotaflow.devstack import services as svc
from quotaflow.devstack.process import (
    DevStackError,
    free_port,
    http_ok,
    port_open,
    stop_pids,
    wait_for,
)
from quotaflow.devstack.serving import admit_server_argv
from quotaflow.devstack.supervisor import Supervisor
from quotaflow.runtime.steps import CONSUMER_STEPS
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
    partitions: int = 1  # a topic: one consumer a step can use no more (README, Kafka)
    # "kafka": Apache Kafka, `brokers` nodes (kafka-1 ... kafka-N); "tansu": the embedded
    # broker (one process, `kafka`); "": Apache Kafka where it can run here, else Tansu.
    broker: str = ""
    brokers: int = 3
    cluster: kafka_cluster.KafkaCluster | None = None
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

    def chosen_broker(self) -> str:
        """The broker this stack runs: `broker`, or Apache Kafka where it can run here."""
        if self.broker not in ("", "kafka", "tansu"):
            raise DevStackError(f"unknown broker {self.broker!r}: kafka or tansu")
        return self.broker or ("kafka" if kafka_cluster.available() else "tansu")

    def start_kafka(self) -> None:
        if port_open("127.0.0.1", self.kafka_port):
            raise DevStackError(f"port {self.kafka_port} is taken; pick another with --kafka-port")
        self.broker = self.chosen_broker()
        if self.broker == "kafka":
            self.start_cluster()
            return
        # Tansu answers a fetch only after fetch.wait.max.ms whether data came or not (no
        # long-poll): each hop would wait the default 500 ms (README, Kafka broker quirks).
        # Set otherwise (QF_KAFKA_FETCH_WAIT_MAX_MS), the setting stands.
        if self.settings.kafka_fetch_wait_max_ms == Settings.kafka_fetch_wait_max_ms:
            self.settings = replace(self.settings, kafka_fetch_wait_max_ms=50)
        url = f"tcp://127.0.0.1:{self.kafka_port}"
        proc = self._spawn("kafka", [str(svc.tansu_binary()), "broker", "--listener-url", url,
                                     "--advertised-listener-url", url,
                                     "--storage-engine", "memory://tansu/"])
        self._await_kafka(proc)
        self.settings = replace(self.settings, kafka_bootstrap=f"127.0.0.1:{self.kafka_port}")

    def start_cluster(self) -> None:
        """Apache Kafka: `brokers` nodes in `state_dir/kafka`, the first on `kafka_port`."""
        if not kafka_cluster.available():
            raise DevStackError("Apache Kafka cannot run here: it needs Java 17+ and its jars "
                                "(bash infra/local/setup.sh fetches them); or --broker tansu")
        root = self.state_dir / "kafka"
        shutil.rmtree(root, ignore_errors=True)  # a new stack, a new cluster (as the database)
        self.cluster = kafka_cluster.KafkaCluster(
            root, self.brokers, first_port=self.kafka_port,
            spawn=lambda name, argv, append: self._spawn(name, argv, append=append),
            logs=self.logs)
        self.cluster.start()
        self.settings = replace(self.settings, kafka_bootstrap=self.cluster.bootstrap)

    def _await_kafka(self, proc: subprocess.Popen[bytes]) -> None:
        wait_for("Kafka broker (Tansu)", lambda: port_open("127.0.0.1", self.kafka_port), 30,
                 proc, self.logs / "kafka.log")

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
        # infer's model threads spin between operators unless QF_ORT_SPIN=0 (BENCHMARKS.md).
        env = {**self.settings.as_env(), **self.child_env,
               "PYTHONUNBUFFERED": "1"}
        loops = {step: ["run", step] for step in CONSUMER_STEPS}
        loops["analytics"] = ["analytics", "run"]  # the usage roll-ups, beside the five steps
        for name, command in loops.items():
            self.metrics_ports[name] = free_port()
            self._spawn(name, [sys.executable, "-m", "quotaflow", *command],
                        {**env, "QF_METRICS_PORT": str(self.metrics_ports[name])})
        self._spawn("admit", admit_server_argv(self.admit_port, self.admit_workers,
                                               access_log=self.admit_access_log), env)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill one process abruptly (chaos tests); the supervisor restarts it once up."""
        proc = self.procs[name]
        os.killpg(proc.pid, sig)
        proc.wait(10)

    def pause(self, name: str) -> None:
        """SIGSTOP one process (a broker frozen for a while: chaos); `resume` wakes it. The
        supervisor leaves a paused process alone (it has not exited)."""
        os.killpg(self.procs[name].pid, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        os.killpg(self.procs[name].pid, signal.SIGCONT)

    @property
    def broker_names(self) -> list[str]:
        """The broker's processes: `kafka-1` ... `kafka-N`, or Tansu's `kafka`."""
        if self.cluster is not None:
            return [n.name for n in self.cluster.nodes]
        return ["kafka"]

    def respawn(self, name: str) -> bool:
        """Start process `name` again if it is not running. An Apache Kafka node comes back
        with its log and rejoins the cluster; Tansu comes back empty (it keeps nothing), so
        its topics are created again. True if it was started."""
        with self._lock:
            if self.procs[name].poll() is None:
                return False
            if self.cluster is not None and name.startswith("kafka-"):
                self.cluster.start_node(name, append=True)
                self.restarts[name] = self.restarts.get(name, 0) + 1
                self.write_state()
                self.cluster.wait_ready(90, nodes={self.cluster.node(name).node_id})
                return True
            argv, env, user = self._argv[name]
            proc = self._spawn(name, argv, env, user, append=True)
            self.restarts[name] = self.restarts.get(name, 0) + 1
            if name == "kafka":
                self._await_kafka(proc)
                kafka.create_topics(self.settings, partitions=self.partitions)
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
        for step in CONSUMER_STEPS:
            path = self.logs / f"{step}.log"
            # Ready once its consumer group handed it partitions, not merely subscribed.
            wait_for(f"step {step}", lambda p=path, s=step:  # type: ignore[misc]
                     p.exists() and f"step {s} assigned" in p.read_text(errors="replace"),
                     timeout_s, self.procs[step], path)

    def up(self, explicit_pg: bool, explicit_redis: bool, progress: Callable[[str], None]) -> None:
        try:
            self._start(explicit_pg, explicit_redis, progress)
        except BaseException:  # a stack that fails to come up stops what did start
            self.down()
            raise

    def _start(self, explicit_pg: bool, explicit_redis: bool, progress: Callable[[str], None]
               ) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        broker = self.chosen_broker()
        progress(f"starting Apache Kafka ({self.brokers} node"
                 f"{'s' if self.brokers > 1 else ''}, KRaft) ..." if broker == "kafka"
                 else "starting Kafka broker (Tansu, embedded) ...")
        self.start_kafka()
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
                 "broker": self.broker, "brokers": self.broker_names,
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
        nodes = set(self.broker_names) if self.cluster is not None else set()
        stop_pids({n: p.pid for n, p in self.procs.items() if n not in nodes})
        if self.cluster is not None:  # its data goes too: no controlled shutdown to wait for
            self.cluster.stop(remove=True)
        for p in self.procs.values():
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        if self._wrote_state:  # never another stack's, left in the same folder
            (self.state_dir / "state.json").unlink(missing_ok=True)
        # Tansu keeps topics in memory only; an Apache Kafka cluster's data went with it
        # above, and an embedded database goes too.
        marker = self.state_dir / "pgdata-path"
        if marker.exists():
            shutil.rmtree(marker.read_text().strip(), ignore_errors=True)
            marker.unlink()


