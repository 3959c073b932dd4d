-- The binding API: merchants and their API credentials, members, bindings
-- with their OTP session, cards, idempotency keys, and the event outbox with
-- webhook endpoints and delivery attempts.
--
-- Every table holding merchant data carries merchant_id (the future
-- distribution key), and every lookup filters on it: another merchant's id
-- finds nothing, exactly like an unknown id.
--
-- Sensitive values are stored only as vaultkeys ciphertext (*_ct, AES-GCM in
-- the HSM, AAD bound to the row) and keyed fingerprints (*_fp, HMAC in the
-- HSM). CVV2, expiry and OTPs are never stored.

CREATE TABLE merchants (
    id                 text PRIMARY KEY CHECK (id LIKE 'mch\_%'),
    name               text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    scopes             text[] NOT NULL,
    client_id          text NOT NULL UNIQUE,
    -- bcrypt; the secret itself is shown once at creation.
    client_secret_hash text NOT NULL,
    -- Failed logins in a row; 10 lock the client for 30 minutes (PCI DSS 8.3.4).
    failed_logins      integer NOT NULL DEFAULT 0,
    locked_until       timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE members (
    id           text PRIMARY KEY CHECK (id LIKE 'mem\_%'),
    merchant_id  text NOT NULL REFERENCES merchants (id),
    external_id  text NOT NULL CHECK (length(external_id) BETWEEN 1 AND 128),
    kind         text NOT NULL CHECK (kind IN ('explicit', 'implicit')),
    -- Identity: declared at creation, or verified by the bank on the first
    -- binding (identity_verified). Later bindings must match it.
    name_ct           bytea,
    name_fp           bytea,
    id_number_ct      bytea,
    id_number_fp      bytea,
    phone_ct          bytea,
    identity_verified boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (merchant_id, external_id)
);

CREATE TABLE bindings (
    id               text PRIMARY KEY CHECK (id LIKE 'bnd\_%'),
    merchant_id      text NOT NULL REFERENCES merchants (id),
    member_id        text REFERENCES members (id),   -- null for an implicit binding until bound
    external_user_id text,                           -- implicit: the merchant's user id
    status           text NOT NULL CHECK (status IN ('otp_sent', 'bound', 'failed', 'expired')),
    bank_code        text NOT NULL,
    bank_name        text NOT NULL,
    card_type        text NOT NULL CHECK (card_type IN ('debit', 'credit')),
    masked_pan       text NOT NULL,
    last4            text NOT NULL,
    pan_ct           bytea NOT NULL,
    pan_fp           bytea NOT NULL,
    holder_name_ct   bytea NOT NULL,
    holder_name_fp   bytea NOT NULL,
    id_number_ct     bytea NOT NULL,
    id_number_fp     bytea NOT NULL,
    phone_ct         bytea NOT NULL,
    bank_bind_ref    text,
    -- The OTP session quickpay enforces itself.
    otp_expires_at   timestamptz NOT NULL,
    otp_attempts     integer NOT NULL DEFAULT 0,
    otp_sends        integer NOT NULL DEFAULT 1,
    otp_last_sent_at timestamptz NOT NULL,
    card_id          text,
    failure_code     text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((member_id IS NULL) <> (external_user_id IS NULL) OR status = 'bound')
);
CREATE INDEX bindings_merchant_created ON bindings (merchant_id, created_at);

CREATE TABLE cards (
    id           text PRIMARY KEY CHECK (id LIKE 'card\_%'),
    merchant_id  text NOT NULL REFERENCES merchants (id),
    member_id    text NOT NULL REFERENCES members (id),
    status       text NOT NULL CHECK (status IN ('active', 'unbound', 'revoked')),
    bank_code    text NOT NULL,
    bank_name    text NOT NULL,
    card_type    text NOT NULL CHECK (card_type IN ('debit', 'credit')),
    masked_pan   text NOT NULL,
    last4        text NOT NULL,
    pan_ct       bytea NOT NULL,
    pan_fp       bytea NOT NULL,
    agreement_ct bytea NOT NULL,   -- the bank's agreement number, encrypted
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
-- One active card per card number and merchant: binding it twice is
-- idempotent or card_bound_elsewhere, never a second card.
CREATE UNIQUE INDEX cards_one_active_per_pan ON cards (merchant_id, pan_fp) WHERE status = 'active';
CREATE INDEX cards_member ON cards (merchant_id, member_id);

-- Idempotency-Key: a POST's saved answer, per merchant, kept at least 24 h.
CREATE TABLE idempotency_keys (
    merchant_id     text NOT NULL REFERENCES merchants (id),
    key             text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    method          text NOT NULL,
    path            text NOT NULL,
    request_hash    bytea NOT NULL,          -- SHA-256 of method, path and body
    state           text NOT NULL CHECK (state IN ('in_flight', 'done')),
    response_status integer,
    response_body   bytea,
    response_type   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY (merchant_id, key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);

-- The outbox: an event is written in the transaction of the change it
-- reports; River jobs deliver it.
CREATE TABLE events (
    id          text PRIMARY KEY CHECK (id LIKE 'evt\_%'),
    seq         bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    merchant_id text NOT NULL REFERENCES merchants (id),
    type        text NOT NULL,
    data        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_merchant_seq ON events (merchant_id, seq);

CREATE TABLE webhook_endpoints (
    merchant_id text PRIMARY KEY REFERENCES merchants (id),
    url         text NOT NULL,
    events      text[],                -- null: every event type
    secret_ct   bytea NOT NULL,        -- signing secret, encrypted (AAD: merchant id)
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id text NOT NULL REFERENCES merchants (id),
    event_id    text NOT NULL REFERENCES events (id),
    url         text NOT NULL,
    attempt     integer NOT NULL,
    status_code integer,
    error       text,
    duration_ms integer NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id, attempt);

-- Audit rows name the API request they came from.
ALTER TABLE audit_log ADD COLUMN request_id text;
