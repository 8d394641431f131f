"""The local Apache Kafka cluster's configuration, without starting it: what 3 nodes and 1 node
promise (replication, in-sync copies, no unclean election, no topic auto-creation), the quorum
every node knows, and the topics' replication on clusters of each size."""

from __future__ import annotations

import base64
from pathlib import Path

from quotaflow.adapters.kafka import topic_replication
from quotaflow.devstack.kafka_cluster import KafkaCluster, KafkaNode
from quotaflow.devstack.kafka_node import cluster_id


def cluster(tmp_path: Path, size: int) -> KafkaCluster:
    nodes = [KafkaNode(i, 30000 + i, 31000 + i, tmp_path / f"kafka-{i}")
             for i in range(1, size + 1)]
    return KafkaCluster(tmp_path, size, nodes=nodes)


def test_three_nodes_replicate_three_times_and_need_two_in_sync_copies(tmp_path: Path) -> None:
    c = cluster(tmp_path, 3)
    props = c.properties(c.node(2))
    assert props["node.id"] == 2
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == \
        "1@127.0.0.1:31001,2@127.0.0.1:31002,3@127.0.0.1:31003"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:30002"
    for key in ("default.replication.factor", "offsets.topic.replication.factor",
                "transaction.state.log.replication.factor"):
        assert props[key] == 3
    assert props["min.insync.replicas"] == props["transaction.state.log.min.isr"] == 2
    assert props["unclean.leader.election.enable"] == "false"
    assert props["auto.create.topics.enable"] == "false"
    assert props["group.initial.rebalance.delay.ms"] == 0
    assert c.bootstrap == "127.0.0.1:30001,127.0.0.1:30002,127.0.0.1:30003"


def test_one_node_replicates_once(tmp_path: Path) -> None:
    c = cluster(tmp_path, 1)
    props = c.properties(c.node("kafka-1"))
    assert props["default.replication.factor"] == props["offsets.topic.replication.factor"] == 1
    assert props["min.insync.replicas"] == props["transaction.state.log.min.isr"] == 1


def test_each_node_has_its_own_folder_and_runs_kafka_main(tmp_path: Path) -> None:
    c = cluster(tmp_path, 3)
    assert len({str(n.data) for n in c.nodes}) == 3
    argv = c.argv(c.node(1))
    assert argv[-2:] == ["kafka.Kafka", str(c.node(1).config)]
    assert any(a.startswith("-Xmx") for a in argv)


def test_topics_replicate_on_three_brokers_or_on_all_of_fewer() -> None:
    assert [topic_replication(n) for n in (0, 1, 2, 3, 5)] == [1, 1, 2, 3, 3]


def test_a_cluster_id_is_sixteen_bytes_in_url_safe_base64_never_read_as_an_option() -> None:
    ids = [cluster_id() for _ in range(2000)]
    assert all(len(base64.urlsafe_b64decode(cid + "==")) == 16 for cid in ids)
    assert not [cid for cid in ids if cid.startswith("-") or "=" in cid]


def test_a_node_runs_with_the_heap_its_cluster_asks_for(tmp_path: Path) -> None:
    small, large = cluster(tmp_path, 1), KafkaCluster(tmp_path, 1, heap_mb=1024,
                                                       nodes=cluster(tmp_path, 1).nodes)
    assert [a for a in small.argv(small.node(1)) if a.startswith("-Xmx")] == ["-Xmx384m"]
    assert [a for a in large.argv(large.node(1)) if a.startswith("-Xmx")] == ["-Xmx1024m"]
