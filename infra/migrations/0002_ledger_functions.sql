-- quotaflow schema v2: the ledger's commands as functions, one statement per batch.
--
-- quotaflow/ledger/domain.py states the rules. These functions apply them inside PostgreSQL so
-- that a batch of commands costs one round trip (locks, reads, decisions, appends and, in
-- autocommit, the commit) instead of a dozen statements and Python between them.
-- tests/ledger/test_sql_rules.py checks them against domain.py on random batches.
--
-- Every command function returns one row per command, in command order (`ord`):
--   request_id, tenant, kind (the event appended, NULL when refused), period, amount,
--   released, seq, reason, reserved (the reservation's size)
-- which is quotaflow.ledger.commands.Outcome. A redelivered command gets its first outcome back.
--
-- The functions look rows up by key, a batch of keys at a time: the plan to want is an index
-- probe per key, whatever the size of the table. Two things make sure of it, both measured:
--   LATERAL (... LIMIT 1) lookups: one probe per command; as plain joins, a batch of 256 got
--     a scan, hash and sort of the whole of ledger_commands and reservations (12 ms a call at
--     40k rows, and growing with the tables);
--   enable_seqscan = off on each function: PL/pgSQL caches a plan after five calls, and one
--     made while the ledger was nearly empty scanned it (a batch of 64 took 8 ms at the start
--     and 26 ms 10k requests on). plan_cache_mode = force_custom_plan fixed that too, but it
--     re-plans every PL/pgSQL expression and made a batch four times slower.

-- Idempotency records keep their outcome as columns, not jsonb: building the jsonb object
-- cost about 8 us a command, a sixth of a decision.
ALTER TABLE ledger_commands
    ADD COLUMN tenant text, ADD COLUMN kind text, ADD COLUMN period text,
    ADD COLUMN amount bigint, ADD COLUMN released bigint, ADD COLUMN seq bigint,
    ADD COLUMN reason text, ADD COLUMN reserved bigint;
UPDATE ledger_commands
   SET tenant = outcome->>'tenant', kind = outcome->>'kind', period = outcome->>'period',
       amount = (outcome->>'amount')::bigint, released = (outcome->>'released')::bigint,
       seq = (outcome->>'seq')::bigint, reason = outcome->>'reason',
       reserved = (outcome->>'reserved')::bigint;
ALTER TABLE ledger_commands
    DROP COLUMN outcome,
    ALTER tenant SET NOT NULL, ALTER period SET NOT NULL, ALTER amount SET NOT NULL,
    ALTER released SET NOT NULL, ALTER seq SET NOT NULL, ALTER reserved SET NOT NULL;


-- A settled or released reservation's row is deleted, and an expired one's is kept, marked:
-- setting `ended` on every ending could never be a HOT update (the partial index reads it),
-- so each one wrote a new row version and index entries. A later settle of a deleted one is a
-- redelivery (its idempotency record answers); of an expired one, it is refused as expired.
DELETE FROM reservations
 WHERE ended IN ('ReservationSettled', 'ReservationReleased');
ALTER TABLE reservations ADD COLUMN expired boolean NOT NULL DEFAULT false;
UPDATE reservations SET expired = true WHERE ended = 'ReservationExpired';
DROP INDEX reservations_open;
ALTER TABLE reservations DROP COLUMN ended;
CREATE INDEX reservations_open ON reservations (reserved_at) WHERE NOT expired;
-- Nothing looks ledger events up by request id on the hot path any more, and the index cost
-- 4 us an event. A request's events: the seqs in its ledger_commands rows (and, if it
-- expired, the ReservationExpired event of its tenant's stream).
DROP INDEX ledger_events_request;


-- The functions pass events and outcomes as arrays of these composite types: one array is
-- unnested or aggregated at a fifth of the cost of seven parallel ones, and built by appending
-- an element a command instead of by sorting seven aggregates after the loop.
CREATE TYPE ledger_new_event AS (tenant_id text, kind text, request_id text, period text,
                                 amount bigint, released bigint, reason text);
-- quotaflow.ledger.commands.Outcome, less the request id.
CREATE TYPE ledger_outcome AS (tenant text, kind text, period text, amount bigint,
                               released bigint, seq bigint, reason text, reserved bigint);


-- Appends events in order and moves the stream versions, the balances snapshot and the
-- reservations with them. The caller holds the tenants' stream rows (FOR UPDATE).
-- Returns the events' sequence numbers, in order.
CREATE FUNCTION ledger_append(evs ledger_new_event[]) RETURNS bigint[]
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    n integer := coalesce(cardinality(evs), 0);
    seqs bigint[];
    moved integer;
    n_expired integer;
BEGIN
    IF n = 0 THEN
        RETURN '{}';
    END IF;
    -- Commit order must equal sequence order for readers that tail the ledger (projection,
    -- outbox): every append takes this lock before it draws a number and holds it to the
    -- commit. An advisory lock rather than LOCK TABLE ledger_events: a table lock conflicts
    -- with autovacuum, and appends would queue behind an anti-wraparound vacuum of the ledger
    -- (which does not give way) for as long as it runs.
    PERFORM pg_advisory_xact_lock(hashtextextended('quotaflow.ledger_events', 0));
    SELECT array_agg(d.s ORDER BY d.s) INTO seqs
      FROM (SELECT nextval('ledger_events_seq_seq') FROM generate_series(1, n)) AS d(s);

    INSERT INTO ledger_events (seq, tenant_id, stream_version, kind, request_id, period,
                               amount, released, reason)
    SELECT seqs[e.ord], e.tenant_id,
           s.version + row_number() OVER (PARTITION BY e.tenant_id ORDER BY e.ord),
           e.kind, e.request_id, e.period, e.amount, e.released, e.reason
      FROM unnest(evs) WITH ORDINALITY
           AS e(tenant_id, kind, request_id, period, amount, released, reason, ord)
      JOIN ledger_streams s USING (tenant_id);
    GET DIAGNOSTICS moved = ROW_COUNT;
    IF moved <> n THEN
        RAISE EXCEPTION 'ledger_append: % of % events have no tenant stream', n - moved, n;
    END IF;
    UPDATE ledger_streams s SET version = s.version + c.n
      FROM (SELECT e.tenant_id, count(*) FROM unnest(evs) AS e GROUP BY e.tenant_id)
           AS c(tenant_id, n)
     WHERE s.tenant_id = c.tenant_id;

    -- domain.apply, summed per (tenant, period).
    INSERT INTO balances AS b (tenant_id, period, granted, reserved, spent)
    SELECT e.tenant_id, e.period,
           sum(CASE e.kind WHEN 'QuotaGranted' THEN e.amount ELSE 0 END),
           sum(CASE e.kind WHEN 'TokensReserved' THEN e.amount
                           WHEN 'ReservationSettled' THEN -e.amount - e.released
                           WHEN 'ReservationReleased' THEN -e.amount
                           WHEN 'ReservationExpired' THEN -e.amount
                           ELSE 0 END),
           sum(CASE e.kind WHEN 'ReservationSettled' THEN e.amount ELSE 0 END)
      FROM unnest(evs) AS e
     GROUP BY e.tenant_id, e.period
     ORDER BY e.tenant_id, e.period
    ON CONFLICT (tenant_id, period) DO UPDATE
       SET granted = b.granted + EXCLUDED.granted,
           reserved = b.reserved + EXCLUDED.reserved,
           spent = b.spent + EXCLUDED.spent;

    INSERT INTO reservations (request_id, tenant_id, period, amount, reserved_at)
    SELECT e.request_id, e.tenant_id, e.period, e.amount, now()
      FROM unnest(evs) AS e
     WHERE e.kind = 'TokensReserved';
    DELETE FROM reservations r USING unnest(evs) AS e
     WHERE r.request_id = e.request_id AND NOT r.expired
       AND e.kind IN ('ReservationSettled', 'ReservationReleased');
    GET DIAGNOSTICS moved = ROW_COUNT;
    UPDATE reservations r SET expired = true
      FROM unnest(evs) AS e
     WHERE r.request_id = e.request_id AND NOT r.expired AND e.kind = 'ReservationExpired';
    GET DIAGNOSTICS n_expired = ROW_COUNT;
    IF moved + n_expired <> (SELECT count(*) FROM unnest(evs) AS e
                              WHERE e.kind IN ('ReservationSettled', 'ReservationReleased',
                                               'ReservationExpired'))
    THEN
        RAISE EXCEPTION 'ledger_append: an ending for a reservation that is not open';
    END IF;
    RETURN seqs;
END
$$;


-- Records the idempotency record of each command decided now (o_new) and returns every
-- outcome in command order, with its sequence number: its event's (o_event, its place in the
-- appended events, whose numbers are seqs), or what an earlier delivery recorded.
-- PL/pgSQL rather than SQL: a SQL function plans its body again at every call (7% slower).
CREATE FUNCTION ledger_remember(p_command text, c_request text[], c_hash text[],
                                o ledger_outcome[], o_new boolean[], o_event integer[],
                                seqs bigint[])
