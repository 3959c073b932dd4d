-- An answer that holds a secret a GET would not show (a binding session's
-- link, whose token opens the hosted page) is saved encrypted under the
-- vault's data key (api/idempotency, Config.Sealer): the flag says which
-- bodies to decrypt before a replay.
ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS response_sealed boolean NOT NULL DEFAULT false;
