-- quotaflow schema v6: budget levels (tenant -> team -> key) in tokens and money, and prices.
--
-- A request is held at its key, its key's team (if any) and its tenant, in the one statement
-- (so the one transaction) that decides it; quotaflow/ledger/budgets.py states the rules. The
-- tenant's stream row lock, taken first as before, serializes every decision of the tenant,
-- and so of each of its teams and keys: every level stays exact under concurrency.
-- Money is micro-dollars (bigint) everywhere; a price is micro-dollars per million tokens.
-- A tenant's token limit stays its recurring grant (QuotaGranted, `balances`); every other
-- limit is a column, NULL meaning unlimited. A refusal at the tenant's tokens keeps today's
-- reason, `quota_exceeded`; every other refusal reads `quota_exceeded: <level> has <left> of
-- <limit> left this period` (budgets.Refusal.message, word for word).

ALTER TABLE tenants
    ADD COLUMN limit_usd bigint CHECK (limit_usd >= 0),
    ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC';

CREATE TABLE teams (
    tenant_id    text NOT NULL REFERENCES tenants,
    team_id      text NOT NULL,
    limit_tokens bigint CHECK (limit_tokens >= 0),
    limit_usd    bigint CHECK (limit_usd >= 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, team_id)
);

ALTER TABLE api_keys
    ADD COLUMN team_id      text,
    ADD COLUMN limit_tokens bigint CHECK (limit_tokens >= 0),
    ADD COLUMN limit_usd    bigint CHECK (limit_usd >= 0),
    ADD FOREIGN KEY (tenant_id, team_id) REFERENCES teams (tenant_id, team_id);

-- Price versions, append-only: a reservation is priced at the newest version committed when
-- it is decided, and settled at that same version (kept on its reservation and its events).
CREATE TABLE prices (
    model           text NOT NULL,
    version         integer NOT NULL CHECK (version > 0),
    input_per_mtok  bigint NOT NULL CHECK (input_per_mtok >= 0),
    output_per_mtok bigint NOT NULL CHECK (output_per_mtok >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, version)
);

-- What each event did at the levels: `usd` mirrors `amount` (reserved, charged, released or
-- expired micro-dollars), `usd_released` mirrors `released`. A TokensReserved event also
-- keeps what its price was computed from, so the audit can price it again.
ALTER TABLE ledger_events
    ADD COLUMN key_id        text,
    ADD COLUMN team_id       text,
    ADD COLUMN usd           bigint NOT NULL DEFAULT 0,
    ADD COLUMN usd_released  bigint NOT NULL DEFAULT 0,
    ADD COLUMN model         text,
    ADD COLUMN price_version integer,
    ADD COLUMN input_tokens  bigint;

ALTER TABLE reservations
    ADD COLUMN key_id        text,
    ADD COLUMN team_id       text,
    ADD COLUMN usd           bigint NOT NULL DEFAULT 0,
    ADD COLUMN model         text,
    ADD COLUMN price_version integer,
    ADD COLUMN input_tokens  bigint NOT NULL DEFAULT 0;

-- Each level's balance per period, kept in the append's transaction like `balances`; a team's
-- level_id is `tenant/team` (a team's name is unique within its tenant only).
CREATE TABLE level_balances (
    scope           text NOT NULL CHECK (scope IN ('key', 'team', 'tenant')),
    level_id        text NOT NULL,
    period          text NOT NULL,
    reserved_tokens bigint NOT NULL DEFAULT 0,
    spent_tokens    bigint NOT NULL DEFAULT 0,
    reserved_usd    bigint NOT NULL DEFAULT 0,
    spent_usd       bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, level_id, period)
);
-- Today's tenants' balances are their tenant level's (no money was held before).
INSERT INTO level_balances (scope, level_id, period, reserved_tokens, spent_tokens)
SELECT 'tenant', tenant_id, period, reserved, spent FROM balances;

