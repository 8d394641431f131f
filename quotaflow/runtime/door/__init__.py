"""admit's HTTP door, the one step clients call. Its three APIs, one module each:

- `cloudevents_api`: POST a CloudEvent, read a request and the tenant's quota (with
  `request_events`, a request's token deltas as server-sent events);
- `openai_api`: the OpenAI-compatible API (`/v1/chat/completions`, `/v1/completions`,
  `/v1/models`);
- `usage_page`: the usage page under `/ui/` and the reads it makes.

`app` assembles them into one Flask app with the error ladder; `ports` is the bundle they
share (opened by `quotaflow.compose.connect_door`); `accept` is the one path to a 202, over
`auth` (bearer keys), `limits` (rate limit and quota pre-check), `parse` (the client's
CloudEvent, over `strict_json`) and the use case in `functions/admit/handler.py`; `views`
shapes the JSON bodies."""
