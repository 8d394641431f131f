"""Adapters the steps share, opened from Settings at start-up."""

from __future__ import annotations

from typing import Any

import psycopg

from events.ledger.projection import RedisProjection
from events.ledger.store import PostgresLedger
from events.model.base import Generator, Tokenizer
from events.settings import Settings


def open_postgres(settings: Settings) -> psycopg.Connection[Any]:
    return psycopg.connect(settings.postgres_url, autocommit=True)


def open_ledger(settings: Settings) -> tuple[PostgresLedger, RedisProjection]:
    return (PostgresLedger.connect(settings.postgres_url),
            RedisProjection.connect(settings.redis_url))


def load_tokenizer(settings: Settings) -> Tokenizer:
    from events.model.loader import load_tokenizer as load

    return load(settings)


def load_generator(settings: Settings) -> Generator:
    from events.model.loader import load_generator as load

    return load(settings)
