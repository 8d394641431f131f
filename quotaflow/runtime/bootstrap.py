"""Adapters the steps share, opened from Settings at start-up."""

from __future__ import annotations

from typing import Any

import psycopg

from quotaflow.ledger.projection import RedisProjection
from quotaflow.ledger.store import PostgresLedger
from quotaflow.model.base import Generator, Tokenizer
from quotaflow.settings import Settings


def open_postgres(settings: Settings) -> psycopg.Connection[Any]:
    return psycopg.connect(settings.postgres_url, autocommit=True)


def open_ledger(settings: Settings) -> tuple[PostgresLedger, RedisProjection]:
    return (PostgresLedger.connect(settings.postgres_url),
            RedisProjection.connect(settings.redis_url))


def load_tokenizer(settings: Settings) -> Tokenizer:
    from quotaflow.model.loader import load_tokenizer as load

    return load(settings)


def load_generator(settings: Settings) -> Generator:
    from quotaflow.model.loader import load_generator as load

    return load(settings)
