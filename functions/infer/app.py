"""infer's HTTP CloudEvents entry (what Knative's KafkaSource calls)."""

from __future__ import annotations

from flask import Flask

from events.http_entry import create_app
from events.settings import Settings
from functions.infer.handler import STEP


def create() -> Flask:
    """WSGI factory: `gunicorn 'functions.infer.app:create()'`."""
    return create_app(STEP, Settings.from_env())