ALTER TYPE ledger_new_event
    ADD ATTRIBUTE key_id text, ADD ATTRIBUTE team_id text, ADD ATTRIBUTE usd bigint,
    ADD ATTRIBUTE usd_released bigint, ADD ATTRIBUTE model text,
    ADD ATTRIBUTE price_version integer, ADD ATTRIBUTE input_tokens bigint;


-- budgets.format_usd: micro-dollars as a decimal string with six decimals.
CREATE FUNCTION ledger_usd(m bigint) RETURNS text
LANGUAGE sql IMMUTABLE
AS $$ SELECT (m / 1000000)::text || '.' || lpad((m % 1000000)::text, 6, '0') $$;

-- budgets.Level.describe: how a refusal names its level.
CREATE FUNCTION ledger_level_name(p_scope text, p_id text, p_tenant text) RETURNS text
LANGUAGE sql IMMUTABLE
AS $$ SELECT CASE p_scope WHEN 'tenant' THEN format('tenant ''%s''', p_tenant)
                          ELSE format('%s ''%s'' of tenant ''%s''', p_scope, p_id, p_tenant)
             END $$;

-- budgets.Price.cost: micro-dollars, rounded up.
CREATE FUNCTION ledger_cost(p_in bigint, p_out bigint, in_tokens bigint, out_tokens bigint)
RETURNS bigint
LANGUAGE sql IMMUTABLE
AS $$ SELECT (in_tokens * coalesce(p_in, 0) + out_tokens * coalesce(p_out, 0) + 999999)
             / 1000000 $$;

-- The period of a moment for a plan, in the tenant's zone (budgets.period_in_zone).
CREATE FUNCTION ledger_period(p_plan text, p_zone text, p_at timestamptz) RETURNS text
LANGUAGE sql STABLE
AS $$ SELECT to_char(p_at AT TIME ZONE p_zone,
                     CASE p_plan WHEN 'day' THEN 'YYYY-MM-DD' ELSE 'YYYY-MM' END) $$;


-- As in 0002, and each event also moves its levels' balances (budgets.apply_hold) and keeps
-- what it did at them on its row and its reservation.
CREATE OR REPLACE FUNCTION ledger_append(evs ledger_new_event[]) RETURNS bigint[]
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
    -- Commit order must equal sequence order for readers that tail the ledger: see 0002.
    PERFORM pg_advisory_xact_lock(hashtextextended('quotaflow.ledger_events', 0));
    SELECT array_agg(d.s ORDER BY d.s) INTO seqs
      FROM (SELECT nextval('ledger_events_seq_seq') FROM generate_series(1, n)) AS d(s);

    INSERT INTO ledger_events (seq, tenant_id, stream_version, kind, request_id, period,
                               amount, released, reason, key_id, team_id, usd, usd_released,
                               model, price_version, input_tokens)
    SELECT seqs[e.ord], e.tenant_id,
           s.version + row_number() OVER (PARTITION BY e.tenant_id ORDER BY e.ord),
           e.kind, e.request_id, e.period, e.amount, e.released, e.reason, e.key_id,
           e.team_id, coalesce(e.usd, 0), coalesce(e.usd_released, 0), e.model,
           e.price_version, e.input_tokens
      FROM unnest(evs) WITH ORDINALITY
           AS e(tenant_id, kind, request_id, period, amount, released, reason, key_id,
                team_id, usd, usd_released, model, price_version, input_tokens, ord)
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

    -- budgets.apply_hold, summed per (level, period), at the tenant, the key and the team.
    INSERT INTO level_balances AS b (scope, level_id, period, reserved_tokens, spent_tokens,
                                     reserved_usd, spent_usd)
    SELECT l.scope, l.level_id, e.period,
           sum(CASE e.kind WHEN 'TokensReserved' THEN e.amount
                           WHEN 'ReservationSettled' THEN -e.amount - e.released
                           ELSE -e.amount END),
           sum(CASE e.kind WHEN 'ReservationSettled' THEN e.amount ELSE 0 END),
           sum(CASE e.kind WHEN 'TokensReserved' THEN coalesce(e.usd, 0)
                           WHEN 'ReservationSettled'
                                THEN -coalesce(e.usd, 0) - coalesce(e.usd_released, 0)
                           ELSE -coalesce(e.usd, 0) END),
           sum(CASE e.kind WHEN 'ReservationSettled' THEN coalesce(e.usd, 0) ELSE 0 END)
      FROM unnest(evs) AS e
     CROSS JOIN LATERAL (VALUES ('tenant', e.tenant_id), ('key', e.key_id),
                                ('team', e.tenant_id || '/' || e.team_id)) AS l(scope, level_id)
     WHERE l.level_id IS NOT NULL
       AND e.kind IN ('TokensReserved', 'ReservationSettled', 'ReservationReleased',
                      'ReservationExpired')
     GROUP BY l.scope, l.level_id, e.period
     ORDER BY l.scope, l.level_id, e.period
    ON CONFLICT (scope, level_id, period) DO UPDATE
       SET reserved_tokens = b.reserved_tokens + EXCLUDED.reserved_tokens,
           spent_tokens = b.spent_tokens + EXCLUDED.spent_tokens,
           reserved_usd = b.reserved_usd + EXCLUDED.reserved_usd,
           spent_usd = b.spent_usd + EXCLUDED.spent_usd;

    INSERT INTO reservations (request_id, tenant_id, period, amount, reserved_at, key_id,
                              team_id, usd, model, price_version, input_tokens)
    SELECT e.request_id, e.tenant_id, e.period, e.amount, now(), e.key_id, e.team_id,
           coalesce(e.usd, 0), e.model, e.price_version, coalesce(e.input_tokens, 0)
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


