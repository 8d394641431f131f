"""The model's own tokenizer and chat template, loaded from a built model directory.

estimate counts with it and infer feeds exactly what it encodes, so the reservation is
computed from the same token ids the model sees. Needs transformers/tokenizers, not torch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from quotaflow.model.base import ChatMessage


class ChatTokenizer:
    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoTokenizer

        self._tok: Any = AutoTokenizer.from_pretrained(str(model_dir))
        eos = self._tok.eos_token_id
        if eos is None:
            raise ValueError(f"{model_dir}: tokenizer has no end-of-sequence token")
        self.eos_token_id = int(eos)
        pad = self._tok.pad_token_id
        self.pad_token_id = int(pad) if pad is not None else self.eos_token_id

    def encode_chat(self, messages: Sequence[ChatMessage]) -> list[int]:
        """Token ids of the prompt: chat template applied, generation prompt appended."""
        encoded = self._tok.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True, tokenize=True)
        ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
        return [int(i) for i in ids]

    def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return len(self.encode_chat(messages))

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(ids), skip_special_tokens=True))
