"""admit, the pure part: turn a client's HTTP CloudEvent into a validated request, or a
Problem naming what was wrong. No I/O here; `app.py` wires authentication, rate limit,
quota pre-check, the read model and Kafka around it.

What is accepted is what every later hop can carry: JSON is strict (`strict_json`); attribute
values follow the CloudEvents string rule (no control characters, lone surrogates or
noncharacters); prompt text may hold neither U+0000 (PostgreSQL text cannot store it, and the
model's output, which can echo it, is stored there) nor a lone surrogate (not encodable as
UTF-8, so neither as Avro). Such input is refused whole, never altered: what the client sent
is what its idempotency hash covers."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from cloudevents.core.bindings import http as ce_http
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from events.catalog import REQUESTED_TYPE
from quotaflow.door.strict_json import decode_json
from quotaflow.runtime.problem import Problem

REQUIRED_ATTRIBUTES = ("specversion", "id", "source", "type")
DATA_FIELDS = {"model", "prompt", "messages", "max_tokens", "temperature", "top_p", "seed",
               "stop", "stream"}
MAX_STOP = 4  # stop sequences, as OpenAI allows
MAX_STOP_CHARS = 256
ROLES = ("system", "user", "assistant")
MAX_ATTRIBUTE_CHARS = 1024
_NONCHARACTERS = "".join(chr(p * 0x10000 + 0xFFFE) + chr(p * 0x10000 + 0xFFFF)
                         for p in range(17))
_NOT_IN_ATTRIBUTES = re.compile(f"[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef"
                                f"{_NONCHARACTERS}]")
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


def _header(name: str, raw: str) -> str:
    """A ce-* header's value, percent-decoded as the CloudEvents HTTP binding says."""
    if not raw.isascii():
        raise _bad(f"{name} must be ASCII; percent-encode other characters as UTF-8",
                   "invalid-attribute")
    try:
        return unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise _bad(f"{name} is not percent-encoded UTF-8", "invalid-attribute") from None


def _attribute(label: str, value: Any) -> None:
    """A string attribute value follows the CloudEvents string rule."""
    if not isinstance(value, str):
        return
    if len(value) > MAX_ATTRIBUTE_CHARS:
        raise _bad(f"{label} has {len(value)} characters; the limit is {MAX_ATTRIBUTE_CHARS}",
                   "invalid-attribute")
    found = _NOT_IN_ATTRIBUTES.search(value)
    if found is not None:
        raise _bad(f"{label} contains U+{ord(found.group()):04X} at character {found.start()}; "
                   "CloudEvents attribute values may not hold control characters, lone "
                   "surrogates or noncharacters", "invalid-attribute")


def _text(label: str, value: str) -> None:
    found = _NOT_IN_TEXT.search(value)
    if found is None:
        return
    why = ("U+0000, which cannot be stored" if found.group() == "\x00" else
           f"a lone surrogate U+{ord(found.group()):04X}, which is not encodable as UTF-8")
    raise _bad(f"{label} contains {why} (character {found.start()})", "invalid-data")


def parse(headers: Mapping[str, str], body: bytes, limits: Limits) -> ClientRequest:
    """The client's request in `headers` and `body`, or a Problem naming what is wrong."""
    lower = {k.lower(): v for k, v in headers.items()}
    content_type = lower.get("content-type", "").split(";")[0].strip().lower()
    binary = any(k.startswith("ce-") for k in lower)
    attributes: dict[str, Any]
    if binary:
        if content_type != "application/json":
            raise Problem(415, "Unsupported content type",
                          f"binary-mode data must be application/json, got {content_type!r}")
        attributes = {k[3:]: _header(k, v) for k, v in lower.items() if k.startswith("ce-")}
    elif content_type == "application/cloudevents+json":
        envelope = decode_json(body, "body")
        if not isinstance(envelope, dict):
            raise _bad("a structured CloudEvent must be a JSON object")
        attributes = {k: v for k, v in envelope.items() if k not in ("data", "data_base64")}
        if "data_base64" in envelope:
            raise Problem(415, "Unsupported content type", "data_base64 is not accepted; "
                          "send the request as JSON in `data`")
    else:
        raise Problem(415, "Unsupported content type",
                      "send a binary-mode CloudEvent (ce-* headers, Content-Type: "
                      "application/json) or a structured one (application/cloudevents+json); "
                      f"got Content-Type {content_type or 'none'!r}")
    _check_attributes(attributes, "ce-" if binary else "")
    if binary:
        decode_json(body, "data")
    try:
        event = ce_http.from_http(ce_http.HTTPMessage(headers=dict(headers), body=body),
                                  JSONFormat(), CloudEvent)
    except (BaseCloudEventException, ValueError, TypeError) as exc:
        raise _bad(f"invalid CloudEvent: {exc}") from None
    if event.get_datacontenttype() not in (None, "application/json"):
        raise Problem(415, "Unsupported content type", "datacontenttype must be application/json")
    data = event.get_data()
    if not isinstance(data, dict):
        raise _bad("data must be a JSON object with model, prompt or messages, and max_tokens",
                   "invalid-data")
    return ClientRequest(event.get_source(), event.get_id(), validate_data(data, limits))


def _check_attributes(attributes: dict[str, Any], prefix: str) -> None:
    missing = [a for a in REQUIRED_ATTRIBUTES if attributes.get(a) in (None, "")]
    if missing:
        names = ", ".join(prefix + m for m in missing)
        raise _bad(f"missing required CloudEvents attribute(s): {names}", "missing-attribute")
    for name in REQUIRED_ATTRIBUTES:
        if not isinstance(attributes[name], str):
            raise _bad(f"{prefix}{name} must be a string", "invalid-attribute")
    if attributes["specversion"] != "1.0":
        raise _bad(f"specversion must be 1.0, got {attributes['specversion']!r}",
                   "unsupported-specversion")
    if attributes["type"] != REQUESTED_TYPE:
        raise _bad(f"unknown event type {attributes['type']!r}; send {REQUESTED_TYPE}",
                   "unknown-type")
    for name, value in attributes.items():
        _attribute(prefix + name, value)


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
