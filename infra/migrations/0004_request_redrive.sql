-- quotaflow schema v4: PostgreSQL is the system of record of every admitted request.
--
-- A request keeps the client's normalized data, so the reconciler can publish it again from
-- the database alone when its messages were lost (a broker that lost its data, a process that
-- died between its insert and its produce), and counts how often it did.
ALTER TABLE requests
    ADD COLUMN payload     jsonb,
    ADD COLUMN redrives    integer NOT NULL DEFAULT 0,
    ADD COLUMN redriven_at timestamptz;

-- The reconciler's question, "which open requests have not moved or been re-driven since
-- T?", reads only open requests: few at any time, however many have ended. greatest()
-- ignores a NULL redriven_at.
CREATE INDEX requests_open ON requests (greatest(updated_at, redriven_at))
    WHERE status IN ('queued', 'reserved');
