"""Processes and ports of the local stack: waiting for a service, stopping process groups,
the state file `quotaflow dev status` and `dev down` read."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path


class DevStackError(RuntimeError):
    pass


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def http_ok(url: str) -> bool:
    """True if GET `url` answers 200 within a second."""
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


_handed_out: set[int] = set()


def ephemeral_ports() -> range:
    """The ports the kernel gives outgoing connections (Linux's default where unreadable)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def draw_range(ephemeral: range) -> tuple[int, int]:
    """Where free ports are drawn from: below the ephemeral range, above the well-known ports."""
    return (20000, ephemeral.start - 1) if ephemeral.start > 21000 else (10000, 19999)


def free_port() -> int:
    """A port nobody listens on, for a child to listen on. Drawn below the kernel's ephemeral
    range: a port from that range can go to one of the stack's own outgoing connections in the
    seconds before the child binds it (it did: infer died on "Address already in use"). Never
    the same port twice in one process."""
    ephemeral = ephemeral_ports()
    low, high = draw_range(ephemeral)
    for _ in range(200):
        port = random.randint(low, high)
        if port in _handed_out or port in ephemeral:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise DevStackError(f"no free port between {low} and {high}")


def wait_for(what: str, check: Callable[[], bool], timeout_s: float,
             proc: subprocess.Popen[bytes] | None = None, log_path: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            tail = log_path.read_text()[-2000:] if log_path and log_path.exists() else ""
            raise DevStackError(f"{what} exited with code {proc.returncode}\n{tail}")
        time.sleep(0.1)
    raise DevStackError(f"{what} not ready after {timeout_s:.0f} s"
                        + (f" (log: {log_path})" if log_path else ""))


def stop_pids(pids: dict[str, int]) -> None:
    # Functions first, then the services they use.
    order = sorted(pids, key=lambda n: n in ("kafka", "postgres", "redis", "s3")
                   or n.startswith("kafka-"))
    for name in order:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pids[name], signal.SIGTERM)
    deadline = time.monotonic() + 10
    for name in order:
        while time.monotonic() < deadline and _alive(pids[name]):
            time.sleep(0.05)
        if _alive(pids[name]):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pids[name], signal.SIGKILL)


def pid_alive(pid: object) -> bool:
    """True if process `pid` (an int, else False) exists."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        return waited == 0
    except ChildProcessError:
        return True


def read_state(state_dir: Path) -> dict[str, object] | None:
    path = state_dir / "state.json"
    return json.loads(path.read_text()) if path.exists() else None