RETURNS TABLE (ord integer, request_id text, tenant text, kind text, period text,
               amount bigint, released bigint, seq bigint, reason text, reserved bigint)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
        WITH decided AS (
            SELECT x.i::integer AS i, c_request[x.i] AS request_id, x.tenant, x.kind, x.period,
                   x.amount, x.released, coalesce(seqs[o_event[x.i]], x.seq) AS seq, x.reason,
                   x.reserved
              FROM unnest(o) WITH ORDINALITY
                   AS x(tenant, kind, period, amount, released, seq, reason, reserved, i)
        ), remembered AS (
            INSERT INTO ledger_commands (request_id, command, payload_hash, tenant, kind, period,
                                         amount, released, seq, reason, reserved)
            SELECT d.request_id, p_command, c_hash[d.i], d.tenant, d.kind, d.period, d.amount,
                   d.released, d.seq, d.reason, d.reserved
              FROM decided d
             WHERE o_new[d.i]
        )
        SELECT * FROM decided;
END
$$;


-- Reserve the worst case for each command (domain.decide_reserve): admitted only if open
-- reservations + spent + amount stay within the period's grant. A period's first decision
-- first appends the plan's grant for it (a recurring grant).
CREATE FUNCTION ledger_reserve(c_tenant text[], c_request text[], c_amount bigint[],
                               c_hash text[])
