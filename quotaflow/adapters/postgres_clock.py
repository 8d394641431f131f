"""The ledger's clock outside the ledger: PostgreSQL's `now()`, so that admit's billing period
is the one the ledger decides with, without a round trip per request."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg


class PostgresClock:
    """A `Clock` reading PostgreSQL's `now()` at most every `refresh_s` and carrying it forward
    with the local monotonic clock in between (so a step of the local wall clock never moves it)."""

    def __init__(self, connection: Callable[[], psycopg.Connection[Any]],
                 refresh_s: float = 5.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._connection = connection
        self._refresh_s = refresh_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._anchor: tuple[float, datetime] | None = None  # (monotonic, database time)
        self._last = datetime.min.replace(tzinfo=UTC)

    def now(self) -> datetime:
        """The database's time now, in UTC."""
        at = self._monotonic()
        with self._lock:
            anchor = self._anchor
        if anchor is None or at - anchor[0] >= self._refresh_s:
            row = self._connection().execute("SELECT now()").fetchone()
            if row is None:
                raise RuntimeError("SELECT now() returned no row")
            anchor = (at, row[0].astimezone(UTC))
            with self._lock:
                self._anchor = anchor
        # A re-read anchors on a query whose delay differs from the last one's (and the two
        # clocks drift): the extrapolation may step back by that much. Callers read a period or
        # a rate-limit minute from it, so it never goes backwards.
        with self._lock:
            self._last = max(self._last, anchor[1] + timedelta(seconds=at - anchor[0]))
            return self._last
