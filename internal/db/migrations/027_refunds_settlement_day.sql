-- A settlement file takes the refunds of its day by the bank's finish time
-- alone, whenever quickpay booked them: a bank clock ahead of quickpay's
-- must not drop a refund from every file. This index serves that range;
-- refunds_settlement (migration 025) serves the late ones, by booking time.
CREATE INDEX IF NOT EXISTS refunds_settlement_day ON refunds (finished_at) WHERE status = 'succeeded';
