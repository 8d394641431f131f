"""What the admit tests share: a client request's data, and the check that an answer is an
RFC 9457 problem naming what was wrong, never a stack trace."""

from __future__ import annotations

import json
from typing import Any

MODEL = "smollm2-135m-instruct"


def body(**over: Any) -> bytes:
    """A request's JSON data; a field set to None is left out."""
    data = {"model": MODEL, "prompt": "hello", "max_tokens": 8, **over}
    return json.dumps({k: v for k, v in data.items() if v is not None}).encode()


def assert_problem(resp: Any, status: int, *needles: str) -> dict[str, Any]:
    """`resp` (a Flask test response) is a problem+json of `status` whose detail names each
    needle."""
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.headers["Content-Type"] == "application/problem+json"
    problem: dict[str, Any] = json.loads(resp.get_data())
    assert problem["status"] == status
    for needle in needles:
        assert needle in problem["detail"], problem
    assert "Traceback" not in resp.get_data(as_text=True)
    return problem
