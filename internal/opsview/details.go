package opsview

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// Each detail reads one row by its id, whichever merchant it belongs to.
// Error: ErrNotFound when no row has the id.

const merchantCols = `id, name, scopes, client_id, retry_days, failed_logins, locked_until, disabled_at, created_at`

func scanMerchant(row pgx.CollectableRow) (Merchant, error) {
	var m Merchant
	err := row.Scan(&m.ID, &m.Name, &m.Scopes, &m.ClientID, &m.RetryDays, &m.FailedLogins, &m.LockedUntil, &m.DisabledAt, &m.CreatedAt)
	m.LockedUntil, m.DisabledAt = utcp(m.LockedUntil), utcp(m.DisabledAt)
	m.CreatedAt = m.CreatedAt.UTC()
	return m, err
}

// Merchant returns the merchant id.
func (r *Reader) Merchant(ctx context.Context, id string) (Merchant, error) {
	return one(ctx, r, "merchant", scanMerchant, `SELECT `+merchantCols+` FROM merchants WHERE id = $1`, id)
}

const memberCols = `id, merchant_id, external_id, kind,
	CASE WHEN identity_verified THEN 'verified' WHEN id_number_fp IS NOT NULL THEN 'declared' ELSE 'none' END,
	coalesce(identity_binding_id, ''), created_at`

func scanMember(row pgx.CollectableRow) (Member, error) {
	var m Member
	err := row.Scan(&m.ID, &m.MerchantID, &m.ExternalID, &m.Kind, &m.Identity, &m.IdentityBindingID, &m.CreatedAt)
	m.CreatedAt = m.CreatedAt.UTC()
	return m, err
}

// Member returns the member id.
func (r *Reader) Member(ctx context.Context, id string) (Member, error) {
	return one(ctx, r, "member", scanMember, `SELECT `+memberCols+` FROM members WHERE id = $1`, id)
}

const cardCols = `id, merchant_id, member_id, binding_id, status, bank_code, bank_name, card_type,
	masked_pan, last4, created_at, updated_at`

func scanCard(row pgx.CollectableRow) (Card, error) {
	var c Card
	err := row.Scan(&c.ID, &c.MerchantID, &c.MemberID, &c.BindingID, &c.Status, &c.BankCode, &c.BankName,
		&c.CardType, &c.MaskedPAN, &c.Last4, &c.CreatedAt, &c.UpdatedAt)
	c.CreatedAt, c.UpdatedAt = c.CreatedAt.UTC(), c.UpdatedAt.UTC()
	return c, err
}

// Card returns the card id.
func (r *Reader) Card(ctx context.Context, id string) (Card, error) {
	return one(ctx, r, "card", scanCard, `SELECT `+cardCols+` FROM cards WHERE id = $1`, id)
}

// CardsByFingerprints returns the cards whose card number has one of the
// keyed fingerprints fps (cards.pan_fp; the caller computes them in the
// HSM, one per fingerprint key version it wants to match), every merchant's
// and every status, newest first. None is an empty slice, not an error.
func (r *Reader) CardsByFingerprints(ctx context.Context, fps [][]byte) ([]Card, error) {
	if len(fps) == 0 {
		return nil, nil
	}
	return all(ctx, r, "cards by fingerprint", scanCard,
		`SELECT `+cardCols+` FROM cards WHERE pan_fp = ANY ($1) ORDER BY created_at DESC, id DESC LIMIT $2`,
		fps, MaxLimit)
}

const bindingCols = `id, merchant_id, coalesce(member_id, ''), coalesce(external_user_id, ''), status,
	bank_code, bank_name, card_type, masked_pan, last4, coalesce(card_id, ''), coalesce(failure_code, ''),
	coalesce(bank_failure_code, ''), otp_sends, otp_attempts, otp_expires_at, created_at, updated_at`

func scanBinding(row pgx.CollectableRow) (Binding, error) {
	var b Binding
	err := row.Scan(&b.ID, &b.MerchantID, &b.MemberID, &b.ExternalUserID, &b.Status, &b.BankCode, &b.BankName,
		&b.CardType, &b.MaskedPAN, &b.Last4, &b.CardID, &b.FailureCode, &b.BankFailureCode, &b.OTPSends,
		&b.OTPAttempts, &b.OTPExpiresAt, &b.CreatedAt, &b.UpdatedAt)
	b.OTPExpiresAt, b.CreatedAt, b.UpdatedAt = b.OTPExpiresAt.UTC(), b.CreatedAt.UTC(), b.UpdatedAt.UTC()
	return b, err
}

// Binding returns the binding id.
func (r *Reader) Binding(ctx context.Context, id string) (Binding, error) {
	return one(ctx, r, "binding", scanBinding, `SELECT `+bindingCols+` FROM bindings WHERE id = $1`, id)
}

