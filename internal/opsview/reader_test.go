package opsview_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/ids"
	"github.com/quickpay/quickpay/internal/opsview"
)

func TestSeed(t *testing.T) {
	s, _, pool := seed(t)
	for _, c := range []struct {
		what string
		sql  string
		want int
	}{
		{"charges", `SELECT count(*) FROM charges WHERE id LIKE 'chg\_' || $1 || '%'`, s.Charges},
		{"attempts", `SELECT count(*) FROM charge_attempts a JOIN charges c ON c.id = a.charge_id WHERE c.id LIKE 'chg\_' || $1 || '%'`, s.Attempts},
		{"mandates", `SELECT count(*) FROM mandates WHERE id LIKE 'mdt\_' || $1 || '%'`, s.Mandates},
		{"refunds", `SELECT count(*) FROM refunds WHERE id LIKE 'rfd\_' || $1 || '%'`, s.Refunds},
		{"events", `SELECT count(*) FROM events WHERE id LIKE 'evt\_' || $1 || '%'`, s.Events},
		{"audit", `SELECT count(*) FROM audit_log WHERE actor LIKE 'op\_' || $1 || '%'`, s.Audit},
	} {
		var n int
		if err := pool.QueryRow(context.Background(), c.sql, s.Tag).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != c.want || n == 0 {
			t.Errorf("%s: %d rows, Seeded says %d", c.what, n, c.want)
		}
	}
	for _, id := range []string{s.Merchants[0], s.MemberID, s.BindingID, s.CardID, s.MandateID, s.ChargeID,
		s.RefundID, s.EventID, s.BacklogEvent, s.UnknownCharge} {
		prefix, _, _ := strings.Cut(id, "_")
		if !ids.Valid(prefix, id) {
			t.Errorf("seeded id %q is not of the form ids.New makes", id)
		}
	}
	if s.Backlog == 0 || s.Mismatches == 0 {
		t.Errorf("seed wrote %d backlog events and %d mismatches, want some of each", s.Backlog, s.Mismatches)
	}
}

func TestDetails(t *testing.T) {
	s, r, _ := seed(t)
	ctx := context.Background()

	m, err := r.Merchant(ctx, s.Merchants[0])
	if err != nil || m.ID != s.Merchants[0] || m.Name == "" || m.DisabledAt != nil {
		t.Errorf("Merchant = %+v, %v", m, err)
	}
	mem, err := r.Member(ctx, s.MemberID)
	if err != nil || mem.ID != s.MemberID || mem.MerchantID != s.Merchants[0] || mem.ExternalID == "" {
		t.Errorf("Member = %+v, %v", mem, err)
	}
	switch mem.Identity {
	case opsview.IdentityNone, opsview.IdentityDeclared, opsview.IdentityVerified:
	default:
		t.Errorf("member identity %q", mem.Identity)
	}
	card, err := r.Card(ctx, s.CardID)
	if err != nil || card.ID != s.CardID || card.MemberID != s.MemberID || card.BindingID != s.BindingID ||
		!strings.Contains(card.MaskedPAN, "******") || len(card.Last4) != 4 || !strings.HasSuffix(card.MaskedPAN, card.Last4) {
		t.Errorf("Card = %+v, %v", card, err)
	}
	b, err := r.Binding(ctx, s.BindingID)
	if err != nil || b.ID != s.BindingID || b.CardID != s.CardID || b.MemberID != s.MemberID || b.Status != "bound" {
		t.Errorf("Binding = %+v, %v", b, err)
	}
	md, err := r.Mandate(ctx, s.MandateID)
	if err != nil || md.ID != s.MandateID || md.CardID != s.CardID || md.Amount <= 0 || md.DayOfMonth == 0 || md.Currency != "CNY" {
		t.Errorf("Mandate = %+v, %v", md, err)
	}

	c, err := r.Charge(ctx, s.ChargeID)
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != s.ChargeID || c.Status != "succeeded" || c.BankCode != card.BankCode && c.CardID == s.CardID {
		t.Errorf("Charge = %+v", c.Charge)
	}
	if len(c.Attempts) != 2 || c.Attempts[0].Seq != 1 || c.Attempts[0].Status != "failed" ||
		c.Attempts[1].Status != "succeeded" || c.Attempts[1].OrderNo != s.OrderNo || c.Attempts[1].BankTxnNo != s.BankTxnNo ||
		c.Attempts[1].FinishedAt == nil || c.BankReference != s.BankTxnNo {
		t.Errorf("charge %s attempts = %+v, want a failed one then the succeeded %s", c.ID, c.Attempts, s.OrderNo)
	}

	rf, err := r.Refund(ctx, s.RefundID)
	if err != nil || rf.ID != s.RefundID || rf.RefundNo != s.RefundNo || rf.Amount <= 0 {
		t.Errorf("Refund = %+v, %v", rf, err)
	}

	ev, err := r.Event(ctx, s.EventID)
	if err != nil || ev.ID != s.EventID || !ev.Delivered || len(ev.Deliveries) != 1 || ev.Deliveries[0].StatusCode != 200 ||
		ev.JobState != "" || ev.NextRetryAt != nil || !strings.Contains(string(ev.Data), s.ChargeID) {
		t.Errorf("Event = %+v, %v", ev, err)
	}
	back, err := r.Event(ctx, s.BacklogEvent)
	if err != nil || back.Delivered || len(back.Deliveries) != 1 || back.Deliveries[0].StatusCode != 500 ||
		back.JobState != "retryable" || back.NextRetryAt == nil {
		t.Errorf("backlog Event = %+v, %v", back, err)
	}

	t.Run("not found", func(t *testing.T) {
		for _, f := range []func() error{
			func() error { _, err := r.Merchant(ctx, ids.New("mch")); return err },
			func() error { _, err := r.Member(ctx, ids.New("mem")); return err },
			func() error { _, err := r.Card(ctx, ids.New("card")); return err },
			func() error { _, err := r.Binding(ctx, ids.New("bnd")); return err },
			func() error { _, err := r.Mandate(ctx, ids.New("mdt")); return err },
			func() error { _, err := r.Charge(ctx, ids.New("chg")); return err },
			func() error { _, err := r.Refund(ctx, ids.New("rfd")); return err },
			func() error { _, err := r.Event(ctx, ids.New("evt")); return err },
		} {
			if err := f(); !errors.Is(err, opsview.ErrNotFound) {
				t.Errorf("unknown id: %v, want ErrNotFound", err)
			}
		}
	})
}

