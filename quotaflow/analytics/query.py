"""Usage queries over the roll-ups: the parameters (shared by `quotaflow usage` and
`GET /v1/usage`), the rows they answer, and those rows as a table, JSON or CSV."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from quotaflow.analytics.rollup import Bucket, Counts
from quotaflow.tables import aligned, csv_text

GRAINS = ("minute", "hour", "day")
GROUPS = ("model", "key")
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
        """A query from text parameters (`tenant`, `by`, `group`, `from`, `to`), or BadQuery
        naming the parameter that is wrong."""
        by = params.get("by") or "hour"
        if by not in GRAINS:
            raise BadQuery("by", f"'by' must be one of {', '.join(GRAINS)}, got {by!r}")
        group = params.get("group") or None
        if group is not None and group not in GROUPS:
            raise BadQuery("group", f"'group' must be one of {', '.join(GROUPS)}, got {group!r}")
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

    def group_value(self, bucket: Bucket) -> str:
        """The model or key of a bucket, as this query groups."""
        return bucket[1] if self.group == "model" else bucket[2] if self.group == "key" else ""

    def wants(self, bucket: Bucket) -> bool:
        """Whether a bucket is inside the query's tenant and time range."""
        tenant, _, _, minute = bucket
        return ((self.tenant is None or tenant == self.tenant)
                and (self.start is None or minute >= self.start)
                and (self.end is None or minute < self.end))


def timestamp(param: str, text: str | None) -> datetime | None:
    """An ISO 8601 date or time (UTC when it names no offset), or BadQuery naming `param`."""
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text.strip().replace(" ", "T"))
    except ValueError:
        raise BadQuery(param, f"'{param}' must be an ISO 8601 time such as "
                       f"2026-11-22T10:00:00Z, got {text!r}") from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


Key = tuple[str, datetime, str]  # (tenant, row start, model or key)


def summarize(query: UsageQuery, buckets: Iterable[tuple[Bucket, Counts]]) -> dict[Key, Counts]:
    """Sum minute buckets into the query's rows."""
    out: dict[Key, Counts] = {}
    for bucket, counts in buckets:
        if query.wants(bucket):
            key = (bucket[0], query.truncate(bucket[3]), query.group_value(bucket))
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
        row["avg_latency_ms"] = round(c.latency_ms / c.completed, 3) if c.completed else None
        out.append(row)
    return out


def columns(query: UsageQuery) -> list[str]:
    """The row fields in display order."""
    return (["tenant", "start"] + ([query.group] if query.group else []) + list(COUNT_COLUMNS)
            + list(TOKEN_COLUMNS) + ["avg_latency_ms"])


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
