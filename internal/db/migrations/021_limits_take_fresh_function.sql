-- The fast path of a take (internal/limits takeFresh: one INSERT for keys
-- never seen, and the checks of keys only looked at) runs inside a function
-- so that its statement keeps one generic plan. Sent as a prepared
-- statement it was planned anew on every call: for a statement over
-- unnest() of its parameters a custom plan always looks cheaper, so
-- Postgres never settled on the generic one, and every binding paid the
-- planner for each of its takes (docs/benchmarks.md "Abuse limits").
-- The generic plan is the same primary-key lookups by (kind, key).
CREATE OR REPLACE FUNCTION limits_take_fresh(
    p_now timestamptz, p_kind text[], p_key bytea[], p_win interval[],
    p_ckind text[], p_ckey bytea[], p_ccap int[], p_cwin interval[],
    OUT taken_kind text[], OUT taken_key bytea[], OUT wait double precision)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
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
                    (SELECT t FROM unnest(e.times) AS t WHERE t > p_now - c.win
                     ORDER BY t DESC OFFSET c.cap - 1 LIMIT 1) + c.win) - p_now)::double precision
         FROM unnest(p_ckind, p_ckey, p_ccap, p_cwin) AS c(k, ky, cap, win)
         JOIN limit_events e ON e.kind = c.k AND e.key = c.ky)
    INTO taken_kind, taken_key, wait;
END
$$;