RETURNS TABLE (ord integer, request_id text, tenant text, kind text, period text,
               amount bigint, released bigint, seq bigint, reason text, reserved bigint)
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    n integer := coalesce(cardinality(c_request), 0);
    -- the batch's tenants (locked), the current period, and its balance
    t_id text[]; t_period text[]; t_plan bigint[];
    t_granted bigint[]; t_used bigint[]; t_fresh boolean[];
    c record;
    o ledger_outcome[] := '{}';  -- one outcome per command
    o_event integer[] := '{}';  -- its event's place in evs
    o_new boolean[] := '{}';  -- decided now, to be remembered
    evs ledger_new_event[] := '{}';  -- to append, in order
    seqs bigint[];
    i integer; j integer; k integer; verdict text; v_kind text;
BEGIN
    IF n = 0 THEN
        RETURN;
    END IF;
    -- Stream rows locked in sorted order, so concurrent batches cannot deadlock. This
    -- serializes decisions per tenant, which is what keeps the quota exact; every read
    -- below is a new statement, so it sees what committed before the lock was granted.
    SELECT array_agg(l.tenant_id ORDER BY l.tenant_id), array_agg(l.p ORDER BY l.tenant_id),
           array_agg(l.grant_tokens ORDER BY l.tenant_id)
      INTO t_id, t_period, t_plan
      FROM (SELECT s.tenant_id, t.grant_tokens,
                   CASE t.plan_period WHEN 'day' THEN to_char(now(), 'YYYY-MM-DD')
                                      ELSE to_char(now(), 'YYYY-MM') END AS p
              FROM ledger_streams s JOIN tenants t USING (tenant_id)
             WHERE s.tenant_id = ANY(c_tenant)
             ORDER BY s.tenant_id FOR UPDATE OF s) AS l;
    SELECT array_agg(coalesce(b.granted, 0) ORDER BY x.k),
           array_agg(coalesce(b.reserved + b.spent, 0) ORDER BY x.k),
           array_agg(b.tenant_id IS NULL ORDER BY x.k)
      INTO t_granted, t_used, t_fresh
      FROM unnest(t_id, t_period) WITH ORDINALITY AS x(tenant_id, period, k)
      LEFT JOIN balances b ON b.tenant_id = x.tenant_id AND b.period = x.period;
    -- One row per command, in order: where its request id first occurs in the batch, and
    -- the idempotency record of an earlier delivery.
    FOR c IN
        SELECT u.i, min(u.i) OVER (PARTITION BY u.id) AS j, s.payload_hash, s.tenant,
               s.kind, s.period, s.amount, s.released, s.seq, s.reason, s.reserved
          FROM unnest(c_request) WITH ORDINALITY AS u(id, i)
          LEFT JOIN LATERAL (SELECT * FROM ledger_commands c
                              WHERE c.request_id = u.id AND c.command = 'reserve' LIMIT 1) s
                 ON true
         ORDER BY u.i
    LOOP
        i := c.i; j := c.j;
        IF c.payload_hash = c_hash[i] THEN  -- redelivered: its first outcome
            o[i] := ROW(c.tenant, c.kind, c.period, c.amount, c.released, c.seq, c.reason,
                        c.reserved)::ledger_outcome;
        ELSIF c.payload_hash IS NOT NULL OR c_hash[j] <> c_hash[i] THEN
            o[i] := ROW(c_tenant[i], NULL, '', 0, 0, 0,
                        'idempotency_conflict: same request id, different payload',
                        0)::ledger_outcome;
        ELSIF j < i THEN  -- the same command twice in this batch: the first one's outcome
            o[i] := o[j]; o_event[i] := o_event[j];
        ELSE
            o_new[i] := true;
            k := array_position(t_id, c_tenant[i]);
            IF k IS NULL THEN
                o[i] := ROW(c_tenant[i], NULL, '', c_amount[i], 0, 0, 'unknown_tenant',
                            0)::ledger_outcome;
                CONTINUE;
            END IF;
            IF t_fresh[k] THEN
                t_fresh[k] := false;
                t_granted[k] := t_granted[k] + t_plan[k];
                evs := evs || ROW(t_id[k], 'QuotaGranted', NULL, t_period[k], t_plan[k], 0,
                                  NULL)::ledger_new_event;
            END IF;
            IF c_amount[i] <= 0 THEN
                verdict := 'invalid_amount';
            ELSIF t_used[k] + c_amount[i] > t_granted[k] THEN
                verdict := 'quota_exceeded';
            ELSE
                verdict := NULL;
                t_used[k] := t_used[k] + c_amount[i];
            END IF;
            v_kind := CASE WHEN verdict IS NULL THEN 'TokensReserved' ELSE 'RequestRejected' END;
            evs := evs || ROW(c_tenant[i], v_kind, c_request[i], t_period[k], c_amount[i], 0,
                              verdict)::ledger_new_event;
            o_event[i] := cardinality(evs);
            o[i] := ROW(c_tenant[i], v_kind, t_period[k], c_amount[i], 0, 0, verdict,
                        c_amount[i])::ledger_outcome;
        END IF;
    END LOOP;

    seqs := ledger_append(evs);
    RETURN QUERY SELECT * FROM ledger_remember('reserve', c_request, c_hash, o, o_new, o_event,
                                               seqs);
