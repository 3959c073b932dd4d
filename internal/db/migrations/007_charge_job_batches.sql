-- Charge jobs carry a batch of attempts to one bank (kind mandate_charges,
-- args {"attempts": [...]}). A job queued before (kind mandate_charge, one
-- attempt's fields as its args, the same keys) becomes a batch of one. Its
-- attempt count is kept, so a job that ran before still asks the bank
-- before it sends.
UPDATE river_job
SET kind = 'mandate_charges', args = jsonb_build_object('attempts', jsonb_build_array(args))
WHERE kind = 'mandate_charge' AND state NOT IN ('completed', 'cancelled', 'discarded');