func TestCardsByFingerprints(t *testing.T) {
	s, r, _ := seed(t)
	ctx := context.Background()
	cards, err := r.CardsByFingerprints(ctx, [][]byte{[]byte("no such fingerprint"), s.PANFP})
	if err != nil || len(cards) != 1 || cards[0].ID != s.CardID {
		t.Fatalf("CardsByFingerprints = %+v, %v, want card %s", cards, err, s.CardID)
	}
	if cards, err := r.CardsByFingerprints(ctx, [][]byte{[]byte("no such fingerprint")}); err != nil || len(cards) != 0 {
		t.Errorf("unknown fingerprint: %+v, %v", cards, err)
	}
	if cards, err := r.CardsByFingerprints(ctx, nil); err != nil || len(cards) != 0 {
		t.Errorf("no fingerprint: %+v, %v", cards, err)
	}
}

func TestSearch(t *testing.T) {
	s, r, _ := seed(t)
	ctx := context.Background()
	for _, c := range []struct {
		q    string
		kind opsview.HitKind
		id   string
		says string
	}{
		{s.Merchants[0], opsview.HitMerchant, s.Merchants[0], "Seed merchant"},
		{s.MemberID, opsview.HitMember, s.MemberID, "member"},
		{s.BindingID, opsview.HitBinding, s.BindingID, "binding bound"},
		{s.CardID, opsview.HitCard, s.CardID, "******"},
		{s.MandateID, opsview.HitMandate, s.MandateID, "mandate"},
		{" " + s.ChargeID + " ", opsview.HitCharge, s.ChargeID, "charge succeeded"},
		{s.RefundID, opsview.HitRefund, s.RefundID, s.RefundNo},
		{s.EventID, opsview.HitEvent, s.EventID, "charge.succeeded"},
		{s.OrderNo, opsview.HitCharge, s.ChargeID, "order number of attempt 2"},
		{s.UnknownOrder, opsview.HitCharge, s.UnknownCharge, "(unknown,"},
		{s.BankTxnNo, opsview.HitCharge, s.ChargeID, "bank reference of attempt " + s.OrderNo},
		{s.RefundNo, opsview.HitRefund, s.RefundID, "refund number"},
	} {
		hits, err := r.Search(ctx, c.q)
		if err != nil {
			t.Fatal(err)
		}
		if len(hits) != 1 || hits[0].Kind != c.kind || hits[0].ID != c.id || hits[0].MerchantID == "" ||
			!strings.Contains(hits[0].Summary, c.says) {
			t.Errorf("Search(%q) = %+v, want one %s %s saying %q", c.q, hits, c.kind, c.id, c.says)
		}
	}
	// A refund's bank reference finds the refund.
	hits, err := r.Search(ctx, s.RefundBankRef)
	if err != nil || len(hits) != 1 || hits[0].Kind != opsview.HitRefund || !strings.Contains(hits[0].Summary, "bank reference of refund") {
		t.Errorf("Search(refund bank reference) = %+v, %v", hits, err)
	}
	for _, q := range []string{"", "   ", ids.New("chg"), ids.New("mch"), "QPNOSUCHORDER", strings.Repeat("x", 200)} {
		if hits, err := r.Search(ctx, q); err != nil || len(hits) != 0 {
			t.Errorf("Search(%q) = %+v, %v, want nothing", q, hits, err)
		}
	}
}

