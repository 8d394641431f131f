"""`quotaflow bench --servers`: admit and the bare endpoint under each candidate server setup,
the door alone. The pipeline's first step is paused (SIGSTOP) for the whole comparison, so
the steps take no CPU from the door while wrk loads it (accepted requests wait in Kafka and
drain when it resumes); the broker still takes admit's produce. Rounds are interleaved, the
candidates' order reversed every other round; medians over rounds."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import wrk
from benchmarks.cpu import cpu_seconds
from benchmarks.stats import median
from quotaflow.devstack.process import free_port, http_ok, wait_for
from quotaflow.devstack.serving import ADMIT_FACTORY, admit_server_argv
from quotaflow.devstack.stack import DevStack

BARE_FACTORY = "benchmarks.bare:create"


def gunicorn_argv(port: int, workers: int, threads: int, app: str) -> list[str]:
    """gunicorn's threaded workers serving the factory `app` (called: gunicorn's syntax)."""
    return [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--threads",
            str(threads), "--bind", f"127.0.0.1:{port}", f"{app}()"]


Server = Callable[[int, str], list[str]]
CANDIDATES: dict[str, Server] = {
    "granian 2 x 16 (dev up's)": lambda port, app: admit_server_argv(port, 2, 16, app),
    "granian 2 x 8": lambda port, app: admit_server_argv(port, 2, 8, app),
    "granian 1 x 32": lambda port, app: admit_server_argv(port, 1, 32, app),
    "gunicorn gthread 2 x 16": lambda port, app: gunicorn_argv(port, 2, 16, app),
}


def _serve(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    wait_for("server", lambda: http_ok(f"http://127.0.0.1:{argv_port(argv)}/health/readiness"),
             60, proc, log)
    return proc


def argv_port(argv: list[str]) -> int:
    """The port a candidate's command binds."""
    for flag, value in itertools.pairwise(argv):
        if flag == "--port":
            return int(value)
        if flag == "--bind":
            return int(value.rsplit(":", 1)[1])
    raise ValueError(f"no port in {argv}")


def measure(server: Server, app: str, env: dict[str, str], key: str, body: str,
            seconds: float, connections: int, workdir: Path, run_id: str) -> dict[str, Any]:
    """One wrk round against `app` under `server`, with the CPU its processes spent."""
    port = free_port()
    proc = _serve(server(port, app), env, workdir / f"{run_id}.log")
    try:
        url = f"http://127.0.0.1:{port}/"
        wrk.run(url, 1, connections, key, workdir, source=f"/bench/srv/{run_id}/warm",
                run_id=f"{run_id}w", body=body)
        before = cpu_seconds({"server": proc.pid})["server"]
        got = wrk.run(url, seconds, connections, key, workdir, source=f"/bench/srv/{run_id}",
                      run_id=run_id, body=body)
        spent = cpu_seconds({"server": proc.pid})["server"] - before
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
    return {"rps": round(got.rps, 1), "p50_ms": got.p50_ms, "p99_ms": got.p99_ms,
            "non2xx": got.non2xx, "cpu_ms": round(spent * 1000 / max(1, got.requests), 3)}


def compare(stack: DevStack, key: str, body: str, seconds: float, connections: int,
            rounds: int, workdir: Path, say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Each candidate's medians: admit and bare req/s, p50/p99, CPU ms a request, ratio."""
    env = {**os.environ, **stack.settings.as_env(), **stack.child_env}
    paused = stack.procs["estimate"].pid
    os.kill(paused, signal.SIGSTOP)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CANDIDATES}
    try:
        for r in range(rounds):
            names = list(CANDIDATES) if r % 2 == 0 else list(reversed(CANDIDATES))
            for i, name in enumerate(names):
                got = {which: measure(CANDIDATES[name], app, env, key, body, seconds,
                                      connections, workdir, f"s{r}{i}{which[0]}")
                       for which, app in (("bare", BARE_FACTORY), ("admit", ADMIT_FACTORY))}
                runs[name].append(got)
                say(f"  round {r + 1}/{rounds} {name}: admit {got['admit']['rps']:,.0f} req/s "
                    f"({got['admit']['cpu_ms']:.2f} ms CPU), bare {got['bare']['rps']:,.0f}")
    finally:
        os.kill(paused, signal.SIGCONT)
    out = []
    for name, each in runs.items():
        row: dict[str, Any] = {"server": name}
        for which in ("admit", "bare"):
            for field in ("rps", "p50_ms", "p99_ms", "cpu_ms"):
                row[f"{which}_{field}"] = round(median([g[which][field] for g in each]), 2)
            row[f"{which}_non2xx"] = sum(g[which]["non2xx"] for g in each)
        row["ratio"] = round(median([g["admit"]["rps"] / g["bare"]["rps"] for g in each]), 3)
        out.append(row)
    return out
