"""An OpenAI request body as a quotaflow request: the same normalized data the CloudEvents door
produces (`quotaflow.runtime.door.parse.validate_data`), plus how to answer (stream or not, usage).

Fields, and what is done with the ones quotaflow does not implement:
- used: `model`, `messages` (chat) or `prompt` (completions), `max_tokens` /
  `max_completion_tokens`, `temperature`, `top_p`, `seed`, `stop`, `stream`,
  `stream_options.include_usage`;
- accepted and ignored, because they change nothing in the answer: `user`, `metadata`,
  `store`, `service_tier`, a message's `name`, `stream_options.include_obfuscation`;
- accepted only at their default (`n` 1, penalties 0, no logprobs, no tools, no echo or
  suffix, `best_of` 1): any other value would ask for an answer quotaflow does not give, and
  quietly giving another one is worse than a 400 naming the field;
- anything else is a 400 naming it, as OpenAI answers an unrecognized argument.
Without `max_tokens`, chat reserves the deployment's limit (OpenAI's default is "as many as
fit") and completions 16 (OpenAI's legacy default); the reservation is the worst case and only
what is generated is charged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from quotaflow.runtime.door.openai_api.errors import bad_request, from_problem, model_not_found
from quotaflow.runtime.door.parse import Limits, validate_data
from quotaflow.runtime.problem import Problem

CHAT = "chat"
TEXT = "text"  # /v1/completions
USED = {"model", "max_tokens", "temperature", "top_p", "seed", "stop", "stream",
        "stream_options"}
IGNORED = {"user", "metadata", "store", "service_tier"}
DEFAULT_ONLY: dict[str, dict[str, Any]] = {
    CHAT: {"n": 1, "frequency_penalty": 0, "presence_penalty": 0, "logprobs": False,
           "top_logprobs": 0, "logit_bias": {}, "tools": [], "tool_choice": "none",
           "parallel_tool_calls": True, "response_format": {"type": "text"}},
    TEXT: {"n": 1, "frequency_penalty": 0, "presence_penalty": 0, "logprobs": 0,
           "logit_bias": {}, "echo": False, "suffix": "", "best_of": 1},
}
OWN_FIELDS = {CHAT: {"messages", "max_completion_tokens"}, TEXT: {"prompt"}}
DEFAULT_MAX_TOKENS_TEXT = 16
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


@dataclass(frozen=True)
class Call:
    """One OpenAI call: the request's normalized data and how to answer it."""

    kind: str  # CHAT or TEXT
    data: dict[str, Any]
    stream: bool
    include_usage: bool

    @property
    def model(self) -> str:
        return str(self.data["model"])

    @property
    def max_tokens(self) -> int:
        return int(self.data["max_tokens"])


def parse_call(kind: str, body: Any, limits: Limits) -> Call:
    """`body` (decoded JSON) as a `Call`, or an `OpenAIError` naming the field at fault."""
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.", None)
    known = USED | IGNORED | set(DEFAULT_ONLY[kind]) | OWN_FIELDS[kind]
    for name in sorted(body):
        if name not in known:
            raise bad_request(f"Unrecognized request argument supplied: {name}", name)
    for name, default in DEFAULT_ONLY[kind].items():
        value = body.get(name)
        if value is not None and value != default:
            raise bad_request(f"{name} is not supported here; leave it out or send "
                              f"{default!r}", name, "unsupported_value")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("you must provide a model parameter", "model")
    if model != limits.model:
        raise model_not_found(model)
    data: dict[str, Any] = {"model": model, "max_tokens": _max_tokens(kind, body, limits)}
    if kind == CHAT:
        data["messages"] = _messages(body.get("messages"))
    else:
        data["prompt"] = _prompt(body.get("prompt"))
    for name in ("temperature", "top_p", "seed", "stop", "stream"):
        if body.get(name) is not None:
            data[name] = body[name]
    try:
        normalized = validate_data(data, limits, prefix="")
    except Problem as p:
        raise from_problem(p) from None
    stream = bool(normalized.get("stream"))
    return Call(kind, normalized, stream, _include_usage(body.get("stream_options"), stream))


def _max_tokens(kind: str, body: dict[str, Any], limits: Limits) -> Any:
    given = body.get("max_tokens")
    newer = body.get("max_completion_tokens") if kind == CHAT else None
    if given is not None and newer is not None and given != newer:
        raise bad_request("max_tokens and max_completion_tokens differ; send one of them",
                          "max_tokens")
    value = newer if newer is not None else given
    if value is None:
        return limits.max_tokens if kind == CHAT else DEFAULT_MAX_TOKENS_TEXT
    return value


def _messages(raw: Any) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise bad_request("messages must be a non-empty array", "messages")
    out = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad_request(f"{where} must be an object", where)
        extra = sorted(set(m) - {"role", "content", "name"})
        if extra:
            raise bad_request(f"{where}.{extra[0]} is not supported", f"{where}.{extra[0]}")
        role = m.get("role")
        if role not in ROLES:
            raise bad_request(f"{where}.role must be one of {', '.join(ROLES)}",
                              f"{where}.role")
        out.append({"role": ROLES[role], "content": _content(m.get("content"), where)})
    return out


def _content(raw: Any, where: str) -> str:
    """A message's text: a string, or an array of text parts joined."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, list) and raw and all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
            and set(p) == {"type", "text"} for p in raw):
        return "".join(p["text"] for p in raw)
    raise bad_request(f"{where}.content must be a string or an array of text parts "
                      "({\"type\": \"text\", \"text\": ...})", f"{where}.content")


def _prompt(raw: Any) -> Any:
    if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], str):
        return raw[0]
    if isinstance(raw, list):
        raise bad_request("prompt must be one string (or an array of exactly one)", "prompt")
    return raw  # validate_data names anything else that is not a non-empty string


def _include_usage(raw: Any, stream: bool) -> bool:
    if raw is None:
        return False
    if not stream:
        raise bad_request("The 'stream_options' parameter is only allowed when 'stream' is "
                          "enabled.", "stream_options")
    if not isinstance(raw, dict) or not set(raw) <= {"include_usage", "include_obfuscation"}:
        raise bad_request("stream_options may hold include_usage (true or false)",
                          "stream_options")
    usage = raw.get("include_usage", False)
    if not isinstance(usage, bool):
        raise bad_request("stream_options.include_usage must be true or false",
                          "stream_options.include_usage")
    return usage
