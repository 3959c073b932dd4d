-- limits_take's statements run with generic plans. PL/pgSQL plans each
-- statement with the call's values for its first calls and keeps doing so
-- while a custom plan looks cheaper, which for its unnest()-of-parameters
-- statements it always does: every take planned its four statements anew.
-- The generic plans are the same index lookups by (kind, key); measured
-- with pgbench on 2 cores, a take of five checks went from ~3,200 to
-- ~4,300–6,000 a second (docs/decisions.md "Abuse limits").
ALTER FUNCTION limits_take(timestamptz, text[], bytea[], boolean[], int[], interval[])
    SET plan_cache_mode = force_generic_plan;
