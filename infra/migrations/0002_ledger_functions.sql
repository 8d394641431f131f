-- quotaflow schema v2: the ledger's commands as functions, one statement per batch.
--
-- events/ledger/domain.py states the rules. These functions apply them inside PostgreSQL so
-- that a batch of commands costs one round trip (locks, reads, decisions, appends and, in
-- autocommit, the commit) instead of a dozen statements and Python between them.
-- tests/ledger/test_sql_rules.py checks them against domain.py on random batches.
--
-- Every command function returns one row per command, in command order (`ord`):
--   request_id, tenant, kind (the event appended, NULL when refused), period, amount,
--   released, seq, reason, reserved (the reservation's size)
-- which is events.ledger.store.Outcome. A redelivered command gets its first outcome back.
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


-- Appends events in order and moves the stream versions, the balances snapshot and the
-- reservations with them. The caller holds the tenants' stream rows (FOR UPDATE).
-- Returns the events' sequence numbers, in order.
CREATE FUNCTION ledger_append(e_tenant text[], e_kind text[], e_request text[],
                              e_period text[], e_amount bigint[], e_released bigint[],
                              e_reason text[]) RETURNS bigint[]
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    n integer := coalesce(cardinality(e_kind), 0);
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
    SELECT e.seq, e.tenant_id,
           s.version + row_number() OVER (PARTITION BY e.tenant_id ORDER BY e.ord),
           e.kind, e.request_id, e.period, e.amount, e.released, e.reason
      FROM unnest(seqs, e_tenant, e_kind, e_request, e_period, e_amount, e_released, e_reason)
           WITH ORDINALITY AS e(seq, tenant_id, kind, request_id, period, amount, released,
                                reason, ord)
      JOIN ledger_streams s USING (tenant_id);
    GET DIAGNOSTICS moved = ROW_COUNT;
    IF moved <> n THEN
        RAISE EXCEPTION 'ledger_append: % of % events have no tenant stream', n - moved, n;
    END IF;
    UPDATE ledger_streams s SET version = s.version + c.n
      FROM (SELECT t, count(*) FROM unnest(e_tenant) AS t GROUP BY t) AS c(tenant_id, n)
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
      FROM unnest(e_tenant, e_period, e_kind, e_amount, e_released)
           AS e(tenant_id, period, kind, amount, released)
     GROUP BY e.tenant_id, e.period
     ORDER BY e.tenant_id, e.period
    ON CONFLICT (tenant_id, period) DO UPDATE
       SET granted = b.granted + EXCLUDED.granted,
           reserved = b.reserved + EXCLUDED.reserved,
           spent = b.spent + EXCLUDED.spent;

    INSERT INTO reservations (request_id, tenant_id, period, amount, reserved_at)
    SELECT e.request_id, e.tenant_id, e.period, e.amount, now()
      FROM unnest(e_request, e_tenant, e_period, e_amount, e_kind)
           AS e(request_id, tenant_id, period, amount, kind)
     WHERE e.kind = 'TokensReserved';
    DELETE FROM reservations r USING unnest(e_request, e_kind) AS e(request_id, kind)
     WHERE r.request_id = e.request_id AND NOT r.expired
       AND e.kind IN ('ReservationSettled', 'ReservationReleased');
    GET DIAGNOSTICS moved = ROW_COUNT;
    UPDATE reservations r SET expired = true
      FROM unnest(e_request, e_kind) AS e(request_id, kind)
     WHERE r.request_id = e.request_id AND NOT r.expired AND e.kind = 'ReservationExpired';
    GET DIAGNOSTICS n_expired = ROW_COUNT;
    IF moved + n_expired <> (SELECT count(*) FROM unnest(e_kind) AS k
                              WHERE k IN ('ReservationSettled', 'ReservationReleased',
                                          'ReservationExpired'))
    THEN
        RAISE EXCEPTION 'ledger_append: an ending for a reservation that is not open';
    END IF;
    RETURN seqs;
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
    -- one outcome per command
    o_tenant text[] := c_tenant;
    o_kind text[] := array_fill(NULL::text, ARRAY[n]);
    o_period text[] := array_fill(NULL::text, ARRAY[n]);
    o_amount bigint[] := array_fill(0::bigint, ARRAY[n]);
    o_released bigint[] := array_fill(0::bigint, ARRAY[n]);
    o_seq bigint[] := array_fill(0::bigint, ARRAY[n]);
    o_reason text[] := array_fill(NULL::text, ARRAY[n]);
    o_reserved bigint[] := array_fill(0::bigint, ARRAY[n]);
    o_event integer[] := array_fill(NULL::integer, ARRAY[n]);  -- its event's place
    o_grant boolean[] := array_fill(false, ARRAY[n]);  -- a period's grant goes before it
    o_new boolean[] := array_fill(false, ARRAY[n]);  -- decided now, to be remembered
    -- events to append
    e_tenant text[]; e_kind text[]; e_request text[]; e_period text[]; e_amount bigint[];
    e_reason text[];
    events integer := 0;
    seqs bigint[];
    i integer; j integer; k integer; verdict text;
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
            o_tenant[i] := c.tenant; o_kind[i] := c.kind; o_period[i] := c.period;
            o_amount[i] := c.amount; o_released[i] := c.released; o_seq[i] := c.seq;
            o_reason[i] := c.reason; o_reserved[i] := c.reserved;
        ELSIF c.payload_hash IS NOT NULL OR c_hash[j] <> c_hash[i] THEN
            o_period[i] := '';
            o_reason[i] := 'idempotency_conflict: same request id, different payload';
        ELSIF j < i THEN  -- the same command twice in this batch: the first one's outcome
            o_tenant[i] := o_tenant[j]; o_kind[i] := o_kind[j]; o_period[i] := o_period[j];
            o_amount[i] := o_amount[j]; o_reason[i] := o_reason[j]; o_reserved[i] := o_reserved[j];
            o_event[i] := o_event[j];
        ELSE
            o_new[i] := true;
            k := array_position(t_id, c_tenant[i]);
            IF k IS NULL THEN
                o_period[i] := ''; o_amount[i] := c_amount[i]; o_reason[i] := 'unknown_tenant';
                CONTINUE;
            END IF;
            IF t_fresh[k] THEN
                t_fresh[k] := false;
                t_granted[k] := t_granted[k] + t_plan[k];
                o_grant[i] := true; events := events + 1;
            END IF;
            IF c_amount[i] <= 0 THEN
                verdict := 'invalid_amount';
            ELSIF t_used[k] + c_amount[i] > t_granted[k] THEN
                verdict := 'quota_exceeded';
            ELSE
                verdict := NULL;
                t_used[k] := t_used[k] + c_amount[i];
            END IF;
            o_kind[i] := CASE WHEN verdict IS NULL THEN 'TokensReserved'
                              ELSE 'RequestRejected' END;
            o_period[i] := t_period[k]; o_amount[i] := c_amount[i];
            o_reason[i] := verdict; o_reserved[i] := c_amount[i];
            events := events + 1; o_event[i] := events;
        END IF;
    END LOOP;

    -- The events in their places: each decision's, and a period's grant just before it.
    SELECT array_agg(e.tenant ORDER BY e.place), array_agg(e.kind ORDER BY e.place),
           array_agg(e.request_id ORDER BY e.place), array_agg(e.period ORDER BY e.place),
           array_agg(e.amount ORDER BY e.place), array_agg(e.reason ORDER BY e.place)
      INTO e_tenant, e_kind, e_request, e_period, e_amount, e_reason
      FROM (SELECT o.place, o.tenant, o.kind, o.request_id, o.period, o.amount, o.reason
              FROM unnest(o_event, o_tenant, o_kind, c_request, o_period, o_amount, o_reason,
                          o_new) AS o(place, tenant, kind, request_id, period, amount, reason,
                                      new)
             WHERE o.new AND o.kind IS NOT NULL
            UNION ALL
            SELECT o.place - 1, o.tenant, 'QuotaGranted', NULL, o.period,
                   t_plan[array_position(t_id, o.tenant)], NULL
              FROM unnest(o_event, o_tenant, o_period, o_grant)
                   AS o(place, tenant, period, grant_first)
             WHERE o.grant_first) AS e;
    seqs := ledger_append(e_tenant, e_kind, e_request, e_period, e_amount,
                          array_fill(0::bigint, ARRAY[events]), e_reason);
    -- Each outcome's sequence number: its event's, or what an earlier delivery recorded.
    SELECT array_agg(coalesce(seqs[o.place], o.seq) ORDER BY o.i) INTO o_seq
      FROM unnest(o_event, o_seq) WITH ORDINALITY AS o(place, seq, i);
    INSERT INTO ledger_commands (request_id, command, payload_hash, tenant, kind, period,
                                 amount, released, seq, reason, reserved)
    SELECT o.request_id, 'reserve', o.hash, o.tenant, o.kind, o.period, o.amount, o.released,
           o.seq, o.reason, o.reserved
      FROM unnest(c_request, c_hash, o_tenant, o_kind, o_period, o_amount, o_released, o_seq,
                  o_reason, o_reserved, o_new)
           AS o(request_id, hash, tenant, kind, period, amount, released, seq, reason,
                reserved, new)
     WHERE o.new;
    RETURN QUERY
        SELECT o.ord::integer, o.request_id, o.tenant, o.kind, o.period, o.amount, o.released,
               o.seq, o.reason, o.reserved
          FROM unnest(c_request, o_tenant, o_kind, o_period, o_amount, o_released, o_seq,
                      o_reason, o_reserved)
               WITH ORDINALITY AS o(request_id, tenant, kind, period, amount, released, seq,
                                    reason, reserved, ord);
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
    o_tenant text[] := c_tenant;
    o_kind text[] := array_fill(NULL::text, ARRAY[n]);
    o_period text[] := array_fill(NULL::text, ARRAY[n]);
    o_amount bigint[] := array_fill(0::bigint, ARRAY[n]);
    o_released bigint[] := array_fill(0::bigint, ARRAY[n]);
    o_seq bigint[] := array_fill(0::bigint, ARRAY[n]);
    o_reason text[] := array_fill(NULL::text, ARRAY[n]);
    o_reserved bigint[] := array_fill(0::bigint, ARRAY[n]);
    o_event integer[] := array_fill(NULL::integer, ARRAY[n]);  -- its event's place
    o_new boolean[] := array_fill(false, ARRAY[n]);  -- decided now, to be remembered
    e_tenant text[]; e_kind text[]; e_request text[]; e_period text[]; e_amount bigint[];
    e_released bigint[]; e_reason text[];
    events integer := 0;
    seqs bigint[];
    i integer; j integer; charged bigint;
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
            o_tenant[i] := c.tenant; o_kind[i] := c.kind; o_period[i] := c.period;
            o_amount[i] := c.amount; o_released[i] := c.released; o_seq[i] := c.seq;
            o_reason[i] := c.reason; o_reserved[i] := c.reserved;
        ELSIF c.payload_hash IS NOT NULL OR c_hash[j] <> c_hash[i] THEN
            o_period[i] := '';
            o_reason[i] := 'idempotency_conflict: same request id, different payload';
        ELSIF j < i THEN
            o_tenant[i] := o_tenant[j]; o_kind[i] := o_kind[j]; o_period[i] := o_period[j];
            o_amount[i] := o_amount[j]; o_released[i] := o_released[j]; o_reason[i] := o_reason[j];
            o_reserved[i] := o_reserved[j]; o_event[i] := o_event[j];
        ELSE
            o_new[i] := true;
            IF c.r_tenant IS NULL OR c.r_tenant <> c_tenant[i] THEN
                o_period[i] := ''; o_reason[i] := 'unknown_reservation';
                CONTINUE;
            END IF;
            o_period[i] := c.r_period; o_reserved[i] := c.r_amount;
            IF c.r_expired THEN
                o_reason[i] := 'reservation_expired';
                CONTINUE;
            END IF;
            IF c_actual[i] IS NOT NULL THEN
                charged := greatest(0, least(c_actual[i], c.r_amount));
                o_kind[i] := 'ReservationSettled'; o_amount[i] := charged;
                o_released[i] := c.r_amount - charged;
            ELSE
                o_kind[i] := 'ReservationReleased'; o_amount[i] := c.r_amount;
                o_reason[i] := c_reason[i];
            END IF;
            events := events + 1; o_event[i] := events;
        END IF;
    END LOOP;

    SELECT array_agg(o.tenant ORDER BY o.place), array_agg(o.kind ORDER BY o.place),
           array_agg(o.request_id ORDER BY o.place), array_agg(o.period ORDER BY o.place),
           array_agg(o.amount ORDER BY o.place), array_agg(o.released ORDER BY o.place),
           array_agg(o.reason ORDER BY o.place)
      INTO e_tenant, e_kind, e_request, e_period, e_amount, e_released, e_reason
      FROM unnest(o_event, o_tenant, o_kind, c_request, o_period, o_amount, o_released,
                  o_reason, o_new)
           AS o(place, tenant, kind, request_id, period, amount, released, reason, new)
     WHERE o.new AND o.kind IS NOT NULL;
    seqs := ledger_append(e_tenant, e_kind, e_request, e_period, e_amount, e_released,
                          e_reason);
    -- Each outcome's sequence number: its event's, or what an earlier delivery recorded.
    SELECT array_agg(coalesce(seqs[o.place], o.seq) ORDER BY o.i) INTO o_seq
      FROM unnest(o_event, o_seq) WITH ORDINALITY AS o(place, seq, i);
    INSERT INTO ledger_commands (request_id, command, payload_hash, tenant, kind, period,
                                 amount, released, seq, reason, reserved)
    SELECT o.request_id, 'end', o.hash, o.tenant, o.kind, o.period, o.amount, o.released,
           o.seq, o.reason, o.reserved
      FROM unnest(c_request, c_hash, o_tenant, o_kind, o_period, o_amount, o_released, o_seq,
                  o_reason, o_reserved, o_new)
           AS o(request_id, hash, tenant, kind, period, amount, released, seq, reason,
                reserved, new)
     WHERE o.new;
    RETURN QUERY
        SELECT o.ord::integer, o.request_id, o.tenant, o.kind, o.period, o.amount, o.released,
               o.seq, o.reason, o.reserved
          FROM unnest(c_request, o_tenant, o_kind, o_period, o_amount, o_released, o_seq,
                      o_reason, o_reserved)
               WITH ORDINALITY AS o(request_id, tenant, kind, period, amount, released, seq,
                                    reason, reserved, ord);
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
    x_id text[]; x_tenant text[]; x_period text[]; x_amount bigint[];
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
    SELECT array_agg(x.request_id ORDER BY x.reserved_at, x.request_id),
           array_agg(x.tenant_id ORDER BY x.reserved_at, x.request_id),
           array_agg(x.period ORDER BY x.reserved_at, x.request_id),
           array_agg(x.amount ORDER BY x.reserved_at, x.request_id)
      INTO x_id, x_tenant, x_period, x_amount
      FROM (SELECT r.request_id, r.tenant_id, r.period, r.amount, r.reserved_at
              FROM reservations r
             WHERE NOT r.expired AND r.reserved_at < now() - make_interval(secs => p_ttl_s)
               AND r.tenant_id = ANY(t_id)
             ORDER BY r.reserved_at, r.request_id LIMIT p_limit) AS x;
    IF x_id IS NULL THEN
        RETURN;
    END IF;
    seqs := ledger_append(x_tenant, array_fill('ReservationExpired'::text,
                                               ARRAY[cardinality(x_id)]),
                          x_id, x_period, x_amount,
                          array_fill(0::bigint, ARRAY[cardinality(x_id)]),
                          array_fill('ttl'::text, ARRAY[cardinality(x_id)]));
    RETURN QUERY
        SELECT x.ord::integer, x.request_id, x.tenant, 'ReservationExpired'::text, x.period,
               x.amount, 0::bigint, x.seq, 'ttl'::text, x.amount
          FROM unnest(x_id, x_tenant, x_period, x_amount, seqs)
               WITH ORDINALITY AS x(request_id, tenant, period, amount, seq, ord);
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
    seqs := ledger_append(ARRAY[p_tenant], ARRAY['QuotaGranted'], ARRAY[NULL::text],
                          ARRAY[v_period], ARRAY[p_tokens], ARRAY[0::bigint],
                          ARRAY[NULL::text]);
    RETURN QUERY SELECT 1, ''::text, p_tenant, 'QuotaGranted'::text, v_period, p_tokens,
                        0::bigint, seqs[1], NULL::text, 0::bigint;
END
$$;
