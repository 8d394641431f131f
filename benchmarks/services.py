"""The PostgreSQL and Redis a benchmark runs on: POSTGRES_URL / REDIS_URL when set (or the
defaults when they answer), else embedded ones started for the run, as the tests do
(tests/services.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from quotaflow.devstack.stack import DevStack
from quotaflow.settings import Settings


@contextmanager
def services(settings: Settings, workdir: Path) -> Iterator[tuple[Settings, dict[str, int]]]:
    """`settings` with a reachable PostgreSQL and Redis, and the pids of those started here
    (none when they were running): the ones `settings` names if they answer (a POSTGRES_URL /
    REDIS_URL set but not answering is an error), else embedded ones living as long as the
    block."""
    holder = DevStack(workdir / "services", settings)
    try:
        holder.ensure_postgres(explicit="POSTGRES_URL" in os.environ)
        holder.ensure_redis(explicit="REDIS_URL" in os.environ)
        yield (replace(settings, postgres_url=holder.settings.postgres_url,
                       redis_url=holder.settings.redis_url),
               {name: proc.pid for name, proc in holder.procs.items()})
    finally:
        holder.down()
