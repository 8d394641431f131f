"""The open loop `quotaflow bench` (benchmarks/) measures latency with: wrk sends each request
at its own due time (start + slot / rate), whatever the answers to the others, and names that
time in its ce-id, so latency is read from when a request was due, never from when a busy
client got round to sending it. Needs wrk (infra/local/setup.sh installs it)."""

from __future__ import annotations

import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

from benchmarks import wrk


class Recorder(BaseHTTPRequestHandler):
    """Answers 202, after `slow_s` for every tenth slot, and records (ce-id, arrival)."""

    seen: ClassVar[list[tuple[str, float]]] = []
    slow_s: ClassVar[float] = 0.0

    def do_POST(self) -> None:
        arrived = time.time()
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        ce_id = self.headers["ce-id"]
        Recorder.seen.append((ce_id, arrived))
        if wrk.due_at(ce_id)[0] % 10 == 0:
            time.sleep(Recorder.slow_s)
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


def run_open_loop(tmp_path: Path, rate: float, total: int, connections: int,
                  slow_s: float) -> tuple[float, list[tuple[int, float, float]], wrk.WrkResult]:
    Recorder.seen, Recorder.slow_s = [], slow_s
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        start = time.time() + 0.3
        argv, env = wrk.open_command(f"http://127.0.0.1:{server.server_port}/", rate, total,
                                     connections, "k", tmp_path, "/t/open", start, "{}")
        out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60,
                             check=True).stdout
    finally:
        server.shutdown()
    got = [(*wrk.due_at(ce_id), arrived) for ce_id, arrived in Recorder.seen]
    return start, got, wrk.parse(out)


def test_every_slot_is_sent_once_at_its_due_time_and_named_with_it(tmp_path: Path) -> None:
    start, got, result = run_open_loop(tmp_path, rate=200, total=120, connections=8, slow_s=0)
    assert sorted(slot for slot, _, _ in got) == list(range(120))
    assert result.requests == 120 and result.non2xx == 0
    for slot, due, arrived in got:
        assert abs(due - (start + slot / 200)) < 1e-5
        assert arrived >= due - 0.002  # never early (wrk's timers count whole ms)
    # paced, not as fast as it can: the last one went out about 0.6 s after the first
    spread = max(a for _, _, a in got) - min(a for _, _, a in got)
    assert 0.5 < spread < 2.0


def test_a_slow_answer_does_not_hold_back_the_requests_due_after_it(tmp_path: Path) -> None:
    """Every tenth request takes 0.3 s to answer; a closed loop on one connection each would
    send the rest late, an open loop sends them on other free connections, on time."""
    _, got, _ = run_open_loop(tmp_path, rate=100, total=60, connections=8, slow_s=0.3)
    assert sorted(slot for slot, _, _ in got) == list(range(60))
    late = sorted(arrived - due for _, due, arrived in got)
    assert late[len(late) // 2] < 0.05  # the median request was sent on time
