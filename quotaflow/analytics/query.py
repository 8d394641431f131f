"""Usage queries over the roll-ups: the parameters (shared by `quotaflow usage` and
`GET /v1/usage`), the rows they answer, and those rows as a table, JSON or CSV."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from quotaflow.analytics.rollup import Bucket, Counts
from quotaflow.tables import aligned, csv_text

GRAINS = ("minute", "hour", "day")
GROUPS = ("model", "key", "team")
FORMATS = ("table", "json", "csv")
TOKEN_COLUMNS = ("prompt_tokens", "completion_tokens", "reserved_tokens", "charged_tokens",
                 "released_tokens", "expired_tokens", "granted_tokens")
COUNT_COLUMNS = ("requests", "rejected", "completed", "failed", "expired")


class BadQuery(ValueError):
    """A query parameter that cannot be used; `param` names it."""

    def __init__(self, param: str, detail: str) -> None:
        super().__init__(detail)
        self.param = param


@dataclass(frozen=True)
class UsageQuery:
    """Which roll-ups to sum, and how: per `by` (minute, hour or day, UTC), optionally per
    model or API key, over minutes in [start, end)."""

    tenant: str | None = None
    by: str = "hour"
    group: str | None = None
    start: datetime | None = None
    end: datetime | None = None

    @classmethod
    def parse(cls, params: Mapping[str, str | None]) -> UsageQuery:
        """A query from text parameters (`tenant`, `by`, `group_by` or its older name `group`,
        `from`, `to`), or BadQuery naming the parameter that is wrong."""
        by = params.get("by") or "hour"
        if by not in GRAINS:
            raise BadQuery("by", f"'by' must be one of {', '.join(GRAINS)}, got {by[:40]!r}")
        name = "group_by" if params.get("group_by") else "group"
        group = params.get(name) or None
        if group is not None and group not in GROUPS:
            raise BadQuery(name, f"'{name}' must be one of {', '.join(GROUPS)}, "
                           f"got {group[:40]!r}")
        start, end = timestamp("from", params.get("from")), timestamp("to", params.get("to"))
        if start and end and end <= start:
            raise BadQuery("to", "'to' must be later than 'from'")
        return cls(params.get("tenant") or None, by, group, start, end)

    def truncate(self, minute: datetime) -> datetime:
        """The start of the row `minute` falls in."""
        if self.by == "day":
            return minute.replace(hour=0, minute=0)
        if self.by == "hour":
            return minute.replace(minute=0)
        return minute

    def group_value(self, bucket: Bucket, teams: Mapping[str, str]) -> str:
        """The model, key or team (by `teams`: key id -> team) of a bucket, as this query
        groups."""
        if self.group == "team":
            return teams.get(bucket[2], "")
        return bucket[1] if self.group == "model" else bucket[2] if self.group == "key" else ""

    def wants(self, bucket: Bucket) -> bool:
        """Whether a bucket is inside the query's tenant and time range."""
        tenant, _, _, minute = bucket
        return ((self.tenant is None or tenant == self.tenant)
                and (self.start is None or minute >= self.start)
                and (self.end is None or minute < self.end))


# RFC 3339 allows what `datetime.fromisoformat` refuses: a lower-case "t" or "z", and a leap
# second (second 60, read as the first instant of the next minute).
_LEAP_SECOND = re.compile(r"(?<=[T ]\d\d:\d\d:)60(?=[.,]\d+|[Z+-]|$)")
MAX_TIMESTAMP_CHARS = 64


def timestamp(param: str, text: str | None) -> datetime | None:
    """An ISO 8601 date or time (UTC when it names no offset), or BadQuery naming `param`.
    Any RFC 3339 time is taken, with any offset, in years 1 to 9999; one whose UTC instant
    falls outside the years `datetime` holds (year 1 at +14:00, year 9999 at -14:00) is the
    first or last instant it holds, which no row is before or after."""
    if not text:
        return None
    bad = BadQuery(param, f"'{param}' must be an RFC 3339 time such as 2026-11-22T10:00:00Z, "
                   f"got {text[:MAX_TIMESTAMP_CHARS]!r}")
    if len(text) > MAX_TIMESTAMP_CHARS or not text.isascii():
        raise bad
    iso = text.strip().replace(" ", "T").replace("t", "T").replace("z", "Z")
    leap = _LEAP_SECOND.search(iso) is not None
    try:
        at = datetime.fromisoformat(_LEAP_SECOND.sub("59", iso))
    except ValueError:
        raise bad from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    try:
        at = at.astimezone(UTC) + timedelta(seconds=leap)
    except OverflowError:  # the offset or the leap second carries it past year 1 or 9999
        return datetime.min.replace(tzinfo=UTC) if at.year == 1 else datetime.max.replace(
            tzinfo=UTC)
    return at


Key = tuple[str, datetime, str]  # (tenant, row start, model or key)


def summarize(query: UsageQuery, buckets: Iterable[tuple[Bucket, Counts]],
              teams: Mapping[str, str] | None = None) -> dict[Key, Counts]:
    """Sum minute buckets into the query's rows (`teams`: key id -> team, for a query by
    team; a key in none is in the row of no team)."""
    out: dict[Key, Counts] = {}
    for bucket, counts in buckets:
        if query.wants(bucket):
            key = (bucket[0], query.truncate(bucket[3]), query.group_value(bucket, teams or {}))
            out.setdefault(key, Counts()).add(counts)
    return out


def rows(query: UsageQuery, summed: Mapping[Key, Counts]) -> list[dict[str, Any]]:
    """The JSON rows of summed counts, ordered by tenant, start and group."""
    out = []
    for (tenant, start, value), c in sorted(summed.items()):
        at = start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        row: dict[str, Any] = {"tenant": tenant, "start": at}
        if query.group:
            row[query.group] = value or None
        row.update({name: int(getattr(c, name)) for name in COUNT_COLUMNS + TOKEN_COLUMNS})
        row["charged_usd"] = usd(c.charged_usd)
        row["avg_latency_ms"] = round(c.latency_ms / c.completed, 3) if c.completed else None
        out.append(row)
    return out


def usd(micro: int) -> str:
    """Micro-dollars as a decimal string of dollars: 2600 -> "0.002600"."""
    return f"{micro // 1_000_000}.{micro % 1_000_000:06d}"


def columns(query: UsageQuery) -> list[str]:
    """The row fields in display order."""
    return (["tenant", "start"] + ([query.group] if query.group else []) + list(COUNT_COLUMNS)
            + list(TOKEN_COLUMNS) + ["charged_usd", "avg_latency_ms"])


def render(query: UsageQuery, found: list[dict[str, Any]], fmt: str) -> str:
    """Rows as an aligned table, a JSON list or CSV with a header."""
    if fmt == "json":
        return json.dumps(found, indent=2) + "\n"
    names = columns(query)
    if fmt == "csv":
        return csv_text(found, names)
    cells = [[("-" if r[c] is None else str(r[c])) for c in names] for r in found]
    # Tenant, start (and the group) left-aligned; numbers right-aligned.
    lines = aligned(names, cells, left=3 if query.group else 2)
    lines.append(f"{len(found)} rows")
    return "\n".join(lines) + "\n"
