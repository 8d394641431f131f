"""A client's CloudEvent as an HTTP receiver reads it (CloudEvents 1.0.2): the attributes of a
binary-mode event from its `ce-*` headers, or of a structured-mode JSON event from its members,
each checked against the type it has. What is wrong is raised as `Refused`, naming the
attribute as the client sent it (`ce-time` in binary mode, `time` in structured mode)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from quotaflow.events import attributes

REQUIRED = ("specversion", "id", "source", "type")
# The spec's own context attributes: each a String, or the string form of its type.
STRINGS = frozenset({*REQUIRED, "datacontenttype", "dataschema", "subject", "time"})
_FORMS: tuple[tuple[str, Callable[[str], str | None]], ...] = (
    ("source", attributes.uri_reference_error), ("dataschema", attributes.uri_error),
    ("time", attributes.timestamp_error), ("subject", lambda _: None),
    ("datacontenttype", attributes.media_type_error))


class Refused(ValueError):
    """An event a receiver must refuse: `status` (400, or 415 for a content type), `detail`
    naming what is wrong, `attribute` where one attribute is."""

    def __init__(self, detail: str, attribute: str | None = None, status: int = 400,
                 slug: str = "invalid-attribute") -> None:
        super().__init__(detail)
        self.detail, self.attribute, self.status, self.slug = detail, attribute, status, slug


def _wrong(label: str, detail: str) -> Refused:
    return Refused(f"{label} {detail}", label)


def from_headers(lower: Mapping[str, str]) -> dict[str, Any]:
    """The attributes of a binary-mode event, from its headers (names in lower case): each
    `ce-<name>` header's value unquoted and percent-decoded (HTTP binding 3.1.3)."""
    if "ce-datacontenttype" in lower:
        raise _wrong("ce-datacontenttype", "must not be sent in binary mode: Content-Type is "
                     "the datacontenttype (HTTP binding 3.1.1)")
    found: dict[str, Any] = {}
    for header, raw in lower.items():
        if not header.startswith("ce-"):
            continue
        value, wrong = attributes.header_value(raw)
        if value is None:
            raise _wrong(header, wrong or "is not a valid header value")
        found[header[3:]] = value
    return found


def from_structured(envelope: Any) -> tuple[dict[str, Any], Any]:
    """The attributes and `data` of a structured-mode JSON event: a member that is `null` is
    unset (JSON format 2.2)."""
    if not isinstance(envelope, dict):
        raise Refused("a structured CloudEvent must be a JSON object", slug="bad-event")
    if envelope.get("data_base64") is not None:
        if envelope.get("data") is not None:
            raise Refused("data and data_base64 are mutually exclusive (JSON format 3.1)",
                          "data_base64", slug="bad-event")
        raise Refused("data_base64 is not accepted; send the request as JSON in `data`",
                      "data_base64", 415, "unsupported-content-type")
    found = {k: v for k, v in envelope.items()
             if k not in ("data", "data_base64") and v is not None}
    return found, envelope.get("data")


def check(found: Mapping[str, Any], prefix: str) -> None:
    """Each attribute of the type it has (spec.md, context attributes): the required ones
    present, names 1 to 20 of a-z and 0-9, strings by the string rule, `source` a
    URI-reference, `dataschema` an absolute URI, `time` RFC 3339, `datacontenttype` a media
    type, an extension a String, Boolean or Integer. `prefix` is how names were sent."""
    missing = [prefix + a for a in REQUIRED if found.get(a) in (None, "")]
    if missing:
        raise Refused(f"missing required CloudEvents attribute(s): {', '.join(missing)}",
                      missing[0], slug="missing-attribute")
    for name, value in found.items():
        label = prefix + name
        wrong = attributes.name_error(name)
        if wrong is None and name in STRINGS and not isinstance(value, str):
            wrong = "must be a string"
        elif wrong is None and isinstance(value, dict | list):
            wrong = ("must be a string, a boolean or an integer; an extension attribute holds "
                     "no object or array")
        wrong = wrong or attributes.integer_error(value)
        if wrong is None and isinstance(value, str):
            wrong = attributes.string_error(value)
        if wrong is not None:
            raise _wrong(label, wrong)
    if found["specversion"] != "1.0":
        raise Refused(f"specversion must be 1.0, got {found['specversion']!r}",
                      prefix + "specversion", slug="unsupported-specversion")
    for name, form in _FORMS:
        value = found.get(name)
        if value is None:
            continue
        wrong = "must not be empty when present" if value == "" else form(value)
        if wrong is not None:
            raise _wrong(prefix + name, wrong)


def binary_error(headers: Mapping[str, str]) -> str:
    """What is wrong with a binary-mode event that a library refused, in this receiver's words
    (the library's own text names its classes: it is for the log)."""
    try:
        check(from_headers({k.lower(): v for k, v in headers.items()}), "ce-")
    except Refused as refused:
        return refused.detail
    return "not a valid CloudEvents 1.0 binary-mode event (headers ce-*)"
