"""Rule 5, every parameter checked: a usage range takes any RFC 3339 time, with any offset, in
years 1 to 9999; `Last-Event-ID`, `limit` and `Idempotency-Key` outside what they can be are a
400 naming the parameter, answered before any stream starts; never a 5xx or a dropped
connection."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from tests.openai.memory_pipeline import MODEL, MemoryDoor
from tests.problems import assert_problem
from tests.unit.test_openai_door import post_event
from tests.unit.test_usage_api import Door as UsageDoor


@pytest.mark.parametrize("at", [
    "0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00-14:00", "9999-12-31T23:59:59-14:00",
    "9999-12-31T23:59:59.999999999Z", "2026-11-22t10:00:00z", "2026-12-31T23:59:60Z",
    "2026-11-22T10:00:00.5+05:30", "1970-01-01T00:00:00Z"])
@pytest.mark.parametrize("param", ["from", "to"])
def test_rule5_a_usage_range_takes_any_rfc3339_time_in_years_1_to_9999(param: str,
                                                                      at: str) -> None:
    resp = UsageDoor().get(f"?{param}={quote(at)}")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert isinstance(resp.get_json(), list)


def test_rule5_the_whole_range_of_times_reads_every_row() -> None:
    door = UsageDoor()
    everything = door.get(f"?from={quote('0001-01-01T00:00:00+14:00')}"
                          f"&to={quote('9999-12-31T23:59:59-14:00')}").get_json()
    assert everything == door.get("").get_json() != []


@pytest.mark.parametrize(("query", "param"), [
    ("?from=yesterday", "from"), ("?to=0000-01-01T00:00:00Z", "to"),
    ("?from=10000-01-01T00:00:00Z", "from"), ("?by=week", "by"), ("?format=xml", "format"),
    ("?colour=red", "colour"), (f"?from={'9' * 5000}", "from")])
def test_rule5_a_bad_usage_parameter_is_400_naming_it(query: str, param: str) -> None:
    problem = assert_problem(UsageDoor().get(query), 400, param)
    assert problem["parameter"] == param


@pytest.mark.parametrize("last", [
    "0-99999999999999999999999", "1_0-0", "0-1_0", "0-18446744073709551616", "-1-0", "0--1",
    "+0-1", " 0-1", "0-1 ", "0x1-0", "\u0663-1", "2-0", "1-1", "0-", "-", "x" * 5000])
def test_rule5_a_last_event_id_no_stream_sends_is_400_before_the_stream_starts(
        door: MemoryDoor, last: str) -> None:
    rid = post_event(door)
    resp = door.client.get(f"/v1/requests/{rid}/events",
                           headers=door.headers(**{"Last-Event-ID": last}))
    problem = assert_problem(resp, 400, "Last-Event-ID")
    assert problem["parameter"] == "Last-Event-ID"


@pytest.mark.parametrize("last", ["0-0", "0-2", "1-0", "0-18446744073709551615"])
def test_rule5_a_last_event_id_a_stream_can_send_is_read_on_after(door: MemoryDoor,
                                                                  last: str) -> None:
    rid = post_event(door)
    resp = door.client.get(f"/v1/requests/{rid}/events",
                           headers=door.headers(**{"Last-Event-ID": last}))
    assert resp.status_code == 200 and resp.mimetype == "text/event-stream"
    assert "event: end" in resp.get_data(as_text=True)


@pytest.mark.parametrize("limit", ["0", "101", "-1", "1.0", " 5", "5 ", "+5", "\u00b2",
                                   "\u0663", "1" * 5000, "1_0", "0x10"])
def test_rule5_a_limit_outside_1_to_100_is_400_naming_it(door: MemoryDoor, limit: str) -> None:
    resp = door.client.get("/v1/requests", query_string={"limit": limit},
                           headers=door.headers())
    problem = assert_problem(resp, 400, "limit")
    assert problem["parameter"] == "limit"


@pytest.mark.parametrize("key", ["x" * 1025, "caf\u00e9", "a\tb"])
def test_rule5_a_bad_idempotency_key_is_400_naming_it(door: MemoryDoor, key: str) -> None:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                            "max_tokens": 4}
    resp = door.client.post("/v1/chat/completions", json=body,
                            headers=door.headers(**{"Idempotency-Key": key}))
    assert resp.status_code == 400, resp.get_data(as_text=True)
    assert resp.get_json()["error"]["param"] == "Idempotency-Key"


@pytest.mark.parametrize("rid", ["not-a-uuid", "ab%00c", "%ED%A0%80", "x" * 5000,
                                 "{00000000-0000-0000-0000-000000000000}",
                                 "00000000-0000-0000-0000-00000000000G"])
@pytest.mark.parametrize("suffix", ["", "/events"])
def test_rule5_a_request_id_that_is_not_a_uuid_is_400_naming_it(door: MemoryDoor, rid: str,
                                                                 suffix: str) -> None:
    problem = assert_problem(door.client.get(f"/v1/requests/{rid}{suffix}",
                                             headers=door.headers()), 400, "request_id")
    assert problem["parameter"] == "request_id"


@pytest.mark.parametrize("suffix", ["", "/events"])
def test_rule5_a_well_formed_unknown_request_id_is_404(door: MemoryDoor, suffix: str) -> None:
    rid = "00000000-0000-4000-8000-000000000000"
    assert_problem(door.client.get(f"/v1/requests/{rid}{suffix}", headers=door.headers()), 404)


@pytest.mark.parametrize("path", ["/v1/requests//events", "/v1/requests/", "//v1/quota",
                                  "/v1//usage"])
def test_rule5_an_empty_path_segment_is_a_problem_not_a_redirect(door: MemoryDoor,
                                                                 path: str) -> None:
    resp = door.client.get(path, headers=door.headers())
    assert resp.status_code == 404, resp.get_data(as_text=True)
    assert_problem(resp, 404)
