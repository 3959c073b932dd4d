-- The events feed narrowed to some types (a token's scopes, GET
-- /v1/events?type=) reads each type's events of the merchant in order
-- (internal/webhooks feedTypedSQL) instead of walking all of the
-- merchant's events on (merchant_id, seq) and stepping over the other
-- types': a bind-only token at a merchant with a million charge events
-- read past every one of them. (merchant_id, seq) stays for the unnarrowed
-- feed. One more index for every event written; on a large live table,
-- build it in a quiet window: CREATE INDEX holds writes to the table.
CREATE INDEX IF NOT EXISTS events_merchant_type_seq ON events (merchant_id, type, seq);
