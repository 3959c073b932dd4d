package opsview

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Every list is a keyset page (Page): newest first unless its doc says
// otherwise, a filter's empty field matching every row. Errors:
// ErrBadCursor for a Page.After this list did not make, else the
// database's. An empty list is no error.

// where collects a query's conditions and their arguments.
type where struct {
	conds []string
	args  []any
}

// arg adds v as an argument and returns its placeholder.
func (w *where) arg(v any) string {
	w.args = append(w.args, v)
	return "$" + strconv.Itoa(len(w.args))
}

func (w *where) and(cond string) { w.conds = append(w.conds, cond) }

func (w *where) sql() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}

// keyset describes a list's order: a time or a number, then (unless the
// first is unique) a unique text or number, and the direction.
type keyset struct {
	list     string
	first    string // created_at, seq, …
	second   string // id, order_no, …; "" when first is unique
	timed    bool   // first is a time (else a number)
	ascend   bool   // oldest first
	secondIs string // "text" or "bigint": the cast of the cursor's second value
}

// list reads one page of a query: sel and from make "SELECT sel FROM from",
// w its conditions; key gives a row's cursor.
func list[T any](ctx context.Context, r *Reader, k keyset, p Page, sel, from string, w *where,
	scan pgx.RowToFunc[T], key func(T) cursor) ([]T, string, error) {
	c, ok, err := decodeCursor(k.list, p.After, k.timed)
	if err != nil {
		return nil, "", err
	}
	op, dir := "<", "DESC"
	if k.ascend {
		op, dir = ">", "ASC"
	}
	if ok {
		var first any = c.n
		if k.timed {
			first = c.at
		}
		var second any = c.id
		if k.secondIs == "bigint" {
			n, err := strconv.ParseInt(c.id, 10, 64)
			if err != nil {
				return nil, "", ErrBadCursor
			}
			second = n
		}
		if k.second == "" {
			w.and(fmt.Sprintf("%s %s %s", k.first, op, w.arg(first)))
		} else {
			w.and(fmt.Sprintf("(%s, %s) %s (%s, %s)", k.first, k.second, op, w.arg(first), w.arg(second)))
		}
	}
	limit := p.limit()
	order := k.first + " " + dir
	if k.second != "" {
		order += ", " + k.second + " " + dir
	}
	sql := fmt.Sprintf("SELECT %s FROM %s%s ORDER BY %s LIMIT %d", sel, from, w.sql(), order, limit+1)
	rows, err := all(ctx, r, k.list, scan, sql, w.args...)
	if err != nil {
		return nil, "", err
	}
	rows, next := page(rows, limit, func(t T) cursor {
		c := key(t)
		c.list = k.list
		return c
	})
	return rows, next, nil
}

func timedKey(at time.Time, id string) cursor { return cursor{at: at, id: id} }

// Merchants lists every merchant.
func (r *Reader) Merchants(ctx context.Context, p Page) ([]Merchant, string, error) {
	k := keyset{list: "merchants", first: "created_at", second: "id", timed: true}
	return list(ctx, r, k, p, merchantCols, "merchants", &where{}, scanMerchant,
		func(m Merchant) cursor { return timedKey(m.CreatedAt, m.ID) })
}

// Members lists the members of merchantID ("" for every merchant's).
func (r *Reader) Members(ctx context.Context, merchantID string, p Page) ([]Member, string, error) {
	w := &where{}
	if merchantID != "" {
		w.and("merchant_id = " + w.arg(merchantID))
	}
	k := keyset{list: "members", first: "created_at", second: "id", timed: true}
	return list(ctx, r, k, p, memberCols, "members", w, scanMember,
		func(m Member) cursor { return timedKey(m.CreatedAt, m.ID) })
}

// CardFilter narrows Cards.
type CardFilter struct {
	MerchantID string
	MemberID   string
	Status     string
}

// Cards lists cards.
func (r *Reader) Cards(ctx context.Context, f CardFilter, p Page) ([]Card, string, error) {
	w := &where{}
	switch {
	case f.MemberID != "":
		// The member's merchant leads the member's index.
		m := w.arg(f.MemberID)
		w.and("merchant_id = (SELECT merchant_id FROM members WHERE id = " + m + ")")
		w.and("member_id = " + m)
		if f.MerchantID != "" {
			w.and("merchant_id = " + w.arg(f.MerchantID))
		}
	case f.MerchantID != "":
		w.and("merchant_id = " + w.arg(f.MerchantID))
	}
	if f.Status != "" {
		w.and("status = " + w.arg(f.Status))
	}
	k := keyset{list: "cards", first: "created_at", second: "id", timed: true}
	return list(ctx, r, k, p, cardCols, "cards", w, scanCard,
		func(c Card) cursor { return timedKey(c.CreatedAt, c.ID) })
}