-- Reserve the worst case at every level of each command (budgets.decide_levels): its key
-- (c_key; NULL for none), the key's team and its tenant, in tokens and in money at the newest
-- price of c_model (c_input input tokens, the rest of c_amount output), or at none of them.
-- The first level over a limit, in the order key, team, tenant, refuses; a period's first
-- decision first appends the plan's grant for it, as before.
DROP FUNCTION ledger_reserve(text[], text[], bigint[], text[]);
CREATE FUNCTION ledger_reserve(c_tenant text[], c_request text[], c_amount bigint[],
                               c_hash text[], c_key text[], c_model text[], c_input bigint[])
RETURNS TABLE (ord integer, request_id text, tenant text, kind text, period text,
               amount bigint, released bigint, seq bigint, reason text, reserved bigint)
LANGUAGE plpgsql
SET enable_seqscan = off
SET timezone = 'UTC'
AS $$
#variable_conflict use_column
DECLARE
    n integer := coalesce(cardinality(c_request), 0);
    -- the batch's tenants (locked), the current period, and its balance
    t_id text[]; t_period text[]; t_plan bigint[]; t_usd bigint[];
    t_granted bigint[]; t_used bigint[]; t_fresh boolean[];
    -- the batch's levels as they are loaded: `scope:id`, tokens and money used
    lv_key text[] := '{}'; lv_tok bigint[] := '{}'; lv_usd bigint[] := '{}';
    -- this command's levels, in the order key, team, tenant
    scopes text[] := ARRAY['key', 'team', 'tenant'];
    l_id text[]; l_name text[]; l_tok bigint[]; l_usd bigint[]; l_at integer[];
    c record;
    o ledger_outcome[] := '{}';  -- one outcome per command
    o_event integer[] := '{}';  -- its event's place in evs
    o_new boolean[] := '{}';  -- decided now, to be remembered
    evs ledger_new_event[] := '{}';  -- to append, in order
    seqs bigint[];
    i integer; j integer; k integer; m integer; q integer; verdict text; v_kind text;
    v_usd bigint; used_tok bigint; used_usd bigint;