END
$$;


-- End reservations (the settle step): c_actual is the tokens used (domain.decide_settle:
-- charge them, at most the reservation, and return the rest), or NULL to release
-- (domain.decide_release, with c_reason). A reservation ends exactly once; a settlement
-- after an expiry is refused, and remembered so that a redelivery is refused the same way.
CREATE FUNCTION ledger_end(c_tenant text[], c_request text[], c_actual bigint[],
                           c_reason text[], c_hash text[])
RETURNS TABLE (ord integer, request_id text, tenant text, kind text, period text,
               amount bigint, released bigint, seq bigint, reason text, reserved bigint)
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    n integer := coalesce(cardinality(c_request), 0);
    c record;
    o ledger_outcome[] := '{}';  -- one outcome per command
    o_event integer[] := '{}';  -- its event's place in evs
    o_new boolean[] := '{}';  -- decided now, to be remembered
    evs ledger_new_event[] := '{}';  -- to append, in order
    seqs bigint[];
    i integer; j integer; v_kind text; v_amount bigint; v_released bigint; v_reason text;
BEGIN
    IF n = 0 THEN
        RETURN;
    END IF;
    PERFORM 1 FROM ledger_streams s WHERE s.tenant_id = ANY(c_tenant)
      ORDER BY s.tenant_id FOR UPDATE;
    -- One row per command, in order: where its request id first occurs in the batch, the
    -- idempotency record of an earlier delivery, and the reservation (open or expired).
    FOR c IN
        SELECT u.i, min(u.i) OVER (PARTITION BY u.id) AS j, s.payload_hash, s.tenant,
               s.kind, s.period, s.amount, s.released, s.seq, s.reason, s.reserved,
               r.tenant_id AS r_tenant, r.period AS r_period, r.amount AS r_amount,
               r.expired AS r_expired
          FROM unnest(c_request) WITH ORDINALITY AS u(id, i)
          LEFT JOIN LATERAL (SELECT * FROM ledger_commands c
                              WHERE c.request_id = u.id AND c.command = 'end' LIMIT 1) s
                 ON true
          LEFT JOIN LATERAL (SELECT * FROM reservations x WHERE x.request_id = u.id LIMIT 1) r
                 ON true
         ORDER BY u.i
    LOOP
        i := c.i; j := c.j;
        IF c.payload_hash = c_hash[i] THEN  -- redelivered: its first outcome
            o[i] := ROW(c.tenant, c.kind, c.period, c.amount, c.released, c.seq, c.reason,
                        c.reserved)::ledger_outcome;
        ELSIF c.payload_hash IS NOT NULL OR c_hash[j] <> c_hash[i] THEN
            o[i] := ROW(c_tenant[i], NULL, '', 0, 0, 0,
                        'idempotency_conflict: same request id, different payload',
                        0)::ledger_outcome;
        ELSIF j < i THEN  -- the same command twice in this batch: the first one's outcome
            o[i] := o[j]; o_event[i] := o_event[j];
        ELSE
            o_new[i] := true;
            IF c.r_tenant IS NULL OR c.r_tenant <> c_tenant[i] THEN
                o[i] := ROW(c_tenant[i], NULL, '', 0, 0, 0, 'unknown_reservation',
                            0)::ledger_outcome;
            ELSIF c.r_expired THEN
                o[i] := ROW(c_tenant[i], NULL, c.r_period, 0, 0, 0, 'reservation_expired',
                            c.r_amount)::ledger_outcome;
            ELSE
                IF c_actual[i] IS NOT NULL THEN
                    v_kind := 'ReservationSettled'; v_reason := NULL;
                    v_amount := greatest(0, least(c_actual[i], c.r_amount));
                    v_released := c.r_amount - v_amount;
                ELSE
                    v_kind := 'ReservationReleased'; v_reason := c_reason[i];
                    v_amount := c.r_amount; v_released := 0;
                END IF;
                evs := evs || ROW(c_tenant[i], v_kind, c_request[i], c.r_period, v_amount,
                                  v_released, v_reason)::ledger_new_event;
                o_event[i] := cardinality(evs);
                o[i] := ROW(c_tenant[i], v_kind, c.r_period, v_amount, v_released, 0,
                            v_reason, c.r_amount)::ledger_outcome;
            END IF;
        END IF;
    END LOOP;

    seqs := ledger_append(evs);
    RETURN QUERY SELECT * FROM ledger_remember('end', c_request, c_hash, o, o_new, o_event,
                                               seqs);