const mandateCols = `id, merchant_id, member_id, card_id, reference, description, amount_type,
	coalesce(amount, 0), coalesce(max_amount, 0), currency, interval, coalesce(day_of_month, 0),
	coalesce(weekday, 0), start_date, end_date, coalesce(max_charges, 0), timezone, notice_days, status,
	coalesce(status_reason, ''), coalesce(next_period, ''), next_charge_date, charges_count, created_at, updated_at`

func scanMandate(row pgx.CollectableRow) (Mandate, error) {
	var m Mandate
	err := row.Scan(&m.ID, &m.MerchantID, &m.MemberID, &m.CardID, &m.Reference, &m.Description, &m.AmountType,
		&m.Amount, &m.MaxAmount, &m.Currency, &m.Interval, &m.DayOfMonth, &m.Weekday, &m.StartDate, &m.EndDate,
		&m.MaxCharges, &m.Timezone, &m.NoticeDays, &m.Status, &m.StatusReason, &m.NextPeriod, &m.NextChargeDate,
		&m.ChargesCount, &m.CreatedAt, &m.UpdatedAt)
	m.CreatedAt, m.UpdatedAt = m.CreatedAt.UTC(), m.UpdatedAt.UTC()
	return m, err
}

// Mandate returns the mandate id.
func (r *Reader) Mandate(ctx context.Context, id string) (Mandate, error) {
	return one(ctx, r, "mandate", scanMandate, `SELECT `+mandateCols+` FROM mandates WHERE id = $1`, id)
}

// chargeBank is the bank of charge c: its card's. A scalar subquery, not
// a join, so that a page of charges filtered by bank walks the charges in
// their order and looks up each one's card until the page is full; a join
// lets the planner hash every card of the bank first.
const chargeBank = `(SELECT k.bank_code FROM cards k WHERE k.id = c.card_id)`

// chargeCols reads charges c with their bank.
const chargeCols = `c.id, c.merchant_id, c.mandate_id, c.card_id, ` + chargeBank + `, c.period, c.charge_date,
	c.amount, c.currency, c.description, c.status, coalesce(c.failure_code, ''), coalesce(c.bank_reference, ''),
	c.retries, c.attempts_count, c.amount_refunded, c.amount_refund_held, c.next_attempt_at, c.notice_at,
	c.notice_sent_at, c.created_at, c.updated_at`

func scanCharge(row pgx.CollectableRow) (Charge, error) {
	var c Charge
	err := row.Scan(&c.ID, &c.MerchantID, &c.MandateID, &c.CardID, &c.BankCode, &c.Period, &c.ChargeDate,
		&c.Amount, &c.Currency, &c.Description, &c.Status, &c.FailureCode, &c.BankReference, &c.Retries,
		&c.AttemptsCount, &c.AmountRefunded, &c.AmountRefundHeld, &c.NextAttemptAt, &c.NoticeAt,
		&c.NoticeSentAt, &c.CreatedAt, &c.UpdatedAt)
	c.NextAttemptAt, c.NoticeAt, c.NoticeSentAt = utcp(c.NextAttemptAt), utcp(c.NoticeAt), utcp(c.NoticeSentAt)
	c.CreatedAt, c.UpdatedAt = c.CreatedAt.UTC(), c.UpdatedAt.UTC()
	return c, err
}

const attemptCols = `order_no, merchant_id, charge_id, card_id, seq, bank_code, amount, bank_amount, status,
	coalesce(failure_code, ''), coalesce(bank_result, ''), coalesce(bank_txn_no, ''), queries, bank_day,
	created_at, finished_at`

func scanAttempt(row pgx.CollectableRow) (Attempt, error) {
	var a Attempt
	err := row.Scan(&a.OrderNo, &a.MerchantID, &a.ChargeID, &a.CardID, &a.Seq, &a.BankCode, &a.Amount,
		&a.BankAmount, &a.Status, &a.FailureCode, &a.BankResult, &a.BankTxnNo, &a.Queries, &a.BankDay,
		&a.CreatedAt, &a.FinishedAt)
	a.CreatedAt, a.FinishedAt = a.CreatedAt.UTC(), utcp(a.FinishedAt)
	return a, err
}

// Charge returns the charge id with its attempts, first first.
func (r *Reader) Charge(ctx context.Context, id string) (ChargeDetail, error) {
	c, err := one(ctx, r, "charge", scanCharge,
		`SELECT `+chargeCols+` FROM charges c WHERE c.id = $1`, id)
	if err != nil {
		return ChargeDetail{}, err
	}
	attempts, err := all(ctx, r, "charge attempts", scanAttempt,
		`SELECT `+attemptCols+` FROM charge_attempts WHERE charge_id = $1 ORDER BY seq`, id)
	if err != nil {
		return ChargeDetail{}, err
	}
	return ChargeDetail{Charge: c, Attempts: attempts}, nil
}

