"""Latency summaries: percentiles (numpy's linear interpolation) in milliseconds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

QUANTILES = (50, 90, 99)


def percentile_ms(latencies_s: Sequence[float], q: float) -> float:
    """The `q`-th percentile of `latencies_s` (seconds), in milliseconds; 0 if empty."""
    if not latencies_s:
        return 0.0
    return float(np.percentile(np.asarray(latencies_s, dtype=float), q)) * 1000


def summarize(latencies_s: Sequence[float]) -> dict[str, float]:
    """Count, p50/p90/p99 and max of `latencies_s` (seconds), in milliseconds."""
    out: dict[str, float] = {"n": float(len(latencies_s))}
    for q in QUANTILES:
        out[f"p{q}_ms"] = round(percentile_ms(latencies_s, q), 2)
    out["max_ms"] = round(max(latencies_s) * 1000, 2) if latencies_s else 0.0
    return out


def median(values: Sequence[float]) -> float:
    """The median of `values`; 0 if empty."""
    return float(np.median(np.asarray(values, dtype=float))) if values else 0.0
