"""The model's own tokenizer and chat template, loaded from a built model directory.

estimate counts with it and infer feeds exactly what it encodes, so the reservation is
computed from the same token ids the model sees. Needs transformers/tokenizers, not torch.

Streaming decodes incrementally with the tokenizers library's `DecodeStream`, which holds a
token back until it completes a UTF-8 character, so a delta never carries half a character and
text is only ever appended. At the end, whatever it still holds is taken from a full decode, so
the text equals `decode(ids)` exactly."""

from __future__ import annotations

import json
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
        self.context_tokens = context_tokens(model_dir)

    def encode_chat(self, messages: Sequence[ChatMessage]) -> list[int]:
        """Token ids of the prompt: chat template applied, generation prompt appended."""
        encoded = self._tok.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True, tokenize=True)
        ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
        return [int(i) for i in ids]

    def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return len(self.encode_chat(messages))

    def shared_prefix(self) -> list[int]:
        """The tokens every chat without a system message of its own begins with (the
        template's default system block and the user turn's header): what two different
        one-message chats have in common."""
        a = self.encode_chat([ChatMessage("user", "a")])
        b = self.encode_chat([ChatMessage("user", "b")])
        same = 0
        while same < min(len(a), len(b)) and a[same] == b[same]:
            same += 1
        return a[:same]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(ids), skip_special_tokens=True))

    def text_decoder(self) -> TextDecoder:
        """An incremental decoder for one generated sequence."""
        return TextDecoder(self)


def context_tokens(model_dir: Path) -> int:
    """The model's context length: `max_position_embeddings` of its config, the positions its
    weights know (the tokenizer's `model_max_length` is transformers' "no limit" placeholder
    in the models we build, so it says nothing)."""
    config = json.loads((model_dir / "config.json").read_text())
    found = config.get("max_position_embeddings")
    if not isinstance(found, int) or isinstance(found, bool) or found <= 0:
        raise ValueError(f"{model_dir}/config.json: max_position_embeddings is not a positive "
                         f"integer ({found!r}); the model's context length is unknown")
    return found


class TextDecoder:
    """One sequence's text, token by token: `step` answers the text each token completes."""

    def __init__(self, tokenizer: ChatTokenizer) -> None:
        from tokenizers.decoders import DecodeStream

        self._tokenizer = tokenizer
        self._backend = tokenizer._tok.backend_tokenizer
        self._stream = DecodeStream(skip_special_tokens=True)
        self._ids: list[int] = []
        self._text = ""

    def step(self, token_id: int) -> str:
        """The text `token_id` completes ("" while it ends inside a character)."""
        self._ids.append(token_id)
        piece = self._stream.step(self._backend, token_id) or ""
        self._text += piece
        return piece

    def rest(self) -> str:
        """The sequence is over: the text still held back (an unfinished character decodes
        as U+FFFD, as a full decode shows it)."""
        full = self._tokenizer.decode(self._ids)
        return full[len(self._text):] if full.startswith(self._text) else ""
