-- A take reads limit_events by primary key only, one probe per key, at any
-- size of the table. limits_take_fresh and limits_take keep one generic
-- plan per connection (migrations 017 and 021), made from the statistics
-- of the moment: while the table was small, their joins of the call's
-- keys to limit_events were hash joins over a scan of the whole table, and
-- a plan stayed so as the table grew, until the next ANALYZE. That happens
-- after every crash of the server (an unlogged table comes back empty) and
-- on a new database. Now each key is looked up by a correlated subquery, a
-- lateral subquery or a statement of its own, so no plan can join, and
-- enable_seqscan off makes each probe the primary key's index even when
-- the statistics say the table is empty (internal/limits
-- TestTakeReadsByKeyOnly).
CREATE OR REPLACE FUNCTION limits_take_fresh(
    p_now timestamptz, p_kind text[], p_key bytea[], p_win interval[],
    p_ckind text[], p_ckey bytea[], p_ccap int[], p_cwin interval[],
    OUT taken_kind text[], OUT taken_key bytea[], OUT wait double precision)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
BEGIN
    WITH ins AS (
        INSERT INTO limit_events (kind, key, times, expires_at)
        SELECT k, ky, ARRAY[p_now], p_now + w
        FROM unnest(p_kind, p_key, p_win) AS u(k, ky, w)
        ORDER BY k, ky
        ON CONFLICT (kind, key) DO NOTHING
        RETURNING limit_events.kind, limit_events.key)
    SELECT ARRAY(SELECT ins.kind FROM ins), ARRAY(SELECT ins.key FROM ins),
        (SELECT extract(epoch FROM max(
                    (SELECT t FROM unnest(c.times) AS t WHERE t > p_now - c.win
                     ORDER BY t DESC OFFSET c.cap - 1 LIMIT 1) + c.win) - p_now)::double precision
         FROM (SELECT u.cap, u.win,
                      (SELECT e.times FROM limit_events e WHERE e.kind = u.k AND e.key = u.ky) AS times
               FROM unnest(p_ckind, p_ckey, p_ccap, p_cwin) AS u(k, ky, cap, win)) c)
    INTO taken_kind, taken_key, wait;
END
$$;

CREATE OR REPLACE FUNCTION limits_take(p_now timestamptz, p_kind text[], p_key bytea[], p_take boolean[],
                            p_cap int[], p_win interval[])
RETURNS double precision
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
    i     int;
    ts    timestamptz[];
    wait  timestamptz;
    r     record;
BEGIN
    INSERT INTO limit_events (kind, key, expires_at)
    SELECT DISTINCT k, ky, p_now FROM unnest(p_kind, p_key, p_take) AS u(k, ky, t) WHERE t
    ORDER BY 1, 2
    ON CONFLICT (kind, key) DO NOTHING;
    -- Lock the taken keys' rows in (kind, key) order: the lateral subquery
    -- runs once per key, in the order of the keys.
    PERFORM 1
    FROM (SELECT DISTINCT k, ky FROM unnest(p_kind, p_key, p_take) AS u(k, ky, t) WHERE t ORDER BY 1, 2) u,
         LATERAL (SELECT 1 FROM limit_events e WHERE e.kind = u.k AND e.key = u.ky FOR UPDATE) l;

    FOR i IN 1 .. coalesce(cardinality(p_kind), 0) LOOP
        -- The rule's instants within its window, newest first.
        SELECT array_agg(t ORDER BY t DESC) INTO ts
        FROM limit_events e, unnest(e.times) AS t
        WHERE e.kind = p_kind[i] AND e.key = p_key[i] AND t > p_now - p_win[i];
        IF coalesce(cardinality(ts), 0) >= p_cap[i] THEN
            -- Room for one comes when the cap-th newest leaves the window.
            wait := greatest(wait, ts[p_cap[i]] + p_win[i]);
        END IF;
    END LOOP;
    IF wait IS NOT NULL THEN
        RETURN greatest(extract(epoch FROM wait - p_now), 0);
    END IF;

    -- Count now; drop instants older than the kind's longest window.
    FOR r IN SELECT k, ky, max(w) AS keep FROM unnest(p_kind, p_key, p_take, p_win) AS u(k, ky, t, w)
             WHERE t GROUP BY k, ky LOOP
        UPDATE limit_events e SET
            times = array(SELECT t FROM unnest(e.times) AS t WHERE t > p_now - r.keep ORDER BY t) || p_now,
            expires_at = p_now + r.keep
        WHERE e.kind = r.k AND e.key = r.ky;
    END LOOP;
    RETURN NULL;
END $$;
