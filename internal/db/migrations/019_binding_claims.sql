-- Claims: a confirm or resend of a binding, and an unbind of a card, no
-- longer waits on the bank inside a transaction. The call claims its row
-- (claimed_by, a token of the call; claim_until, when the claim lapses),
-- commits, calls the bank, and applies the answer in a second transaction
-- only while it still holds the claim, releasing it there. A claim past
-- claim_until belongs to a call that ended without applying (a crash
-- between the bank's answer and the write): the next call takes it over
-- (docs/decisions.md "No bank call inside a transaction"). Re-runnable.
ALTER TABLE bindings ADD COLUMN IF NOT EXISTS claimed_by text;
ALTER TABLE bindings ADD COLUMN IF NOT EXISTS claim_until timestamptz;
ALTER TABLE cards ADD COLUMN IF NOT EXISTS claimed_by text;
ALTER TABLE cards ADD COLUMN IF NOT EXISTS claim_until timestamptz;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_constraint WHERE conname = 'bindings_claim_whole') THEN
        ALTER TABLE bindings ADD CONSTRAINT bindings_claim_whole
            CHECK ((claimed_by IS NULL) = (claim_until IS NULL));
    END IF;
    IF NOT EXISTS (SELECT FROM pg_constraint WHERE conname = 'cards_claim_whole') THEN
        ALTER TABLE cards ADD CONSTRAINT cards_claim_whole
            CHECK ((claimed_by IS NULL) = (claim_until IS NULL));
    END IF;
END $$;
