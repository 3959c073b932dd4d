-- The operator console's reads (internal/opsview): every list and detail
-- an index scan with 1,000,000 charges. The console reads across
-- merchants, so each list newest first on (created_at, id) needs an index
-- of its own beside the merchant-led ones of migration 022; a filter by a
-- member, card, mandate or charge reaches its merchant's index through the
-- row's own merchant_id. Each index below names the page that needs it.
-- Every one costs a write on the rows it covers; the status-led ones are
-- on columns already indexed (migration 022), so no update that was HOT
-- stops being HOT. On a large live table, build them in a quiet window:
-- CREATE INDEX holds writes to the table. Re-runnable.

-- Merchants page.
CREATE INDEX IF NOT EXISTS merchants_created ON merchants (created_at, id);

-- Members page, every merchant's and one merchant's.
CREATE INDEX IF NOT EXISTS members_created ON members (created_at, id);
CREATE INDEX IF NOT EXISTS members_merchant_created ON members (merchant_id, created_at, id);

-- Cards page, every merchant's and one merchant's (a member's cards use
-- cards_member, a few rows each).
CREATE INDEX IF NOT EXISTS cards_created ON cards (created_at, id);
CREATE INDEX IF NOT EXISTS cards_merchant_created ON cards (merchant_id, created_at, id);

-- Bindings page: every merchant's, one merchant's, one member's. Migration
-- 008 dropped an index on (merchant_id, created_at) that no query used;
-- the console's list of a merchant's bindings uses this one (see
-- docs/decisions.md "Plans cached before statistics": an index a real
-- query needs stays).
CREATE INDEX IF NOT EXISTS bindings_created ON bindings (created_at, id);
CREATE INDEX IF NOT EXISTS bindings_merchant_created ON bindings (merchant_id, created_at, id);
CREATE INDEX IF NOT EXISTS bindings_member_created ON bindings (member_id, created_at, id) WHERE member_id IS NOT NULL;

-- Mandates page: every merchant's, and every merchant's of one status
-- (one merchant's use mandates_merchant_created and
-- mandates_merchant_status_created).
CREATE INDEX IF NOT EXISTS mandates_created ON mandates (created_at, id);
CREATE INDEX IF NOT EXISTS mandates_status_created ON mandates (status, created_at, id);

-- Charges page: every merchant's, of one status, of one charge date; the
-- overview's and the metrics' counts of a day's charges by status, failure
-- code and card (for its bank) read charges_date_created alone. Of its
-- included columns, status is indexed already, failure_code changes only
-- with status, and amount and card_id never change.
CREATE INDEX IF NOT EXISTS charges_created ON charges (created_at, id);
CREATE INDEX IF NOT EXISTS charges_status_created ON charges (status, created_at, id);
CREATE INDEX IF NOT EXISTS charges_date_created ON charges (charge_date, created_at, id)
    INCLUDE (status, failure_code, amount, card_id);

-- Unknown attempts page (oldest first), the overview's and the metrics'
-- count and oldest age.
CREATE INDEX IF NOT EXISTS charge_attempts_unknown ON charge_attempts (created_at, order_no) WHERE status = 'unknown';
-- Search by a bank's reference of an attempt.
CREATE INDEX IF NOT EXISTS charge_attempts_bank_txn ON charge_attempts (bank_txn_no) WHERE bank_txn_no IS NOT NULL;
-- The overview's bank error rates: the attempts of the last 24 hours by
-- bank and outcome, read from the index alone.
CREATE INDEX IF NOT EXISTS charge_attempts_created ON charge_attempts (created_at) INCLUDE (bank_code, status);

-- Refunds page: every merchant's and of one status; the overview's and the
-- metrics' refunds of a day (created_at); search by a bank's reference.
CREATE INDEX IF NOT EXISTS refunds_created ON refunds (created_at, id);
CREATE INDEX IF NOT EXISTS refunds_status_created ON refunds (status, created_at, id);
CREATE INDEX IF NOT EXISTS refunds_bank_reference ON refunds (bank_reference) WHERE bank_reference IS NOT NULL;

-- Events page of one type across merchants (every merchant's walks the
-- unique seq; one merchant's, events_merchant_seq and _type_seq).
CREATE INDEX IF NOT EXISTS events_type_seq ON events (type, seq);

-- Mismatches page and overview: a mismatch is open while no later run of
-- its bank and bank day exists.
CREATE INDEX IF NOT EXISTS reconciliation_runs_bank_day ON reconciliation_runs (bank_code, bank_day, id);

-- Audit trail page: every row by time, by actor, by subject (by merchant
-- and by action: audit_log_merchant_at, audit_log_action_at).
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at, id);
CREATE INDEX IF NOT EXISTS audit_log_actor_at ON audit_log (actor, at, id);
CREATE INDEX IF NOT EXISTS audit_log_subject_at ON audit_log (subject, at, id) WHERE subject IS NOT NULL;
