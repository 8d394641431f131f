"""Apache Kafka's broker on this machine: its jars from Maven Central (`org.apache.kafka:kafka_2.13`
and what it runs with, named by `infra/kafka/pom.xml`), copied once by Maven into a cache folder
(`fetch`), and the Java (17 or newer) that runs them. `python -m quotaflow.devstack.kafka_cluster
fetch` fetches them (infra/local/setup.sh)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path

from quotaflow.devstack.process import DevStackError

KAFKA_VERSION = "4.4.0"
REPO = Path(__file__).resolve().parent.parent.parent
POM = REPO / "infra" / "kafka" / "pom.xml"
LOG4J2 = REPO / "infra" / "kafka" / "log4j2.properties"

# Small: the local stack shares 2 cores and a few GiB with PostgreSQL, Redis and seven Python
# processes. The serial collector has no GC threads to compete with the steps; C1+C2 stay on
# (the broker's hot path is JIT-compiled within seconds).
JVM_OPTS = ["-Xms64m", "-XX:+UseSerialGC", "-XX:MaxMetaspaceSize=128m",
            "-XX:ReservedCodeCacheSize=64m", "-Djava.awt.headless=true"]
# A broker's heap grows with the partitions it holds: 384 MiB fills at about 13,000 partition
# replicas a node (measured: 120 sets of quotaflow's 18 topics, 108 partitions a set), after
# which full collections stall it and requests time out. The stack holds one set.
HEAP_MB = 384

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


def java_argv(main: str, *args: str, version: str = KAFKA_VERSION,
              short: bool = False, heap_mb: int = HEAP_MB) -> list[str]:
    """The command line that runs class `main` of Kafka's jars with at most `heap_mb` MiB of
    heap (`short`: a tool that runs for a second, done before C2 would pay off: C1 only)."""
    java = shutil.which("java") or "java"
    jit = ["-XX:TieredStopAtLevel=1"] if short else []
    return [java, *JVM_OPTS, f"-Xmx{heap_mb}m", *jit, f"-Dlog4j2.configurationFile={LOG4J2}",
            "-cp", str(libs_dir(version) / "*"), main, *args]


def fetch_main() -> int:
    """`fetch` for infra/local/setup.sh: progress lines, idempotent, a line where no Java."""
    major = java_major()
    if major is None or major < 17:
        found = "no Java" if major is None else f"Java {major} (Kafka 4 needs 17+)"
        print(f"[setup] {found}: Apache Kafka is not fetched; the local stack and the tests use "
              "the embedded Tansu broker")
        return 0
    if fetched():
        print(f"[setup] Apache Kafka {KAFKA_VERSION} is fetched ({libs_dir()})")
        return 0
    fetch(say=lambda m: print(f"[setup] {m}", flush=True))
    print(f"[setup] Apache Kafka {KAFKA_VERSION} fetched")
    return 0
