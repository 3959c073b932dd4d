-- limit_events is an unlogged table: its writes skip the WAL, so a take
-- commits without waiting for a WAL flush (measured with pgbench on 2
-- cores: a one-key insert 10,500 → 35,000 a second). It is a meter, not a
-- record: after a crash of the PostgreSQL server (not a clean restart)
-- the table comes back empty, and a standby promoted after a failover
-- starts it empty, so every window starts again; an attacker gains at most
-- one window's allowance per server crash, which an attacker cannot cause
-- at will. What must survive a crash (bindings, OTP counts, audit rows)
-- stays in logged tables (docs/decisions.md "Abuse limits").
ALTER TABLE limit_events SET UNLOGGED;