END
$$;


-- Expire open reservations older than p_ttl_s by the ledger's own clock (domain.decide_expire),
-- oldest first, at most p_limit.
CREATE FUNCTION ledger_expire(p_ttl_s integer, p_limit integer)
RETURNS TABLE (ord integer, request_id text, tenant text, kind text, period text,
               amount bigint, released bigint, seq bigint, reason text, reserved bigint)
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    t_id text[];
    evs ledger_new_event[];
    seqs bigint[];
BEGIN
    SELECT array_agg(l.tenant_id ORDER BY l.tenant_id) INTO t_id
      FROM (SELECT s.tenant_id FROM ledger_streams s
             WHERE s.tenant_id IN (SELECT r.tenant_id FROM reservations r
                                    WHERE NOT r.expired
                                      AND r.reserved_at < now() - make_interval(secs => p_ttl_s))
             ORDER BY s.tenant_id FOR UPDATE) AS l;
    IF t_id IS NULL THEN
        RETURN;
    END IF;
    -- Re-read under the locks: a reservation may have ended before they were granted.
    SELECT array_agg(ROW(x.tenant_id, 'ReservationExpired', x.request_id, x.period, x.amount,
                         0, 'ttl')::ledger_new_event ORDER BY x.reserved_at, x.request_id)
      INTO evs
      FROM (SELECT r.request_id, r.tenant_id, r.period, r.amount, r.reserved_at
              FROM reservations r
             WHERE NOT r.expired AND r.reserved_at < now() - make_interval(secs => p_ttl_s)
               AND r.tenant_id = ANY(t_id)
             ORDER BY r.reserved_at, r.request_id LIMIT p_limit) AS x;
    IF evs IS NULL THEN
        RETURN;
    END IF;
    seqs := ledger_append(evs);
    RETURN QUERY
        SELECT e.ord::integer, e.request_id, e.tenant_id, e.kind, e.period, e.amount,
               e.released, seqs[e.ord], e.reason, e.amount
          FROM unnest(evs) WITH ORDINALITY
               AS e(tenant_id, kind, request_id, period, amount, released, reason, ord);
END
$$;


-- Grant a tenant tokens for a period (its current one when p_period is NULL).
CREATE FUNCTION ledger_grant(p_tenant text, p_tokens bigint, p_period text)
RETURNS TABLE (ord integer, request_id text, tenant text, kind text, period text,
               amount bigint, released bigint, seq bigint, reason text, reserved bigint)
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    v_period text;
    seqs bigint[];
BEGIN
    SELECT coalesce(p_period, CASE t.plan_period WHEN 'day' THEN to_char(now(), 'YYYY-MM-DD')
                                                 ELSE to_char(now(), 'YYYY-MM') END)
      INTO v_period
      FROM ledger_streams s JOIN tenants t USING (tenant_id)
     WHERE s.tenant_id = p_tenant FOR UPDATE OF s;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown tenant %', p_tenant USING ERRCODE = 'no_data_found';
    END IF;
    seqs := ledger_append(ARRAY[ROW(p_tenant, 'QuotaGranted', NULL, v_period, p_tokens, 0,
                                    NULL)::ledger_new_event]);
    RETURN QUERY SELECT 1, ''::text, p_tenant, 'QuotaGranted'::text, v_period, p_tokens,
                        0::bigint, seqs[1], NULL::text, 0::bigint;
END
$$;
