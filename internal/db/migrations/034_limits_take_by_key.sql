-- limits_take reads limit_events by primary key only, one probe per key,
-- at any size of the table. It keeps one generic plan per connection
-- (migration 017), made from the statistics of the moment: while the table
-- was small, its joins of the call's keys to limit_events (the lock and the
-- update) were hash joins over a scan of the whole table, and the plan
-- stayed so as the table grew, until the next ANALYZE. Now each key is
-- locked by a lateral subquery and updated by a statement of its own, so no
-- plan can join, and enable_seqscan off makes each probe the primary key's
-- index even when the statistics say the table is empty
-- (internal/limits TestTakeReadsByKeyOnly).
--
-- A take's first statement (keys never seen, and the check-only reads) is
-- plain SQL sent by internal/limits; limits_take_fresh (migration 021) is
-- no longer called by this version and stays for instances of the one
-- before, which may share the database during an upgrade.
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
