"""Reproduces the local broker's race that skips records (README, "Kafka broker quirks"), and
shows that reading again from the gap gets them: what `quotaflow/runtime/gaps.py` does.

    python -m benchmarks.broker_fetch_race [--producers 4] [--seconds 30] [--reread]

A fresh Tansu broker, one topic of one partition, N idempotent producers sending batches of 5
records as fast as they can, one consumer reading. Offsets are contiguous, so a record past the
next offset expected is a gap: records the broker acknowledged but a fetch left out. With
--reread the consumer screens each poll through the pipeline's own `GapGuard` (seeking back to
each gap) and counts the gaps that reading again filled."""

from __future__ import annotations

import argparse
import subprocess
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from quotaflow.devstack.process import free_port, port_open
from quotaflow.devstack.services import tansu_binary
from quotaflow.runtime.gaps import GapGuard


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--producers", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--reread", action="store_true", help="seek back to each gap")
    args = ap.parse_args()

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    broker = subprocess.Popen([str(tansu_binary()), "broker", "--listener-url", url,
                               "--advertised-listener-url", url,
                               "--storage-engine", "memory://tansu/"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not port_open("127.0.0.1", port):
            time.sleep(0.1)
        servers = f"127.0.0.1:{port}"
        admin = AdminClient({"bootstrap.servers": servers})  # kept: its futures need it
        admin.create_topics([NewTopic("race", 1, 1)])["race"].result()
        time.sleep(0.5)
        stop = threading.Event()
        sent = [0] * args.producers

        def produce(i: int) -> None:
            p = Producer({"bootstrap.servers": servers, "enable.idempotence": True,
                          "acks": "all", "linger.ms": 0, "log_level": 0})
            while not stop.is_set():
                for _ in range(5):
                    p.produce("race", value=b"x" * 100, key=b"k")
                p.flush()
                sent[i] += 5

        threads = [threading.Thread(target=produce, args=(i,)) for i in range(args.producers)]
        for t in threads:
            t.start()
        consumer = Consumer({"bootstrap.servers": servers, "group.id": "race",
                             "enable.auto.commit": False, "fetch.wait.max.ms": 20,
                             "log_level": 0})
        consumer.assign([TopicPartition("race", 0, 0)])
        guard = GapGuard("race")  # what the pipeline's consumers do
        expected, consumed, pending, filled = 0, 0, set[int](), 0
        gaps: list[tuple[int, int | None]] = []  # (first missing offset, next one read)
        started = time.monotonic()
        print(f"{args.producers} producers, one consumer, {args.seconds:g} s ...", flush=True)
        while time.monotonic() - started < args.seconds:
            msgs = consumer.consume(500, 0.05)
            if args.reread:
                msgs, seeks = guard.screen(msgs)
                for tp in seeks:
                    if tp.offset not in pending:
                        gaps.append((tp.offset, None))
                        pending.add(tp.offset)
                    consumer.seek(tp)
            for msg in msgs:
                offset = msg.offset()
                if msg.error() is not None or offset is None:
                    continue
                if offset > expected:
                    gaps.append((expected, offset))
                if offset in pending:
                    filled, pending = filled + 1, pending - {offset}
                expected = offset + 1
                consumed += 1
        stop.set()
        for t in threads:
            t.join()
        consumer.close()
    finally:
        broker.kill()
    print(f"sent {sum(sent):,}, consumed {consumed:,}, gaps {len(gaps)} (first at offsets: "
          f"{', '.join(str(a) for a, _ in gaps[:5]) or 'none'})"
          + (f", filled by reading again: {filled}" if args.reread else ""))


if __name__ == "__main__":
    main()
