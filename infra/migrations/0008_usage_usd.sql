-- Money in the usage roll-ups: the micro-dollars settlements charged (the ledger topic's v2
-- `usd` of ReservationSettled entries), summed per (tenant, minute, model, key) like the
-- tokens. Rows rolled up before this migration hold 0.
ALTER TABLE usage_rollups ADD COLUMN charged_usd bigint NOT NULL DEFAULT 0;
