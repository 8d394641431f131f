-- Billing periods by one clock in one zone: the ledger's now(), in UTC.
-- ledger_reserve and ledger_grant name the period with to_char(now(), ...), which formats in
-- the session's TimeZone: on a server or connection not set to UTC, a request near midnight
-- was billed to another day (or month) than admit's pre-check and the audit compute. A
-- function-level setting fixes the zone whatever the session says.
ALTER FUNCTION ledger_reserve SET timezone = 'UTC';
ALTER FUNCTION ledger_grant SET timezone = 'UTC';
