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


def hop_spans(brokers: list[dict[str, Any]], path: Path) -> Path:
    """One request's time span by span (medians, one request at a time), a bar a broker, each
    span split into its step's handler time and the rest (the hop, the waits, the produce)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 1.2 + 1.1 * len(brokers)))
    colours = plt.get_cmap("tab10")
    for y, r in enumerate(brokers):
        left = 0.0
        for i, s in enumerate(r["spans"]):
            handler = s["handler_ms"] or 0.0
            rest = max(0.0, s["p50_ms"] - handler)
            step = s["span"].split(":")[0]
            ax.barh(y, handler, left=left, color=colours(i), edgecolor="black", lw=0.5,
                    label=f"{step}: handler" if y == 0 else None)
            ax.barh(y, rest, left=left + handler, color=colours(i), alpha=0.35,
                    edgecolor="black", lw=0.5, hatch="//",
                    label=f"{step}: hop, waits, produce" if y == 0 else None)
            left += handler + rest
    ax.set_yticks(range(len(brokers)), [r["describe"] for r in brokers])
    ax.set_xlabel("ms from admit's insert to record's update (medians, one request at a time)")
    ax.set_title("Where one request's time goes, stand-in model")
    ax.legend(fontsize=6, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.35))
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
