"""Strict JSON for admit's door: UTF-8 only (RFC 8259), at most `MAX_DEPTH` deep, finite
numbers of at most `MAX_DIGITS` digits, no duplicate keys. Anything else is a 400 Problem
naming what is wrong, before a value reaches code that would fail on it: the recursive decoder
(deep nesting), `int()` (thousands of digits), PostgreSQL and Avro (NaN, Infinity), or the
idempotency hash (which of two duplicate keys counts)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from quotaflow.runtime.problem import Problem

# A request nests four deep (envelope, data, messages, a message). Refusing deeper nesting
# before decoding keeps the recursive decoder far from the interpreter's recursion limit.
MAX_DEPTH = 16
MAX_DIGITS = 20
_TOKEN = re.compile(r'[][{}"]')
_STRING_REST = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"', re.S)


def _bad(detail: str) -> Problem:
    return Problem(400, "Bad CloudEvent", detail, slug="invalid-json")


def _nesting(text: str) -> int:
    """How deep `text` nests arrays and objects, counted up to MAX_DEPTH + 1 (strings
    skipped; counting stops at an unterminated string, which the decoder refuses)."""
    depth = deepest = pos = 0
    while deepest <= MAX_DEPTH and (token := _TOKEN.search(text, pos)) is not None:
        pos = token.end()
        if token.group() == '"':
            rest = _STRING_REST.match(text, pos)
            if rest is None:
                break
            pos = rest.end()
        elif token.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _bad(f"duplicate key {key!r} in a JSON object")
            seen.add(key)
    return obj


def _int(literal: str) -> int:
    if len(literal.lstrip("-")) > MAX_DIGITS:
        raise _bad(f"number {literal[:24]}... has more than {MAX_DIGITS} digits")
    return int(literal)


def _float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise _bad(f"number {literal[:24]} is out of range")
    return value


def _constant(literal: str) -> Any:
    raise _bad(f"{literal} is not a JSON number")


def decode_json(body: bytes, what: str) -> Any:
    """`body` as strict JSON, or a 400 naming what is wrong with `what`."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(f"{what} is not valid UTF-8 (byte {exc.start})") from None
    if _nesting(text) > MAX_DEPTH:
        raise _bad(f"{what} nests JSON deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text, object_pairs_hook=_object, parse_int=_int,
                          parse_float=_float, parse_constant=_constant)
    except ValueError as exc:
        raise _bad(f"{what} is not valid JSON: {exc}") from None
