"""The hostile-input suite: what a hostile client can send, and what it gets back. Each test is
named for the rule of issue 26 it proves (`test_rule<N>_...`):

1. tokens, not characters: a prompt over the model's context is refused before any reservation;
2. sampling parameters are finite and in range, and no request can fail its batch-mates;
5. every parameter is checked: a 400 naming it, before any stream starts;
6. nothing internal (exception text, library or file names) reaches a client;
7. fair share: per key, a cap on open waits and streams and a rate on GETs, resends and 409s;
8. retries never bill one answer twice: a stored request answered 5xx is never billed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.openai.memory_pipeline import MemoryDoor


@pytest.fixture
def door() -> Iterator[MemoryDoor]:
    """Both doors over in-memory ports, the real handlers and the stand-in model behind them."""
    d = MemoryDoor()
    yield d
    d.pipeline.close()
