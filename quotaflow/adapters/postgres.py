"""PostgreSQL connections and versioned migrations (infra/migrations/NNNN_name.sql)."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit, urlunsplit

import psycopg

from events.resources import data_path

log = logging.getLogger(__name__)


def connect(url: str, autocommit: bool = False) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(url, autocommit=autocommit)


def ensure_database(url: str) -> None:
    """Create the URL's database if it does not exist (connecting to `postgres` to do it)."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
            log.info("created database %s", name)


def migrate(url: str) -> list[str]:
    """Apply pending migrations in order, each in its own transaction; returns those applied."""
    ensure_database(url)
    applied: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                     "(version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        for path in sorted(data_path("migrations").glob("*.sql")):
            version = path.stem
            with conn.transaction():
                # Concurrent migrators (several processes starting at once) queue here.
                conn.execute("LOCK TABLE schema_migrations IN EXCLUSIVE MODE")
                done = conn.execute("SELECT 1 FROM schema_migrations WHERE version = %s",
                                    (version,)).fetchone()
                if done:
                    continue
                conn.execute(path.read_text())
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                applied.append(version)
                log.info("applied migration %s", version)
    return applied


def recreate(url: str) -> None:
    """Drop the URL's database and migrate a new one (tests and benchmarks)."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    migrate(url)
