"""admit, the pure part: turn a client's HTTP CloudEvent into a validated request, or a
Problem naming what was wrong. No I/O here; `app.py` wires authentication, rate limit,
quota pre-check, the read model and Kafka around it.

What is accepted is what every later hop can carry: JSON is strict (`strict_json`); the
attributes are read and checked as a CloudEvents 1.0.2 receiver must
(`quotaflow.events.received`: each of its type, strings with no control characters, lone
surrogates or noncharacters); prompt text may hold neither U+0000 (PostgreSQL text cannot
store it, and the model's output, which can echo it, is stored there) nor a lone surrogate
(not encodable as UTF-8, so neither as Avro). Such input is refused whole, never altered: what
the client sent is what its idempotency hash covers."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from quotaflow.events import attributes, received
from quotaflow.events.catalog import REQUESTED_TYPE
from quotaflow.runtime.door.strict_json import decode_json
from quotaflow.runtime.problem import Problem

REQUIRED_ATTRIBUTES = received.REQUIRED
STRUCTURED_JSON = "application/cloudevents+json"
DATA_FIELDS = {"model", "prompt", "messages", "max_tokens", "temperature", "top_p", "seed",
               "stop", "stream"}
MAX_STOP = 4  # stop sequences, as OpenAI allows
MAX_STOP_CHARS = 256
ROLES = ("system", "user", "assistant")
MAX_ATTRIBUTE_CHARS = attributes.MAX_CHARS
_NOT_IN_TEXT = re.compile("[\x00\ud800-\udfff]")


@dataclass(frozen=True)
class Limits:
    model: str
    max_tokens: int
    max_prompt_chars: int


@dataclass(frozen=True)
class ClientRequest:
    source: str
    ce_id: str
    data: dict[str, Any]  # normalized: messages always, prompt folded into them

    @property
    def max_tokens(self) -> int:
        return int(self.data["max_tokens"])


def _bad(detail: str, slug: str = "bad-event") -> Problem:
    return Problem(400, "Bad CloudEvent", detail, slug=slug)


def _text(label: str, value: str) -> None:
    found = _NOT_IN_TEXT.search(value)
    if found is None:
        return
    why = ("U+0000, which cannot be stored" if found.group() == "\x00" else
           f"a lone surrogate U+{ord(found.group()):04X}, which is not encodable as UTF-8")
    raise _bad(f"{label} contains {why} (character {found.start()})", "invalid-data")


def parse(headers: Mapping[str, str], body: bytes, limits: Limits) -> ClientRequest:
    """The client's request in `headers` and `body`, or a Problem naming what is wrong.

    The content mode is the Content-Type's (HTTP binding, section 3): a media type starting
    `application/cloudevents` is structured mode, whatever `ce-*` headers come along (they
    are not read: the body carries every attribute); anything else is binary mode. Media
    types compare case-insensitively and without their parameters."""
    lower = {k.lower(): v for k, v in headers.items()}
    structured = _structured_mode(attributes.media_type(lower.get("content-type", "")), lower)
    try:
        if structured:
            found, data = received.from_structured(decode_json(body, "body"))
            received.check(found, "")
        else:
            found = received.from_headers(lower)
            received.check(found, "ce-")
    except received.Refused as refused:
        named: dict[str, Any] = {"attribute": refused.attribute} if refused.attribute else {}
        raise Problem(refused.status, "Bad CloudEvent" if refused.status == 400 else
                      "Unsupported content type", refused.detail, slug=refused.slug,
                      **named) from None
    if found["type"] != REQUESTED_TYPE:
        raise _bad(f"unknown event type {found['type']!r}; send {REQUESTED_TYPE}",
                   "unknown-type")
    datacontenttype = found.get("datacontenttype")
    if datacontenttype is not None \
            and attributes.media_type(datacontenttype) != "application/json":
        raise Problem(415, "Unsupported content type", "datacontenttype must be "
                      f"application/json, got {datacontenttype!r}", attribute="datacontenttype")
    if not structured:
        data = decode_json(body, "data")
    if not isinstance(data, dict):
        raise _bad("data must be a JSON object with model, prompt or messages, and max_tokens",
                   "invalid-data")
    return ClientRequest(found["source"], found["id"], validate_data(data, limits))


def _structured_mode(content_type: str, lower: Mapping[str, str]) -> bool:
    """Whether the event is in structured mode, or a 415 for a mode or format not taken."""
    if content_type.startswith("application/cloudevents-batch"):
        raise Problem(415, "Unsupported content type", "batched mode "
                      f"({content_type}) is not accepted; send one event per request")
    if content_type.startswith("application/cloudevents"):
        if content_type != STRUCTURED_JSON:
            raise Problem(415, "Unsupported content type", f"event format {content_type!r} is "
                          f"not supported; send structured events as {STRUCTURED_JSON}")
        return True
    if not any(k.startswith("ce-") for k in lower):
        raise Problem(415, "Unsupported content type",
                      "send a binary-mode CloudEvent (ce-* headers, Content-Type: "
                      "application/json) or a structured one (application/cloudevents+json); "
                      f"got Content-Type {content_type or 'none'!r}")
    if content_type != "application/json":
        raise Problem(415, "Unsupported content type",
                      f"binary-mode data must be application/json, got {content_type!r}")
    return False


def validate_data(data: dict[str, Any], limits: Limits, prefix: str = "data.") -> dict[str, Any]:
    """`data` checked against `limits` and normalized (a prompt becomes one user message).
    Each Problem names the field as `prefix` + its name, and carries it as `parameter`.

    `stop` (a string or up to 4) and `stream` are kept only when set: a request that does not
    use them normalizes, and so hashes for idempotency, as it did before they existed, and
    `stream: false` is the same request as no `stream`. Numbers are finite and in range, or a
    400 names them; a temperature below 1e-5 (`sampling.GREEDY_BELOW`) decodes greedily."""
    def bad(detail: str, param: str | None = None) -> Problem:
        detail = detail.replace("data.", prefix)
        if param is None:
            return _bad(detail, "invalid-data")
        return Problem(400, "Bad CloudEvent", detail, slug="invalid-data", parameter=param)

    unknown = sorted(set(data) - DATA_FIELDS)
    if unknown:
        raise bad(f"unknown field(s) in data: {', '.join(unknown)}", unknown[0])
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise bad("data.model is required (a string)", "model")
    if model != limits.model:
        raise bad(f"unknown model {model!r}; this deployment serves {limits.model!r}", "model")
    if ("prompt" in data) == ("messages" in data):
        raise bad("send exactly one of data.prompt or data.messages")
    if "prompt" in data:
        if not isinstance(data["prompt"], str) or not data["prompt"].strip():
            raise bad("data.prompt must be a non-empty string", "prompt")
        _text(f"{prefix}prompt", data["prompt"])
        messages = [{"role": "user", "content": data["prompt"]}]
    else:
        messages = data["messages"]
        if not isinstance(messages, list) or not messages:
            raise bad("data.messages must be a non-empty list", "messages")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or set(m) != {"role", "content"}:
                raise bad(f"data.messages[{i}] must be an object with role and content",
                          f"messages[{i}]")
            if m["role"] not in ROLES:
                raise bad(f"data.messages[{i}].role must be one of {', '.join(ROLES)}",
                          f"messages[{i}].role")
            if not isinstance(m["content"], str):
                raise bad(f"data.messages[{i}].content must be a string",
                          f"messages[{i}].content")
            _text(f"{prefix}messages[{i}].content", m["content"])
    chars = sum(len(m["content"]) for m in messages)
    if chars > limits.max_prompt_chars:
        raise Problem(413, "Prompt too large",
                      f"the prompt has {chars} characters; the limit is {limits.max_prompt_chars}")
    max_tokens = data.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise bad("data.max_tokens is required (an integer)", "max_tokens")
    if not 1 <= max_tokens <= limits.max_tokens:
        raise bad(f"data.max_tokens must be between 1 and {limits.max_tokens}, got {max_tokens}",
                  "max_tokens")
    out: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens,
                           "temperature": None, "top_p": None, "seed": None}
    for name, lo, hi in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0)):
        v = data.get(name)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
            raise bad(f"data.{name} must be a number between {lo} and {hi}", name)
        out[name] = float(v)
    seed = data.get("seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise bad("data.seed must be a non-negative integer", "seed")
        out["seed"] = seed
    stop = _stop(data.get("stop"), prefix)
    if stop:
        out["stop"] = stop
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad("data.stream must be true or false", "stream")
    if stream:
        out["stream"] = True
    return out


def _stop(value: Any, prefix: str) -> list[str]:
    """`stop` as a list: absent, one string, or a list of up to `MAX_STOP` non-empty ones."""
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if (not isinstance(stops, list) or len(stops) > MAX_STOP
            or not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in stops)):
        raise Problem(400, "Bad CloudEvent", f"{prefix}stop must be a string or a list of up "
                      f"to {MAX_STOP} strings of 1 to {MAX_STOP_CHARS} characters",
                      slug="invalid-data", parameter="stop")
    for i, s in enumerate(stops):
        _text(f"{prefix}stop[{i}]", s)
    return list(stops)
