"""settle's HTTP CloudEvents entry (what Knative's KafkaSource calls)."""

from __future__ import annotations

from flask import Flask

from functions.settle.handler import STEP
from quotaflow.runtime.http_entry import create_app
from quotaflow.settings import Settings


def create() -> Flask:
    """WSGI factory: `gunicorn 'functions.settle.app:create()'`."""
    return create_app(STEP, Settings.from_env())
