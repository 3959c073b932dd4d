-- Pre-debit notices are texted outside any transaction (issue 19): a run
-- claims a batch (notice_claimed_until, a lease on the clock), commits,
-- texts each member, and records each notice (notice_sent_at, the
-- charge.pre_debit_notice event) in its own transaction. A run that dies
-- between a text and its record leaves that one notice claimed; once the
-- lease has passed, the next run texts it again. The column is not
-- indexed, so claiming and recording keep the charges' updates HOT.
ALTER TABLE charges ADD COLUMN IF NOT EXISTS notice_claimed_until timestamptz;
