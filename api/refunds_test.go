package api_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/quickpay/quickpay/api"
	"github.com/quickpay/quickpay/api/apitest"
	"github.com/quickpay/quickpay/bankadapters/conformance"
	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/dev/simclient"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/ids"
	"github.com/quickpay/quickpay/mandate"
)

// TestRefunds drives the refund routes over real HTTP against the real
// stack (Postgres, SoftHSM2, Vault, banksim), through the validating
// client: charges are debited and refunds credited at banksim by the
// mandate service's own workers, run by a River client on a queue of the
// test's own.
//
// It is not parallel, on purpose: RunDue scans the whole package database
// (see TestMandates). Running alone, before the package's parallel tests
// resume, it claims no other test's charge and no other test's run claims
// its own. Its dates (2028) are before every other test's, its mandates
// take one charge each (max_charges 1) and complete, and it leaves no
// charge scheduled, so the later runs of other tests find nothing of its.
// Its subtests share one fake clock and run in order.
func TestRefunds(t *testing.T) {
	e := newRefundEnv(t)
	t.Run("a partial refund, then the rest; nothing beyond", e.testPartialThenRest)
	t.Run("a whole charge at once", e.testWholeCharge)
	t.Run("a refund the bank declines fails and frees its amount", e.testDeclined)
	t.Run("charge_not_refundable for a scheduled or failed charge", e.testNotRefundable)
	t.Run("validation_failed names the field; nothing is refunded", e.testRefundValidation)
	t.Run("one Idempotency-Key makes one refund and one credit", e.testRefundIdempotency)
	t.Run("refund lists: filters, pages, has_more", e.testRefundLists)
	t.Run("another merchant's charges and refunds are not_found", e.testRefundTenants)
	t.Run("a token without withhold gets 403", e.testRefundScope)
	t.Run("refund events reach withhold tokens only", e.testRefundEvents)
	// Last: it moves the clock half a year.
	t.Run("a charge older than 180 days is charge_not_refundable", e.testRefundWindow)
}

// refundEpoch is the fake clock's start: 2028-03-10 10:00 in Shanghai,
// before every other test's dates (TestMandates: 2029 and 2030).
var refundEpoch = time.Date(2028, 3, 10, 10, 0, 0, 0, shanghai)

// refundQueue is the River queue of TestRefunds' charge, query and refund
// jobs, which its client works; no other test's jobs are on it.
const refundQueue = "api_refunds_test"

type refundEnv struct {
	*mandateEnv
	srv *testServer
	clk *clock.Fake
}

func newRefundEnv(t *testing.T) *refundEnv {
	t.Helper()
	st := testenv.NewStack(t)
	charges, queries, refunds := &mandate.ChargeWorker{}, &mandate.QueryWorker{}, &mandate.RefundWorker{}
	workers := river.NewWorkers()
	river.AddWorker(workers, charges)
	river.AddWorker(workers, queries)
	river.AddWorker(workers, refunds)
	jobs, err := river.NewClient(riverpgxv5.New(st.Pool), &river.Config{
		Logger:            slog.New(slog.NewJSONHandler(newLogBuf(), &slog.HandlerOptions{Level: slog.LevelWarn})),
		Workers:           workers,
		Queues:            map[string]river.QueueConfig{refundQueue: {MaxWorkers: 4}},
		FetchCooldown:     10 * time.Millisecond,
		FetchPollInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(refundEpoch)
	srv := newTestServer(t, serverOptions{Stack: st, Clock: clk, MandateJobs: jobs, MandateQueue: refundQueue})
	charges.Service, queries.Service, refunds.Service = srv.mandates, srv.mandates, srv.mandates
	ctx, cancel := context.WithCancel(context.Background())
	if err := jobs.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		_ = jobs.StopAndCancel(sctx)
		cancel()
	})
	return &refundEnv{mandateEnv: &mandateEnv{Stack: st, gen: conformance.NewGen()}, srv: srv, clk: clk}
}

// refundTenant is a merchant that can get fresh tokens (the clock moves
// past a token's life in testRefundWindow).
type refundTenant struct {
	tenant
	clientID, secret string
}

func (e *refundEnv) tenant(t *testing.T, scopes ...string) refundTenant {
	t.Helper()
	m, secret, err := e.srv.merchants.Create(context.Background(), "refunds "+strings.Join(scopes, "+"), scopes)
	if err != nil {
		t.Fatal(err)
	}
	c := apitest.NewClient(t, e.srv.url)
	return refundTenant{tenant: tenant{id: m.ID, c: c.WithToken(c.Token(t, m.ClientID, secret))}, clientID: m.ClientID, secret: secret}
}

// narrowed is m's client with a token of scope only (the token endpoint's
// scope parameter).
func (e *refundEnv) narrowed(t *testing.T, m refundTenant, scope string) *apitest.Client {
	t.Helper()
	c := apitest.NewClient(t, e.srv.url)
	var tok apitest.TokenResponse
	res := c.Post(t, api.TokenPath, map[string]string{"grant_type": "client_credentials", "client_id": m.clientID,
		"client_secret": m.secret, "scope": scope}, apitest.NoToken())
	if !res.WantStatus(t, http.StatusOK) || !res.Decode(t, &tok) || tok.Scope != scope {
		t.Fatalf("token of scope %s: %+v", scope, tok)
	}
	return c.WithToken(tok.AccessToken)
}

// Answers as the document describes them.
type refundAnswer struct {
	ID            string               `json:"id"`
	ChargeID      string               `json:"charge_id"`
	MandateID     string               `json:"mandate_id"`
	Amount        int64                `json:"amount"`
	Currency      string               `json:"currency"`
	Reason        *string              `json:"reason"`
	Status        mandate.RefundStatus `json:"status"`
	FailureCode   *string              `json:"failure_code"`
	BankReference *string              `json:"bank_reference"`
	CreatedAt     time.Time            `json:"created_at"`
	FinishedAt    *time.Time           `json:"finished_at"`
}

