package opsview_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/quickpay/quickpay/internal/ids"
)

// world is a merchant made by hand, with a member, a card at each of two
// banks (ICBC, CCB) and a mandate on each, for rows whose every field a
// test decides.
type world struct {
	t        *testing.T
	pool     *pgxpool.Pool
	merchant string
	member   string
	cards    map[string]string // bank → card
	mandates map[string]string // bank → mandate
}

func (w world) exec(sql string, args ...any) {
	w.t.Helper()
	if _, err := w.pool.Exec(context.Background(), sql, args...); err != nil {
		w.t.Fatal(err)
	}
}

func newWorld(t *testing.T, pool *pgxpool.Pool) world {
	t.Helper()
	w := world{t: t, pool: pool, merchant: ids.New("mch"), member: ids.New("mem"),
		cards: map[string]string{}, mandates: map[string]string{}}
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w.exec(`INSERT INTO merchants (id, name, scopes, client_id, client_secret_hash, created_at)
		VALUES ($1, 'Hand-made', '{bind}', $2, 'x', $3)`, w.merchant, ids.New("cli"), at)
	w.exec(`INSERT INTO members (id, merchant_id, external_id, kind, created_at) VALUES ($1, $2, 'u1', 'explicit', $3)`,
		w.member, w.merchant, at)
	for _, bank := range []string{"ICBC", "CCB"} {
		bnd, card, mdt := ids.New("bnd"), ids.New("card"), ids.New("mdt")
		w.exec(`INSERT INTO bindings (id, merchant_id, member_id, status, bank_code, bank_name, card_type, masked_pan, last4,
			    pan_ct, pan_fp, holder_name_ct, holder_name_fp, id_number_ct, id_number_fp, phone_ct,
			    otp_expires_at, otp_last_sent_at, card_id, created_at, updated_at)
			VALUES ($1, $2, $3, 'bound', $4, $4, 'debit', '622202******0001', '0001', '\x01', $5, '\x01', '\x01', '\x01',
			        '\x01', '\x01', $6, $6, $7, $6, $6)`, bnd, w.merchant, w.member, bank, []byte(card), at, card)
		w.exec(`INSERT INTO cards (id, merchant_id, member_id, binding_id, status, bank_code, bank_name, card_type,
			    masked_pan, last4, pan_ct, pan_fp, agreement_ct, created_at, updated_at)
			VALUES ($1, $2, $3, $4, 'active', $5, $5, 'debit', '622202******0001', '0001', '\x01', $6, '\x01', $7, $7)`,
			card, w.merchant, w.member, bnd, bank, []byte(card), at)
		w.exec(`INSERT INTO mandates (id, merchant_id, member_id, card_id, reference, amount_type, max_amount, currency,
			    interval, day_of_month, start_date, timezone, status, otp_expires_at, otp_last_sent_at, created_at, updated_at)
			VALUES ($1, $2, $3, $4, 'r', 'variable', 1000000, 'CNY', 'month', 1, '2026-01-01', 'Asia/Shanghai', 'active',
			        $5, $5, $5, $5)`, mdt, w.merchant, w.member, card, at)
		w.cards[bank], w.mandates[bank] = card, mdt
	}
	return w
}

// charge writes a charge of bank's mandate due on date ("2027-03-10") and
// returns its id.
func (w world) charge(bank, date, status string, amount int64) string {
	w.t.Helper()
	id := ids.New("chg")
	var next *time.Time
	if status == "scheduled" || status == "retry_scheduled" {
		n := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
		next = &n
	}
	var code *string
	if status == "failed" {
		c := "insufficient_funds"
		code = &c
	}
	at := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	w.exec(`INSERT INTO charges (id, merchant_id, mandate_id, card_id, period, charge_date, amount, currency, status,
		    next_attempt_at, failure_code, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $1, $5::date, $6, 'CNY', $7, $8, $9, $10, $10)`,
		id, w.merchant, w.mandates[bank], w.cards[bank], date, amount, status, next, code, at)
	return id
}

// attempt writes an attempt of charge at bank, made at at, and returns its
// order number.
func (w world) attempt(charge, bank, status string, at time.Time) string {
	w.t.Helper()
	orderNo := "QPHAND" + ids.New("o")[2:]
	var bankAmount *int64
	if status == "amount_mismatch" {
		n := int64(2)
		bankAmount = &n
	}
	w.exec(`INSERT INTO charge_attempts (order_no, merchant_id, charge_id, card_id, seq, bank_code, amount, status,
		    bank_amount, bank_day, created_at)
		VALUES ($1, $2, $3, $4, (SELECT count(*) + 1 FROM charge_attempts WHERE charge_id = $3), $5, 1, $6, $7,
		        ($8::timestamptz AT TIME ZONE 'Asia/Shanghai')::date, $8::timestamptz)`,
		orderNo, w.merchant, charge, w.cards[bank], bank, status, bankAmount, at)
	return orderNo
}

// refund writes a refund of charge's succeeded attempt orderNo, created
// at at.
func (w world) refund(charge, orderNo, bank, status string, amount int64, at time.Time) string {
	w.t.Helper()
	id := ids.New("rfd")
	var code *string
	var finished *time.Time
	if status == "failed" {
		c := "refund_declined"
		code = &c
	}
	if status != "pending" {
		finished = &at
	}
	w.exec(`INSERT INTO refunds (id, merchant_id, charge_id, mandate_id, card_id, bank_code, order_no, refund_no, amount,
		    currency, status, failure_code, job_id, created_at, updated_at, finished_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $1, $8, 'CNY', $9, $10, 0, $11, $11, $12)`,
		id, w.merchant, charge, w.mandates[bank], w.cards[bank], bank, orderNo, amount, status, code, at, finished)
	return id
}

// event writes an event created at at and returns its id.
func (w world) event(at time.Time) string {
	w.t.Helper()
	id := ids.New("evt")
	w.exec(`INSERT INTO events (id, merchant_id, type, data, created_at) VALUES ($1, $2, 'charge.succeeded', '{}', $3)`,
		id, w.merchant, at)
	return id
}

// delivery records an attempt to deliver event answered with status.
func (w world) delivery(event string, attempt, status int, at time.Time) {
	w.t.Helper()
	w.exec(`INSERT INTO webhook_deliveries (merchant_id, event_id, url, attempt, status_code, duration_ms, at)
		VALUES ($1, $2, 'https://hooks.example.com', $3, $4, 10, $5)`, w.merchant, event, attempt, status, at)
}

// job writes a webhook delivery job of events in state.
func (w world) job(state string, events ...string) {
	w.t.Helper()
	var finalized *time.Time
	switch state {
	case "completed", "discarded", "cancelled":
		f := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		finalized = &f
	}
	w.exec(`INSERT INTO river_job (state, max_attempts, args, kind, queue, finalized_at, scheduled_at)
		VALUES ($1, 25, jsonb_build_object('merchant_id', $2::text, 'event_ids', $3::text[]), 'webhook_deliver', 'webhooks',
		        $4, '2030-01-01')`, state, w.merchant, events, finalized)
}