// BindingFilter narrows Bindings.
type BindingFilter struct {
	MerchantID string
	MemberID   string
	Status     string
}

// Bindings lists bindings.
func (r *Reader) Bindings(ctx context.Context, f BindingFilter, p Page) ([]Binding, string, error) {
	w := &where{}
	if f.MemberID != "" {
		w.and("member_id = " + w.arg(f.MemberID))
	}
	if f.MerchantID != "" {
		w.and("merchant_id = " + w.arg(f.MerchantID))
	}
	if f.Status != "" {
		w.and("status = " + w.arg(f.Status))
	}
	k := keyset{list: "bindings", first: "created_at", second: "id", timed: true}
	return list(ctx, r, k, p, bindingCols, "bindings", w, scanBinding,
		func(b Binding) cursor { return timedKey(b.CreatedAt, b.ID) })
}

// MandateFilter narrows Mandates.
type MandateFilter struct {
	MerchantID string
	MemberID   string
	CardID     string
	Status     string
}

// Mandates lists mandates.
func (r *Reader) Mandates(ctx context.Context, f MandateFilter, p Page) ([]Mandate, string, error) {
	w := &where{}
	switch {
	case f.CardID != "":
		c := w.arg(f.CardID)
		w.and("merchant_id = (SELECT merchant_id FROM cards WHERE id = " + c + ")")
		w.and("card_id = " + c)
	case f.MemberID != "":
		m := w.arg(f.MemberID)
		w.and("merchant_id = (SELECT merchant_id FROM members WHERE id = " + m + ")")
	}
	if f.MemberID != "" {
		w.and("member_id = " + w.arg(f.MemberID))
	}
	if f.MerchantID != "" {
		w.and("merchant_id = " + w.arg(f.MerchantID))
	}
	if f.Status != "" {
		w.and("status = " + w.arg(f.Status))
	}
	k := keyset{list: "mandates", first: "created_at", second: "id", timed: true}
	return list(ctx, r, k, p, mandateCols, "mandates", w, scanMandate,
		func(m Mandate) cursor { return timedKey(m.CreatedAt, m.ID) })
}

// ChargeFilter narrows Charges. Day is a charge date (its year, month and
// day are read; the zone is not); Bank a card's bank code.
type ChargeFilter struct {
	MerchantID string
	MandateID  string
	Status     string
	Bank       string
	Day        time.Time
}

// Charges lists charges, with their card's bank.
func (r *Reader) Charges(ctx context.Context, f ChargeFilter, p Page) ([]Charge, string, error) {
	w := &where{}
	if f.MandateID != "" {
		m := w.arg(f.MandateID)
		w.and("c.merchant_id = (SELECT merchant_id FROM mandates WHERE id = " + m + ")")
		w.and("c.mandate_id = " + m)
	}
	if f.MerchantID != "" {
		w.and("c.merchant_id = " + w.arg(f.MerchantID))
	}
	if f.Status != "" {
		w.and("c.status = " + w.arg(f.Status))
	}
	if f.Bank != "" {
		w.and(chargeBank + " = " + w.arg(f.Bank))
	}
	if !f.Day.IsZero() {
		w.and("c.charge_date = " + w.arg(dateOf(f.Day)) + "::date")
	}
	k := keyset{list: "charges", first: "c.created_at", second: "c.id", timed: true}
	return list(ctx, r, k, p, chargeCols, "charges c", w, scanCharge,
		func(c Charge) cursor { return timedKey(c.CreatedAt, c.ID) })
}

// dateOf is t's calendar date as Postgres reads a date.
func dateOf(t time.Time) string { return t.Format(time.DateOnly) }

// RefundFilter narrows Refunds.
type RefundFilter struct {
	MerchantID string
	ChargeID   string
	Status     string
}

// Refunds lists refunds.
func (r *Reader) Refunds(ctx context.Context, f RefundFilter, p Page) ([]Refund, string, error) {
	w := &where{}
	if f.ChargeID != "" {
		c := w.arg(f.ChargeID)
		w.and("merchant_id = (SELECT merchant_id FROM charges WHERE id = " + c + ")")
		w.and("charge_id = " + c)
	}
	if f.MerchantID != "" {
		w.and("merchant_id = " + w.arg(f.MerchantID))
	}
	if f.Status != "" {
		w.and("status = " + w.arg(f.Status))
	}
	k := keyset{list: "refunds", first: "created_at", second: "id", timed: true}
	return list(ctx, r, k, p, refundCols, "refunds", w, scanRefund,
		func(f Refund) cursor { return timedKey(f.CreatedAt, f.ID) })
}

