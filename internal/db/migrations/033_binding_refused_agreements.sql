-- A binding the bank confirmed but quickpay refused (identity_mismatch, or
-- card_bound_elsewhere found only then) made an agreement at the bank that
-- no card holds. Until now its number lived only in the refusing call's
-- memory: a release the bank did not accept left nothing to release it
-- with. The binding now keeps it, encrypted as cards keep theirs
-- (agreement_ct, AAD binding|<merchant>|<binding>|agreement), until the
-- bank has released it: at once after the refusal, or by an operator
-- (binding.ReleaseAgreement) when the bank did not accept that release.
-- Once released the ciphertext is dropped and agreement_released_at says
-- when; a second release does nothing. Bindings refused before this
-- migration kept nothing and cannot be released from quickpay.
-- Re-runnable.
ALTER TABLE bindings ADD COLUMN IF NOT EXISTS agreement_ct bytea;
ALTER TABLE bindings ADD COLUMN IF NOT EXISTS agreement_released_at timestamptz;

ALTER TABLE bindings DROP CONSTRAINT IF EXISTS bindings_refused_agreement;
ALTER TABLE bindings ADD CONSTRAINT bindings_refused_agreement CHECK (
    (agreement_ct IS NULL AND agreement_released_at IS NULL)
    OR (status = 'failed' AND (agreement_ct IS NULL) <> (agreement_released_at IS NULL)));
