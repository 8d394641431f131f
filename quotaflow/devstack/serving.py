"""The command that serves admit in the local stack."""

from __future__ import annotations

import sys

from quotaflow.runtime.served import APP_ENV, THREADS_ENV

ADMIT_FACTORY = "quotaflow.functions.admit.app:create"
SERVED = "quotaflow.runtime.served:create"


def admit_server_argv(port: int, workers: int = 2, threads: int = 16,
                      app: str = ADMIT_FACTORY, access_log: bool = False) -> list[str]:
    """The command serving admit: granian (a Rust HTTP server) running the Flask app `app`
    (a WSGI factory) over ASGI on `threads` threads in each of `workers` processes
    (`quotaflow.runtime.served`: ASGI, so a client's hang-up reaches the door); chosen by
    measurement over gunicorn's threaded workers (README, "Serving admit"). Threads: an open
    OpenAI stream holds one; commits and Redis screens are shared across them."""
    return ["env", f"{APP_ENV}={app}", f"{THREADS_ENV}={threads}",
            sys.executable, "-m", "granian", "--interface", "asginl", "--factory",
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
            "--respawn-failed-workers",
            "--access-log" if access_log else "--no-access-log", SERVED]
