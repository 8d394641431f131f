"""Analytics: usage roll-ups per tenant, model, API key and minute, kept exactly once from the
ledger, completed and failed topics (`quotaflow analytics run`), read by `quotaflow usage` and
`GET /v1/usage`, and checked against the ledger by the audit."""