// EventFilter narrows Events.
type EventFilter struct {
	MerchantID string
	Type       string
}

// Events lists events, newest first (by their sequence).
func (r *Reader) Events(ctx context.Context, f EventFilter, p Page) ([]Event, string, error) {
	w := &where{}
	if f.MerchantID != "" {
		w.and("e.merchant_id = " + w.arg(f.MerchantID))
	}
	if f.Type != "" {
		w.and("e.type = " + w.arg(f.Type))
	}
	k := keyset{list: "events", first: "e.seq"}
	return list(ctx, r, k, p, eventCols, "events e", w, scanEvent,
		func(e Event) cursor { return cursor{n: e.Seq} })
}

// UnknownAttempts lists the charge attempts whose outcome is unknown,
// oldest first: each waits for a query or the bank's statement to settle
// it.
func (r *Reader) UnknownAttempts(ctx context.Context, p Page) ([]Attempt, string, error) {
	w := &where{}
	w.and("status = 'unknown'")
	k := keyset{list: "unknown", first: "created_at", second: "order_no", timed: true, ascend: true}
	return list(ctx, r, k, p, attemptCols, "charge_attempts", w, scanAttempt,
		func(a Attempt) cursor { return timedKey(a.CreatedAt, a.OrderNo) })
}

// MismatchFilter narrows Mismatches.
type MismatchFilter struct {
	Bank string
	// OpenOnly keeps the mismatches of each bank day's latest run.
	OpenOnly bool
}

// mismatchCols reads reconciliation_mismatches m; open: no later run of
// its bank and day.
const mismatchCols = `m.run_id, m.kind, m.bank_code, m.bank_day, m.order_no, coalesce(m.merchant_id, ''),
	m.bank_amount, m.our_amount,
	NOT EXISTS (SELECT 1 FROM reconciliation_runs l
	             WHERE l.bank_code = m.bank_code AND l.bank_day = m.bank_day AND l.id > m.run_id),
	m.created_at`

func scanMismatch(row pgx.CollectableRow) (Mismatch, error) {
	var m Mismatch
	err := row.Scan(&m.RunID, &m.Kind, &m.BankCode, &m.BankDay, &m.OrderNo, &m.MerchantID, &m.BankAmount,
		&m.OurAmount, &m.Open, &m.CreatedAt)
	m.CreatedAt = m.CreatedAt.UTC()
	return m, err
}

// Mismatches lists what reconciliation runs found, the latest run first.
func (r *Reader) Mismatches(ctx context.Context, f MismatchFilter, p Page) ([]Mismatch, string, error) {
	w := &where{}
	if f.Bank != "" {
		w.and("m.bank_code = " + w.arg(f.Bank))
	}
	if f.OpenOnly {
		w.and(`NOT EXISTS (SELECT 1 FROM reconciliation_runs l
		        WHERE l.bank_code = m.bank_code AND l.bank_day = m.bank_day AND l.id > m.run_id)`)
	}
	k := keyset{list: "mismatches", first: "m.run_id", second: "m.order_no"}
	return list(ctx, r, k, p, mismatchCols, "reconciliation_mismatches m", w, scanMismatch,
		func(m Mismatch) cursor { return cursor{n: m.RunID, id: m.OrderNo} })
}

// backlogJobs expands the webhook delivery jobs that have not completed
// (j) into the events each names, in its order (x.event_id, x.n): a
// batch's event_ids, after one event_id of a job from before batches.
const backlogJobs = `river_job j
	CROSS JOIN LATERAL jsonb_array_elements_text(
	    CASE WHEN j.args ? 'event_id' THEN jsonb_build_array(j.args->'event_id') ELSE '[]'::jsonb END
	    || coalesce(j.args->'event_ids', '[]'::jsonb)) WITH ORDINALITY AS x(event_id, n)`

// backlogWhere keeps the jobs that have not completed (waiting, or given
// up), and their events e with no 2xx answer recorded.
const backlogWhere = `j.kind = 'webhook_deliver'
	AND j.state IN ('available', 'pending', 'scheduled', 'retryable', 'running', 'discarded', 'cancelled')
	AND NOT ` + delivered

const backlogCols = `e.id, e.seq, e.merchant_id, e.type, e.created_at,
	(SELECT count(*) FROM webhook_deliveries d WHERE d.event_id = e.id),
	coalesce((SELECT d.status_code FROM webhook_deliveries d WHERE d.event_id = e.id ORDER BY d.attempt DESC, d.id DESC LIMIT 1), 0),
	coalesce((SELECT d.error FROM webhook_deliveries d WHERE d.event_id = e.id ORDER BY d.attempt DESC, d.id DESC LIMIT 1), ''),
	j.id, x.n, j.state::text, j.scheduled_at`