type refundPage struct {
	Data    []refundAnswer `json:"data"`
	HasMore bool           `json:"has_more"`
}

// refundedCharge is a charge answer with its amount_refunded.
type refundedCharge struct {
	chargeAnswer
	AmountRefunded int64 `json:"amount_refunded"`
}

// paidCharge is a succeeded charge of amount on card and its mandate.
type paidCharge struct {
	refundedCharge
	card boundCard
}

// succeededCharge debits amount from card through a variable mandate of
// one charge: posted, claimed by RunDue, sent by the test's River client,
// and awaited until the bank's answer settles it, which must be success.
func (e *refundEnv) succeededCharge(t *testing.T, m refundTenant, card boundCard, amount int64) paidCharge {
	t.Helper()
	ch := e.scheduledCharge(t, m, card, amount)
	if _, err := e.srv.mandates.RunDue(context.Background(), e.clk.Now()); err != nil {
		t.Fatal(err)
	}
	var got refundedCharge
	eventually(t, 30*time.Second, "charge "+ch.ID+" to settle", func() bool {
		got = getCharge(t, m, ch.ID)
		return got.Status == mandate.ChargeSucceeded || got.Status == mandate.ChargeFailed
	})
	if got.Status != mandate.ChargeSucceeded || got.Amount != amount || got.AmountRefunded != 0 || got.BankReference == nil {
		t.Fatalf("charge = %s %d refunded %d, want succeeded for %d, nothing refunded", got.Status, got.Amount, got.AmountRefunded, amount)
	}
	return paidCharge{refundedCharge: got, card: card}
}

// scheduledCharge posts amount on a fresh variable mandate of one charge
// on card, due today; nothing runs it.
func (e *refundEnv) scheduledCharge(t *testing.T, m refundTenant, card boundCard, amount int64) refundedCharge {
	t.Helper()
	body := variableMandate(card.ID)
	body["reference"] = "refund-" + randomHex(t, 4)
	body["schedule"] = map[string]any{"interval": "month", "day_of_month": 10, "start_date": "2028-03-01", "max_charges": 1}
	md := createMandate(t, m.tenant, body)
	if str(md.NextChargeDate) != e.clk.Now().In(shanghai).Format(time.DateOnly) {
		t.Fatalf("next_charge_date = %s, want today", str(md.NextChargeDate))
	}
	confirmMandate(t, e.srv, m.tenant, md.ID, card.Phone)
	var ch refundedCharge
	if res := m.c.Post(t, "/v1/mandates/"+md.ID+"/charges", map[string]any{"amount": amount}); !res.WantStatus(t, http.StatusCreated) ||
		!res.Decode(t, &ch) {
		t.FailNow()
	}
	return ch
}

func getCharge(t *testing.T, m refundTenant, id string) refundedCharge {
	t.Helper()
	var ch refundedCharge
	if res := m.c.Get(t, "/v1/charges/"+id); !res.WantStatus(t, http.StatusOK) || !res.Decode(t, &ch) {
		t.FailNow()
	}
	return ch
}

// refund posts a refund of the charge and wants 201 pending.
func (e *refundEnv) refund(t *testing.T, m refundTenant, chargeID string, body map[string]any, opts ...apitest.Option) refundAnswer {
	t.Helper()
	var r refundAnswer
	if res := m.c.Post(t, "/v1/charges/"+chargeID+"/refunds", body, append([]apitest.Option{newKey(t)}, opts...)...); !res.WantStatus(t, http.StatusCreated) || !res.Decode(t, &r) {
		t.FailNow()
	}
	if !ids.Valid("rfd", r.ID) || r.ChargeID != chargeID || r.Status != mandate.RefundPending || r.FinishedAt != nil ||
		r.BankReference != nil || r.FailureCode != nil {
		t.Fatalf("created refund = %+v, want a pending rfd_ of %s", r, chargeID)
	}
	return r
}

func getRefund(t *testing.T, m refundTenant, id string) refundAnswer {
	t.Helper()
	var r refundAnswer
	if res := m.c.Get(t, "/v1/refunds/"+id); !res.WantStatus(t, http.StatusOK) || !res.Decode(t, &r) {
		t.FailNow()
	}
	return r
}

// settled polls the refund until it is no longer pending.
func (e *refundEnv) settled(t *testing.T, m refundTenant, id string) refundAnswer {
	t.Helper()
	var r refundAnswer
	if !eventually(t, 30*time.Second, "refund "+id+" to settle", func() bool {
		r = getRefund(t, m, id)
		return r.Status != mandate.RefundPending
	}) {
		t.FailNow()
	}
	return r
}

// succeeded wants r settled as a success of the bank: a bank reference,
// a finish time (the bank's: banksim's real clock, not the test's), no
// failure.
func (e *refundEnv) succeeded(t *testing.T, m refundTenant, r refundAnswer) refundAnswer {
	t.Helper()
	got := e.settled(t, m, r.ID)
	if got.Status != mandate.RefundSucceeded || got.BankReference == nil || got.FailureCode != nil || got.FinishedAt == nil {
		t.Errorf("refund %s = %s ref %s failure %s finished %v, want succeeded with a bank reference and a finish time",
			r.ID, got.Status, str(got.BankReference), str(got.FailureCode), got.FinishedAt)
	}
	if got.ID != r.ID || got.ChargeID != r.ChargeID || got.MandateID != r.MandateID || got.Amount != r.Amount ||
		got.Currency != r.Currency || str(got.Reason) != str(r.Reason) || !got.CreatedAt.Equal(r.CreatedAt) {
		t.Errorf("settled refund = %+v, want the created %+v but for its outcome", got, r)
	}
	return got
}

