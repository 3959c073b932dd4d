-- A binding session counts the card form's attempts that the data refused
-- (elements or identity mismatch, card bound elsewhere, invalid fields)
-- and those in flight, so a link's holder cannot probe a person's
-- identity without limit: the hosted page takes one before asking the
-- bank and gives it back unless the data was refused, and the last of
-- binding.MaxSessionRefusals fails the session (too_many_attempts).
-- Re-runnable.
ALTER TABLE binding_sessions ADD COLUMN IF NOT EXISTS card_refusals integer NOT NULL DEFAULT 0;
ALTER TABLE binding_sessions DROP CONSTRAINT IF EXISTS binding_sessions_card_refusals_check;
ALTER TABLE binding_sessions ADD CONSTRAINT binding_sessions_card_refusals_check CHECK (card_refusals >= 0);
