"""Small helpers the step handlers share: building an output event from an input's data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from events.catalog import event
from events.envelope import Event, derived_id
from quotaflow.model.base import ChatMessage, GenerationRequest

REQUEST_FIELDS = ("request_id", "tenant", "key_id", "model", "messages", "max_tokens",
                  "temperature", "top_p", "seed", "admitted_at_ms")


def emit(name: str, step: str, data: Mapping[str, Any]) -> Event:
    """The output event `name` of `step` for a request; its id derives from the request id."""
    return Event(type=event(name), id=derived_id(str(data["request_id"]), name),
                 source=f"/quotaflow/{step}", tenant=str(data["tenant"]), data=dict(data))


def request_part(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: data[k] for k in REQUEST_FIELDS}


def messages_of(data: Mapping[str, Any]) -> tuple[ChatMessage, ...]:
    return tuple(ChatMessage(m["role"], m["content"]) for m in data["messages"])


def generation_request(data: Mapping[str, Any]) -> GenerationRequest:
    return GenerationRequest(messages=messages_of(data), max_tokens=int(data["max_tokens"]),
                             temperature=data.get("temperature"), top_p=data.get("top_p"),
                             seed=data.get("seed"))


def unprocessable(step: str, ev: Event, reason: str) -> list[Event]:
    """A request a step could not process before anything was reserved: reject it, so its
    record ends instead of staying queued. The record went to the dead-letter topic too."""
    return [emit("rejected", step, {
        "request_id": ev.data["request_id"], "tenant": ev.tenant,
        "requested_tokens": int(ev.data.get("estimate_tokens", ev.data["max_tokens"])),
        "reason": f"unprocessable: {reason}"[:500], "period": "", "ledger_seq": 0})]