// balance is the card's balance at banksim.
func (e *refundEnv) balance(t *testing.T, card boundCard) int64 {
	t.Helper()
	a, err := e.srv.SimCtl.Account(context.Background(), card.Number)
	if err != nil {
		t.Fatal(err)
	}
	return a.Balance
}

// refundIDs gets path and returns the ids of its page and has_more.
func refundIDs(t *testing.T, c *apitest.Client, path string) ([]string, bool) {
	t.Helper()
	var p refundPage
	if res := c.Get(t, path); !res.WantStatus(t, http.StatusOK) || !res.Decode(t, &p) {
		return nil, false
	}
	out := []string{}
	for _, r := range p.Data {
		out = append(out, r.ID)
	}
	return out, p.HasMore
}

// allRefundIDs walks path's pages of limit rows with starting_after.
func allRefundIDs(t *testing.T, c *apitest.Client, path string, limit int) []string {
	t.Helper()
	var all []string
	after := ""
	for range 100 {
		q := url.Values{"limit": {strconv.Itoa(limit)}}
		if after != "" {
			q.Set("starting_after", after)
		}
		ids, more := refundIDs(t, c, path+"?"+q.Encode())
		all = append(all, ids...)
		if !more {
			return all
		}
		if len(ids) != limit {
			t.Fatalf("%s: a page of %d with has_more, want %d", path, len(ids), limit)
		}
		after = ids[len(ids)-1]
	}
	t.Fatalf("%s: more than 100 pages", path)
	return nil
}

func (e *refundEnv) testPartialThenRest(t *testing.T) {
	m := e.tenant(t, "bind", "withhold")
	card := e.bindCard(t, e.srv, m.tenant, "ICBC", "", "")
	start := e.balance(t, card)
	ch := e.succeededCharge(t, m, card, 10000)
	if b := e.balance(t, card); b != start-10000 {
		t.Fatalf("balance after the charge = %d, want %d", b, start-10000)
	}

	e.clk.Advance(time.Second)
	r1 := e.refund(t, m, ch.ID, map[string]any{"amount": 3000, "reason": "退货 order 17"})
	if r1.MandateID != ch.MandateID || r1.Amount != 3000 || r1.Currency != "CNY" || str(r1.Reason) != "退货 order 17" ||
		!r1.CreatedAt.Equal(e.clk.Now()) {
		t.Errorf("refund = %+v, want ¥30 CNY of %s with its reason, created now", r1, ch.ID)
	}
	r1 = e.succeeded(t, m, r1)
	if got := getCharge(t, m, ch.ID); got.Status != mandate.ChargeSucceeded || got.AmountRefunded != 3000 {
		t.Errorf("charge after ¥30 refunded = %s, amount_refunded %d; want succeeded, 3000", got.Status, got.AmountRefunded)
	}
	if b := e.balance(t, card); b != start-7000 {
		t.Errorf("balance after ¥30 refunded = %d, want %d", b, start-7000)
	}

	wantError(t, m.c.Post(t, "/v1/charges/"+ch.ID+"/refunds", map[string]any{"amount": 7001}, newKey(t)),
		http.StatusUnprocessableEntity, "refund_exceeds_charge", "")
	e.clk.Advance(time.Second)
	r2 := e.refund(t, m, ch.ID, map[string]any{"amount": 7000})
	if r2.Reason != nil {
		t.Errorf("reason = %q, want null when none was given", *r2.Reason)
	}
	r2 = e.succeeded(t, m, r2)
	if *r2.BankReference == *r1.BankReference {
		t.Errorf("both refunds carry bank reference %s", *r1.BankReference)
	}
	wantError(t, m.c.Post(t, "/v1/charges/"+ch.ID+"/refunds", map[string]any{"amount": 1}, newKey(t)),
		http.StatusUnprocessableEntity, "refund_exceeds_charge", "")

	got := getCharge(t, m, ch.ID)
	if got.Status != mandate.ChargeSucceeded || got.AmountRefunded != 10000 || str(got.BankReference) != str(ch.BankReference) {
		t.Errorf("charge after everything refunded = %s, amount_refunded %d; want succeeded, 10000", got.Status, got.AmountRefunded)
	}
	if b := e.balance(t, card); b != start {
		t.Errorf("balance after everything refunded = %d, want %d (once each)", b, start)
	}
	if ids, more := refundIDs(t, m.c, "/v1/charges/"+ch.ID+"/refunds"); !slices.Equal(ids, []string{r2.ID, r1.ID}) || more {
		t.Errorf("the charge's refunds = %v has_more %v, want [%s %s]", ids, more, r2.ID, r1.ID)
	}
	// Every charge answer carries amount_refunded: the lists too.
	var list struct{ Data []refundedCharge }
	for _, path := range []string{"/v1/charges?mandate_id=" + ch.MandateID, "/v1/mandates/" + ch.MandateID + "/charges"} {
		if res := m.c.Get(t, path); res.WantStatus(t, http.StatusOK) && res.Decode(t, &list) &&
			(len(list.Data) != 1 || list.Data[0].ID != ch.ID || list.Data[0].AmountRefunded != 10000) {
			t.Errorf("%s = %+v, want the charge with amount_refunded 10000", path, list.Data)
		}
	}
}

