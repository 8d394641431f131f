"""Prefill: the first forward pass of newly arrived requests, which computes the KV cache of
their prompts and the logits of their first token.

Most prompts begin with the same tokens: the chat template's default system block, which every
chat without a system message of its own starts with (24 of the 37 tokens of a short question
to SmolLM2). Its KV cache is computed once, when the engine starts, and prompts that begin with
it run only the rest, on top of a copy of it: the prompt's own pass is several times cheaper
and so is the stall it imposes on the running batch. Causal attention makes a prefix's keys and
values independent of what follows it, so the cache is the one a full pass would compute.

Rows are left-padded among themselves; a cached row's padding sits between the prefix and its
own tokens, masked out like any padding, with positions counted per row."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# One forward pass: (input_ids, attention_mask, position_ids, past) -> (last logits, present)
StepFn = Callable[[Any, Any, Any, list[Any]], tuple[Any, list[Any]]]


def host(value: Any) -> Any:
    """A KV tensor as a NumPy array (on CUDA it stays on the device between passes)."""
    return value if isinstance(value, np.ndarray) else value.numpy()


@dataclass
class Prefilled:
    """One prefill pass over some of the new rows (`rows`: indices into the prompts given)."""

    rows: list[int]
    logits: Any
    past: list[Any]
    mask: Any  # [rows, cached positions]
    next_pos: Any  # [rows, 1]: the position of each row's first generated token


class Prefill:
    def __init__(self, step: StepFn, pad_id: int, layers: int, kv_heads: int, head_dim: int,
                 prefix: Sequence[int] = ()) -> None:
        self._step = step
        self._pad_id = pad_id
        self._layers = layers
        self._kv_shape = (kv_heads, head_dim)
        self.prefix = tuple(prefix)
        self._prefix_past: list[Any] = []
        if self.prefix:
            ids = np.array([self.prefix], dtype=np.int64)
            mask = np.ones_like(ids)
            positions = np.arange(len(self.prefix), dtype=np.int64)[None, :]
            _, past = step(ids, mask, positions, self._empty(1))
            self._prefix_past = [host(p) for p in past]

    def __call__(self, prompts: Sequence[Sequence[int]]) -> list[Prefilled]:
        """One pass for the prompts that begin with the prefix, one for the others."""
        n = len(self.prefix)
        cached = [k for k, p in enumerate(prompts)
                  if n and len(p) > n and tuple(p[:n]) == self.prefix]
        others = sorted(set(range(len(prompts))) - set(cached))
        passes = []
        if others:
            passes.append(self._run(others, [prompts[k] for k in others], 0))
        if cached:
            passes.append(self._run(cached, [prompts[k][n:] for k in cached], n))
        return passes

    def _run(self, rows: list[int], tails: list[Sequence[int]], prefix_len: int) -> Prefilled:
        width = max(len(t) for t in tails)
        ids = np.full((len(tails), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(tails), prefix_len + width), dtype=np.int64)
        mask[:, :prefix_len] = 1
        for k, t in enumerate(tails):
            ids[k, width - len(t):] = t
            mask[k, prefix_len + width - len(t):] = 1
        positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)[:, prefix_len:]
        past = ([np.repeat(p, len(tails), axis=0) for p in self._prefix_past] if prefix_len
                else self._empty(len(tails)))
        logits, present = self._step(ids, mask, positions, past)
        return Prefilled(rows, logits, present, mask, positions[:, -1:] + 1)

    def _empty(self, n: int) -> list[Any]:
        empty = np.zeros((n, self._kv_shape[0], 0, self._kv_shape[1]), dtype=np.float32)
        return [empty] * (2 * self._layers)
