"""CloudEvents 1.0.2 as a receiver must (issue 26, item 3): a conformance table built from the
spec text, each case citing its rule, run against admit's door on in-memory ports. An event
the spec says to accept is answered 202 (and, where decoding matters, `parse` shows the value
decoded); one it says to refuse is a 4xx application/problem+json naming the attribute.

Rules are cited as H (bindings/http-protocol-binding.md), J (formats/json-format.md) and S
(spec.md) with their section, from the v1.0.2 text; RFC 3339, 3986, 7230 and 7231 where the
spec defers to them. What admit itself narrows (data must be application/json, the one event
type, no batches, no data_base64) is marked "admit"."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from quotaflow.events.catalog import REQUESTED_TYPE
from quotaflow.runtime.door.parse import Limits, parse
from tests.problems import MODEL, assert_problem, body
from tests.unit.test_admit_door import Door

LIMITS = Limits(MODEL, 4096, 4096)
BINARY = {"ce-specversion": "1.0", "ce-id": "e1", "ce-source": "/test", "ce-type": REQUESTED_TYPE,
          "Content-Type": "application/json"}
ENVELOPE: dict[str, Any] = {"specversion": "1.0", "id": "s1", "source": "/test",
                            "type": REQUESTED_TYPE, "data": json.loads(body())}
DROP = object()  # a header or member left out


@dataclass(frozen=True)
class Case:
    rule: str
    mode: str  # "binary" or "structured"
    over: dict[str, Any]  # headers (binary) or members (structured); DROP leaves one out
    status: int = 202
    needle: str = ""  # what the problem's detail names
    headers: dict[str, str] = field(default_factory=dict)  # more headers (structured)
    content_type: str = ""  # structured mode's, when not the plain one
    raw: bytes | None = None  # the body as sent, when not built from `over`
    decoded: dict[str, str] = field(default_factory=dict)  # source/ce_id as parse reads them

    def request(self) -> tuple[dict[str, str], bytes]:
        if self.mode == "binary":
            sent = {**BINARY, **self.over}
            return {k: v for k, v in sent.items() if v is not DROP}, self.raw or body()
        envelope = {k: v for k, v in {**ENVELOPE, **self.over}.items() if v is not DROP}
        return ({"Content-Type": self.content_type or "application/cloudevents+json",
                 **self.headers}, self.raw or json.dumps(envelope).encode())


def b(rule: str, status: int = 202, needle: str = "", decoded: dict[str, str] | None = None,
      **over: Any) -> Case:
    """A binary-mode case; keyword names are header names with `_` for `-`."""
    return Case(rule, "binary", {k.replace("_", "-"): v for k, v in over.items()}, status,
                needle, decoded=decoded or {})


def h(rule: str, headers: dict[str, Any], status: int = 202, needle: str = "",
      decoded: dict[str, str] | None = None) -> Case:
    """A binary-mode case over headers named exactly as given."""
    return Case(rule, "binary", headers, status, needle, decoded=decoded or {})


def s(rule: str, status: int = 202, needle: str = "", content_type: str = "",
      headers: dict[str, str] | None = None, raw: bytes | None = None, **over: Any) -> Case:
    """A structured-mode case over envelope members."""
    return Case(rule, "structured", over, status, needle, headers or {}, content_type, raw)


SOURCES_OK = ["https://github.com/cloudevents", "mailto:cncf-wg-serverless@lists.cncf.io",
              "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66", "/cloudevents/spec/pull/123",
              "/sensors/tn-1234567/alerts", "1-555-123-4567", "cloudevents/spec/pull/123",
              "//example.com/x", "https://[2001:db8::1]:8080/x", "http://[v1.fe]/x",
              "/x?y=1&z=%2F#frag", "./a/../b", "tag:example.com,2026:x"]
TIMES_OK = ["2018-04-05T03:56:24Z", "2018-04-05t03:56:24z", "2018-04-05T03:56:24.123456789+05:30",
            "2018-04-05T03:56:24-00:00", "2024-02-29T00:00:00Z", "2016-12-31T23:59:60Z",
            "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59.9-12:00"]
TIMES_BAD = ["2018-04-05T03:56:24+0530", "20180405T035624Z", "2018-W14-4T03:56:24Z",
             "2018-095T03:56:24Z", "2018-04-05 03:56:24Z", "2018-04-05T03:56:24",
             "2018-04-05", "2018-13-05T03:56:24Z", "2018-02-30T03:56:24Z",
             "2023-02-29T03:56:24Z", "2018-04-05T24:00:00Z", "2018-04-05T03:56:24+24:00",
             "2018-04-05T03:56Z", "2018-04-05T03:56:24.Z", "2018-04-05T03:61:24Z",
             "%D9%A2%D9%A0%D9%A1%D9%A8-04-05T03:56:24Z", "18-04-05T03:56:24Z"]

CASES: list[Case] = [
    # --- the content mode, by Content-Type (H3), media types case-insensitive (RFC 7231 3.1.1.1)
    b("H3: binary mode with Content-Type application/json"),
    b("H3.1.4: the binding's own example, application/json; charset=utf-8",
      Content_Type="application/json; charset=utf-8"),
    b("RFC 7231 3.1.1.1: media type case-insensitive", Content_Type="Application/JSON"),
    b("RFC 7231 3.1.1.1: parameters ignored, any case",
      Content_Type="APPLICATION/JSON; CHARSET=UTF-8"),
    b("RFC 7231 3.1.1.1: parameter without space", Content_Type="application/json;charset=UTF-8"),
    b("admit: binary data must be JSON", 415, "text/plain", Content_Type="text/plain"),
    b("admit: binary data must be JSON", 415, "application/xml", Content_Type="application/xml"),
    b("H3.1.1: no Content-Type, no datacontenttype: not JSON", 415, "binary-mode data",
      Content_Type=DROP),
    b("H3.1.1: ce-datacontenttype MUST NOT be present", 400, "ce-datacontenttype",
      ce_datacontenttype="application/json"),
    h("H3.1.3.1: header names are case-insensitive",
      {"CE-SPECVERSION": "1.0", "Ce-Id": "upper", "CE-SOURCE": "/test", "ce-Type": REQUESTED_TYPE,
       "ce-specversion": DROP, "ce-id": DROP, "ce-source": DROP, "ce-type": DROP},
      decoded={"ce_id": "upper"}),
    s("H3: structured mode by application/cloudevents+json"),
    s("H3.2.1: the binding's own example, charset=UTF-8",
      content_type="application/cloudevents+json; charset=UTF-8"),
    s("RFC 7231 3.1.1.1: structured media type case-insensitive",
      content_type="Application/CloudEvents+JSON"),
    s("H3.2.3: structured mode with the same ce-* headers too", headers={
        "ce-specversion": "1.0", "ce-id": "s1", "ce-source": "/test", "ce-type": REQUESTED_TYPE}),
    s("H3.2.3/H3: the Content-Type picks the mode; ce-* headers are not read",
      headers={"ce-id": "%zz", "ce-datacontenttype": "text/plain", "ce-x_y": "1"}),
    s("H3: an event format admit cannot handle", 415, "application/cloudevents+avro",
      content_type="application/cloudevents+avro"),
    s("H3: the CloudEvents media type without a format", 415, "event format",
      content_type="application/cloudevents"),
    s("H3.3: batched mode MUST NOT be used unless solicited", 415, "batched mode",
      content_type="application/cloudevents-batch+json", raw=b"[]"),
    h("admit: plain JSON with no ce-* header is no CloudEvent", {
        "ce-specversion": DROP, "ce-id": DROP, "ce-source": DROP, "ce-type": DROP}, 415,
      "CloudEvent"),
    # --- header values: quoted-string unescaped, then one round of percent-decoding (H3.1.3.2)
    b("H3.1.3.2: a double-quoted value is unescaped", ce_id='"abc"', decoded={"ce_id": "abc"}),
    b("H3.1.3.2: a quoted value with a space (older senders)", ce_id='"hello world"',
      decoded={"ce_id": "hello world"}),
    b("H3.1.3.2/RFC 7230 3.2.6: backslash escapes in a quoted value", ce_id='"a\\"b\\\\c"',
      decoded={"ce_id": 'a"b\\c'}),
    b("H3.1.3.2: unquoted first, then percent-decoded", ce_id='"a%20b"', decoded={"ce_id": "a b"}),
    b("H3.1.3.2: percent-decoding lower-case hex", ce_id="caf%c3%a9", decoded={"ce_id": "café"}),
    b("H3.1.3.2: unnecessary percent-encoding accepted", ce_id="%41%42", decoded={"ce_id": "AB"}),
    b("H3.1.3.2: the binding's example, Euro € 😀", ce_id="Euro%20%E2%82%AC%20%F0%9F%98%80",
      decoded={"ce_id": "Euro € 😀"}),
    b("H3.1.3.2: a single round of percent-decoding", ce_id="a%2520b", decoded={"ce_id": "a%20b"}),
    b("H3.1.3.2: a percent-encoded source decodes to the URI", ce_source="/caf%25C3%25A9",
      decoded={"source": "/caf%C3%A9"}),
    b("RFC 7230 3.2.6: an unterminated quoted string", 400, "ce-id", ce_id='"abc'),
    b("RFC 7230 3.2.6: text after a quoted string", 400, "ce-id", ce_id='"abc"def'),
    b("H3.1.3.2: overlong UTF-8 (%C0%A0) MUST be rejected", 400, "ce-id", ce_id="a%C0%A0b"),
    b("H3.1.3.2: invalid UTF-8 (a lone surrogate)", 400, "ce-id", ce_id="%ED%A0%80"),
    b("H3.1.3.2: invalid UTF-8 (truncated)", 400, "ce-id", ce_id="%E2%82"),
    b("H3.1.3.2: '%' not followed by two hex digits", 400, "ce-id", ce_id="50%"),
    b("H3.1.3.2: '%' followed by a non-hex digit", 400, "ce-subject", ce_subject="%g1"),
    b("H3.1.3.2/S type system: a decoded control character", 400, "ce-id", ce_id="a%07b"),
    b("H3.1.3.2/S type system: a decoded noncharacter", 400, "ce-id", ce_id="%EF%BF%BF"),
    b("H3.1.3.2: headers are printable US-ASCII", 400, "ce-subject", ce_subject="caf\xe9"),
    # --- attribute names (S naming convention: a-z, 0-9, at most 20)
    h("S naming: an extension attribute", {"ce-comexampleextension1": "value"}),
    h("S naming: a 20-character extension name", {"ce-" + "a" * 20: "x"}),
    h("S naming: a digit-only extension name", {"ce-123": "x"}),
    # (WSGI spells '_' in a header name as '-': the door sees, and names, ce-com-example)
    h("S naming: '_' is no name character", {"ce-com_example": "x"}, 400, "ce-com"),
    h("S naming: '-' is no name character", {"ce-com-example": "x"}, 400, "ce-com-example"),
    h("S naming: 21 characters", {"ce-" + "a" * 21: "x"}, 400, "ce-" + "a" * 21),
    h("S naming: an empty name", {"ce-": "x"}, 400, "ce- is not"),
    s("S naming: upper case in a structured member", 400, "comExample", comExample="x"),
    s("S naming: '_' in a structured member", 400, "com_example", com_example="x"),
    s("S naming: 21 characters in a structured member", 400, "b" * 21, **{"b" * 21: "x"}),
    s("S naming: upper-case ID is no id", 400, "id", id=DROP, ID="s1"),
    # --- required attributes (S 3.1) and null = unset (J2.2)
    b("S id: MUST be a non-empty string", 400, "ce-id", ce_id=DROP),
    b("S specversion: 1.0", 400, "specversion must be 1.0", ce_specversion="1.0.2"),
    b("admit: the one event type", 400, "unknown event type", ce_type="com.example.x"),
    s("J2.2: a null required attribute is unset", 400, "missing required", id=None),
    s("J2.2: a null specversion is unset", 400, "specversion", specversion=None),
    s("S type system: id is a String", 400, "id must be a string", id=7),
    s("S type system: specversion is a String", 400, "specversion must be a string",
      specversion=1.0),
    # --- source: a non-empty URI-reference (S source, RFC 3986 4.1)
    *[b(f"S source: URI-reference {v!r}", ce_source=v.replace("%", "%25"),
        decoded={"source": v}) for v in SOURCES_OK],
    s("S source: URI-reference in structured mode", source="urn:uuid:6e8bc430"),
    b("S source/RFC 3986: a space is no URI character", 400, "ce-source", ce_source="/a%20b"),
    b("S source/RFC 3986: '<' and '>'", 400, "ce-source", ce_source="/a%3Cb%3E"),
    b("S source/RFC 3986: a backslash", 400, "ce-source", ce_source="/a\\b"),
    b("S source/RFC 3986: a non-ASCII character is an IRI, not a URI", 400, "ce-source",
      ce_source="/caf%C3%A9"),
    b("S source/RFC 3986: ':' in a relative path's first segment", 400, "ce-source",
      ce_source="1http:x"),
    b("S source/RFC 3986: two fragments", 400, "ce-source", ce_source="/a#b#c"),
    b("S source/RFC 3986: an unclosed IP literal", 400, "ce-source", ce_source="http://[::1/x"),
    b("S source/RFC 3986: an IP literal that is no IPv6 address", 400, "ce-source",
      ce_source="http://[12345::]/x"),
    b("S source/RFC 3986: a port with a letter", 400, "ce-source",
      ce_source="http://example.com:80a/"),
    b("S source/RFC 3986: a malformed percent-encoding in the URI", 400, "ce-source",
      ce_source="/x%25zz"),
    s("S source: a URI-reference has no space", 400, "source", source="/a b"),
    s("S type system: source is a string", 400, "source must be a string", source=5),
    # --- time: RFC 3339 (S time, S type system Timestamp)
    *[b(f"S time/RFC 3339 5.6: {v}", ce_time=v) for v in TIMES_OK],
    *[b(f"S time/RFC 3339 5.6: refuse {v}", 400, "ce-time", ce_time=v) for v in TIMES_BAD],
    s("S time in structured mode", time="2018-04-05T17:31:00Z"),
    s("J2.2: a null time is unset", time=None),
    s("S time: RFC 3339, not a basic-format offset", 400, "time", time="2018-04-05T17:31:00+0530"),
    s("J2.2: a Timestamp is a JSON string", 400, "time must be a string", time=1522949460),
    # --- dataschema: a non-empty absolute URI (S dataschema, RFC 3986 4.3)
    b("S dataschema: an absolute URI", ce_dataschema="https://example.com/schema.json"),
    b("S dataschema: a URN", ce_dataschema="urn:example:schema:v1"),
    b("S dataschema: with a fragment (the spec's JSON schema: format uri)",
      ce_dataschema="https://example.com/s.json#/defs/x"),
    b("S dataschema: a relative reference is no URI", 400, "ce-dataschema",
      ce_dataschema="/schema.json"),
    b("S dataschema: a relative path is no URI", 400, "ce-dataschema",
      ce_dataschema="schema.json"),
    b("S dataschema: a network-path reference is no URI", 400, "ce-dataschema",
      ce_dataschema="//example.com/s.json"),
    b("S dataschema: a space is no URI character", 400, "ce-dataschema",
      ce_dataschema="http://exa%20mple.com/"),
    s("S dataschema: in structured mode", dataschema="https://example.com/s.json"),
    s("J2.2: a null dataschema is unset", dataschema=None),
    s("S dataschema: MUST be non-empty", 400, "dataschema", dataschema=""),
    s("S dataschema: relative in structured mode", 400, "dataschema", dataschema="../s.json"),
    # --- subject, datacontenttype (S optional attributes)
    b("S subject: a string", ce_subject="mynewfile.jpg"),
    s("J2.2: a null subject is unset", subject=None),
    s("S subject: MUST be non-empty when present", 400, "subject", subject=""),
    s("S type system: subject is a String", 400, "subject must be a string", subject=True),
    s("J3.1.2: no datacontenttype is application/json", datacontenttype=DROP),
    s("J2.2: a null datacontenttype is unset", datacontenttype=None),
    s("S datacontenttype: application/json", datacontenttype="application/json"),
    s("RFC 7231 3.1.1.1: datacontenttype with a charset",
      datacontenttype="application/json; charset=utf-8"),
    s("RFC 7231 3.1.1.1: datacontenttype in upper case", datacontenttype="Application/JSON"),
    s("admit: data must be application/json", 415, "text/plain", datacontenttype="text/plain"),
    s("S datacontenttype: RFC 2046 media type syntax", 400, "datacontenttype",
      datacontenttype="not a media type"),
    s("S datacontenttype: RFC 2046 needs a subtype", 400, "datacontenttype",
      datacontenttype="application"),
    # --- extension attributes: String, Boolean or Integer (S extensions, J2.2)
    s("S extensions: a String", comexampleextension1="value"),
    s("S extensions/J2.2: a Boolean", comexampleflag=True),
    s("S extensions/J2.2: an Integer", comexampleothervalue=5),
    s("S Integer: the largest", big=2**31 - 1),
    s("S Integer: the smallest", small=-(2**31)),
    s("J2.2: a null extension is unset", comexampleextension1=None),
    s("S Integer: past 2^31-1", 400, "big", big=2**31),
    s("S Integer: below -2^31", 400, "small", small=-(2**31) - 1),
    s("J2.2: an Integer has no fraction", 400, "ratio", ratio=1.5),
    s("J2.2: an Integer is only the integer component (5.0)", 400, "ratio", ratio=5.0),
    s("J2.2: an Integer is only the integer component (1e3)", 400, "ratio",
      raw=json.dumps(ENVELOPE)[:-1].encode() + b', "ratio": 1e3}'),
    s("S type system: no object values", 400, "nested", nested={"a": 1}),
    s("S type system: no array values", 400, "listed", listed=[1, 2]),
    s("S type system: a String extension by the string rule", 400, "note", note="a\x00b"),
    b("S extensions: a binary-mode value is its string form", ce_comexampleothervalue="5"),
    # --- data (J3.1)
    s("J3.1: data and data_base64 are mutually exclusive", 400, "mutually exclusive",
      data_base64="e30="),
    s("admit: data_base64 is not accepted", 415, "data_base64", data=DROP, data_base64="e30="),
    s("J2.2: a null data_base64 is unset", data_base64=None),
    s("J3: the envelope is a JSON object", 400, "JSON object", raw=b"[]"),
    s("admit: data is the request object", 400, "data must be a JSON object", data=DROP),
]


def _id(case: Case) -> str:
    return case.rule


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_a_cloudevents_1_0_2_receiver_accepts_what_the_spec_allows_and_refuses_the_rest(
        case: Case) -> None:
    door = Door()
    sent_headers, sent_body = case.request()
    resp = door.client.post("/", data=sent_body, headers={
        **sent_headers, "Authorization": f"Bearer {door.keys['acme']}"})
    if case.status == 202:
        assert resp.status_code == 202, resp.get_data(as_text=True)
    else:
        problem = assert_problem(resp, case.status, case.needle)
        assert "Traceback" not in problem["detail"] and "NoneType" not in problem["detail"]
        assert door.publisher.published == []
    if case.decoded:
        read = parse(sent_headers, sent_body, LIMITS)
        assert {k: getattr(read, k) for k in case.decoded} == case.decoded


def test_the_table_covers_over_a_hundred_cases_each_citing_its_rule() -> None:
    assert len(CASES) > 100
    assert all(c.rule.split(":")[0] for c in CASES)


@pytest.mark.parametrize("name", ["ce-datacontenttype-header", "time-not-rfc3339",
                                  "relative-dataschema", "fraction-extension", "source-not-uri"])
def test_the_chaos_harness_bad_inputs_from_the_spec_are_400_naming_the_attribute(
        name: str) -> None:
    from quotaflow.chaos.load import bad_request
    from quotaflow.chaos.plan import BAD_INPUTS

    assert name in BAD_INPUTS
    door = Door()
    send = next(s for s in _sends() if s.bad == name)
    path, sent_headers, sent_body = bad_request(name, door.keys["acme"], send, MODEL)
    problem = assert_problem(door.client.post(path, data=sent_body, headers=sent_headers), 400)
    assert problem["attribute"] in problem["detail"]


def _sends() -> list[Any]:
    from quotaflow.chaos import plan

    return [s for s in plan.sends(300, ["acme"], MODEL, seed=1) if s.kind == "bad"]
