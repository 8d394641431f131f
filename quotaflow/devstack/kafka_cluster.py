"""Apache Kafka 4.x (KRaft, no ZooKeeper) on this machine, for the local stack and the tests.

A cluster is N nodes on 127.0.0.1 (`kafka_node`), each a combined broker and controller with its
own ports, data folder and log, run with the machine's Java from the jars `kafka_dist` fetched;
with 3 nodes every topic is replicated 3 times and a write needs 2 in-sync copies, so one node
can be killed or paused (chaos) without losing an acknowledged record or refusing writes. With
`security` it listens with SASL_SSL and enforces ACLs (`kafka_security`). `python -m
quotaflow.devstack.kafka_cluster fetch` fetches the jars (infra/local/setup.sh); `... start [N]`
runs a cluster in the foreground until Ctrl-C (prints its bootstrap servers)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import AdminClient

from quotaflow.devstack import kafka_dist
from quotaflow.devstack.kafka_dist import KAFKA_VERSION, available
from quotaflow.devstack.kafka_node import KafkaNode, cluster_id, node_properties, warm_up
from quotaflow.devstack.kafka_security import ADMIN, LocalSecurity, grant
from quotaflow.devstack.process import DevStackError, free_port

__all__ = ["KAFKA_VERSION", "KafkaCluster", "KafkaNode", "available"]

Spawn = Callable[[str, list[str], bool], "subprocess.Popen[bytes]"]


@dataclass
class KafkaCluster:
    """N Apache Kafka nodes on 127.0.0.1 under `root` (each node in `root/kafka-I`).

    `spawn(name, argv, append)` starts a node's process (the dev stack passes its own, so that its
    supervisor, status and restarts see the nodes); by default each logs to `logs/kafka-I.log`
    (`logs`: `root` unless given). Node 1 listens on `first_port` if given (the stack's
    `--kafka-port`), the others on free ports. Data stays in `root` across a node's restart (a
    restarted broker keeps its log, as Kafka's brokers do), and is removed by `stop(remove=True)`.
    """

    root: Path
    size: int = 3
    version: str = KAFKA_VERSION
    spawn: Spawn | None = None
    first_port: int = 0
    # SASL_SSL with SCRAM users and ACLs (kafka_security.py); None: PLAINTEXT, no ACLs.
    security: LocalSecurity | None = None
    logs: Path | None = None
    # Each node's maximum heap; the test session's cluster, which collects thousands of
    # partitions over a run, asks for more (kafka_dist.HEAP_MB says why).
    heap_mb: int = kafka_dist.HEAP_MB
    nodes: list[KafkaNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError("a cluster needs at least one node")
        if not self.nodes:
            self.nodes = [KafkaNode(i, (i == 1 and self.first_port) or free_port(),
                                    free_port(), self.root / f"kafka-{i}")
                          for i in range(1, self.size + 1)]

    @property
    def bootstrap(self) -> str:
        """Every node, so a client can start while any one of them is down."""
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    @property
    def replication(self) -> int:
        return min(3, self.size)

    def node(self, which: int | str) -> KafkaNode:
        """A node by id (1..N) or name (`kafka-2`)."""
        node_id = int(which.rsplit("-", 1)[1]) if isinstance(which, str) else which
        return self.nodes[node_id - 1]

    def properties(self, node: KafkaNode) -> dict[str, str | int]:
        return node_properties(node, self.nodes, self.security)

    def client_config(self, user: str = ADMIN) -> dict[str, str | int | float | bool]:
        """librdkafka settings that reach this cluster: its bootstrap servers, and when it is
        secured, `user`'s credentials (the brokers' own ADMIN by default)."""
        config: dict[str, str | int | float | bool] = {"bootstrap.servers": self.bootstrap}
        if self.security:
            config.update(self.security.client_config(user))
        return config

    def grant(self, user: str, reads: Iterable[str] = (), writes: Iterable[str] = (),
              groups: Iterable[str] = ()) -> None:
        """Allow `user` (a secured cluster's) its topics and groups: `kafka_security.grant`."""
        grant(self.client_config(), user, reads, writes, groups)

    def _write_config(self, node: KafkaNode) -> None:
        node.root.mkdir(parents=True, exist_ok=True)
        node.config.write_text("".join(f"{k}={v}\n" for k, v in self.properties(node).items()))

    def argv(self, node: KafkaNode) -> list[str]:
        """The command line of `node`'s broker."""
        return kafka_dist.java_argv("kafka.Kafka", str(node.config), version=self.version,
                                    heap_mb=self.heap_mb)

    def format(self) -> None:
        """Format every node's KRaft storage with one new cluster id (first start only: a
        node with `meta.properties` keeps its data). The nodes are formatted in parallel,
        one JVM each."""
        todo = [n for n in self.nodes if not (n.data / "meta.properties").exists()]
        if not todo:
            return
        cid = cluster_id()
        running = []
        for node in todo:
            self._write_config(node)
            running.append((node, subprocess.Popen(
                kafka_dist.java_argv(
                    "kafka.tools.StorageTool", "format", "--cluster-id", cid, "--config",
                    str(node.config), "--ignore-formatted",
                    *(self.security.scram_format_args() if self.security else []),
                    version=self.version, short=True),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)))
        for node, proc in running:
            out, _ = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise DevStackError(f"formatting {node.name}'s storage failed:\n"
                                    f"{out.decode(errors='replace')[-2000:]}")

    def start(self, timeout_s: float = 90) -> None:
        """Format (first time), start every node, and wait until all of them serve."""
        if not available(self.version):
            raise DevStackError(f"Apache Kafka {self.version} cannot run here: it needs Java "
                                "17+ and its jars (python -m quotaflow.devstack.kafka_cluster "
                                "fetch, or bash infra/local/setup.sh)")
        self.root.mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            self._write_config(node)
        self.format()
        try:
            for node in self.nodes:
                self.start_node(node.node_id)
            self.wait_ready(timeout_s)
            warm_up(self.client_config(), self.replication, self.logs or self.root, timeout_s)
        except BaseException:
            self.stop()
            raise

    def start_node(self, which: int | str, append: bool = False) -> subprocess.Popen[bytes]:
        """Start one node's broker (again: with `append`, its log goes on)."""
        node = self.node(which)
        argv = self.argv(node)
        if self.spawn is not None:
            node.proc = self.spawn(node.name, argv, append)
        else:
            with self.log_path(node).open("ab" if append else "wb") as out:
                node.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                             start_new_session=True)
        return node.proc

    def serving(self, node: KafkaNode) -> bool:
        """True if `node` itself answers metadata listing itself as a broker. Asked of the node
        alone: the others' metadata still lists a node killed a moment ago (until it is fenced,
        3 s), so after a restart it would read as back before it is."""
        config = {**self.client_config(), "bootstrap.servers": f"127.0.0.1:{node.port}",
                  "log_level": 0, "socket.connection.setup.timeout.ms": 1000}
        try:
            return node.node_id in AdminClient(config).list_topics(timeout=2).brokers
        except Exception:  # not answering yet
            return False

    def wait_ready(self, timeout_s: float = 90, nodes: set[int] | None = None) -> None:
        """Wait until every node of `nodes` (default: all) serves (`serving`)."""
        want = [n for n in self.nodes if nodes is None or n.node_id in nodes]
        deadline = time.monotonic() + timeout_s
        while want:
            for node in want:
                if node.proc is not None and node.proc.poll() is not None:
                    log = self.log_path(node)
                    raise DevStackError(f"{node.name} exited with code {node.proc.returncode}"
                                        f" (log: {log})\n{log.read_text()[-2000:]}")
            want = [n for n in want if not self.serving(n)]
            if want and time.monotonic() > deadline:
                raise DevStackError(f"Apache Kafka: {', '.join(n.name for n in want)} not "
                                    f"serving after {timeout_s:.0f} s (logs in {self.root})")
            time.sleep(0.2 if want else 0)

    def log_path(self, node: KafkaNode) -> Path:
        return (self.logs or self.root) / f"{node.name}.log"

    def kill(self, which: int | str) -> None:
        """SIGKILL one node (chaos): no controlled shutdown; its data stays."""
        self.signal(which, signal.SIGKILL)
        node = self.node(which)
        if node.proc is not None:
            node.proc.wait(10)

    def pause(self, which: int | str) -> None:
        """SIGSTOP one node: it holds its connections but answers nothing (a GC pause, a
        frozen VM) until `resume`."""
        self.signal(which, signal.SIGSTOP)

    def resume(self, which: int | str) -> None:
        self.signal(which, signal.SIGCONT)

    def signal(self, which: int | str, sig: int) -> None:
        node = self.node(which)
        if node.proc is None:
            raise DevStackError(f"{node.name} was never started")
        os.killpg(node.proc.pid, sig)

    def stop(self, remove: bool = False) -> None:
        """SIGKILL every node (with `remove`, delete the data too). No controlled shutdown:
        with every node going, the last could not finish one (no quorum left to hand their
        partitions to), and `kill -9` loses nothing acknowledged (`dev restart` stops one
        node in order)."""
        for node in self.nodes:
            if node.proc is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(node.proc.pid, signal.SIGKILL)
                node.proc.wait(10)
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)


def _main(argv: list[str]) -> int:
    if argv[:1] == ["fetch"]:
        return kafka_dist.fetch_main()
    if argv[:1] != ["start"]:
        print("usage: python -m quotaflow.devstack.kafka_cluster fetch | start [NODES]",
              file=sys.stderr)
        return 2
    size = int(argv[1]) if len(argv) > 1 else 3
    cluster = KafkaCluster(Path(tempfile.mkdtemp(prefix="quotaflow-kafka-")), size)
    began = time.monotonic()
    cluster.start()
    print(f"{size} node(s) up in {time.monotonic() - began:.1f} s; "
          f"KAFKA_BOOTSTRAP_SERVERS={cluster.bootstrap}", flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop(remove=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
