"""A local stack seen from outside, through its state file: whether one is running, starting
one in the background (its own supervisor process), and stopping it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from quotaflow.devstack.process import pid_alive, read_state, stop_pids


def running_state(state_dir: Path) -> dict[str, Any] | None:
    """The state of a stack still running from `state_dir` (its supervisor or any of its
    processes alive), or None."""
    state = read_state(state_dir)
    if state is None:
        return None
    pids: dict[str, int] = state.get("pids", {})  # type: ignore[assignment]
    alive = [pid_alive(state.get("supervisor")), *(pid_alive(p) for p in pids.values())]
    return state if any(alive) else None


def start_detached(argv: list[str], state_dir: Path, say: Callable[[str], None]) -> int:
    """Run `argv` (a foreground `dev up`: the stack and its supervisor) as a background
    process of its own; return 0 once its stack is ready (echoing its progress), 1 if it
    exits first."""
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "supervisor.log"
    with log_path.open("wb") as out:
        child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
    say(f"starting in the background (supervisor pid {child.pid}, log {log_path})")
    shown = 0
    try:
        while True:
            text = log_path.read_text(errors="replace")
            sys.stderr.write(text[shown:])
            shown = len(text)
            state = read_state(state_dir)
            if state and state.get("supervisor") == child.pid and state.get("ready"):
                print(f"admit URL: {state['admit_url']}", flush=True)
                return 0
            if child.poll() is not None:
                say(f"the stack did not start (exit code {child.returncode}); see {log_path}")
                return 1
            time.sleep(0.3)
    except KeyboardInterrupt:
        child.terminate()
        return 130


def stop_recorded(state_dir: Path, timeout_s: float = 60) -> int | None:
    """Stop the stack recorded in `state_dir`: its supervisor first (on SIGTERM it stops
    restarting and stops its stack), then whatever is left. Returns how many processes the
    stack had, or None if none is recorded."""
    state = read_state(state_dir)
    if state is None:
        return None
    supervisor = state.get("supervisor")
    if isinstance(supervisor, int) and supervisor != os.getpid() and pid_alive(supervisor):
        os.kill(supervisor, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while pid_alive(supervisor) and time.monotonic() < deadline:
            time.sleep(0.2)
    state = read_state(state_dir) or state  # restarts may have changed the pids
    pids: dict[str, int] = state["pids"]  # type: ignore[assignment]
    stop_pids(pids)
    (state_dir / "state.json").unlink(missing_ok=True)
    return len(pids)
