-- The resource lists (GET /v1/charges, GET /v1/mandates, a mandate's
-- charges) are newest first and page by keyset: a merchant's rows before
-- the cursor's (created_at, id), ORDER BY created_at DESC, id DESC, read
-- backwards along an index led by merchant_id and ending in
-- (created_at, id), so a page 50 deep costs what the first does. A filter
-- on status or mandate_id has an index of its own with that column between
-- them; card_id and member_id reach charges through their mandates (few
-- per card or member), by the mandate index. It replaces
-- charges_merchant_mandate, whose other readers need only its first two
-- columns. Status is now in an index, so a charge's status change is no
-- longer a HOT update (migration 009): the price of finding failed charges
-- among a million without reading the rest. On a large live table, build
-- these in a quiet window: CREATE INDEX holds writes to the table.
CREATE INDEX IF NOT EXISTS charges_merchant_created ON charges (merchant_id, created_at, id);
CREATE INDEX IF NOT EXISTS charges_merchant_status_created ON charges (merchant_id, status, created_at, id);
CREATE INDEX IF NOT EXISTS charges_merchant_mandate_created ON charges (merchant_id, mandate_id, created_at, id);
DROP INDEX IF EXISTS charges_merchant_mandate;
CREATE INDEX IF NOT EXISTS mandates_merchant_created ON mandates (merchant_id, created_at, id);
CREATE INDEX IF NOT EXISTS mandates_merchant_status_created ON mandates (merchant_id, status, created_at, id);
