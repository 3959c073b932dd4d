-- A cardholder can end an agreement at the bank, which then tells quickpay
-- (a signed agreement_terminated notice): the card holding the agreement is
-- revoked and its mandates cancelled. Re-runnable.
--
-- cards.agreement_fp finds that card: the keyed fingerprint (HSM HMAC,
-- domain "agreement", like pan_fp) of the agreement number agreement_ct
-- holds, or NULL until it is computed. A notice whose agreement no
-- fingerprint matches first fingerprints its bank's active cards that have
-- none (rows from before this migration, and any written without one), once
-- each, and looks again (binding/revoke.go). Giving the agreement a new
-- number sets it back to NULL.
ALTER TABLE cards ADD COLUMN IF NOT EXISTS agreement_fp bytea;
CREATE INDEX IF NOT EXISTS cards_agreement_fp ON cards (bank_code, agreement_fp) WHERE agreement_fp IS NOT NULL;
-- The active cards still to fingerprint, by bank: empty once filled, so
-- the look for them costs a notice one index probe.
CREATE INDEX IF NOT EXISTS cards_agreement_unfilled ON cards (bank_code, id)
    WHERE agreement_fp IS NULL AND status = 'active';

-- Every agreement notice a bank sent, with what quickpay did, for
-- operators: above all those for an agreement no card holds (answered 2xx
-- all the same, so that the bank stops retrying). A bank's retries and
-- replays of one notice (same bank, agreement and time) are one row. The
-- agreement number is encrypted (AAD: bank_notice|bank|id|agreement) with
-- its fingerprint beside it; merchant_id names the merchant whose card held
-- the agreement, NULL when none did (the notice is the platform's, not a
-- merchant's).
CREATE TABLE IF NOT EXISTS bank_notices (
    id           text PRIMARY KEY CHECK (id LIKE 'bnt\_%'),
    bank_code    text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('agreement_terminated')),
    agreement_ct bytea NOT NULL,
    agreement_fp bytea NOT NULL,
    ended_at     timestamptz NOT NULL, -- the bank's time of the termination
    outcome      text NOT NULL CHECK (outcome IN ('revoked', 'ended_before', 'unknown_agreement')),
    merchant_id  text REFERENCES merchants (id),
    card_ids     text[] NOT NULL DEFAULT '{}',
    received_at  timestamptz NOT NULL,
    CHECK ((outcome = 'unknown_agreement') = (merchant_id IS NULL))
);
CREATE UNIQUE INDEX IF NOT EXISTS bank_notices_once ON bank_notices (bank_code, kind, agreement_fp, ended_at);
CREATE INDEX IF NOT EXISTS bank_notices_unknown ON bank_notices (received_at) WHERE outcome = 'unknown_agreement';
