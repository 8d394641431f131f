"""How long one HTTP request may last, in one place: every Knative Service's `timeoutSeconds`
and `responseStartTimeoutSeconds` (knative/services/*.yaml, checked by tests/deploy), and the
door's longest wait, which stays under both so the door answers before Knative cuts the call.

Knative's queue-proxy ends a request at `timeoutSeconds` in all, a stream included, and one
whose first byte has not come by `responseStartTimeoutSeconds`; either reaches the function as
a disconnect. 600 s is Knative's default `max-revision-timeout-seconds`: a longer value is
refused unless the cluster's config-defaults raise it."""

from __future__ import annotations

from quotaflow.settings import Settings

# knative/services/*.yaml: spec.template.spec.timeoutSeconds / responseStartTimeoutSeconds.
TIMEOUT_S = 600
RESPONSE_START_TIMEOUT_S = 600
# The door answers this long before Knative would cut the call: covers what runs after the
# longest wait (a stream's usage chunk waits up to `service.USAGE_WAIT_S` for the ledger).
MARGIN_S = 30
DOOR_LONGEST_WAIT_S = min(TIMEOUT_S, RESPONSE_START_TIMEOUT_S) - MARGIN_S


def door_wait_s(settings: Settings) -> float:
    """How long the door follows one request (a stream's relay, a non-streamed call's wait for
    its answer): the request's deadline, never more than `DOOR_LONGEST_WAIT_S`. A request still
    open then keeps running; the client reads it at /v1/requests/{id}."""
    return float(min(settings.request_deadline_s, DOOR_LONGEST_WAIT_S))
