-- Key versions and the audit trail.
--
-- The keys themselves live in the HSM and never leave it. These tables record
-- which versions exist, which one new writes use (current_version), and the
-- oldest one decryption still accepts (min_decryption_version), so every
-- process agrees on them and rotation is a transaction.
CREATE TABLE key_policies (
    purpose                text PRIMARY KEY CHECK (purpose IN ('data', 'fp', 'jwt')),
    current_version        integer NOT NULL CHECK (current_version >= 1),
    min_decryption_version integer NOT NULL DEFAULT 1,
    updated_at             timestamptz NOT NULL DEFAULT now(),
    CHECK (min_decryption_version BETWEEN 1 AND current_version)
);

CREATE TABLE key_versions (
    purpose    text NOT NULL REFERENCES key_policies (purpose),
    version    integer NOT NULL CHECK (version >= 1),
    label      text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (purpose, version)
);

-- Append-only record of security-relevant actions: key rotation, detokenize,
-- and (later) logins, binds, OTP sends and tries. details never holds a
-- sensitive value.
CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    merchant_id text,
    actor       text NOT NULL,
    action      text NOT NULL,
    subject     text,
    details     jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_merchant_at ON audit_log (merchant_id, at);
CREATE INDEX audit_log_action_at ON audit_log (action, at);

-- Ciphertexts and fingerprints made by vaultkeys start with a format byte and
-- a big-endian uint32 key version; this reads the version so re-encryption can
-- find rows below the current one.
CREATE FUNCTION qp_key_version(b bytea) RETURNS integer
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT (get_byte(b, 1) << 24) | (get_byte(b, 2) << 16) | (get_byte(b, 3) << 8) | get_byte(b, 4) $$;
