"""One node of the local Apache Kafka cluster: its ports and folder, its `server.properties`
(a combined broker and controller, with the durability settings the cluster promises), and the
first use that readies a fresh cluster (`warm_up`)."""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from base64 import urlsafe_b64encode
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from quotaflow.devstack.kafka_security import LocalSecurity
from quotaflow.devstack.process import DevStackError


def cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (what
    `kafka-storage random-uuid` prints), never starting with "-": the storage tool would take
    it for an option (one in 64 did; Kafka's own `Uuid.randomUuid` draws again too)."""
    while True:
        cid = urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


@dataclass
class KafkaNode:
    """One combined broker+controller: its ports, folder and process."""

    node_id: int
    port: int  # clients and the other brokers (PLAINTEXT, or SASL_SSL when secured)
    controller_port: int  # the KRaft quorum (CONTROLLER)
    root: Path  # config and data
    proc: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return f"kafka-{self.node_id}"

    @property
    def config(self) -> Path:
        return self.root / "server.properties"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def node_properties(node: KafkaNode, nodes: list[KafkaNode],
                    security: LocalSecurity | None = None) -> dict[str, str | int]:
    """The `server.properties` of `node` in a cluster of `nodes` (SASL_SSL with `security`)."""
    replicas = min(3, len(nodes))
    listener = "SASL_SSL" if security else "PLAINTEXT"
    voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in nodes)
    return {
        "process.roles": "broker,controller",
        "node.id": node.node_id,
        # A static quorum: every node knows every voter from its config, so formatting
        # needs nothing but the cluster id, and a restarted node rejoins by itself.
        "controller.quorum.voters": voters,
        "listeners": f"{listener}://127.0.0.1:{node.port},"
                     f"CONTROLLER://127.0.0.1:{node.controller_port}",
        "advertised.listeners": f"{listener}://127.0.0.1:{node.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": listener,
        "listener.security.protocol.map":
            f"{listener}:{listener},CONTROLLER:PLAINTEXT",
        "log.dirs": str(node.data),
        # Durability: with 3 nodes an acknowledged (acks=all) record is on 2 of them at
        # least, and a replica that missed records never becomes leader.
        "default.replication.factor": replicas,
        "min.insync.replicas": 2 if replicas >= 3 else 1,
        "unclean.leader.election.enable": "false",
        "offsets.topic.replication.factor": replicas,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": 2 if replicas >= 3 else 1,
        # Topics come from kafka/topics.yaml (`quotaflow topics create`), never from a
        # typo in a producer.
        "auto.create.topics.enable": "false",
        # Fast start-up: fewer internal partitions to create and elect (the defaults, 50
        # each, cost seconds per first consumer group on 2 cores).
        "offsets.topic.num.partitions": 4,
        "transaction.state.log.num.partitions": 4,
        "num.partitions": 1,
        # A consumer group forms at once (the default waits 3 s for more members).
        "group.initial.rebalance.delay.ms": 0,
        # The tests' consumers use a 2 s session timeout; the broker's floor is 6 s.
        "group.min.session.timeout.ms": 1000,
        # A killed node is fenced, and its partitions led elsewhere, within 3 s (default
        # 9 s); a node back from a pause is not evicted from the ISR for 10 s of lag.
        "broker.heartbeat.interval.ms": 500,
        "broker.session.timeout.ms": 3000,
        "replica.lag.time.max.ms": 10000,
        "controller.quorum.election.timeout.ms": 1000,
        "controller.quorum.fetch.timeout.ms": 2000,
        # A 2-core machine: no more threads than the work needs.
        "num.network.threads": 2,
        "num.io.threads": 2,
        "num.replica.fetchers": 1,
        "background.threads": 2,
        "num.recovery.threads.per.data.dir": 1,
        "log.cleaner.threads": 1,
        "log.segment.bytes": 64 * 1024 * 1024,
        **(security.broker_properties() if security else {}),
    }


def warm_up(config: dict[str, str | int | float | bool], replication: int, logs: Path,
            timeout_s: float = 90) -> None:
    """One idempotent record through a replicated topic and one consumer group's commit.
    A fresh cluster creates its internal topics (producer ids, group offsets) on first use,
    which took over 5 s on a busy 2-core machine: the first test's flush timed out. Done
    here, start-up includes it; the topic goes afterwards (the group's offset stays)."""
    topic = "quotaflow-cluster-warm-up"
    config = {**config, "log_level": 0}
    admin = AdminClient(config)
    with contextlib.suppress(KafkaException):  # already there: a restarted cluster
        admin.create_topics([NewTopic(topic, 1, replication)])[topic].result(timeout_s)
    producer = Producer({**config, "enable.idempotence": True, "acks": "all"})
    producer.produce(topic, b"ready")
    if producer.flush(timeout_s):
        raise DevStackError(f"Apache Kafka took no record within {timeout_s:.0f} s "
                            f"(logs in {logs})")
    consumer = Consumer({**config, "group.id": topic, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                consumer.commit(message=msg, asynchronous=False)
                break
        else:
            raise DevStackError(f"Apache Kafka served no record within {timeout_s:.0f} s")
    finally:
        consumer.close()
    admin.delete_topics([topic])[topic].result(timeout_s)