func scanUndelivered(row pgx.CollectableRow) (Undelivered, error) {
	var u Undelivered
	var at time.Time
	err := row.Scan(&u.EventID, &u.Seq, &u.MerchantID, &u.Type, &u.CreatedAt, &u.Attempts, &u.LastStatus,
		&u.LastError, &u.JobID, &u.position, &u.JobState, &at)
	u.CreatedAt = u.CreatedAt.UTC()
	switch u.JobState {
	case "available", "scheduled", "retryable":
		at = at.UTC()
		u.NextRetryAt = &at
	}
	return u, err
}

// Backlog lists the webhook backlog (Undelivered) job by job, oldest job
// first, each job's events in its order. A page reads only the jobs it
// shows, however long the backlog.
func (r *Reader) Backlog(ctx context.Context, p Page) ([]Undelivered, string, error) {
	w := &where{}
	w.and(backlogWhere)
	k := keyset{list: "backlog", first: "j.id", second: "x.n", secondIs: "bigint", ascend: true}
	return list(ctx, r, k, p, backlogCols, backlogJobs+` JOIN events e ON e.id = x.event_id`, w, scanUndelivered,
		func(u Undelivered) cursor { return cursor{n: u.JobID, id: strconv.FormatInt(u.position, 10)} })
}

// AuditFilter narrows Audit: From is inclusive, To exclusive, both
// optional.
type AuditFilter struct {
	Actor      string
	Action     string
	Subject    string
	MerchantID string
	From, To   time.Time
}

func scanAudit(row pgx.CollectableRow) (AuditEntry, error) {
	var a AuditEntry
	err := row.Scan(&a.ID, &a.At, &a.MerchantID, &a.Actor, &a.Action, &a.Subject, &a.RequestID, &a.Details)
	a.At = a.At.UTC()
	return a, err
}

// Audit lists the audit trail, newest first.
func (r *Reader) Audit(ctx context.Context, f AuditFilter, p Page) ([]AuditEntry, string, error) {
	w := &where{}
	if f.Actor != "" {
		w.and("actor = " + w.arg(f.Actor))
	}
	if f.Action != "" {
		w.and("action = " + w.arg(f.Action))
	}
	if f.Subject != "" {
		w.and("subject = " + w.arg(f.Subject))
	}
	if f.MerchantID != "" {
		w.and("merchant_id = " + w.arg(f.MerchantID))
	}
	if !f.From.IsZero() {
		w.and("at >= " + w.arg(f.From))
	}
	if !f.To.IsZero() {
		w.and("at < " + w.arg(f.To))
	}
	k := keyset{list: "audit", first: "at", second: "id", timed: true, secondIs: "bigint"}
	return list(ctx, r, k, p, `id, at, coalesce(merchant_id, ''), actor, action, coalesce(subject, ''),
		coalesce(request_id, ''), details`, "audit_log", w, scanAudit,
		func(a AuditEntry) cursor { return timedKey(a.At, strconv.FormatInt(a.ID, 10)) })
}

// KeyVersions returns every key purpose's policy with its versions, newest
// version first.
func (r *Reader) KeyVersions(ctx context.Context) ([]KeyPolicy, error) {
	ps, err := all(ctx, r, "key policies", func(row pgx.CollectableRow) (KeyPolicy, error) {
		var p KeyPolicy
		err := row.Scan(&p.Purpose, &p.CurrentVersion, &p.MinDecryptionVersion, &p.UpdatedAt)
		p.UpdatedAt = p.UpdatedAt.UTC()
		return p, err
	}, `SELECT purpose, current_version, min_decryption_version, updated_at FROM key_policies ORDER BY purpose`)
	if err != nil {
		return nil, err
	}
	type version struct {
		purpose string
		KeyVersion
	}
	vs, err := all(ctx, r, "key versions", func(row pgx.CollectableRow) (version, error) {
		var v version
		err := row.Scan(&v.purpose, &v.Version, &v.Label, &v.CreatedAt)
		v.CreatedAt = v.CreatedAt.UTC()
		return v, err
	}, `SELECT purpose, version, label, created_at FROM key_versions ORDER BY purpose, version DESC`)
	if err != nil {
		return nil, err
	}
	for i := range ps {
		for _, v := range vs {
			if v.purpose == ps[i].Purpose {
				ps[i].Versions = append(ps[i].Versions, v.KeyVersion)
			}
		}
	}
	return ps, nil
}
