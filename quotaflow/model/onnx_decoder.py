"""Generation on ONNX Runtime with a KV-cache decoder exported by `events.model.build`.

The decoder takes `input_ids`, `attention_mask`, `position_ids` and `past.<i>.key|value`, and
returns the last position's `logits` and `present.<i>.key|value`. A batch is left-padded, so
every row's last position is its real last token; padded positions are masked out, which is why
a row's output does not depend on its batch-mates (greedy, fp32).

Batches are continuous (`quotaflow.model.continuous`): concurrent `generate` calls decode
together, each request joining the running batch at the next step and leaving it when it ends.
Each row's text is decoded incrementally as its tokens come (`quotaflow.model.streaming`):
after every step a call's new text goes to the sink in one round trip, which also answers
which rows were cancelled; a request is billed only for the tokens it generated."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from quotaflow.events.status import FinishReason
from quotaflow.model.base import ChatMessage, GenerationRequest, GenerationResult, TokenSink
from quotaflow.model.continuous import DecodeEngine
from quotaflow.model.kv_ops import HostKvOps, OrtKvOps
from quotaflow.model.metrics import BATCH_SIZE, DECODE_ROWS, INFERENCE_SECONDS, TOKENS
from quotaflow.model.prefill import Prefill
from quotaflow.model.session import open_session
from quotaflow.model.streaming import BatchStream
from quotaflow.model.tokenizer import ChatTokenizer

log = logging.getLogger(__name__)


class OnnxGenerator:
    """A `Generator` over a built model directory (model.onnx, tokenizer, quotaflow.json)."""

    def __init__(self, model_dir: Path, prefer_gpu: bool = True, spin: bool = True) -> None:
        meta = json.loads((model_dir / "quotaflow.json").read_text())
        self._name = str(meta["name"])
        self._version = str(meta["version"])
        self.tokenizer = ChatTokenizer(model_dir)
        started = time.perf_counter()
        self.session, self._device = open_session(model_dir / "model.onnx", prefer_gpu, spin)
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.layers = sum(1 for n in inputs if n.startswith("past.") and n.endswith(".key"))
        kv = inputs["past.0.key"].shape  # [batch, kv_heads, past, head_dim]
        self.kv_heads, self.head_dim = int(kv[1]), int(kv[3])
        rows = DECODE_ROWS.labels(self._name, self._version, self._device)
        prefill = Prefill(self._step, self.tokenizer.pad_token_id, self.layers, self.kv_heads,
                          self.head_dim, self.tokenizer.shared_prefix())
        kv = OrtKvOps(2 * self.layers) if self._device == "cuda" else HostKvOps()
        self.engine = DecodeEngine(self.tokenizer, self._step, prefill, rows.observe, kv)
        log.info("loaded model %s %s on %s in %.1f s (%d layers)", self._name, self._version,
                 self._device, time.perf_counter() - started, self.layers)

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        return self._version

    @property
    def device(self) -> str:
        return self._device

    @property
    def context_tokens(self) -> int:
        return self.tokenizer.context_tokens

    def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return self.tokenizer.count_prompt_tokens(messages)

    def warm_up(self) -> None:
        """One tiny generation, so the first request does not pay for lazy initialization."""
        self.generate([GenerationRequest((ChatMessage("user", "hi"),), max_tokens=2)])

    def generate(self, batch: Sequence[GenerationRequest], sink: TokenSink | None = None
                 ) -> list[GenerationResult]:
        if not batch:
            return []
        started = time.perf_counter()
        prompts = [self.tokenizer.encode_chat(r.messages) for r in batch]
        stream = BatchStream(batch, sink)
        ticket = self.engine.run(batch, prompts, stream)
        results = [GenerationResult(
            text=row.text, prompt_tokens=len(prompt), completion_tokens=len(out),
            finish_reason=finish or FinishReason.STOP, model_version=self._version, batch_size=peak)
            for prompt, out, row, finish, peak in zip(prompts, ticket.out, stream.rows,
                                                      stream.finish, ticket.peak, strict=True)]
        labels = (self._name, self._version, self._device)
        INFERENCE_SECONDS.labels(*labels).observe(time.perf_counter() - started)
        BATCH_SIZE.labels(*labels).observe(len(batch))
        TOKENS.labels(*labels, "prompt").inc(sum(r.prompt_tokens for r in results))
        TOKENS.labels(*labels, "completion").inc(sum(r.completion_tokens for r in results))
        return results

    def _step(self, ids: Any, mask: Any, positions: Any, past: list[Any]
              ) -> tuple[Any, list[Any]]:
        """One forward pass: last-position logits (host) and the new KV cache. On CUDA the
        cache stays on the device between steps (IOBinding); only logits come back."""
        names = [f"past.{i}.{kv}" for i in range(self.layers) for kv in ("key", "value")]
        if self._device != "cuda":
            feed = {"input_ids": ids, "attention_mask": mask, "position_ids": positions,
                    **dict(zip(names, past, strict=True))}
            results = self.session.run(None, feed)
            return results[0], list(results[1:])
        import onnxruntime as ort

        io = self.session.io_binding()
        io.bind_cpu_input("input_ids", ids)
        io.bind_cpu_input("attention_mask", mask)
        io.bind_cpu_input("position_ids", positions)
        for name, value in zip(names, past, strict=True):
            if isinstance(value, np.ndarray):
                value = ort.OrtValue.ortvalue_from_numpy(value, "cuda", 0)
            io.bind_ortvalue_input(name, value)
        io.bind_output("logits", "cpu")
        for i in range(self.layers):
            io.bind_output(f"present.{i}.key", "cuda")
            io.bind_output(f"present.{i}.value", "cuda")
        self.session.run_with_iobinding(io)
        outputs = io.get_outputs()
        return outputs[0].numpy(), list(outputs[1:])

