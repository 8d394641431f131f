"""The bench's PNG plots, drawn with matplotlib (no display needed). matplotlib is imported
when a plot is drawn, not with this module: a run that writes no plots never loads it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from types import ModuleType


def _pyplot() -> ModuleType:
    """matplotlib's pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_cdf(result: dict[str, Any], path: Path) -> Path:
    """The CDF of end-to-end latency (due time → terminal status) at the open-loop rate."""
    plt = _pyplot()
    o = result["open_loop"]
    xs = np.sort(np.asarray(o["end_to_end_s"], dtype=float)) * 1000
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if xs.size:
        ax.plot(xs, np.arange(1, xs.size + 1) / xs.size, lw=1.8)
        ax.axvline(float(np.percentile(xs, 99)), ls="--", lw=1, color="grey", label="p99")
    ax.set_xlabel("due time → terminal status (ms)")
    ax.set_ylabel("fraction of requests")
    ax.set_title(f"End-to-end latency, stand-in model, open loop {o['rate']:g} req/s")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def throughput(result: dict[str, Any], path: Path) -> Path:
    """Sustained requests/s (all ended) and admitted/s against the number of clients."""
    plt = _pyplot()
    rows = sorted(result["sustained"], key=lambda s: s["connections"])
    cs = [s["connections"] for s in rows]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(cs, [s["ended_per_s"] for s in rows], marker="o", label="ended/s (whole pipeline)")
    ax.plot(cs, [s["admitted_per_s"] for s in rows], marker="s", ls="--", label="admitted/s")
    ax.set_xscale("log", base=2)
    ax.set_xticks(cs, [str(c) for c in cs])
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("requests/s")
    ax.set_ylim(bottom=0)
    ax.set_title("Sustained throughput, stand-in model")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
