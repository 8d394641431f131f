"""admit's HTTP door: `app` (routes and error mapping), `auth` (bearer keys), `limits` (rate
limit and quota pre-check), `parse` (the client's CloudEvent) over `strict_json`, `views` (JSON
bodies), `wiring` (the ports and the real adapters behind them). The use case is
`functions/admit/handler.py`."""
