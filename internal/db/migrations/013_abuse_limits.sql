-- Abuse limits (DESIGN.md "Abuse limits"; package internal/limits): what
-- makes banks and carriers send SMS or say which element is wrong is
-- metered across merchants and shared by every serve instance.
--
-- One row per metered thing: kind ('bind_apply_card', 'sms_phone', …) and
-- key, a keyed fingerprint made in the HSM (never a clear value) or, for
-- token requests, a hash of client id and source address. times holds the
-- instants counted within the longest window of the kind (at most a few
-- dozen), so windows slide: "10 a day" is 10 in any 24 hours, with no
-- doubled burst at a window's edge. expires_at is when the row says nothing
-- any more; the limits cleanup job deletes it then.
CREATE TABLE IF NOT EXISTS limit_events (
    kind       text        NOT NULL,
    key        bytea       NOT NULL,
    times      timestamptz[] NOT NULL DEFAULT '{}',
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (kind, key)
);

CREATE INDEX IF NOT EXISTS limit_events_expires ON limit_events (expires_at);

-- limits_take checks and counts in one round trip. Each element i of the
-- arrays is one rule: at most cap[i] instants of (kind[i], key[i]) within
-- win[i] before now. Rules with take[i] count: if every rule passes, now is
-- added once to each taken (kind, key); if any fails, nothing changes.
-- Rules without take only check (e.g. mismatches, counted after the bank
-- answered). It returns NULL when the take passed, else the seconds until
-- every failing rule would pass.
--
-- Taken rows are created and locked in (kind, key) order, so that takes of
-- overlapping keys queue rather than deadlock, and concurrent takes of one
-- key cannot both see room for one.
CREATE OR REPLACE FUNCTION limits_take(p_now timestamptz, p_kind text[], p_key bytea[], p_take boolean[],
                            p_cap int[], p_win interval[])
RETURNS double precision
LANGUAGE plpgsql AS $$
DECLARE
    i     int;
    ts    timestamptz[];
    wait  timestamptz;
BEGIN
    INSERT INTO limit_events (kind, key, expires_at)
    SELECT DISTINCT k, ky, p_now FROM unnest(p_kind, p_key, p_take) AS u(k, ky, t) WHERE t
    ORDER BY 1, 2
    ON CONFLICT (kind, key) DO NOTHING;
    PERFORM 1 FROM limit_events e
    WHERE (e.kind, e.key) IN (SELECT k, ky FROM unnest(p_kind, p_key, p_take) AS u(k, ky, t) WHERE t)
    ORDER BY e.kind, e.key FOR UPDATE;

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
    UPDATE limit_events e SET
        times = array(SELECT t FROM unnest(e.times) AS t WHERE t > p_now - r.keep ORDER BY t) || p_now,
        expires_at = p_now + r.keep
    FROM (SELECT k, ky, max(w) AS keep FROM unnest(p_kind, p_key, p_take, p_win) AS u(k, ky, t, w)
          WHERE t GROUP BY k, ky) r
    WHERE e.kind = r.k AND e.key = r.ky;
    RETURN NULL;
END $$;
