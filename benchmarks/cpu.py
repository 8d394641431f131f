"""CPU time by process of the local stack, so a run says where the two cores went."""

from __future__ import annotations

import psutil


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds of each named process and all its descendants (gunicorn's
    workers count for admit); a process that is gone counts 0."""
    out: dict[str, float] = {}
    for name, pid in pids.items():
        total = 0.0
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                try:
                    t = proc.cpu_times()
                    total += t.user + t.system
                except psutil.NoSuchProcess:
                    continue
        except psutil.NoSuchProcess:
            pass
        out[name] = total
    return out


def per_request_ms(before: dict[str, float], after: dict[str, float],
                   requests: int) -> dict[str, float]:
    """CPU milliseconds per request of each process between two snapshots."""
    n = max(1, requests)
    return {name: round((after.get(name, 0.0) - before.get(name, 0.0)) * 1000 / n, 3)
            for name in before}
