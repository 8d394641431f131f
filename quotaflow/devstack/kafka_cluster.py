"""Apache Kafka 4.x (KRaft, no ZooKeeper) on this machine, for the local stack and the tests.

The broker is the `org.apache.kafka:kafka_2.13` jar and its dependencies from Maven Central,
named by `infra/kafka/pom.xml` and copied once by Maven into a cache folder (`fetch`); it runs
with the machine's Java (17 or newer). A cluster is N nodes on 127.0.0.1, each a combined
broker and controller with its own ports, data folder and log; with 3 nodes every topic is
replicated 3 times and a write needs 2 in-sync copies, so one node can be killed or paused
(chaos) without losing an acknowledged record or refusing writes.

`python -m quotaflow.devstack.kafka_cluster fetch` fetches the jars (infra/local/setup.sh);
`... start [N]` runs a cluster in the foreground until Ctrl-C (prints its bootstrap servers).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from base64 import urlsafe_b64encode
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from quotaflow.devstack.kafka_security import ADMIN, LocalSecurity
from quotaflow.devstack.process import DevStackError, free_port

KAFKA_VERSION = "4.4.0"
REPO = Path(__file__).resolve().parent.parent.parent
POM = REPO / "infra" / "kafka" / "pom.xml"
LOG4J2 = REPO / "infra" / "kafka" / "log4j2.properties"

# Small: the local stack shares 2 cores and a few GiB with PostgreSQL, Redis and seven Python
# processes. The serial collector has no GC threads to compete with the steps; C1+C2 stay on
# (the broker's hot path is JIT-compiled within seconds).
JVM_OPTS = ["-Xms64m", "-Xmx384m", "-XX:+UseSerialGC", "-XX:MaxMetaspaceSize=128m",
            "-XX:ReservedCodeCacheSize=64m", "-Djava.awt.headless=true"]

Spawn = Callable[[str, list[str], bool], "subprocess.Popen[bytes]"]


def cache_dir() -> Path:
    """Where fetched Kafka versions live: `QF_KAFKA_CACHE`, else the user's cache folder
    (shared by every checkout on the machine: the jars are the same)."""
    explicit = os.environ.get("QF_KAFKA_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "quotaflow" / "kafka"


def libs_dir(version: str = KAFKA_VERSION) -> Path:
    return cache_dir() / version / "libs"


def fetched(version: str = KAFKA_VERSION) -> bool:
    # The marker is written after Maven copied every jar: a copy cut short is not "fetched".
    return (libs_dir(version) / ".complete").exists()


@cache
def java_major() -> int | None:
    """The major version of `java` on PATH (None: no Java)."""
    java = shutil.which("java")
    if java is None:
        return None
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    # e.g. `openjdk version "17.0.15" 2025-04-15` (or "1.8.0_392" on old Javas)
    for line in (out.stderr + out.stdout).splitlines():
        if '"' in line:
            number = line.split('"')[1]
            parts = number.split(".")
            with contextlib.suppress(ValueError):
                return int(parts[1]) if parts[0] == "1" else int(parts[0].split("-")[0])
    return None


def available(version: str = KAFKA_VERSION) -> bool:
    """True if Apache Kafka can run here now: Java 17+ and the jars fetched."""
    major = java_major()
    return major is not None and major >= 17 and fetched(version)


def fetch(version: str = KAFKA_VERSION, say: Callable[[str], None] = print) -> Path:
    """Copy Kafka's jars into the cache with Maven (once; Maven keeps its own download cache
    too). Returns the folder of jars."""
    libs = libs_dir(version)
    if fetched(version):
        return libs
    mvn = shutil.which("mvn")
    if mvn is None or java_major() is None:
        raise DevStackError("Apache Kafka needs Java 17+ and Maven to fetch it "
                            "(Debian: apt-get install openjdk-17-jre-headless maven)")
    if not POM.exists():
        raise DevStackError(f"{POM} is missing: fetch Kafka from a checkout of quotaflow")
    say(f"fetching Apache Kafka {version} from Maven Central into {libs} (once) ...")
    libs.parent.mkdir(parents=True, exist_ok=True)
    # Copied beside its final place, then renamed: a start never sees half the jars.
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=libs.parent))
    done = subprocess.run([mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
                           f"-Dkafka.version={version}", "-DincludeScope=runtime",
                           f"-DoutputDirectory={staging}"], capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise DevStackError(f"Maven could not fetch Apache Kafka {version}:\n"
                            f"{(done.stdout + done.stderr)[-2000:]}")
    (staging / ".complete").write_text(version + "\n")
    shutil.rmtree(libs, ignore_errors=True)
    try:
        staging.rename(libs)
    except OSError:  # another process fetched it meanwhile (and renamed first)
        shutil.rmtree(staging, ignore_errors=True)
    return libs


def cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (what
    `kafka-storage random-uuid` prints)."""
    return urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