func (e *refundEnv) testWholeCharge(t *testing.T) {
	m := e.tenant(t, "bind", "withhold")
	card := e.bindCard(t, e.srv, m.tenant, "CCB", "", "") // the form/RSA dialect
	start := e.balance(t, card)
	ch := e.succeededCharge(t, m, card, 4321)
	e.clk.Advance(time.Second)
	e.succeeded(t, m, e.refund(t, m, ch.ID, map[string]any{"amount": 4321}))
	if got := getCharge(t, m, ch.ID); got.AmountRefunded != 4321 {
		t.Errorf("amount_refunded = %d, want 4321", got.AmountRefunded)
	}
	if b := e.balance(t, card); b != start {
		t.Errorf("balance = %d, want %d back", b, start)
	}
	wantError(t, m.c.Post(t, "/v1/charges/"+ch.ID+"/refunds", map[string]any{"amount": 1}, newKey(t)),
		http.StatusUnprocessableEntity, "refund_exceeds_charge", "")
}

func (e *refundEnv) testDeclined(t *testing.T) {
	m := e.tenant(t, "bind", "withhold")
	card := e.bindCard(t, e.srv, m.tenant, "ICBC", "", "")
	ch := e.succeededCharge(t, m, card, 5000)
	after := e.balance(t, card)
	ctx := context.Background()
	if err := e.srv.SimCtl.AddFault(ctx, simclient.Fault{BankCode: "ICBC", Operation: "refund", Mode: simclient.FaultDecline, Code: "card_closed"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.srv.SimCtl.ClearFaults(ctx, "ICBC") })

	e.clk.Advance(time.Second)
	r := e.refund(t, m, ch.ID, map[string]any{"amount": 5000})
	got := e.settled(t, m, r.ID)
	if got.Status != mandate.RefundFailed || got.FailureCode == nil || got.BankReference != nil || got.FinishedAt == nil {
		t.Errorf("declined refund = %s failure %s ref %s finished %v, want failed with a failure_code and a finish time",
			got.Status, str(got.FailureCode), str(got.BankReference), got.FinishedAt)
	}
	if c := getCharge(t, m, ch.ID); c.AmountRefunded != 0 || c.Status != mandate.ChargeSucceeded {
		t.Errorf("charge after a failed refund = %s, amount_refunded %d; want succeeded, 0", c.Status, c.AmountRefunded)
	}
	if b := e.balance(t, card); b != after {
		t.Errorf("balance after a declined refund = %d, want %d", b, after)
	}
	// A failed refund does not count: the whole amount is refundable.
	e.clk.Advance(time.Second)
	e.succeeded(t, m, e.refund(t, m, ch.ID, map[string]any{"amount": 5000}))
	if c := getCharge(t, m, ch.ID); c.AmountRefunded != 5000 {
		t.Errorf("amount_refunded = %d, want 5000", c.AmountRefunded)
	}
	if b := e.balance(t, card); b != after+5000 {
		t.Errorf("balance = %d, want %d", b, after+5000)
	}
}

func (e *refundEnv) testNotRefundable(t *testing.T) {
	m := e.tenant(t, "bind", "withhold")
	card := e.bindCard(t, e.srv, m.tenant, "ICBC", "", "")
	ch := e.scheduledCharge(t, m, card, 2000)
	wantError(t, m.c.Post(t, "/v1/charges/"+ch.ID+"/refunds", map[string]any{"amount": 1000}, newKey(t)),
		http.StatusUnprocessableEntity, "charge_not_refundable", "")
	// Pausing the mandate fails its charge (and leaves nothing scheduled).
	m.c.Post(t, "/v1/mandates/"+ch.MandateID+"/pause", nil).WantStatus(t, http.StatusOK)
	if got := getCharge(t, m, ch.ID); got.Status != mandate.ChargeFailed {
		t.Fatalf("charge of a paused mandate = %s, want failed", got.Status)
	}
	wantError(t, m.c.Post(t, "/v1/charges/"+ch.ID+"/refunds", map[string]any{"amount": 1000}, newKey(t)),
		http.StatusUnprocessableEntity, "charge_not_refundable", "")
	if ids, _ := refundIDs(t, m.c, "/v1/charges/"+ch.ID+"/refunds"); len(ids) != 0 {
		t.Errorf("refunds of a charge never debited = %v, want none", ids)
	}
}

