"""Choosing the next token from a row's logits."""

from __future__ import annotations

from typing import Any

import numpy as np

from quotaflow.model.base import GenerationRequest


def pick(logits: Any, r: GenerationRequest, rng: np.random.Generator) -> int:
    """Greedy unless a temperature is set; sampling draws from the request's own RNG."""
    if not r.temperature:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / r.temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if r.top_p is not None and 0 < r.top_p < 1:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        keep = order[: int(np.searchsorted(cumulative, r.top_p)) + 1]
        kept = np.zeros_like(probs)
        kept[keep] = probs[keep]
        probs = kept / kept.sum()
    return int(rng.choice(len(probs), p=probs))
