"""admit against the bare endpoint: both served by the same server command (admit's own, from
the local stack), loaded by wrk in interleaved rounds of the same length and connections."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import wrk
from benchmarks.stats import median
from quotaflow.devstack.process import free_port, http_ok, wait_for
from quotaflow.devstack.stack import DevStack

ADMIT_APP = "quotaflow.functions.admit.app:create"
BARE_APP = "benchmarks.bare:create"


def bare_argv(admit_argv: Sequence[str], port: int) -> list[str]:
    """admit's server command with the bare app in its place, bound to `port`: whatever server,
    workers and threads admit is served with, the bare endpoint gets the same."""
    if ADMIT_APP not in admit_argv:
        raise ValueError(f"admit's server command names no {ADMIT_APP}: {list(admit_argv)}")
    argv = [BARE_APP if a == ADMIT_APP else a for a in admit_argv]
    for i, arg in enumerate(argv[:-1]):
        if arg in ("--bind", "-b"):
            argv[i + 1] = f"127.0.0.1:{port}"
        elif arg == "--port":
            argv[i + 1] = str(port)
    return argv


def start_bare(stack: DevStack, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The bare endpoint under admit's server command; its URL."""
    admit = stack.procs["admit"].args
    port = free_port()
    argv = bare_argv([str(a) for a in admit], port)  # type: ignore[union-attr]
    if argv[0] != sys.executable and "python" not in Path(argv[0]).name:
        raise ValueError(f"unexpected server command {argv[0]}")
    with (workdir / "bare.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_for("bare endpoint", lambda: http_ok(url + "/health/readiness"), 60, proc,
             workdir / "bare.log")
    return proc, url


def compare(admit_url: str, bare_url: str, key: str, body: str, seconds: float,
            connections: int, rounds: int, workdir: Path,
            say: Callable[[str], None]) -> dict[str, Any]:
    """Interleaved rounds (bare then admit, then admit then bare, ...); per round ratio =
    admit req/s / bare req/s; the median ratio is the result."""
    wrk.run(bare_url + "/", 1, connections, key, workdir, run_id="warm-b", body=body)
    wrk.run(admit_url + "/", 1, connections, key, workdir, source="/bench/warm", run_id="warm-a",
            body=body)
    per_round: list[dict[str, Any]] = []
    for r in range(rounds):
        order = ("bare", "admit") if r % 2 == 0 else ("admit", "bare")
        got: dict[str, wrk.WrkResult] = {}
        for name in order:
            url = bare_url if name == "bare" else admit_url
            got[name] = wrk.run(url + "/", seconds, connections, key, workdir,
                                source=f"/bench/door/{r}", run_id=f"door{r}{name[0]}",
                                body=body)
            say(f"  round {r + 1}/{rounds} {name}: {got[name].rps:,.0f} req/s, "
                f"p99 {got[name].p99_ms:.1f} ms, non-2xx {got[name].non2xx}")
        per_round.append({"bare": asdict(got["bare"]) | {"rps": got["bare"].rps},
                          "admit": asdict(got["admit"]) | {"rps": got["admit"].rps},
                          "ratio": got["admit"].rps / got["bare"].rps})

    def med(name: str, field: str) -> float:
        return round(median([r[name][field] for r in per_round]), 2)

    return {"connections": connections, "seconds": seconds, "rounds": per_round,
            "ratio": round(median([r["ratio"] for r in per_round]), 3),
            "ratio_min": round(min(r["ratio"] for r in per_round), 3),
            "ratio_max": round(max(r["ratio"] for r in per_round), 3),
            **{f"{n}_{f}": med(n, f) for n in ("bare", "admit")
               for f in ("rps", "p50_ms", "p99_ms")},
            "admit_non2xx": sum(r["admit"]["non2xx"] + r["admit"]["socket_errors"]
                                for r in per_round),
            "bare_non2xx": sum(r["bare"]["non2xx"] + r["bare"]["socket_errors"]
                               for r in per_round)}