func (e *refundEnv) testRefundValidation(t *testing.T) {
	m := e.tenant(t, "bind", "withhold")
	card := e.bindCard(t, e.srv, m.tenant, "ICBC", "", "")
	ch := e.succeededCharge(t, m, card, 3000)
	path := "/v1/charges/" + ch.ID + "/refunds"
	for _, tc := range []struct {
		name   string
		body   any
		status int
		code   string
		field  string
	}{
		{"zero amount", map[string]any{"amount": 0}, http.StatusUnprocessableEntity, "validation_failed", "amount"},
		{"no amount", map[string]any{"reason": "x"}, http.StatusUnprocessableEntity, "validation_failed", "amount"},
		{"negative amount", map[string]any{"amount": -100}, http.StatusUnprocessableEntity, "validation_failed", "amount"},
		{"reason of 201 characters", map[string]any{"amount": 100, "reason": strings.Repeat("r", 201)},
			http.StatusUnprocessableEntity, "validation_failed", "reason"},
		{"reason with a line break", map[string]any{"amount": 100, "reason": "line\nbreak"},
			http.StatusUnprocessableEntity, "validation_failed", "reason"},
		{"reason with a NUL", map[string]any{"amount": 100, "reason": "a\x00b"}, http.StatusBadRequest, "validation_failed", "reason"},
		{"amount as a string", map[string]any{"amount": "100"}, http.StatusBadRequest, "validation_failed", "amount"},
		{"fractional amount", []byte(`{"amount": 1.5}`), http.StatusBadRequest, "validation_failed", "amount"},
		{"unknown field", map[string]any{"amount": 100, "currency": "CNY"}, http.StatusBadRequest, "validation_failed", "currency"},
		{"not an object", []byte(`[100]`), http.StatusBadRequest, "malformed_json", ""},
		{"malformed", []byte(`{"amount":`), http.StatusBadRequest, "malformed_json", ""},
		{"more than the charge", map[string]any{"amount": 3001}, http.StatusUnprocessableEntity, "refund_exceeds_charge", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, m.c.Post(t, path, tc.body, newKey(t)), tc.status, tc.code, tc.field)
		})
	}
	// A refund moves money: without an Idempotency-Key a retried request
	// would refund twice, so none is taken.
	wantError(t, m.c.Post(t, path, map[string]any{"amount": 100}), http.StatusBadRequest, "idempotency_key_required", "")
	if ids, _ := refundIDs(t, m.c, path); len(ids) != 0 {
		t.Errorf("refunds made without an Idempotency-Key: %v", ids)
	}
	for _, id := range []string{"chg_aaaaaaaaaaaaaaaaaaaaaaaa", "nope", ch.MandateID} {
		wantError(t, m.c.Post(t, "/v1/charges/"+id+"/refunds", map[string]any{"amount": 100}, newKey(t)), http.StatusNotFound, "not_found", "")
		wantError(t, m.c.Get(t, "/v1/charges/"+id+"/refunds"), http.StatusNotFound, "not_found", "")
	}
	for _, id := range []string{"rfd_aaaaaaaaaaaaaaaaaaaaaaaa", "nope", ch.ID} {
		wantError(t, m.c.Get(t, "/v1/refunds/"+id), http.StatusNotFound, "not_found", "")
	}
	if ids, _ := refundIDs(t, m.c, path); len(ids) != 0 {
		t.Errorf("refused requests made refunds %v", ids)
	}
	if got := getCharge(t, m, ch.ID); got.AmountRefunded != 0 {
		t.Errorf("amount_refunded = %d after refused requests, want 0", got.AmountRefunded)
	}
	// The limit counts characters, not bytes.
	e.clk.Advance(time.Second)
	r := e.refund(t, m, ch.ID, map[string]any{"amount": 100, "reason": strings.Repeat("退", 200)})
	if str(r.Reason) != strings.Repeat("退", 200) {
		t.Errorf("reason of 200 characters came back as %d bytes", len(str(r.Reason)))
	}
	e.succeeded(t, m, r)
}

func (e *refundEnv) testRefundIdempotency(t *testing.T) {
	m := e.tenant(t, "bind", "withhold")
	card := e.bindCard(t, e.srv, m.tenant, "ICBC", "", "")
	ch := e.succeededCharge(t, m, card, 8000)
	after := e.balance(t, card)
	path := "/v1/charges/" + ch.ID + "/refunds"
	key := apitest.IdempotencyKey("refund-" + randomHex(t, 6))
	body := map[string]any{"amount": 1000, "reason": "duplicate bill"}

	e.clk.Advance(time.Second)
	first := m.c.Post(t, path, body, key)
	var r refundAnswer
	if !first.WantStatus(t, http.StatusCreated) || !first.Decode(t, &r) {
		t.FailNow()
	}
	again := m.c.Post(t, path, body, key)
	if again.WantStatus(t, http.StatusCreated) && (!bytes.Equal(again.Body, first.Body) || again.Header.Get("Idempotent-Replayed") != "true") {
		t.Errorf("replay: body equal %v, Idempotent-Replayed %q; want the saved body, replayed",
			bytes.Equal(again.Body, first.Body), again.Header.Get("Idempotent-Replayed"))
	}
	wantError(t, m.c.Post(t, path, map[string]any{"amount": 2000, "reason": "duplicate bill"}, key),
		http.StatusUnprocessableEntity, "idempotency_key_reused", "")
	e.succeeded(t, m, r)
	// Replayed after it settled: still the one refund.
	if res := m.c.Post(t, path, body, key); res.WantStatus(t, http.StatusCreated) && !bytes.Equal(res.Body, first.Body) {
		t.Error("a replay after settlement is not the saved answer")
	}
	if ids, _ := refundIDs(t, m.c, path); !slices.Equal(ids, []string{r.ID}) {
		t.Errorf("refunds for one key = %v, want [%s]", ids, r.ID)
	}
	if b := e.balance(t, card); b != after+1000 {
		t.Errorf("balance = %d, want %d: credited once", b, after+1000)
	}
	if got := getCharge(t, m, ch.ID); got.AmountRefunded != 1000 {
		t.Errorf("amount_refunded = %d, want 1000", got.AmountRefunded)
	}
	// Another key is another refund.
	e.clk.Advance(time.Second)
	other := e.refund(t, m, ch.ID, body, apitest.IdempotencyKey("refund-"+randomHex(t, 6)))
	if other.ID == r.ID {
		t.Error("another key replayed the first refund")
	}
	e.succeeded(t, m, other)
	if b := e.balance(t, card); b != after+2000 {
		t.Errorf("balance = %d, want %d after a second key", b, after+2000)
	}
}

