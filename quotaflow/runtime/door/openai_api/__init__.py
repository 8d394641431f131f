"""The door's OpenAI-compatible API: `routes` (the Flask routes), `service` (submit and wait
over the door's ports), `mapping` (an OpenAI call to a client request), `relay` (a request's
token deltas from the `TokenStream`, shared with `request_events`), `streaming` (SSE chunks),
`shapes` and `errors` (OpenAI's bodies and error shape)."""
