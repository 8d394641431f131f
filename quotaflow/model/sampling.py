"""Choosing the next token from a row's logits.

`pick` answers a token for any row and any request, so that nothing one request carries (a
temperature too small to divide by, a NaN that slipped past the door) or one broken row of
logits can raise inside a decode step and fail the requests sharing its batch:
- a temperature below `GREEDY_BELOW` (or none, 0, negative or NaN) decodes greedily: dividing
  by it would overflow to infinities whose difference is NaN, and sampling that cold is greedy
  for every practical purpose anyway (vLLM's threshold is the same);
- `top_p` 0 keeps only the most likely token; outside [0, 1) nothing is cut;
- in the logits, NaN is never chosen, +inf is chosen first (the model is certain), and a row
  with no finite maximum, or whose probabilities do not sum to a positive finite number, is
  decoded greedily."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from quotaflow.model.base import GenerationRequest

GREEDY_BELOW = 1e-5


def pick(logits: Any, r: GenerationRequest, rng: np.random.Generator) -> int:
    """Greedy unless a temperature is set; sampling draws from the request's own RNG."""
    row = np.asarray(logits)
    if np.isnan(row).any():
        row = np.where(np.isnan(row), -np.inf, row)
    best = int(np.argmax(row))
    t = r.temperature
    if t is None or not GREEDY_BELOW <= t < math.inf or not np.isfinite(row[best]):
        return best
    with np.errstate(over="ignore", invalid="ignore"):  # judged by the sum just below
        scaled = row.astype(np.float64) / t
        probs = np.exp(scaled - scaled.max())
        total = probs.sum()
    if not (np.isfinite(total) and total > 0):
        return best
    probs /= total
    if r.top_p is not None and 0 <= r.top_p < 1:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        keep = order[: int(np.searchsorted(cumulative, r.top_p)) + 1]
        kept = np.zeros_like(probs)
        kept[keep] = probs[keep]
        probs = kept / kept.sum()
    return int(rng.choice(len(probs), p=probs))