func (e *refundEnv) testRefundLists(t *testing.T) {
	ctx := context.Background()
	m := e.tenant(t, "bind", "withhold")
	card := e.bindCard(t, e.srv, m.tenant, "ICBC", "", "")
	a := e.succeededCharge(t, m, card, 10000)
	b := e.succeededCharge(t, m, card, 10000)

	// Four refunds a second apart, r[0] the oldest; r[1] declined.
	post := func(ch paidCharge, amount int64) refundAnswer {
		t.Helper()
		e.clk.Advance(time.Second)
		return e.settled(t, m, e.refund(t, m, ch.ID, map[string]any{"amount": amount}).ID)
	}
	r := []refundAnswer{post(a, 1000)}
	if err := e.srv.SimCtl.AddFault(ctx, simclient.Fault{BankCode: "ICBC", Operation: "refund", Mode: simclient.FaultDecline, Code: "card_closed"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.srv.SimCtl.ClearFaults(ctx, "ICBC") })
	r = append(r, post(a, 1000), post(b, 2000), post(a, 1000))
	for i, want := range []mandate.RefundStatus{mandate.RefundSucceeded, mandate.RefundFailed, mandate.RefundSucceeded, mandate.RefundSucceeded} {
		if r[i].Status != want {
			t.Fatalf("refund %d = %s, want %s", i, r[i].Status, want)
		}
	}
	idsOf := func(is ...int) []string {
		out := []string{}
		for _, i := range is {
			out = append(out, r[i].ID)
		}
		return out
	}

	// Another merchant's refund, created last: never in m's lists.
	other := e.tenant(t, "bind", "withhold")
	oc := e.succeededCharge(t, other, e.bindCard(t, e.srv, other.tenant, "ICBC", "", ""), 500)
	e.clk.Advance(time.Second)
	or := e.succeeded(t, other, e.refund(t, other, oc.ID, map[string]any{"amount": 500}))

	at := func(x refundAnswer) string { return url.QueryEscape(x.CreatedAt.Format(time.RFC3339Nano)) }
	for _, tc := range []struct {
		query string
		want  []string
		more  bool
	}{
		{"", idsOf(3, 2, 1, 0), false},
		{"status=succeeded", idsOf(3, 2, 0), false},
		{"status=failed", idsOf(1), false},
		{"status=pending", idsOf(), false},
		{"charge_id=" + a.ID, idsOf(3, 1, 0), false},
		{"charge_id=" + b.ID, idsOf(2), false},
		{"charge_id=" + oc.ID, idsOf(), false},
		{"charge_id=chg_aaaaaaaaaaaaaaaaaaaaaaaa", idsOf(), false},
		{"created_gte=" + at(r[2]), idsOf(3, 2), false},
		{"created_lt=" + at(r[2]), idsOf(1, 0), false},
		{"created_gte=" + at(r[1]) + "&created_lt=" + at(r[3]), idsOf(2, 1), false},
		{"charge_id=" + a.ID + "&status=succeeded&created_lt=" + at(r[3]), idsOf(0), false},
		{"limit=3", idsOf(3, 2, 1), true},
		{"limit=3&starting_after=" + r[1].ID, idsOf(0), false},
		{"status=succeeded&limit=1&starting_after=" + r[3].ID, idsOf(2), true},
		{"starting_after=" + r[0].ID, idsOf(), false},
	} {
		got, more := refundIDs(t, m.c, "/v1/refunds?"+tc.query)
		if !slices.Equal(got, tc.want) || more != tc.more {
			t.Errorf("GET /v1/refunds?%s = %v has_more %v, want %v has_more %v", tc.query, got, more, tc.want, tc.more)
		}
	}
	for _, tc := range []struct {
		query string
		want  []string
		more  bool
	}{
		{"", idsOf(3, 1, 0), false},
		{"limit=2", idsOf(3, 1), true},
		{"limit=2&starting_after=" + r[1].ID, idsOf(0), false},
	} {
		got, more := refundIDs(t, m.c, "/v1/charges/"+a.ID+"/refunds?"+tc.query)
		if !slices.Equal(got, tc.want) || more != tc.more {
			t.Errorf("GET /v1/charges/{a}/refunds?%s = %v has_more %v, want %v has_more %v", tc.query, got, more, tc.want, tc.more)
		}
	}

	t.Run("pages of one walk the whole list", func(t *testing.T) {
		if got := allRefundIDs(t, m.c, "/v1/refunds", 1); !slices.Equal(got, idsOf(3, 2, 1, 0)) {
			t.Errorf("pages of 1 = %v, want %v", got, idsOf(3, 2, 1, 0))
		}
		if got := allRefundIDs(t, m.c, "/v1/charges/"+a.ID+"/refunds", 2); !slices.Equal(got, idsOf(3, 1, 0)) {
			t.Errorf("a's refunds in pages of 2 = %v, want %v", got, idsOf(3, 1, 0))
		}
	})

	t.Run("amount_refunded counts the succeeded ones", func(t *testing.T) {
		var list struct{ Data []refundedCharge }
		if res := m.c.Get(t, "/v1/charges?status=succeeded"); !res.WantStatus(t, http.StatusOK) || !res.Decode(t, &list) {
			t.FailNow()
		}
		got := map[string]int64{}
		for _, c := range list.Data {
			got[c.ID] = c.AmountRefunded
		}
		if len(got) != 2 || got[a.ID] != 2000 || got[b.ID] != 2000 {
			t.Errorf("amount_refunded by charge = %v, want %s and %s at 2000", got, a.ID, b.ID)
		}
	})

	t.Run("another merchant's refunds never appear", func(t *testing.T) {
		if got, more := refundIDs(t, other.c, "/v1/refunds"); !slices.Equal(got, []string{or.ID}) || more {
			t.Errorf("other merchant's list = %v has_more %v, want only %s", got, more, or.ID)
		}
		if got, _ := refundIDs(t, other.c, "/v1/refunds?charge_id="+a.ID); len(got) != 0 {
			t.Errorf("other merchant's list ?charge_id=a = %v, want nothing", got)
		}
		wantError(t, other.c.Get(t, "/v1/refunds?starting_after="+r[2].ID), http.StatusNotFound, "not_found", "")
		wantError(t, m.c.Get(t, "/v1/refunds?starting_after="+or.ID), http.StatusNotFound, "not_found", "")
	})

	t.Run("bad parameters are validation_failed naming the parameter", func(t *testing.T) {
		for _, tc := range []struct{ query, field string }{
			{"status=bogus", "status"},
			{"status=scheduled", "status"},
			{"charge_id=" + a.MandateID, "charge_id"},
			{"charge_id=x", "charge_id"},
			{"created_gte=yesterday", "created_gte"},
			{"created_lt=2028-03-10", "created_lt"},
			{"limit=0", "limit"},
			{"limit=101", "limit"},
			{"limit=-1", "limit"},
			{"limit=ten", "limit"},
		} {
			wantError(t, m.c.Get(t, "/v1/refunds?"+tc.query), http.StatusUnprocessableEntity, "validation_failed", tc.field)
		}
		wantError(t, m.c.Get(t, "/v1/charges/"+a.ID+"/refunds?limit=500"), http.StatusUnprocessableEntity, "validation_failed", "limit")
		for _, after := range []string{"rfd_aaaaaaaaaaaaaaaaaaaaaaaa", a.ID, "nope"} {
			wantError(t, m.c.Get(t, "/v1/refunds?starting_after="+after), http.StatusNotFound, "not_found", "")
			wantError(t, m.c.Get(t, "/v1/charges/"+a.ID+"/refunds?starting_after="+after), http.StatusNotFound, "not_found", "")
		}
	})
}

