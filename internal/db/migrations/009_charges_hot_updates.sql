-- A charge's status changes (processing -> succeeded, and the rest) become
-- HOT updates: a new row version on the same page and no new index entries,
-- where each change used to insert into all five of the table's indexes.
-- An update is HOT only if no column an index reads changes, and that
-- includes the columns in a partial index's predicate. status is no longer
-- in one. The waiting charges are found by next_attempt_at, which is set
-- exactly while a charge waits for its next attempt. The constraint below
-- states that, so charges_due holds the same rows as before. The pages
-- keep room for the new versions. On a large live table, run this in a
-- quiet window: the CHECK is validated and the indexes are built under
-- locks that hold writes to charges.
ALTER TABLE charges DROP CONSTRAINT IF EXISTS charges_next_attempt_while_waiting;
ALTER TABLE charges ADD CONSTRAINT charges_next_attempt_while_waiting
    CHECK ((next_attempt_at IS NOT NULL) = (status IN ('scheduled', 'retry_scheduled')));
DROP INDEX IF EXISTS charges_due;
CREATE INDEX charges_due ON charges (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
-- A notice left unsent when its charge ended (its mandate cancelled) keeps
-- its entry here; the notice query reads only scheduled charges.
DROP INDEX IF EXISTS charges_notice;
CREATE INDEX charges_notice ON charges (notice_at) WHERE notice_sent_at IS NULL AND notice_at IS NOT NULL;
ALTER TABLE charges SET (fillfactor = 70);
