"""admit's OpenAI-compatible door (`routes`) and the CloudEvents door's event stream
(`request_events`), both relaying a request's token deltas from the `TokenStream` (`relay`)."""