func (e *refundEnv) testRefundTenants(t *testing.T) {
	a := e.tenant(t, "bind", "withhold")
	card := e.bindCard(t, e.srv, a.tenant, "ICBC", "", "")
	ch := e.succeededCharge(t, a, card, 6000)
	after := e.balance(t, card)
	e.clk.Advance(time.Second)
	r := e.succeeded(t, a, e.refund(t, a, ch.ID, map[string]any{"amount": 1000}))

	b := e.tenant(t, "bind", "withhold")
	for _, res := range []*apitest.Response{
		b.c.Post(t, "/v1/charges/"+ch.ID+"/refunds", map[string]any{"amount": 1000}, newKey(t)),
		b.c.Post(t, "/v1/charges/"+ch.ID+"/refunds", map[string]any{"amount": 1000}, apitest.IdempotencyKey("tenant-"+randomHex(t, 4))),
		b.c.Get(t, "/v1/charges/"+ch.ID+"/refunds"),
		b.c.Get(t, "/v1/refunds/"+r.ID),
		b.c.Get(t, "/v1/charges/"+ch.ID),
	} {
		wantError(t, res, http.StatusNotFound, "not_found", "")
	}
	if ids, _ := refundIDs(t, b.c, "/v1/refunds"); len(ids) != 0 {
		t.Errorf("b's refunds = %v, want none", ids)
	}
	if ids, _ := refundIDs(t, a.c, "/v1/charges/"+ch.ID+"/refunds"); !slices.Equal(ids, []string{r.ID}) {
		t.Errorf("a's charge's refunds after b's tries = %v, want [%s]", ids, r.ID)
	}
	if got := getCharge(t, a, ch.ID); got.AmountRefunded != 1000 {
		t.Errorf("amount_refunded = %d after b's tries, want 1000", got.AmountRefunded)
	}
	if bal := e.balance(t, card); bal != after+1000 {
		t.Errorf("balance = %d, want %d: b's tries credited nothing", bal, after+1000)
	}
}

func (e *refundEnv) testRefundScope(t *testing.T) {
	m := e.tenant(t, "bind", "withhold")
	card := e.bindCard(t, e.srv, m.tenant, "ICBC", "", "")
	ch := e.succeededCharge(t, m, card, 3000)
	e.clk.Advance(time.Second)
	r := e.succeeded(t, m, e.refund(t, m, ch.ID, map[string]any{"amount": 1000}))
	after := e.balance(t, card)

	bind := e.narrowed(t, m, "bind") // the same merchant, a token without withhold
	for _, tc := range []struct {
		name string
		do   func(t *testing.T) *apitest.Response
	}{
		{"POST /v1/charges/{id}/refunds", func(t *testing.T) *apitest.Response {
			return bind.Post(t, "/v1/charges/"+ch.ID+"/refunds", map[string]any{"amount": 1000}, newKey(t))
		}},
		{"GET /v1/charges/{id}/refunds", func(t *testing.T) *apitest.Response { return bind.Get(t, "/v1/charges/"+ch.ID+"/refunds") }},
		{"GET /v1/refunds", func(t *testing.T) *apitest.Response { return bind.Get(t, "/v1/refunds") }},
		{"GET /v1/refunds/{id}", func(t *testing.T) *apitest.Response { return bind.Get(t, "/v1/refunds/"+r.ID) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := wantError(t, tc.do(t), http.StatusForbidden, "insufficient_scope", ""); got.RequiredScope != "withhold" {
				t.Errorf("required_scope = %q, want withhold", got.RequiredScope)
			}
		})
	}
	withhold := e.narrowed(t, m, "withhold")
	if ids, _ := refundIDs(t, withhold, "/v1/charges/"+ch.ID+"/refunds"); !slices.Equal(ids, []string{r.ID}) {
		t.Errorf("refunds after refused calls = %v, want only [%s]", ids, r.ID)
	}
	if bal := e.balance(t, card); bal != after {
		t.Errorf("balance = %d, want %d: a refused call credited the card", bal, after)
	}
}