// walk reads every page of a list, Limit rows at a time, and returns the
// keys of its rows in order; it fails if a page is larger than the limit
// or a full page ends the list early.
func walk(t *testing.T, limit int, read func(opsview.Page) ([]string, string, error)) []string {
	t.Helper()
	var all []string
	p := opsview.Page{Limit: limit}
	for pages := 0; ; pages++ {
		if pages > 10000 {
			t.Fatal("more than 10,000 pages: the cursor does not move")
		}
		keys, next, err := read(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) > limit {
			t.Fatalf("page of %d rows, limit %d", len(keys), limit)
		}
		all = append(all, keys...)
		if next == "" {
			return all
		}
		if len(keys) != limit {
			t.Fatalf("a page of %d rows (limit %d) has a next page", len(keys), limit)
		}
		p.After = next
	}
}

// list adapts a list method to walk, keyed by key.
func list[T any](key func(T) string, read func(opsview.Page) ([]T, string, error)) func(opsview.Page) ([]string, string, error) {
	return func(p opsview.Page) ([]string, string, error) {
		rows, next, err := read(p)
		out := make([]string, len(rows))
		for i, r := range rows {
			out[i] = key(r)
		}
		return out, next, err
	}
}

func TestListsWalkEveryPage(t *testing.T) {
	s, r, pool := seed(t)
	ctx := context.Background()
	m0, m1 := s.Merchants[0], s.Merchants[1]
	// The day and bank of a seeded succeeded charge of m0.
	known, err := r.Charge(ctx, s.ChargeID)
	if err != nil {
		t.Fatal(err)
	}
	day, bank := known.ChargeDate, known.BankCode
	merchantID := func(m opsview.Merchant) string { return m.ID }
	memberID := func(m opsview.Member) string { return m.ID }
	cardID := func(c opsview.Card) string { return c.ID }
	bindingID := func(b opsview.Binding) string { return b.ID }
	mandateID := func(m opsview.Mandate) string { return m.ID }
	chargeID := func(c opsview.Charge) string { return c.ID }
	refundID := func(f opsview.Refund) string { return f.ID }
	eventID := func(e opsview.Event) string { return e.ID }
	auditID := func(a opsview.AuditEntry) string { return strconv.FormatInt(a.ID, 10) }
	cases := []struct {
		name   string
		read   func(p opsview.Page) ([]string, string, error)
		oracle string
		args   []any
	}{
		{"merchants", list(merchantID, func(p opsview.Page) ([]opsview.Merchant, string, error) { return r.Merchants(ctx, p) }),
			`SELECT id FROM merchants ORDER BY created_at DESC, id DESC`, nil},
		{"members of a merchant", list(memberID, func(p opsview.Page) ([]opsview.Member, string, error) { return r.Members(ctx, m1, p) }),
			`SELECT id FROM members WHERE merchant_id = $1 ORDER BY created_at DESC, id DESC`, []any{m1}},
		{"members", list(memberID, func(p opsview.Page) ([]opsview.Member, string, error) { return r.Members(ctx, "", p) }),
			`SELECT id FROM members ORDER BY created_at DESC, id DESC`, nil},
		{"cards of a merchant", list(cardID, func(p opsview.Page) ([]opsview.Card, string, error) {
			return r.Cards(ctx, opsview.CardFilter{MerchantID: m1}, p)
		}), `SELECT id FROM cards WHERE merchant_id = $1 ORDER BY created_at DESC, id DESC`, []any{m1}},
		{"unbound cards", list(cardID, func(p opsview.Page) ([]opsview.Card, string, error) {
			return r.Cards(ctx, opsview.CardFilter{Status: "unbound"}, p)
		}), `SELECT id FROM cards WHERE status = 'unbound' ORDER BY created_at DESC, id DESC`, nil},
		{"cards of a member", list(cardID, func(p opsview.Page) ([]opsview.Card, string, error) {
			return r.Cards(ctx, opsview.CardFilter{MemberID: s.MemberID}, p)
		}), `SELECT id FROM cards WHERE member_id = $1 ORDER BY created_at DESC, id DESC`, []any{s.MemberID}},
		{"bindings of a merchant", list(bindingID, func(p opsview.Page) ([]opsview.Binding, string, error) {
			return r.Bindings(ctx, opsview.BindingFilter{MerchantID: m1}, p)
		}), `SELECT id FROM bindings WHERE merchant_id = $1 ORDER BY created_at DESC, id DESC`, []any{m1}},
		{"bindings of a member", list(bindingID, func(p opsview.Page) ([]opsview.Binding, string, error) {
			return r.Bindings(ctx, opsview.BindingFilter{MemberID: s.MemberID}, p)
		}), `SELECT id FROM bindings WHERE member_id = $1 ORDER BY created_at DESC, id DESC`, []any{s.MemberID}},
		{"mandates", list(mandateID, func(p opsview.Page) ([]opsview.Mandate, string, error) {
			return r.Mandates(ctx, opsview.MandateFilter{}, p)
		}), `SELECT id FROM mandates ORDER BY created_at DESC, id DESC`, nil},
		{"cancelled mandates of a merchant", list(mandateID, func(p opsview.Page) ([]opsview.Mandate, string, error) {
			return r.Mandates(ctx, opsview.MandateFilter{MerchantID: m0, Status: "cancelled"}, p)
		}), `SELECT id FROM mandates WHERE merchant_id = $1 AND status = 'cancelled' ORDER BY created_at DESC, id DESC`, []any{m0}},
		{"mandates of a member", list(mandateID, func(p opsview.Page) ([]opsview.Mandate, string, error) {
			return r.Mandates(ctx, opsview.MandateFilter{MemberID: s.MemberID}, p)
		}), `SELECT id FROM mandates WHERE member_id = $1 ORDER BY created_at DESC, id DESC`, []any{s.MemberID}},
		{"mandates of a card", list(mandateID, func(p opsview.Page) ([]opsview.Mandate, string, error) {
			return r.Mandates(ctx, opsview.MandateFilter{CardID: s.CardID}, p)
		}), `SELECT id FROM mandates WHERE card_id = $1 ORDER BY created_at DESC, id DESC`, []any{s.CardID}},
		{"charges", list(chargeID, func(p opsview.Page) ([]opsview.Charge, string, error) {
			return r.Charges(ctx, opsview.ChargeFilter{}, p)
		}), `SELECT id FROM charges ORDER BY created_at DESC, id DESC`, nil},
		{"charges of a merchant", list(chargeID, func(p opsview.Page) ([]opsview.Charge, string, error) {
			return r.Charges(ctx, opsview.ChargeFilter{MerchantID: m1}, p)
		}), `SELECT id FROM charges WHERE merchant_id = $1 ORDER BY created_at DESC, id DESC`, []any{m1}},
		{"failed charges", list(chargeID, func(p opsview.Page) ([]opsview.Charge, string, error) {
			return r.Charges(ctx, opsview.ChargeFilter{Status: "failed"}, p)
		}), `SELECT id FROM charges WHERE status = 'failed' ORDER BY created_at DESC, id DESC`, nil},
		{"charges of a mandate", list(chargeID, func(p opsview.Page) ([]opsview.Charge, string, error) {
			return r.Charges(ctx, opsview.ChargeFilter{MandateID: s.MandateID}, p)
		}), `SELECT id FROM charges WHERE mandate_id = $1 ORDER BY created_at DESC, id DESC`, []any{s.MandateID}},
		{"charges of a bank", list(chargeID, func(p opsview.Page) ([]opsview.Charge, string, error) {
			return r.Charges(ctx, opsview.ChargeFilter{Bank: "CCB"}, p)
		}), `SELECT c.id FROM charges c JOIN cards k ON k.id = c.card_id WHERE k.bank_code = 'CCB'
		      ORDER BY c.created_at DESC, c.id DESC`, nil},
		{"succeeded charges of a merchant, bank and day", list(chargeID, func(p opsview.Page) ([]opsview.Charge, string, error) {
			return r.Charges(ctx, opsview.ChargeFilter{MerchantID: m0, Status: "succeeded", Bank: bank, Day: day}, p)
		}), `SELECT c.id FROM charges c JOIN cards k ON k.id = c.card_id
		      WHERE c.merchant_id = $1 AND c.status = 'succeeded' AND k.bank_code = $2 AND c.charge_date = $3::date
		      ORDER BY c.created_at DESC, c.id DESC`, []any{m0, bank, day.Format(time.DateOnly)}},
		{"refunds", list(refundID, func(p opsview.Page) ([]opsview.Refund, string, error) {
			return r.Refunds(ctx, opsview.RefundFilter{}, p)
		}), `SELECT id FROM refunds ORDER BY created_at DESC, id DESC`, nil},
		{"pending refunds of a merchant", list(refundID, func(p opsview.Page) ([]opsview.Refund, string, error) {
			return r.Refunds(ctx, opsview.RefundFilter{MerchantID: m0, Status: "pending"}, p)
		}), `SELECT id FROM refunds WHERE merchant_id = $1 AND status = 'pending' ORDER BY created_at DESC, id DESC`, []any{m0}},
		{"refunds of a charge", list(refundID, func(p opsview.Page) ([]opsview.Refund, string, error) {
			return r.Refunds(ctx, opsview.RefundFilter{ChargeID: s.RefundCharge}, p)
		}), `SELECT id FROM refunds WHERE charge_id = $1 ORDER BY created_at DESC, id DESC`, []any{s.RefundCharge}},
		{"events", list(eventID, func(p opsview.Page) ([]opsview.Event, string, error) {
			return r.Events(ctx, opsview.EventFilter{}, p)
		}), `SELECT id FROM events ORDER BY seq DESC`, nil},
		{"failed charge events of a merchant", list(eventID, func(p opsview.Page) ([]opsview.Event, string, error) {
			return r.Events(ctx, opsview.EventFilter{MerchantID: m1, Type: "charge.failed"}, p)
		}), `SELECT id FROM events WHERE merchant_id = $1 AND type = 'charge.failed' ORDER BY seq DESC`, []any{m1}},
		{"unknown attempts", list(func(a opsview.Attempt) string { return a.OrderNo }, func(p opsview.Page) ([]opsview.Attempt, string, error) {
			return r.UnknownAttempts(ctx, p)
		}), `SELECT order_no FROM charge_attempts WHERE status = 'unknown' ORDER BY created_at, order_no`, nil},
		{"mismatches", list(func(m opsview.Mismatch) string { return fmt.Sprint(m.RunID, m.OrderNo) }, func(p opsview.Page) ([]opsview.Mismatch, string, error) {
			return r.Mismatches(ctx, opsview.MismatchFilter{}, p)
		}), `SELECT run_id || order_no FROM reconciliation_mismatches ORDER BY run_id DESC, order_no DESC`, nil},
		{"open mismatches of a bank", list(func(m opsview.Mismatch) string { return fmt.Sprint(m.RunID, m.OrderNo) }, func(p opsview.Page) ([]opsview.Mismatch, string, error) {
			return r.Mismatches(ctx, opsview.MismatchFilter{Bank: "CCB", OpenOnly: true}, p)
		}), `SELECT run_id || order_no FROM reconciliation_mismatches m WHERE bank_code = 'CCB'
		      AND run_id = (SELECT max(id) FROM reconciliation_runs l WHERE l.bank_code = m.bank_code AND l.bank_day = m.bank_day)
		      ORDER BY run_id DESC, order_no DESC`, nil},
		{"backlog", list(func(u opsview.Undelivered) string { return u.EventID }, func(p opsview.Page) ([]opsview.Undelivered, string, error) {
			return r.Backlog(ctx, p)
		}), `SELECT e.id FROM river_job j, jsonb_array_elements_text(j.args->'event_ids') WITH ORDINALITY AS x(id, n), events e
		      WHERE j.kind = 'webhook_deliver' AND j.state <> 'completed' AND e.id = x.id
		        AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id AND d.status_code BETWEEN 200 AND 299)
		      ORDER BY j.id, x.n`, nil},
		{"audit", list(auditID, func(p opsview.Page) ([]opsview.AuditEntry, string, error) {
			return r.Audit(ctx, opsview.AuditFilter{}, p)
		}), `SELECT id::text FROM audit_log ORDER BY at DESC, id DESC`, nil},
		{"audit of an actor and merchant in a window", list(auditID, func(p opsview.Page) ([]opsview.AuditEntry, string, error) {
			return r.Audit(ctx, opsview.AuditFilter{Actor: s.AuditActor, MerchantID: m0,
				From: s.Day.AddDate(0, 0, -400), To: s.Day.AddDate(0, 0, -399)}, p)
		}), `SELECT id::text FROM audit_log WHERE actor = $1 AND merchant_id = $2 AND at >= $3 AND at < $4
		      ORDER BY at DESC, id DESC`, []any{s.AuditActor, m0, s.Day.AddDate(0, 0, -400), s.Day.AddDate(0, 0, -399)}},
		{"audit of a subject and action", list(auditID, func(p opsview.Page) ([]opsview.AuditEntry, string, error) {
			return r.Audit(ctx, opsview.AuditFilter{Subject: s.CardID, Action: "member.view"}, p)
		}), `SELECT id::text FROM audit_log WHERE subject = $1 AND action = 'member.view' ORDER BY at DESC, id DESC`, []any{s.CardID}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := testenv.Strings(t, pool, c.oracle, c.args...)
			if len(want) == 0 {
				t.Fatalf("the oracle finds no row: the seed does not exercise this list")
			}
			for _, limit := range []int{7, 200} {
				got := walk(t, limit, c.read)
				if !slices.Equal(got, want) {
					t.Errorf("limit %d: %d rows, want %d (order, loss or repeat differs)\ngot  %.200v\nwant %.200v",
						limit, len(got), len(want), got, want)
				}
			}
			first, _, err := c.read(opsview.Page{})
			if err != nil || len(first) != min(len(want), opsview.DefaultLimit) {
				t.Errorf("default page: %d rows, %v; want %d", len(first), err, min(len(want), opsview.DefaultLimit))
			}
		})
	}
}

