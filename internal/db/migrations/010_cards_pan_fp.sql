-- The banks cap failed debits per card and day, and a card may have several
-- rows: unbound and bound again, or bound by several merchants. The claim
-- counts a card's failed and open attempts over all its rows, found by the
-- fingerprint of its number (mandate.plan).
CREATE INDEX IF NOT EXISTS cards_pan_fp ON cards (pan_fp);