// refundEvent is an event of the feed with a refund's data.
type refundEvent struct {
	ID   string `json:"id"`
	Type string `json:"type"`
	Data struct {
		ID            string  `json:"id"`
		ChargeID      string  `json:"charge_id"`
		MandateID     string  `json:"mandate_id"`
		Amount        int64   `json:"amount"`
		Currency      string  `json:"currency"`
		Status        string  `json:"status"`
		FailureCode   *string `json:"failure_code"`
		BankReference *string `json:"bank_reference"`
	} `json:"data"`
}

// refundEvents are the refund.* events c sees in its merchant's feed.
func refundEvents(t *testing.T, c *apitest.Client, query string) []refundEvent {
	t.Helper()
	var page struct {
		Data    []refundEvent `json:"data"`
		HasMore bool          `json:"has_more"`
	}
	if res := c.Get(t, "/v1/events?limit=500"+query); !res.WantStatus(t, http.StatusOK) || !res.Decode(t, &page) {
		t.FailNow()
	}
	if page.HasMore {
		t.Fatal("more than 500 events: the test's merchant should have a few")
	}
	var out []refundEvent
	for _, ev := range page.Data {
		if strings.HasPrefix(ev.Type, "refund.") {
			out = append(out, ev)
		}
	}
	return out
}

func (e *refundEnv) testRefundEvents(t *testing.T) {
	ctx := context.Background()
	m := e.tenant(t, "bind", "withhold")
	card := e.bindCard(t, e.srv, m.tenant, "ICBC", "", "")
	ch := e.succeededCharge(t, m, card, 3000)
	e.clk.Advance(time.Second)
	ok := e.succeeded(t, m, e.refund(t, m, ch.ID, map[string]any{"amount": 1000}))
	if err := e.srv.SimCtl.AddFault(ctx, simclient.Fault{BankCode: "ICBC", Operation: "refund", Mode: simclient.FaultDecline, Code: "card_closed"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.srv.SimCtl.ClearFaults(ctx, "ICBC") })
	e.clk.Advance(time.Second)
	failed := e.settled(t, m, e.refund(t, m, ch.ID, map[string]any{"amount": 2000}).ID)
	if failed.Status != mandate.RefundFailed {
		t.Fatalf("refund under a decline fault = %s, want failed", failed.Status)
	}

	withhold := e.narrowed(t, m, "withhold")
	for name, c := range map[string]*apitest.Client{"bind and withhold": m.c, "withhold": withhold} {
		evs := refundEvents(t, c, "")
		if len(evs) != 2 || evs[0].Type != "refund.succeeded" || evs[1].Type != "refund.failed" {
			t.Fatalf("%s token: refund events %+v, want refund.succeeded then refund.failed", name, evs)
		}
		s, f := evs[0].Data, evs[1].Data
		if s.ID != ok.ID || s.ChargeID != ch.ID || s.MandateID != ch.MandateID || s.Amount != 1000 || s.Currency != "CNY" ||
			s.Status != string(mandate.RefundSucceeded) || str(s.BankReference) != str(ok.BankReference) || s.FailureCode != nil {
			t.Errorf("%s token: refund.succeeded data = %+v, want refund %s as it settled", name, s, ok.ID)
		}
		if f.ID != failed.ID || f.Amount != 2000 || f.Status != string(mandate.RefundFailed) || str(f.FailureCode) != str(failed.FailureCode) {
			t.Errorf("%s token: refund.failed data = %+v, want refund %s as it failed", name, f, failed.ID)
		}
		if only := refundEvents(t, c, "&type=refund.succeeded"); len(only) != 1 || only[0].ID != evs[0].ID {
			t.Errorf("%s token: type=refund.succeeded = %+v, want the one event", name, only)
		}
		c.Get(t, "/v1/events/"+evs[0].ID).WantStatus(t, http.StatusOK)
	}
	evs := refundEvents(t, m.c, "")
	bind := e.narrowed(t, m, "bind")
	if got := refundEvents(t, bind, ""); len(got) != 0 {
		t.Errorf("bind token sees refund events %+v, want none", got)
	}
	if got := refundEvents(t, bind, "&type=refund.succeeded&type=refund.failed"); len(got) != 0 {
		t.Errorf("bind token asking for refund types sees %+v, want none", got)
	}
	for _, ev := range evs {
		wantError(t, bind.Get(t, "/v1/events/"+ev.ID), http.StatusNotFound, "not_found", "")
	}
}

func (e *refundEnv) testRefundWindow(t *testing.T) {
	m := e.tenant(t, "bind", "withhold")
	card := e.bindCard(t, e.srv, m.tenant, "ICBC", "", "")
	ch := e.succeededCharge(t, m, card, 3000)

	// The clock passes the tokens' life: each step gets a fresh one.
	retoken := func() {
		t.Helper()
		c := apitest.NewClient(t, e.srv.url)
		m.c = c.WithToken(c.Token(t, m.clientID, m.secret))
	}
	e.clk.Advance(mandate.RefundWindow - 24*time.Hour)
	retoken()
	e.succeeded(t, m, e.refund(t, m, ch.ID, map[string]any{"amount": 1000}))
	e.clk.Advance(48 * time.Hour)
	retoken()
	wantError(t, m.c.Post(t, "/v1/charges/"+ch.ID+"/refunds", map[string]any{"amount": 1000}, newKey(t)),
		http.StatusUnprocessableEntity, "charge_not_refundable", "")
	if got := getCharge(t, m, ch.ID); got.AmountRefunded != 1000 {
		t.Errorf("amount_refunded = %d, want 1000", got.AmountRefunded)
	}
}

// newKey is a fresh Idempotency-Key: a refund needs one.
func newKey(t *testing.T) apitest.Option { return apitest.IdempotencyKey("rk-" + randomHex(t, 8)) }
