-- audit_log is append-only in the database itself, not only by habit of
-- the code (issue 18; PCI DSS 10.3.2: audit logs are protected from
-- modification). Any UPDATE, DELETE or TRUNCATE of it fails, whoever
-- issues it, even one that would touch no row (the triggers are
-- per-statement). Nothing in quickpay changes or removes audit rows:
-- retention, when it comes, is an archive-then-drop of whole partitions
-- by an operator who first drops these triggers, in a change of its own.
-- A table owner or superuser can still drop or disable the triggers (or
-- set session_replication_role = replica); in production the service
-- connects as a role that owns nothing (docs/decisions.md).
CREATE OR REPLACE FUNCTION qp_audit_log_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE OR REPLACE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION qp_audit_log_append_only();
CREATE OR REPLACE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION qp_audit_log_append_only();
