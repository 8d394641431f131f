"""The OpenAI API's response objects: `chat.completion` and `text_completion` answers, their
streamed chunks (`chat.completion.chunk`, `text_completion`), `usage`, and the model list.
Pure functions of what the door knows; no I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from quotaflow.runtime.door.openai_api.mapping import CHAT


@dataclass(frozen=True)
class Answer:
    """What every object of one answer shares."""

    kind: str  # mapping.CHAT or mapping.TEXT
    request_id: str
    model: str
    created: int  # Unix seconds
    include_usage: bool = False

    @property
    def id(self) -> str:
        """The completion id: the request id, under OpenAI's prefix."""
        return ("chatcmpl-" if self.kind == CHAT else "cmpl-") + self.request_id


def usage(prompt_tokens: int, completion_tokens: int, total_tokens: int) -> dict[str, int]:
    """`total_tokens` is what the ledger charged (prompt + completion when it charged all)."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": total_tokens}


def completion(a: Answer, text: str, finish_reason: str | None,
               used: dict[str, int]) -> dict[str, Any]:
    """The whole answer of a call that did not stream."""
    if a.kind == CHAT:
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text,
                                                          "refusal": None},
                                  "logprobs": None, "finish_reason": finish_reason}
        kind = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        kind = "text_completion"
    return {"id": a.id, "object": kind, "created": a.created, "model": a.model,
            "choices": [choice], "usage": used}


def chunk(a: Answer, text: str | None, finish_reason: str | None = None,
          first: bool = False) -> dict[str, Any]:
    """One streamed chunk with new `text` (None: none), or the last one with `finish_reason`.
    With usage asked for, every chunk has `"usage": null` until the usage chunk, as OpenAI
    sends them."""
    if a.kind == CHAT:
        delta: dict[str, Any] = {}
        if first:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None,
                                  "finish_reason": finish_reason}
        kind = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text or "", "logprobs": None,
                  "finish_reason": finish_reason}
        kind = "text_completion"
    out: dict[str, Any] = {"id": a.id, "object": kind, "created": a.created, "model": a.model,
                           "choices": [choice]}
    if a.include_usage:
        out["usage"] = None
    return out


def usage_chunk(a: Answer, used: dict[str, int]) -> dict[str, Any]:
    """The last chunk when usage was asked for: no choices, the usage."""
    kind = "chat.completion.chunk" if a.kind == CHAT else "text_completion"
    return {"id": a.id, "object": kind, "created": a.created, "model": a.model, "choices": [],
            "usage": used}


def model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "quotaflow"}


def sse(data: dict[str, Any] | str, event: str | None = None,
        entry_id: str | None = None) -> bytes:
    """One server-sent event: optional `id:` and `event:` lines, then `data:` (JSON, or a
    literal such as `[DONE]`). JSON has no raw newline, so one data line always suffices."""
    lines = []
    if entry_id is not None:
        lines.append(f"id: {entry_id}")
    if event is not None:
        lines.append(f"event: {event}")
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    lines.append(f"data: {payload}")
    return ("\n".join(lines) + "\n\n").encode()


KEEP_ALIVE = b": keep-alive\n\n"  # an SSE comment: clients ignore it; a hung-up peer fails it