func TestBadCursor(t *testing.T) {
	_, r, _ := seed(t)
	ctx := context.Background()
	_, next, err := r.Members(ctx, "", opsview.Page{Limit: 1})
	if err != nil || next == "" {
		t.Fatalf("first page: next %q, %v", next, err)
	}
	for _, after := range []string{"garbage!", base64.RawURLEncoding.EncodeToString([]byte("members|x|y")),
		base64.RawURLEncoding.EncodeToString([]byte("members|1"))} {
		if _, _, err := r.Members(ctx, "", opsview.Page{After: after}); !errors.Is(err, opsview.ErrBadCursor) {
			t.Errorf("Members after %q: %v, want ErrBadCursor", after, err)
		}
	}
	// A members cursor is not a cards cursor.
	if _, _, err := r.Cards(ctx, opsview.CardFilter{}, opsview.Page{After: next}); !errors.Is(err, opsview.ErrBadCursor) {
		t.Errorf("Cards after a members cursor: %v, want ErrBadCursor", err)
	}
}

func TestKeyVersions(t *testing.T) {
	_, r, pool := seed(t)
	ctx := context.Background()
	before, err := r.KeyVersions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(before, func(p opsview.KeyPolicy) bool { return p.Purpose == "jwt" }) {
		t.Skip("the database already has a jwt key policy; this test writes its own")
	}
	if _, err := pool.Exec(ctx, `INSERT INTO key_policies (purpose, current_version, min_decryption_version) VALUES ('jwt', 2, 1);
		INSERT INTO key_versions (purpose, version, label) VALUES ('jwt', 1, 'qp-jwt-test-v1'), ('jwt', 2, 'qp-jwt-test-v2')`); err != nil {
		t.Fatal(err)
	}
	ps, err := r.KeyVersions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(ps, func(p opsview.KeyPolicy) bool { return p.Purpose == "jwt" })
	if i < 0 || ps[i].CurrentVersion != 2 || ps[i].MinDecryptionVersion != 1 || len(ps[i].Versions) != 2 ||
		ps[i].Versions[0].Version != 2 || ps[i].Versions[0].Label != "qp-jwt-test-v2" {
		t.Errorf("KeyVersions = %+v", ps)
	}
}
