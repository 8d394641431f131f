"""The command that serves admit in the local stack."""

from __future__ import annotations

import sys

ADMIT_FACTORY = "functions.admit.app:create"


def admit_server_argv(port: int, workers: int = 2, threads: int = 16,
                      app: str = ADMIT_FACTORY, access_log: bool = False) -> list[str]:
    """The command serving admit: granian (a Rust HTTP server) running the Flask app over
    WSGI, each worker process with `threads` threads for the app; chosen by measurement
    over gunicorn's threaded workers (README, "Serving admit"). Threads: an open OpenAI
    stream holds one; commits and Redis screens are shared across them."""
    return [sys.executable, "-m", "granian", "--interface", "wsgi", "--factory",
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
            "--blocking-threads", str(threads), "--respawn-failed-workers",
            "--access-log" if access_log else "--no-access-log", app]
