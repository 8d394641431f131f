"""RFC 9457 problem details for every HTTP error quotaflow answers."""

from __future__ import annotations

import json
from typing import Any

from flask import Response

PROBLEM_TYPE_BASE = "urn:quotaflow:problem:"


class Problem(Exception):
    """Raise to answer with application/problem+json; `detail` names what was wrong."""

    def __init__(self, status: int, title: str, detail: str, *,
                 slug: str | None = None, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.slug = slug or title.lower().replace(" ", "-")
        self.headers = headers or {}
        self.extra = extra

    def response(self, instance: str | None = None) -> Response:
        body: dict[str, Any] = {"type": PROBLEM_TYPE_BASE + self.slug, "title": self.title,
                                "status": self.status, "detail": self.detail, **self.extra}
        if instance:
            body["instance"] = instance
        resp = Response(json.dumps(body), status=self.status,
                        content_type="application/problem+json")
        for k, v in self.headers.items():
            resp.headers[k] = v
        return resp
