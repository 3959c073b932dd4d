-- Withholding mandates, their charges (one per mandate and period) and the
-- bank attempts of each charge, and reconciliation against the banks'
-- daily statements. Invariants that keep money moving once live here:
-- a charge per (mandate, period) is unique; an order number is unique; a
-- charge has at most one attempt whose outcome is open.

-- Days after a charge date on which a retryable decline is tried again.
ALTER TABLE merchants ADD COLUMN retry_days integer[] NOT NULL DEFAULT '{1,3,5}'
    CHECK (cardinality(retry_days) <= 10 AND 0 < ALL (retry_days));

CREATE TABLE mandates (
    id            text PRIMARY KEY CHECK (id LIKE 'mdt\_%'),
    merchant_id   text NOT NULL REFERENCES merchants (id),
    member_id     text NOT NULL REFERENCES members (id),
    card_id       text NOT NULL REFERENCES cards (id),
    reference     text NOT NULL CHECK (length(reference) BETWEEN 1 AND 128),
    description   text NOT NULL DEFAULT '' CHECK (length(description) <= 256),
    amount_type   text NOT NULL CHECK (amount_type IN ('fixed', 'variable')),
    amount        bigint CHECK (amount > 0),
    max_amount    bigint CHECK (max_amount > 0),
    currency      text NOT NULL CHECK (currency = 'CNY'),
    interval      text NOT NULL CHECK (interval IN ('month', 'week')),
    day_of_month  integer CHECK (day_of_month BETWEEN 1 AND 31),
    weekday       integer CHECK (weekday BETWEEN 1 AND 7),
    start_date    date NOT NULL,
    end_date      date CHECK (end_date >= start_date),
    max_charges   integer CHECK (max_charges > 0),
    timezone      text NOT NULL,
    notice_days   integer NOT NULL DEFAULT 0 CHECK (notice_days BETWEEN 0 AND 30),
    status        text NOT NULL CHECK (status IN
                  ('pending_confirmation', 'active', 'paused', 'cancelled', 'expired', 'completed')),
    status_reason text,
    -- The next period to charge; null once the mandate can charge no more.
    next_period      text,
    next_charge_date date,
    charges_count    integer NOT NULL DEFAULT 0,
    -- The consent code quickpay sent: only its keyed hash (HMAC in the HSM).
    otp_hash         bytea,
    otp_expires_at   timestamptz NOT NULL,
    otp_attempts     integer NOT NULL DEFAULT 0,
    otp_sends        integer NOT NULL DEFAULT 1,
    otp_last_sent_at timestamptz NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    CHECK ((amount_type = 'fixed' AND amount IS NOT NULL AND max_amount IS NULL)
        OR (amount_type = 'variable' AND max_amount IS NOT NULL AND amount IS NULL)),
    CHECK ((interval = 'month' AND day_of_month IS NOT NULL AND weekday IS NULL)
        OR (interval = 'week' AND weekday IS NOT NULL AND day_of_month IS NULL)),
    CHECK (max_charges IS NULL OR charges_count <= max_charges)
);
CREATE INDEX mandates_card ON mandates (merchant_id, card_id);
CREATE INDEX mandates_member ON mandates (merchant_id, member_id);
-- The scheduler's scan: active mandates by their next date.
CREATE INDEX mandates_next ON mandates (next_charge_date) WHERE status = 'active';

CREATE TABLE charges (
    id             text PRIMARY KEY CHECK (id LIKE 'chg\_%'),
    merchant_id    text NOT NULL REFERENCES merchants (id),
    mandate_id     text NOT NULL REFERENCES mandates (id),
    card_id        text NOT NULL REFERENCES cards (id),
    period         text NOT NULL,
    charge_date    date NOT NULL,
    amount         bigint NOT NULL CHECK (amount > 0),
    currency       text NOT NULL CHECK (currency = 'CNY'),
    description    text NOT NULL DEFAULT '',
    status         text NOT NULL CHECK (status IN
                   ('scheduled', 'processing', 'succeeded', 'failed', 'unknown', 'retry_scheduled')),
    -- When the charge is next tried (scheduled, retry_scheduled).
    next_attempt_at timestamptz,
    -- The pre-debit notice: due at notice_at, sent at notice_sent_at. A
    -- charge with a notice due is not tried before it has gone out.
    notice_at       timestamptz,
    notice_sent_at  timestamptz,
    retries         integer NOT NULL DEFAULT 0,
    attempts_count  integer NOT NULL DEFAULT 0,
    failure_code    text,
    bank_reference  text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    -- One charge per mandate and period, whatever the workers do.
    UNIQUE (mandate_id, period)
);
CREATE INDEX charges_due ON charges (next_attempt_at) WHERE status IN ('scheduled', 'retry_scheduled');
CREATE INDEX charges_notice ON charges (notice_at) WHERE notice_sent_at IS NULL AND notice_at IS NOT NULL AND status = 'scheduled';
CREATE INDEX charges_merchant_mandate ON charges (merchant_id, mandate_id, charge_date);

CREATE TABLE charge_attempts (
    -- The bank order number: written before the bank is called, and the
    -- only number that attempt is ever sent or queried under.
    order_no       text PRIMARY KEY CHECK (length(order_no) BETWEEN 1 AND 64),
    merchant_id    text NOT NULL REFERENCES merchants (id),
    charge_id      text NOT NULL REFERENCES charges (id),
    card_id        text NOT NULL REFERENCES cards (id),
    seq            integer NOT NULL,
    bank_code      text NOT NULL,
    amount         bigint NOT NULL CHECK (amount > 0),
    status         text NOT NULL CHECK (status IN ('processing', 'unknown', 'succeeded', 'failed')),
    failure_code   text,
    bank_result    text,     -- the bank's own code
    bank_txn_no    text,
    queries        integer NOT NULL DEFAULT 0,
    -- The bank's day of the attempt (Asia/Shanghai), for the per-card cap.
    bank_day       date NOT NULL,
    created_at     timestamptz NOT NULL,
    finished_at    timestamptz,
    UNIQUE (charge_id, seq)
);
-- Never a second debit while one's outcome is open.
CREATE UNIQUE INDEX charge_attempts_one_open ON charge_attempts (charge_id) WHERE status IN ('processing', 'unknown');
CREATE INDEX charge_attempts_card_day ON charge_attempts (card_id, bank_day);
CREATE INDEX charge_attempts_bank_day ON charge_attempts (bank_code, bank_day);
CREATE INDEX charge_attempts_charge ON charge_attempts (charge_id);

-- Reconciliation runs against a bank's daily statement and what they found.
CREATE TABLE reconciliation_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    bank_code   text NOT NULL,
    bank_day    date NOT NULL,
    entries     integer NOT NULL,
    matched     integer NOT NULL,
    settled     integer NOT NULL,
    mismatches  integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE reconciliation_mismatches (
    run_id       bigint NOT NULL REFERENCES reconciliation_runs (id),
    -- unknown_debit: the bank debited an order quickpay does not know;
    -- missing_debit: quickpay marked an attempt succeeded the bank never made;
    -- amount_mismatch: both know the debit, with different amounts.
    kind         text NOT NULL CHECK (kind IN ('unknown_debit', 'missing_debit', 'amount_mismatch')),
    bank_code    text NOT NULL,
    bank_day     date NOT NULL,
    order_no     text NOT NULL,
    merchant_id  text,        -- null for a debit quickpay does not know
    bank_amount  bigint,
    our_amount   bigint,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, order_no)
);