BEGIN
    IF n = 0 THEN
        RETURN;
    END IF;
    -- Stream rows locked in sorted order, so concurrent batches cannot deadlock. This
    -- serializes decisions per tenant, and so per team and key, which is what keeps every
    -- level exact; every read below is a new statement, so it sees what committed before
    -- the lock was granted (a price set before it included).
    SELECT array_agg(l.tenant_id ORDER BY l.tenant_id), array_agg(l.p ORDER BY l.tenant_id),
           array_agg(l.grant_tokens ORDER BY l.tenant_id),
           array_agg(l.limit_usd ORDER BY l.tenant_id)
      INTO t_id, t_period, t_plan, t_usd
      FROM (SELECT s.tenant_id, t.grant_tokens, t.limit_usd,
                   ledger_period(t.plan_period, t.time_zone, now()) AS p
              FROM ledger_streams s JOIN tenants t USING (tenant_id)
             WHERE s.tenant_id = ANY(c_tenant)
             ORDER BY s.tenant_id FOR UPDATE OF s) AS l;
    SELECT array_agg(coalesce(b.granted, 0) ORDER BY x.k),
           array_agg(coalesce(b.reserved + b.spent, 0) ORDER BY x.k),
           array_agg(b.tenant_id IS NULL ORDER BY x.k)
      INTO t_granted, t_used, t_fresh
      FROM unnest(t_id, t_period) WITH ORDINALITY AS x(tenant_id, period, k)
      LEFT JOIN balances b ON b.tenant_id = x.tenant_id AND b.period = x.period;
    -- One row per command, in order: where its request id first occurs in the batch, the
    -- idempotency record of an earlier delivery, its key's team and limits, and its price.
    FOR c IN
        SELECT u.i, min(u.i) OVER (PARTITION BY u.id) AS j, s.payload_hash, s.tenant,
               s.kind, s.period, s.amount, s.released, s.seq, s.reason, s.reserved,
               ak.team_id AS k_team, ak.limit_tokens AS k_tokens, ak.limit_usd AS k_usd,
               tm.limit_tokens AS tm_tokens, tm.limit_usd AS tm_usd,
               pr.version AS p_version, pr.input_per_mtok AS p_in,
               pr.output_per_mtok AS p_out
          FROM unnest(c_request) WITH ORDINALITY AS u(id, i)
          LEFT JOIN LATERAL (SELECT * FROM ledger_commands c
                              WHERE c.request_id = u.id AND c.command = 'reserve' LIMIT 1) s
                 ON true
          LEFT JOIN LATERAL (SELECT * FROM api_keys a
                              WHERE a.key_id = c_key[u.i] AND a.tenant_id = c_tenant[u.i]
                              LIMIT 1) ak ON true
          LEFT JOIN LATERAL (SELECT * FROM teams x
                              WHERE x.tenant_id = c_tenant[u.i] AND x.team_id = ak.team_id
                              LIMIT 1) tm ON true
          LEFT JOIN LATERAL (SELECT * FROM prices p WHERE p.model = c_model[u.i]
                              ORDER BY p.version DESC LIMIT 1) pr ON true
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
                                  NULL, NULL, NULL, 0, 0, NULL, NULL, NULL)::ledger_new_event;
            END IF;
            v_usd := ledger_cost(c.p_in, c.p_out, greatest(0, coalesce(c_input[i], 0)),
                                 greatest(0, c_amount[i] - coalesce(c_input[i], 0)));
            l_id := ARRAY[c_key[i], c_tenant[i] || '/' || c.k_team, c_tenant[i]];
            l_name := ARRAY[c_key[i], c.k_team, c_tenant[i]];
            l_tok := ARRAY[c.k_tokens, c.tm_tokens, NULL];  -- the tenant's: its grant
            l_usd := ARRAY[c.k_usd, c.tm_usd, t_usd[k]];
            l_at := ARRAY[NULL, NULL, NULL]::integer[];
            verdict := NULL;
            IF c_amount[i] <= 0 OR coalesce(c_input[i], 0) NOT BETWEEN 0 AND c_amount[i] THEN
                verdict := 'invalid_amount';
            END IF;
            FOR m IN 1..3 LOOP
                EXIT WHEN verdict IS NOT NULL;
                CONTINUE WHEN l_id[m] IS NULL;
                q := array_position(lv_key, scopes[m] || ':' || l_id[m]);
                IF q IS NULL THEN
                    SELECT coalesce(sum(b.reserved_tokens + b.spent_tokens), 0),
                           coalesce(sum(b.reserved_usd + b.spent_usd), 0)
                      INTO used_tok, used_usd
                      FROM level_balances b
                     WHERE b.scope = scopes[m] AND b.level_id = l_id[m]
                       AND b.period = t_period[k];
                    lv_key := lv_key || (scopes[m] || ':' || l_id[m]);
                    lv_tok := lv_tok || used_tok; lv_usd := lv_usd || used_usd;
                    q := cardinality(lv_key);
                END IF;
                l_at[m] := q;
                IF m = 3 AND t_used[k] + c_amount[i] > t_granted[k] THEN
                    verdict := 'quota_exceeded';
                ELSIF l_tok[m] IS NOT NULL AND lv_tok[q] + c_amount[i] > l_tok[m] THEN
                    verdict := format('quota_exceeded: %s has %s of %s tokens left this period',
                                      ledger_level_name(scopes[m], l_name[m], c_tenant[i]),
                                      greatest(0, l_tok[m] - lv_tok[q]), l_tok[m]);
                ELSIF l_usd[m] IS NOT NULL AND lv_usd[q] + v_usd > l_usd[m] THEN
                    verdict := format('quota_exceeded: %s has $%s of $%s left this period',
                                      ledger_level_name(scopes[m], l_name[m], c_tenant[i]),
                                      ledger_usd(greatest(0, l_usd[m] - lv_usd[q])),
                                      ledger_usd(l_usd[m]));
                END IF;
            END LOOP;
            IF verdict IS NULL THEN
                t_used[k] := t_used[k] + c_amount[i];
                FOR m IN 1..3 LOOP
                    CONTINUE WHEN l_at[m] IS NULL;
                    lv_tok[l_at[m]] := lv_tok[l_at[m]] + c_amount[i];
                    lv_usd[l_at[m]] := lv_usd[l_at[m]] + v_usd;
                END LOOP;
            END IF;
            v_kind := CASE WHEN verdict IS NULL THEN 'TokensReserved' ELSE 'RequestRejected' END;
            evs := evs || ROW(c_tenant[i], v_kind, c_request[i], t_period[k], c_amount[i], 0,
                              verdict, c_key[i], c.k_team, v_usd, 0, c_model[i], c.p_version,
                              c_input[i])::ledger_new_event;
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


