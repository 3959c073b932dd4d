-- Binding sessions: a merchant hands its user to quickpay's hosted page
-- (api/hosted, docs/hosted.md), which binds a card (and, with mandate
-- terms, takes the consent) without the merchant ever seeing card data.
-- Re-runnable.
--
-- The link's token is never stored: token_fp is its keyed fingerprint
-- (HSM HMAC, domain "binding_session_token"), found by the link. A session
-- is open until it completes or fails, and is no longer served after
-- expires_at; "expired" is a status only as read (open past expires_at), so
-- no job has to sweep sessions. mandate holds the POST /v1/mandates body
-- (without card_id) the merchant gave, validated when the session was
-- created: terms, not card data. binding_id and mandate_id name the
-- session's current binding and mandate attempts.
CREATE TABLE IF NOT EXISTS binding_sessions (
    id               text PRIMARY KEY CHECK (id LIKE 'bss\_%'),
    merchant_id      text NOT NULL REFERENCES merchants (id),
    token_fp         bytea NOT NULL,
    member_id        text,
    external_user_id text,
    return_url       text NOT NULL,
    mandate          jsonb,
    status           text NOT NULL CHECK (status IN ('open', 'completed', 'failed')),
    binding_id       text,
    card_id          text,
    mandate_id       text,
    failure_code     text,
    expires_at       timestamptz NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    CHECK (member_id IS NOT NULL OR external_user_id IS NOT NULL),
    CHECK ((status = 'failed') = (failure_code IS NOT NULL)),
    CHECK (status <> 'completed' OR (card_id IS NOT NULL AND member_id IS NOT NULL)),
    CHECK (status <> 'completed' OR mandate IS NULL OR mandate_id IS NOT NULL)
);
CREATE UNIQUE INDEX IF NOT EXISTS binding_sessions_token ON binding_sessions (token_fp);
