"""Cold start of the Knative functions as `quotaflow dev up --knative` runs them: from the
process's start to its first ready answer (`/health/readiness`), per non-model step, against a
bare function served the same way (func-python over an ASGI `handle` that imports nothing of
quotaflow) measured in the same run, alternating. The stack (Tansu, stand-in model; PostgreSQL
and Redis reachable or embedded) is started for it and stopped after.

    python -m benchmarks.cold_start --rounds 10
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.stats import median
from quotaflow.devstack.knative_functions import FunctionProcess
from quotaflow.devstack.process import free_port
from quotaflow.devstack.stack import DevStack
from quotaflow.settings import Settings

STEPS = ("estimate", "reserve", "settle", "record")  # infer loads the model: not a cold start
BARE = [sys.executable, "-c", "from func_python.http import serve; "
        "from benchmarks.cold_start import new; serve(new)"]


class _Bare:
    """The baseline function: ready at once, answers 204."""

    def start(self, _cfg: dict[str, str]) -> None:
        pass

    def stop(self) -> None:
        pass

    def alive(self) -> tuple[bool, str]:
        return True, "alive"

    def ready(self) -> tuple[bool, str]:
        return True, "ready"

    async def handle(self, _scope: Any, _receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def new() -> _Bare:
    return _Bare()


def cold_start_s(name: str, env: dict[str, str], logs: Path, argv: list[str] | None) -> float:
    fn = FunctionProcess(name, free_port(), env, logs, idle_s=0, argv=argv)
    try:
        fn.acquire()
        fn.release()
        return fn.cold_starts_s[0]
    finally:
        fn.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="qf-cold-"))
    stack = DevStack(state, Settings(model_source="standin"), admit_port=free_port(),
                     kafka_port=free_port(), admit_workers=1, broker="tansu", knative=True)
    stack.up(explicit_pg=False, explicit_redis=False, progress=lambda m: print(m, flush=True))
    times: dict[str, list[float]] = {s: [] for s in ("bare", *STEPS)}
    try:
        env = {**stack.settings.as_env(), **stack.child_env, "PYTHONPATH": str(Path.cwd())}
        for _ in range(args.rounds):
            for name in ("bare", *STEPS):
                times[name].append(cold_start_s(name, env, state / "logs",
                                                BARE if name == "bare" else None))
    finally:
        stack.down()
    bare = median(times["bare"])
    print(json.dumps({name: {"p50_s": round(median(t), 3), "max_s": round(max(t), 3),
                             "vs_bare": round(median(t) / bare, 2)}
                      for name, t in times.items()}, indent=2))


if __name__ == "__main__":
    main()
