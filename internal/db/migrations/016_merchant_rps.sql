-- A merchant's requests-per-second ceiling (DESIGN.md "Abuse limits": "A
-- merchant can be given a requests-per-second ceiling too"), set with
-- `quickpay merchants create --rps N` or `quickpay merchants set-rps`.
-- NULL is no ceiling, the default: existing merchants keep calling as
-- before. The API enforces it per serve instance with an in-memory token
-- bucket (api/ratelimit.go), reading this column at most every 30 s per
-- merchant, so a request costs no round trip; with N instances a merchant
-- gets up to N times the setting. Zero is not stored (it would mean "refuse
-- everything"): the CLI's 0 clears the ceiling to NULL.
ALTER TABLE merchants ADD COLUMN IF NOT EXISTS rps_ceiling integer;
ALTER TABLE merchants DROP CONSTRAINT IF EXISTS merchants_rps_ceiling_check;
ALTER TABLE merchants ADD CONSTRAINT merchants_rps_ceiling_check
    CHECK (rps_ceiling IS NULL OR rps_ceiling BETWEEN 1 AND 100000);
