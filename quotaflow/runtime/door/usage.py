"""`GET /v1/usage`: the caller's own tenant's usage roll-ups, the rows `quotaflow usage` prints.

    GET /v1/usage?by=minute|hour|day&group=model|key&from=TS&to=TS&format=json|csv|table
The tenant is the key's; naming another one is a 403. Bad parameters are a 400 problem+json
naming the parameter."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from quotaflow.analytics.query import FORMATS, BadQuery, UsageQuery, render
from quotaflow.analytics.store import UsageReader
from quotaflow.runtime.door.auth import Authenticator
from quotaflow.runtime.problem import Problem

PARAMS = ("tenant", "by", "group", "from", "to", "format")
MAX_ROWS = 10_000
MIMETYPES = {"csv": "text/csv", "table": "text/plain"}


def usage_blueprint(auth: Authenticator, reader: UsageReader) -> Blueprint:
    """The route, authenticating with the door's `auth` and reading from `reader`."""
    bp = Blueprint("usage", __name__)

    @bp.get("/v1/usage")
    def get_usage() -> Response:
        principal = auth.principal(request.headers.get("Authorization", ""))
        args = request.args
        unknown = sorted(set(args) - set(PARAMS))
        if unknown:
            raise Problem(400, "Bad request", f"unknown query parameter {unknown[0]!r}; known: "
                          f"{', '.join(PARAMS)}", slug="bad-query")
        named = args.get("tenant")
        if named and named != principal.tenant:
            raise Problem(403, "Forbidden", f"this key reads only its own tenant's usage "
                          f"({principal.tenant}), not {named!r}")
        fmt = args.get("format") or "json"
        if fmt not in FORMATS:
            raise Problem(400, "Bad request", f"'format' must be one of {', '.join(FORMATS)}, "
                          f"got {fmt!r}", slug="bad-query")
        try:
            query = UsageQuery.parse({**args.to_dict(), "tenant": principal.tenant})
        except BadQuery as exc:
            raise Problem(400, "Bad request", str(exc), slug="bad-query",
                          parameter=exc.param) from None
        found = reader.usage(query)
        if len(found) > MAX_ROWS:
            raise Problem(400, "Bad request", f"{len(found)} rows is more than {MAX_ROWS}: "
                          "narrow 'from' and 'to' or use a coarser 'by'", slug="bad-query")
        if fmt == "json":
            return jsonify(found)
        return Response(render(query, found, fmt), mimetype=MIMETYPES[fmt])

    return bp
