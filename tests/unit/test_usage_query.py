"""Usage query parameters and rendering: bad values are refused naming the parameter, times
are UTC, and the table, JSON and CSV forms carry the same rows."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pytest

from quotaflow.analytics.query import BadQuery, UsageQuery, render
from quotaflow.analytics.rollup import Counts

MINUTE = datetime(2026, 11, 29, 13, 7, tzinfo=UTC)


@pytest.mark.parametrize(("params", "param"), [
    ({"by": "week"}, "by"), ({"group": "tenant"}, "group"), ({"group_by": "org"}, "group_by"),
    ({"from": "yesterday"}, "from"),
    ({"to": "2026-13-01"}, "to"), ({"from": "2026-11-02", "to": "2026-11-01"}, "to")])
def test_a_bad_parameter_is_refused_naming_it(params: dict[str, str], param: str) -> None:
    with pytest.raises(BadQuery) as caught:
        UsageQuery.parse(params)
    assert caught.value.param == param
    assert f"'{param}'" in str(caught.value)


def test_group_by_is_the_groups_name_and_group_its_older_one() -> None:
    assert UsageQuery.parse({"group_by": "team"}).group == "team"
    assert UsageQuery.parse({"group": "key"}).group == "key"
    assert UsageQuery.parse({"group_by": "team", "group": "model"}).group == "team"


def test_a_query_by_team_sums_its_keys_and_a_key_in_none_is_the_row_of_no_team() -> None:
    from quotaflow.analytics.query import rows as make_rows
    from quotaflow.analytics.query import summarize

    q = UsageQuery(by="hour", group="team")
    buckets = [(("acme", "m", "k1", MINUTE), Counts(charged_tokens=10, charged_usd=2_600)),
               (("acme", "m", "k2", MINUTE), Counts(charged_tokens=5, charged_usd=1_000_001)),
               (("acme", "m", "k3", MINUTE), Counts(charged_tokens=1, charged_usd=7))]
    got = make_rows(q, summarize(q, buckets, {"k1": "ml", "k2": "ml"}))
    assert [(r["team"], r["charged_tokens"], r["charged_usd"]) for r in got] == [
        (None, 1, "0.000007"), ("ml", 15, "1.002601")]


def test_times_without_an_offset_are_utc_and_offsets_are_converted() -> None:
    q = UsageQuery.parse({"from": "2026-11-29", "to": "2026-11-29T15:00:00+02:00"})
    assert q.start == datetime(2026, 11, 29, tzinfo=UTC)
    assert q.end == datetime(2026, 11, 29, 13, tzinfo=UTC)
    assert (q.by, q.group, q.tenant) == ("hour", None, None)


@pytest.mark.parametrize(("by", "start"), [("minute", MINUTE),
                                           ("hour", MINUTE.replace(minute=0)),
                                           ("day", MINUTE.replace(hour=0, minute=0))])
def test_rows_start_at_the_start_of_their_grain(by: str, start: datetime) -> None:
    assert UsageQuery(by=by).truncate(MINUTE) == start


def test_the_range_includes_from_and_excludes_to() -> None:
    q = UsageQuery(start=MINUTE, end=MINUTE.replace(minute=8))
    assert q.wants(("t", "m", "k", MINUTE))
    assert not q.wants(("t", "m", "k", MINUTE.replace(minute=8)))
    assert not q.wants(("t", "m", "k", MINUTE.replace(minute=6)))


def rows() -> tuple[UsageQuery, list[dict[str, object]]]:
    from quotaflow.analytics.query import rows as make_rows

    q = UsageQuery(by="hour", group="key")
    c = Counts(requests=3, completed=2, prompt_tokens=20, completion_tokens=7,
               charged_tokens=27, latency_ms=30.0)
    return q, make_rows(q, {("acme", MINUTE.replace(minute=0), "k1"): c,
                            ("acme", MINUTE.replace(minute=0), ""): Counts(granted_tokens=9)})


def test_json_csv_and_table_carry_the_same_rows() -> None:
    q, found = rows()
    as_json = json.loads(render(q, found, "json"))
    assert as_json == found
    expected = {"tenant": "acme", "start": "2026-11-29T13:00:00Z", "key": "k1", "requests": 3,
                "prompt_tokens": 20, "completion_tokens": 7, "charged_tokens": 27,
                "avg_latency_ms": 15.0}
    assert {k: as_json[1][k] for k in expected} == expected
    as_csv = list(csv.DictReader(io.StringIO(render(q, found, "csv"))))
    assert [r["charged_tokens"] for r in as_csv] == ["0", "27"]
    assert as_csv[0]["key"] == "" and as_csv[0]["granted_tokens"] == "9"
    table = render(q, found, "table").splitlines()
    assert table[0].split()[:4] == ["tenant", "start", "key", "requests"]
    assert table[2].split()[:4] == ["acme", "2026-11-29T13:00:00Z", "k1", "3"]
    assert table[-1] == "2 rows"
