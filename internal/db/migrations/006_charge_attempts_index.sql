-- charge_attempts (charge_id) duplicated the leading column of the unique
-- (charge_id, seq) index: one index less to keep on every attempt written.
DROP INDEX charge_attempts_charge;