const refundCols = `id, merchant_id, charge_id, mandate_id, card_id, bank_code, order_no, refund_no, amount,
	currency, reason, status, coalesce(failure_code, ''), coalesce(bank_result, ''), coalesce(bank_reference, ''),
	queries, sent_at, unknown_since, next_query_at, finished_at, created_at, updated_at`

func scanRefund(row pgx.CollectableRow) (Refund, error) {
	var f Refund
	err := row.Scan(&f.ID, &f.MerchantID, &f.ChargeID, &f.MandateID, &f.CardID, &f.BankCode, &f.OrderNo,
		&f.RefundNo, &f.Amount, &f.Currency, &f.Reason, &f.Status, &f.FailureCode, &f.BankResult,
		&f.BankReference, &f.Queries, &f.SentAt, &f.UnknownSince, &f.NextQueryAt, &f.FinishedAt,
		&f.CreatedAt, &f.UpdatedAt)
	f.SentAt, f.UnknownSince, f.NextQueryAt, f.FinishedAt = utcp(f.SentAt), utcp(f.UnknownSince), utcp(f.NextQueryAt), utcp(f.FinishedAt)
	f.CreatedAt, f.UpdatedAt = f.CreatedAt.UTC(), f.UpdatedAt.UTC()
	return f, err
}

// Refund returns the refund id.
func (r *Reader) Refund(ctx context.Context, id string) (Refund, error) {
	return one(ctx, r, "refund", scanRefund, `SELECT `+refundCols+` FROM refunds WHERE id = $1`, id)
}

// delivered is true when a delivery of event e answered 2xx. It is a
// scalar subquery, not EXISTS: the planner may run an EXISTS as one hash
// of every delivery, a full read of the table for a page of 50 events.
const delivered = `coalesce((SELECT true FROM webhook_deliveries d
	WHERE d.event_id = e.id AND d.status_code BETWEEN 200 AND 299 LIMIT 1), false)`

// eventCols reads events e, with whether a delivery answered 2xx.
const eventCols = `e.id, e.seq, e.merchant_id, e.type, e.data, ` + delivered + `, e.created_at`

func scanEvent(row pgx.CollectableRow) (Event, error) {
	var e Event
	err := row.Scan(&e.ID, &e.Seq, &e.MerchantID, &e.Type, &e.Data, &e.Delivered, &e.CreatedAt)
	e.CreatedAt = e.CreatedAt.UTC()
	return e, err
}

func scanDelivery(row pgx.CollectableRow) (Delivery, error) {
	var d Delivery
	var ms int64
	err := row.Scan(&d.ID, &d.Attempt, &d.URL, &d.StatusCode, &d.Error, &ms, &d.At)
	d.Duration, d.At = time.Duration(ms)*time.Millisecond, d.At.UTC()
	return d, err
}

// webhookJobOf finds the webhook delivery jobs naming an event (by the
// args' GIN index): a batch's event_ids, or a job from before batches,
// one event_id.
const webhookJobOf = `j.kind = 'webhook_deliver'
	AND (j.args @> jsonb_build_object('event_ids', jsonb_build_array($1::text))
	     OR j.args @> jsonb_build_object('event_id', $1::text))`

// Event returns the event id with its delivery attempts, first first, and
// the state of the latest job that has not completed delivering it.
func (r *Reader) Event(ctx context.Context, id string) (EventDetail, error) {
	e, err := one(ctx, r, "event", scanEvent, `SELECT `+eventCols+` FROM events e WHERE e.id = $1`, id)
	if err != nil {
		return EventDetail{}, err
	}
	ds, err := all(ctx, r, "webhook deliveries", scanDelivery,
		`SELECT id, attempt, url, coalesce(status_code, 0), coalesce(error, ''), duration_ms, at
		   FROM webhook_deliveries WHERE event_id = $1 ORDER BY attempt, id`, id)
	if err != nil {
		return EventDetail{}, err
	}
	d := EventDetail{Event: e, Deliveries: ds}
	var state string
	var at time.Time
	err = r.pool.QueryRow(ctx, `SELECT j.state::text, j.scheduled_at FROM river_job j
		WHERE `+webhookJobOf+` AND j.state <> 'completed' ORDER BY j.id DESC LIMIT 1`, id).Scan(&state, &at)
	switch {
	case err == nil:
		d.JobState = state
		if state == "scheduled" || state == "retryable" || state == "available" {
			at = at.UTC()
			d.NextRetryAt = &at
		}
	case errors.Is(err, pgx.ErrNoRows):
	default:
		return EventDetail{}, err
	}
	return d, nil
}

func utcp(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
