-- Operators: the institution's staff who use the operator console
-- (DESIGN.md "Operator console", internal/operators), their cookie
-- sessions, and merchants that an operator disabled. Re-runnable: tables
-- and indexes IF NOT EXISTS, each CHECK dropped IF EXISTS and added again,
-- so a run over its own result ends with the constraints written here.
--
-- An operator's password is stored only as a bcrypt hash and its TOTP
-- secret only encrypted under the data key (totp_secret_ct, AAD bound to
-- the operator id; re-encrypted after a data key rotation like every other
-- ciphertext). last_totp_step is the time step of the last code accepted:
-- a code is accepted only for a later step, so once. failed_logins counts
-- failed logins in a row (and logins in flight, which reserve theirs);
-- reaching the cap sets locked_until (PCI DSS 8.3.4). Operators rows are
-- updated in place; what happened to them is in audit_log, which is
-- append-only.
CREATE TABLE IF NOT EXISTS operators (
    id             text PRIMARY KEY,
    name           text NOT NULL,
    role           text NOT NULL,
    status         text NOT NULL DEFAULT 'active',
    password_hash  text NOT NULL,
    totp_secret_ct bytea NOT NULL,
    last_totp_step bigint NOT NULL DEFAULT 0,
    failed_logins  integer NOT NULL DEFAULT 0,
    locked_until   timestamptz,
    created_at     timestamptz NOT NULL,
    last_login_at  timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS operators_name_key ON operators (name);
ALTER TABLE operators DROP CONSTRAINT IF EXISTS operators_id_check;
ALTER TABLE operators ADD CONSTRAINT operators_id_check CHECK (id LIKE 'op\_%');
ALTER TABLE operators DROP CONSTRAINT IF EXISTS operators_role_check;
ALTER TABLE operators ADD CONSTRAINT operators_role_check CHECK (role IN ('viewer', 'operator', 'admin'));
ALTER TABLE operators DROP CONSTRAINT IF EXISTS operators_status_check;
ALTER TABLE operators ADD CONSTRAINT operators_status_check CHECK (status IN ('active', 'disabled'));
ALTER TABLE operators DROP CONSTRAINT IF EXISTS operators_failed_logins_check;
ALTER TABLE operators ADD CONSTRAINT operators_failed_logins_check CHECK (failed_logins >= 0);
ALTER TABLE operators DROP CONSTRAINT IF EXISTS operators_last_totp_step_check;
ALTER TABLE operators ADD CONSTRAINT operators_last_totp_step_check CHECK (last_totp_step >= 0);

-- A session's cookie holds a 32-byte random token; the table holds only
-- its SHA-256, so a read of the table lets no one in. A session ends at
-- logout, at a disable or reset of its operator (ended_at), or when its
-- idle or absolute timeout passes (read from last_seen_at and created_at;
-- no job sweeps them).
CREATE TABLE IF NOT EXISTS operator_sessions (
    id           text PRIMARY KEY,
    operator_id  text NOT NULL REFERENCES operators (id),
    token_hash   bytea NOT NULL,
    csrf_token   text NOT NULL,
    created_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    source       text,
    ended_at     timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS operator_sessions_token_hash_key ON operator_sessions (token_hash);
CREATE INDEX IF NOT EXISTS operator_sessions_live ON operator_sessions (operator_id) WHERE ended_at IS NULL;
ALTER TABLE operator_sessions DROP CONSTRAINT IF EXISTS operator_sessions_id_check;
ALTER TABLE operator_sessions ADD CONSTRAINT operator_sessions_id_check CHECK (id LIKE 'ops\_%');
ALTER TABLE operator_sessions DROP CONSTRAINT IF EXISTS operator_sessions_token_hash_check;
ALTER TABLE operator_sessions ADD CONSTRAINT operator_sessions_token_hash_check CHECK (length(token_hash) = 32);

-- A merchant an operator disabled gets no token and its live tokens are
-- refused (api.Auth); NULL while it is enabled.
ALTER TABLE merchants ADD COLUMN IF NOT EXISTS disabled_at timestamptz;
