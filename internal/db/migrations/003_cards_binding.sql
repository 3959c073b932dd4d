-- A card keeps the binding it came from: its card number's ciphertext is the
-- binding's, whose AAD names the binding, so the card never re-encrypts it.
ALTER TABLE cards ADD COLUMN binding_id text NOT NULL REFERENCES bindings (id);

-- Why a binding failed or expired, in API terms (e.g. otp_attempts_exceeded).
-- failure_code already exists; this records the bank's own code beside it.
ALTER TABLE bindings ADD COLUMN bank_failure_code text;
