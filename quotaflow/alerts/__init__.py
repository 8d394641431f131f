"""Threshold alerts: when a level's spent first reaches a percentage of its limit in a period,
one signed `dev.quotaflow.budget.threshold` CloudEvent is POSTed to the alert's URL
(`quotaflow alerts run`: `consumer` follows the ledger topic, `rules` decides, `store` keeps
the state in PostgreSQL, `webhooks` signs and delivers)."""