-- As in 0002; a settlement also charges the actual tokens' money at the reservation's own
-- price version (budgets.settled_usd: its input tokens first, then output, never more than it
-- held) and returns the rest, at every level the reservation was held at.
CREATE OR REPLACE FUNCTION ledger_end(c_tenant text[], c_request text[], c_actual bigint[],
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
    v_usd bigint;
BEGIN
    IF n = 0 THEN
        RETURN;
    END IF;
    PERFORM 1 FROM ledger_streams s WHERE s.tenant_id = ANY(c_tenant)
      ORDER BY s.tenant_id FOR UPDATE;
    -- One row per command, in order: where its request id first occurs in the batch, the
    -- idempotency record of an earlier delivery, the reservation (open or expired) and the
    -- price version it was made at.
    FOR c IN
        SELECT u.i, min(u.i) OVER (PARTITION BY u.id) AS j, s.payload_hash, s.tenant,
               s.kind, s.period, s.amount, s.released, s.seq, s.reason, s.reserved,
               r.tenant_id AS r_tenant, r.period AS r_period, r.amount AS r_amount,
               r.expired AS r_expired, r.key_id AS r_key, r.team_id AS r_team,
               r.usd AS r_usd, r.model AS r_model, r.price_version AS r_version,
               r.input_tokens AS r_input, pr.input_per_mtok AS p_in,
               pr.output_per_mtok AS p_out
          FROM unnest(c_request) WITH ORDINALITY AS u(id, i)
          LEFT JOIN LATERAL (SELECT * FROM ledger_commands c
                              WHERE c.request_id = u.id AND c.command = 'end' LIMIT 1) s
                 ON true
          LEFT JOIN LATERAL (SELECT * FROM reservations x WHERE x.request_id = u.id LIMIT 1) r
                 ON true
          LEFT JOIN LATERAL (SELECT * FROM prices p
                              WHERE p.model = r.model AND p.version = r.price_version) pr
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
                    v_usd := least(c.r_usd,
                                   ledger_cost(c.p_in, c.p_out, least(c.r_input, v_amount),
                                               greatest(0, v_amount - c.r_input)));
                ELSE
                    v_kind := 'ReservationReleased'; v_reason := c_reason[i];
                    v_amount := c.r_amount; v_released := 0; v_usd := c.r_usd;
                END IF;
                evs := evs || ROW(c_tenant[i], v_kind, c_request[i], c.r_period, v_amount,
                                  v_released, v_reason, c.r_key, c.r_team, v_usd,
                                  CASE WHEN c_actual[i] IS NOT NULL THEN c.r_usd - v_usd
                                       ELSE 0 END,
                                  c.r_model, c.r_version, c.r_input)::ledger_new_event;
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


-- As in 0002; an expiry returns the reservation's money too, at every level.
CREATE OR REPLACE FUNCTION ledger_expire(p_ttl_s integer, p_limit integer)
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
                         0, 'ttl', x.key_id, x.team_id, x.usd, 0, x.model, x.price_version,
                         x.input_tokens)::ledger_new_event ORDER BY x.reserved_at, x.request_id)
      INTO evs
      FROM (SELECT r.request_id, r.tenant_id, r.period, r.amount, r.reserved_at, r.key_id,
                   r.team_id, r.usd, r.model, r.price_version, r.input_tokens
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
               AS e(tenant_id, kind, request_id, period, amount, released, reason, key_id,
                    team_id, usd, usd_released, model, price_version, input_tokens, ord);
END
$$;


-- As in 0002 (0003: by the ledger's clock), in the tenant's own zone.
CREATE OR REPLACE FUNCTION ledger_grant(p_tenant text, p_tokens bigint, p_period text)
RETURNS TABLE (ord integer, request_id text, tenant text, kind text, period text,
               amount bigint, released bigint, seq bigint, reason text, reserved bigint)
LANGUAGE plpgsql
SET enable_seqscan = off
SET timezone = 'UTC'
AS $$
#variable_conflict use_column
DECLARE
    v_period text;
    seqs bigint[];
BEGIN
    SELECT coalesce(p_period, ledger_period(t.plan_period, t.time_zone, now()))
      INTO v_period
      FROM ledger_streams s JOIN tenants t USING (tenant_id)
     WHERE s.tenant_id = p_tenant FOR UPDATE OF s;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown tenant %', p_tenant USING ERRCODE = 'no_data_found';
    END IF;
    seqs := ledger_append(ARRAY[ROW(p_tenant, 'QuotaGranted', NULL, v_period, p_tokens, 0,
                                    NULL, NULL, NULL, 0, 0, NULL, NULL,
                                    NULL)::ledger_new_event]);
    RETURN QUERY SELECT 1, ''::text, p_tenant, 'QuotaGranted'::text, v_period, p_tokens,
                        0::bigint, seqs[1], NULL::text, 0::bigint;
END
$$;
