-- Charge jobs carry only their attempts' order numbers (args
-- {"order_nos": [...]}) and read the attempts: River indexes every value
-- of a job's args. A job queued before (args {"attempts": [...]}, each
-- attempt's fields) keeps its attempts' order numbers, in order, and its
-- attempt count, so a job that ran before still asks the bank first.
UPDATE river_job
SET args = jsonb_build_object('order_nos',
    (SELECT coalesce(jsonb_agg(a.attempt->'order_no' ORDER BY a.n), '[]'::jsonb)
     FROM jsonb_array_elements(args->'attempts') WITH ORDINALITY AS a(attempt, n)))
WHERE kind = 'mandate_charges' AND jsonb_typeof(args->'attempts') = 'array'
  AND state NOT IN ('completed', 'cancelled', 'discarded');
