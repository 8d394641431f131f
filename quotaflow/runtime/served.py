"""The ASGI app the local stack's granian serves: a WSGI factory's app (admit's door, or the
benchmarks' bare endpoint) on the Knative entry's thread pool (`asgi_bridge.WsgiOnThreads`).

Why ASGI and not granian's WSGI interface: WSGI tells an app nothing of a client that hangs up
while it waits, so a non-streamed call whose client left ran to its end and was charged whole.
The bridge watches `receive()` for `http.disconnect` and sets `environ[DISCONNECTED]`, which
the door's wait reads and turns into the cancel path a hung-up stream takes.

granian's factory takes no arguments: the server command (`devstack.serving`) names the WSGI
factory and the thread count in the environment it starts the server with."""

from __future__ import annotations

import importlib
import os

from quotaflow.runtime.asgi_bridge import WsgiOnThreads
from quotaflow.runtime.knative import body_limit_bytes
from quotaflow.settings import Settings

APP_ENV = "QF_SERVED_WSGI_FACTORY"  # "module:function", called with no arguments
THREADS_ENV = "QF_SERVED_THREADS"  # the app's threads in each server worker


def create() -> WsgiOnThreads:
    """The named WSGI factory's app as ASGI, on as many threads as the command asked for."""
    module, _, function = os.environ[APP_ENV].partition(":")
    app = getattr(importlib.import_module(module), function)()
    return WsgiOnThreads(app, int(os.environ[THREADS_ENV]), body_limit_bytes(Settings.from_env()))
