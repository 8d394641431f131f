"""OpenAI's error shape, `{"error": {"message", "type", "param", "code"}}`, with the status
codes OpenAI uses, so an OpenAI client raises the exception it would raise against OpenAI
(`AuthenticationError`, `NotFoundError`, `RateLimitError`, `BadRequestError`, ...).

The door's own checks (authentication, parsing, the rate limit and the quota pre-check) raise
`Problem`s; `from_problem` translates them, keeping the headers (`Retry-After`,
`WWW-Authenticate`). Both 429s carry `Retry-After` and are told apart as OpenAI does: type
`requests` / code `rate_limit_exceeded` (wait a moment) against type and code
`insufficient_quota` (wait for the next period, or ask for a bigger grant)."""

from __future__ import annotations

import json
from typing import Any

from flask import Response

from quotaflow.runtime.problem import Problem

INVALID = "invalid_request_error"
SERVER = "server_error"


class OpenAIError(Exception):
    """Raise to answer with OpenAI's error shape."""

    def __init__(self, status: int, message: str, type_: str = INVALID,
                 code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The `{"error": {...}}` object (also what a stream sends when it fails midway)."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}

    def response(self) -> Response:
        resp = Response(json.dumps(self.body()), status=self.status,
                        content_type="application/json")
        for k, v in self.headers.items():
            resp.headers[k] = v
        return resp


def bad_request(message: str, param: str | None, code: str | None = None) -> OpenAIError:
    """A 400 `invalid_request_error` naming the field `param`."""
    return OpenAIError(400, message, INVALID, code, param)


def model_not_found(model: str) -> OpenAIError:
    return OpenAIError(404, f"The model `{model}` does not exist or you do not have access "
                       "to it.", INVALID, "model_not_found", "model")


def insufficient_quota(message: str, retry_after_s: int) -> OpenAIError:
    return OpenAIError(429, message, "insufficient_quota", "insufficient_quota",
                       headers={"Retry-After": str(retry_after_s)})


# (status, type, code) by the Problem's slug; otherwise by its status alone.
_BY_SLUG: dict[str, tuple[int, str, str | None]] = {
    "rate-limited": (429, "requests", "rate_limit_exceeded"),
    "auth-throttled": (429, "requests", "rate_limit_exceeded"),
    "quota-exhausted": (429, "insufficient_quota", "insufficient_quota"),
    "idempotency-conflict": (409, INVALID, "idempotency_conflict"),
    "prompt-too-large": (400, INVALID, "context_length_exceeded"),
    "unavailable": (503, SERVER, "service_unavailable"),
    "internal": (500, SERVER, None),
}
_BY_STATUS: dict[int, tuple[str, str | None]] = {
    401: (INVALID, "invalid_api_key"), 404: (INVALID, "not_found"),
    405: (INVALID, "method_not_allowed"), 413: (INVALID, "request_too_large"),
}


def from_problem(p: Problem) -> OpenAIError:
    """The OpenAI error for one of the door's problems."""
    if p.slug in _BY_SLUG:
        status, type_, code = _BY_SLUG[p.slug]
    else:
        status = p.status
        type_, code = _BY_STATUS.get(status, (SERVER if status >= 500 else INVALID, None))
    param = p.extra.get("parameter")
    if p.slug == "prompt-too-large":
        param = "messages"
    return OpenAIError(status, p.detail, type_, code, param if isinstance(param, str) else None,
                       dict(p.headers))
