-- Settlement files (对账文件, DESIGN.md "Settlement file"): each merchant's
-- CSV of the money its bank movements moved on one bank day. A day is
-- written once, after every bank's statement of it is final and
-- reconciled (mandate.WriteSettlementFiles), in one statement for every
-- merchant, and never changed: settlement_rows holds a copy of each
-- movement as the file shows it (no reference to the charge or refund row,
-- whose later changes must not reach a file already handed out), and
-- settlement_days marks the day written. Like every migration from 007
-- on, this one can run again over its own result.
CREATE TABLE IF NOT EXISTS settlement_days (
    bank_day   date PRIMARY KEY,
    -- Rows the day's files hold, every merchant's together.
    movements  bigint NOT NULL CHECK (movements >= 0),
    written_at timestamptz NOT NULL
);

-- One row per succeeded movement, in exactly one day's file: the first day
-- written after it succeeded whose date is not before its bank day (a late
-- correction lands in the file of the day it is found on). The primary key
-- is that "exactly one".
CREATE TABLE IF NOT EXISTS settlement_rows (
    kind           text NOT NULL CHECK (kind IN ('charge', 'refund')),
    -- The bank order number: a charge's succeeded attempt's, a refund's
    -- refund number.
    order_no       text NOT NULL,
    -- The day whose files hold it. Not a foreign key: the one statement
    -- that writes a day's rows writes its settlement_days row too,
    -- neither can be removed, and a key would check each of a day's
    -- 100,000 rows again.
    file_day       date NOT NULL,
    merchant_id    text NOT NULL,
    -- The bank day the money moved on: file_day, or earlier for a late
    -- correction.
    moved_day      date NOT NULL CHECK (moved_day <= file_day),
    id             text NOT NULL,          -- chg_… or rfd_…
    charge_id      text NOT NULL,          -- a charge's own id; a refund's charge
    mandate_id     text NOT NULL,
    member_id      text NOT NULL,
    reference      text NOT NULL,          -- the mandate's, the merchant's own text
    bank_code      text NOT NULL,
    bank_reference text NOT NULL,          -- the bank's transaction number ('' if it gave none)
    amount         bigint NOT NULL CHECK (amount > 0),
    currency       text NOT NULL CHECK (currency = 'CNY'),
    finished_at    timestamptz NOT NULL,
    PRIMARY KEY (kind, order_no),
    CHECK ((kind = 'charge') = (id = charge_id))
);
-- A merchant's file, in the order it is served, without a sort.
CREATE INDEX IF NOT EXISTS settlement_rows_file ON settlement_rows (merchant_id, file_day, finished_at, kind, order_no);

-- Both tables are append-only, as audit_log is (migration 014): a file
-- handed to a merchant is never changed, whoever asks. UPDATE, DELETE and
-- TRUNCATE fail.
CREATE OR REPLACE FUNCTION qp_settlement_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE OR REPLACE TRIGGER settlement_days_append_only
    BEFORE UPDATE OR DELETE ON settlement_days
    FOR EACH STATEMENT EXECUTE FUNCTION qp_settlement_append_only();
CREATE OR REPLACE TRIGGER settlement_days_no_truncate
    BEFORE TRUNCATE ON settlement_days
    FOR EACH STATEMENT EXECUTE FUNCTION qp_settlement_append_only();
CREATE OR REPLACE TRIGGER settlement_rows_append_only
    BEFORE UPDATE OR DELETE ON settlement_rows
    FOR EACH STATEMENT EXECUTE FUNCTION qp_settlement_append_only();
CREATE OR REPLACE TRIGGER settlement_rows_no_truncate
    BEFORE TRUNCATE ON settlement_rows
    FOR EACH STATEMENT EXECUTE FUNCTION qp_settlement_append_only();

-- A day's write reads the movements quickpay booked since shortly before
-- the day began (a charge's attempt by its finished_at, a refund by its
-- updated_at), of that day or, late, of earlier ones
-- (mandate.writeSettlementDay), not every movement ever: these indexes
-- give it those by range, the bank day checked in the index.
CREATE INDEX IF NOT EXISTS charge_attempts_settlement ON charge_attempts (finished_at, bank_day) WHERE status = 'succeeded';
CREATE INDEX IF NOT EXISTS refunds_settlement ON refunds (updated_at, finished_at) WHERE status = 'succeeded';
