"""Every step's HTTP app by name: what `functions/<step>/app.py` and the Knative entry serve."""

from __future__ import annotations

import logging

from flask import Flask

from quotaflow.adapters import kafka
from quotaflow.runtime.step import Resources
from quotaflow.settings import Settings


def create_app(step: str, settings: Settings) -> Flask:
    """The Flask app of `step`: admit's door, or a consumer step's CloudEvents entry with its
    ports wired from `settings`."""
    if step == "admit":
        from quotaflow.runtime.door.app import create_app as admit_app

        return admit_app(settings)
    from quotaflow.runtime import http_entry
    from quotaflow.runtime.steps import load_step

    return http_entry.create_app(load_step(step), settings)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def create(step: str) -> Flask:
    """`create_app` with settings from the environment (a WSGI factory needs no import of
    `quotaflow.settings`). The server's log lines get the format the CLI's have: granian's
    own is level and message only, so the door's warnings had no time."""
    settings = Settings.from_env()
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=settings.log_level, format=LOG_FORMAT)
    for handler in root.handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    kafka.check_brokers(settings)  # a wrong password or CA ends start-up with one line
    return create_app(step, settings)


def resources_of(app: Flask) -> Resources:
    """What an app made by `create_app` holds open (its readiness and close)."""
    resources: Resources = app.extensions["quotaflow"]["resources"]
    return resources
