-- A bank that answers "success" for another amount than the one quickpay
-- sent (issue 18) must not be booked as a success with quickpay's own
-- amount. Such an attempt ends as 'amount_mismatch' and keeps the bank's
-- figure in bank_amount; its charge is 'held' for operators (no retry, no
-- charge.succeeded, no refund or settlement row) until they resolve it.
-- docs/decisions.md "Input and transport hardening" records this addition
-- to DESIGN.md's charge states. Neither is an open state: the one-open
-- index and the waiting-charge constraint are unchanged.
ALTER TABLE charge_attempts DROP CONSTRAINT IF EXISTS charge_attempts_status_check;
ALTER TABLE charge_attempts ADD CONSTRAINT charge_attempts_status_check
    CHECK (status IN ('processing', 'unknown', 'succeeded', 'failed', 'amount_mismatch'));
ALTER TABLE charge_attempts ADD COLUMN IF NOT EXISTS bank_amount bigint;
ALTER TABLE charge_attempts DROP CONSTRAINT IF EXISTS charge_attempts_bank_amount_when_mismatch;
ALTER TABLE charge_attempts ADD CONSTRAINT charge_attempts_bank_amount_when_mismatch
    CHECK ((bank_amount IS NOT NULL) = (status = 'amount_mismatch'));
ALTER TABLE charges DROP CONSTRAINT IF EXISTS charges_status_check;
ALTER TABLE charges ADD CONSTRAINT charges_status_check
    CHECK (status IN ('scheduled', 'processing', 'succeeded', 'failed', 'unknown', 'retry_scheduled', 'held'));
