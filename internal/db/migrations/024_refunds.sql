-- Refunds (DESIGN.md "Refunds"): money returned from a succeeded charge to
-- the card it came from, partly or in full, several times. Each refund has
-- its own bank refund number, written here before the bank is called, and
-- is only ever sent or queried under it. Like every migration from 007 on,
-- this one can run again over its own result.

-- A charge keeps two sums: amount_refunded (its succeeded refunds) and
-- amount_refund_held (its refunds not failed: pending and succeeded). A
-- refund raises the held sum in the transaction that inserts it, and a
-- failed one gives its amount back, so the CHECK refuses a refund that
-- would take more than the charge under any concurrency: the charge row is
-- the lock, and the database the judge (mandate.ErrRefundExceedsCharge).
-- Neither column is indexed: a charge's refund sums change by HOT updates.
ALTER TABLE charges ADD COLUMN IF NOT EXISTS amount_refunded bigint NOT NULL DEFAULT 0;
ALTER TABLE charges ADD COLUMN IF NOT EXISTS amount_refund_held bigint NOT NULL DEFAULT 0;
ALTER TABLE charges DROP CONSTRAINT IF EXISTS charges_refunds_within_amount;
ALTER TABLE charges ADD CONSTRAINT charges_refunds_within_amount
    CHECK (0 <= amount_refunded AND amount_refunded <= amount_refund_held AND amount_refund_held <= amount);

CREATE TABLE IF NOT EXISTS refunds (
    id              text PRIMARY KEY,
    merchant_id     text NOT NULL REFERENCES merchants (id),
    charge_id       text NOT NULL REFERENCES charges (id),
    mandate_id      text NOT NULL REFERENCES mandates (id),
    card_id         text NOT NULL REFERENCES cards (id),
    bank_code       text NOT NULL,
    -- The debit refunded: the charge's succeeded attempt.
    order_no        text NOT NULL REFERENCES charge_attempts (order_no),
    -- The bank refund number: the refund's idempotency key at the bank.
    refund_no       text NOT NULL UNIQUE CHECK (length(refund_no) BETWEEN 1 AND 64),
    amount          bigint NOT NULL CHECK (amount > 0),
    currency        text NOT NULL CHECK (currency = 'CNY'),
    reason          text NOT NULL DEFAULT '',
    status          text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    failure_code    text,
    bank_result     text,     -- the bank's own code
    bank_reference  text,     -- the bank's transaction number
    -- The River job that sends the refund, with the others of its batch
    -- (refund_jobs), written with the refund.
    job_id          bigint NOT NULL,
    -- The job's claim: committed before the bank is called; from then on
    -- the refund may be at the bank, and is queried before it is sent
    -- again.
    sent_at         timestamptz,
    -- Set when an answer left the outcome open (processing, lost, a bank
    -- system error): queries settle it, counted in queries, the next one
    -- due at next_query_at.
    unknown_since   timestamptz,
    queries         integer NOT NULL DEFAULT 0,
    next_query_at   timestamptz,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    -- When the refund ended: the bank's finish time when it gives one.
    finished_at     timestamptz,
    CONSTRAINT refunds_failed_has_code CHECK ((status = 'failed') = (failure_code IS NOT NULL)),
    CONSTRAINT refunds_finished CHECK ((status = 'pending') = (finished_at IS NULL))
);

-- The lists (GET /v1/refunds, a charge's refunds) page by keyset on
-- (created_at, id), newest first, as migration 022's charges do.
CREATE INDEX IF NOT EXISTS refunds_merchant_created ON refunds (merchant_id, created_at, id);
CREATE INDEX IF NOT EXISTS refunds_merchant_status_created ON refunds (merchant_id, status, created_at, id);
CREATE INDEX IF NOT EXISTS refunds_merchant_charge_created ON refunds (merchant_id, charge_id, created_at, id);
-- A job finds its refunds (and, run again, those it claimed before).
CREATE INDEX IF NOT EXISTS refunds_job ON refunds (job_id) WHERE status = 'pending';

-- Refunds are created one at a time, and sent and settled in batches as
-- charges are: a refund joins the open batch of a River job of its bank
-- that has not started (and has room), or opens one with a new job, in
-- the transaction that writes it. A row here is an open batch; the job
-- deletes it when it starts (waiting for any transaction joining it), and
-- then takes every refund of its job_id, so none is left behind. Only open
-- batches are kept: a handful of rows.
CREATE TABLE IF NOT EXISTS refund_jobs (
    job_id      bigint PRIMARY KEY,
    bank_code   text NOT NULL,
    refunds     integer NOT NULL CHECK (refunds > 0),
    created_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS refund_jobs_bank ON refund_jobs (bank_code);
-- Reconciliation reads a bank's pending refunds and those finished on a
-- day; the settlement files read the latter too.
CREATE INDEX IF NOT EXISTS refunds_bank_pending ON refunds (bank_code) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS refunds_bank_finished ON refunds (bank_code, finished_at);

-- A statement lists refunds too: what reconciliation finds of them.
-- unknown_refund: the bank made a refund quickpay does not know (or holds
-- as failed); missing_refund: quickpay holds a refund succeeded that the
-- bank's statement of its day lacks; refund_amount_mismatch: both know the
-- refund, with different amounts.
ALTER TABLE reconciliation_mismatches DROP CONSTRAINT IF EXISTS reconciliation_mismatches_kind_check;
ALTER TABLE reconciliation_mismatches ADD CONSTRAINT reconciliation_mismatches_kind_check
    CHECK (kind IN ('unknown_debit', 'missing_debit', 'amount_mismatch',
                    'unknown_refund', 'missing_refund', 'refund_amount_mismatch'));
-- A run records whether the bank's statement was final (its day closed),
-- and its refunds as it records its debits.
ALTER TABLE reconciliation_runs ADD COLUMN IF NOT EXISTS final boolean NOT NULL DEFAULT false;
ALTER TABLE reconciliation_runs ADD COLUMN IF NOT EXISTS refunds integer NOT NULL DEFAULT 0;
ALTER TABLE reconciliation_runs ADD COLUMN IF NOT EXISTS refunds_matched integer NOT NULL DEFAULT 0;
ALTER TABLE reconciliation_runs ADD COLUMN IF NOT EXISTS refunds_settled integer NOT NULL DEFAULT 0;