@dataclass
class KafkaNode:
    """One combined broker+controller: its ports, folder and process."""

    node_id: int
    port: int  # clients and the other brokers (PLAINTEXT)
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

    # --- configuration -----------------------------------------------------------------

    def properties(self, node: KafkaNode) -> dict[str, str | int]:
        replicas = self.replication
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        return {
            "process.roles": "broker,controller",
            "node.id": node.node_id,
            # A static quorum: every node knows every voter from its config, so formatting
            # needs nothing but the cluster id, and a restarted node rejoins by itself.
            "controller.quorum.voters": voters,
            "listeners": f"{self.listener}://127.0.0.1:{node.port},"
                         f"CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"{self.listener}://127.0.0.1:{node.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": self.listener,
            "listener.security.protocol.map":
                f"{self.listener}:{self.listener},CONTROLLER:PLAINTEXT",
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
            **(self.security.broker_properties() if self.security else {}),
        }

    @property
    def listener(self) -> str:
        """The clients' (and the brokers' own) listener: SASL_SSL when secured."""
        return "SASL_SSL" if self.security else "PLAINTEXT"

    def client_config(self, user: str = ADMIN) -> dict[str, str | int | float | bool]:
        """librdkafka settings that reach this cluster: its bootstrap servers, and when it is
        secured, `user`'s credentials (the brokers' own ADMIN by default)."""
        config: dict[str, str | int | float | bool] = {"bootstrap.servers": self.bootstrap}
        if self.security:
            config.update(self.security.client_config(user))
        return config

    def grant(self, user: str, reads: Iterable[str] = (), writes: Iterable[str] = (),
              groups: Iterable[str] = (), timeout_s: float = 30) -> None:
        """Allow `user` (secured cluster) to read and describe `reads`, write and describe
        `writes`, and join `groups`; nothing else is allowed it (no ACL, no access)."""
        principal = f"User:{user}"

        def acl(kind: ResourceType, name: str, op: AclOperation) -> AclBinding:
            return AclBinding(kind, name, ResourcePatternType.LITERAL, principal, "*", op,
                              AclPermissionType.ALLOW)

        acls = ([acl(ResourceType.TOPIC, t, op) for t in reads
                 for op in (AclOperation.READ, AclOperation.DESCRIBE)]
                + [acl(ResourceType.TOPIC, t, op) for t in writes
                   for op in (AclOperation.WRITE, AclOperation.DESCRIBE)]
                + [acl(ResourceType.GROUP, g, AclOperation.READ) for g in groups])
        if not acls:
            return
        admin = AdminClient({**self.client_config(), "log_level": 0})
        for future in admin.create_acls(acls, request_timeout=timeout_s).values():
            future.result()

    def _write_config(self, node: KafkaNode) -> None:
        node.root.mkdir(parents=True, exist_ok=True)
        node.config.write_text("".join(f"{k}={v}\n" for k, v in self.properties(node).items()))

    def _java(self, main: str, *args: str, short: bool = False) -> list[str]:
        java = shutil.which("java") or "java"
        # A tool that runs for a second is done before C2 would pay off: C1 only.
        jit = ["-XX:TieredStopAtLevel=1"] if short else []
        return [java, *JVM_OPTS, *jit, f"-Dlog4j2.configurationFile={LOG4J2}",
                "-cp", str(libs_dir(self.version) / "*"), main, *args]

    def argv(self, node: KafkaNode) -> list[str]:
        """The command line of `node`'s broker."""
        return self._java("kafka.Kafka", str(node.config))

    # --- life cycle ----------------------------------------------------------------------

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
                self._java("kafka.tools.StorageTool", "format", "--cluster-id", cid,
                           "--config", str(node.config), "--ignore-formatted",
                           *(self.security.scram_format_args() if self.security else []),
                           short=True),
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
            self.warm_up(timeout_s)
        except BaseException:
            self.stop()
            raise

    def warm_up(self, timeout_s: float = 90) -> None:
        """One idempotent record through a replicated topic and one consumer group's commit.
        A fresh cluster creates its internal topics (producer ids, group offsets) on first use,
        which took over 5 s on a busy 2-core machine: the first test's flush timed out. Done
        here, start-up includes it; the topic goes afterwards (the group's offset stays)."""
        topic = "quotaflow-cluster-warm-up"
        config = {**self.client_config(), "log_level": 0}
        admin = AdminClient(config)
        with contextlib.suppress(KafkaException):  # already there: a restarted cluster
            admin.create_topics([NewTopic(topic, 1, self.replication)])[topic].result(timeout_s)
        producer = Producer({**config, "enable.idempotence": True, "acks": "all"})
        producer.produce(topic, b"ready")
        if producer.flush(timeout_s):
            raise DevStackError(f"Apache Kafka took no record within {timeout_s:.0f} s "
                                f"(logs in {self.logs or self.root})")
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

    def brokers_up(self) -> set[int]:
        """The ids of the brokers the cluster's metadata lists (registered, not fenced)."""
        admin = AdminClient({**self.client_config(), "log_level": 0,
                             "socket.connection.setup.timeout.ms": 1000})
        try:
            return set(admin.list_topics(timeout=2).brokers)
        except Exception:  # not answering yet
            return set()

    def wait_ready(self, timeout_s: float = 90, nodes: set[int] | None = None) -> None:
        """Wait until the metadata lists every node of `nodes` (default: all) as a broker."""
        want = nodes if nodes is not None else {n.node_id for n in self.nodes}
        deadline = time.monotonic() + timeout_s
        while True:
            for node in self.nodes:
                if node.node_id in want and node.proc is not None and \
                        node.proc.poll() is not None:
                    raise DevStackError(f"{node.name} exited with code {node.proc.returncode}"
                                        f" (log: {self.log_path(node)})\n{self._tail(node)}")
            up = self.brokers_up()
            if want <= up:
                return
            if time.monotonic() > deadline:
                raise DevStackError(f"Apache Kafka: brokers {sorted(up)} of {sorted(want)} up "
                                    f"after {timeout_s:.0f} s (logs in {self.root})")
            time.sleep(0.2)

    def log_path(self, node: KafkaNode) -> Path:
        return (self.logs or self.root) / f"{node.name}.log"

    def _tail(self, node: KafkaNode) -> str:
        path = self.log_path(node)
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

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

    def stop(self, remove: bool = False, graceful_s: float = 0) -> None:
        """Stop every node: SIGTERM (a controlled shutdown) for up to `graceful_s`, then
        SIGKILL; with `remove`, delete the data too. The default kills at once: with every
        node going, the last ones could not finish a controlled shutdown anyway (no quorum
        left to hand their partitions to)."""
        procs = [n.proc for n in self.nodes if n.proc is not None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGCONT)  # a paused node could not act on TERM
                os.killpg(proc.pid, signal.SIGTERM if graceful_s > 0 else signal.SIGKILL)
        deadline = time.monotonic() + graceful_s
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)


def _main(argv: list[str]) -> int:
    if argv[:1] == ["fetch"]:
        if java_major() is None:
            print("[setup] no Java: Apache Kafka is not fetched; the local stack and the tests "
                  "use the embedded Tansu broker")
            return 0
        if fetched():
            print(f"[setup] Apache Kafka {KAFKA_VERSION} is fetched ({libs_dir()})")
            return 0
        fetch(say=lambda m: print(f"[setup] {m}", flush=True))
        print(f"[setup] Apache Kafka {KAFKA_VERSION} fetched")
        return 0
    if argv[:1] == ["start"]:
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
    print("usage: python -m quotaflow.devstack.kafka_cluster fetch | start [NODES]",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
