"""Members joining and leaving a consumer step's group in a running local stack, as a scaler
adds and removes pods (`dev up --replicas N` starts N of each, `replicas`); the chaos harness
does it mid-run (its `join` and `leave` faults), and `quotaflow dev scale STEP N` asks a running
`dev up` for it through a request file in the stack's state folder (`request_scale`)."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from quotaflow.devstack.stack import DevStack


def running_members(stack: DevStack, step: str) -> list[str]:
    """The running processes of consumer step `step` (`step`, or `step-1` ...)."""
    return [n for n, p in stack.procs.items()
            if n.rsplit("-", 1)[0] == step and n not in (stack.kafka.names if stack.kafka else [])
            and p.poll() is None]


def join(stack: DevStack, step: str) -> str:
    """Start one more member of `step`'s group, supervised as the others are (`step-K`, the
    first K free); returns its name. Its group hands it partitions of the others."""
    name = next(n for k in itertools.count(1) if (n := f"{step}-{k}") not in stack.procs)
    stack.start_process(name, step)
    stack.write_state()
    return name


def leave(stack: DevStack, step: str, timeout_s: float = 30) -> str | None:
    """Stop one member of `step`'s group as a scale-in does, unless it is the last one
    running; returns its name (None: none left). SIGTERM: the member finishes and commits
    what it holds and leaves its group, whose others take its partitions at once."""
    names = running_members(stack, step)
    if len(names) < 2:
        return None
    name = names[-1]
    # Out of the stack first, so its supervisor does not start it again.
    proc = stack.procs.pop(name)
    stack.metrics_ports.pop(name, None)
    stack.write_state()
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    return name


def request_scale(state_dir: Path, step: str, count: int) -> None:
    """Ask the stack running from `state_dir` to run `count` members of `step`
    (`quotaflow dev scale`); the stack's own process applies it (`apply_requests`)."""
    folder = state_dir / "scale"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{step}.tmp"
    tmp.write_text(str(count))
    tmp.replace(folder / step)  # the stack never reads half a request


def apply_requests(stack: DevStack, say: Callable[[str], None] = print) -> list[str]:
    """Apply every `request_scale` waiting in the stack's state folder: members join or leave
    until the step runs the count asked (one at least), then the request goes. Says and
    returns what was done, as lines."""
    folder = stack.state_dir / "scale"
    done: list[str] = []
    for path in sorted(folder.iterdir()) if folder.exists() else []:
        if path.name.startswith("."):
            continue
        step, count = path.name, max(1, int(path.read_text()))
        while len(running_members(stack, step)) < count:
            done.append(f"{join(stack, step)} joined {step}'s group")
        while len(running_members(stack, step)) > count and (left := leave(stack, step)):
            done.append(f"{left} left {step}'s group")
        path.unlink()
    for line in done:
        say(line)
    return done
