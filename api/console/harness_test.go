package console_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/quickpay/quickpay/api/console"
	"github.com/quickpay/quickpay/api/idempotency"
	"github.com/quickpay/quickpay/bankadapters/conformance"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/merchants"
	"github.com/quickpay/quickpay/internal/operators"
	"github.com/quickpay/quickpay/internal/opsview"
	"github.com/quickpay/quickpay/internal/sensitive"
	"github.com/quickpay/quickpay/internal/sms"
	"github.com/quickpay/quickpay/internal/webhooks"
	"github.com/quickpay/quickpay/mandate"
)

func TestMain(m *testing.M) {
	// After the tests: no card number, ID number or code in the database
	// or the logs (the console logs to slog.Default, captured here).
	logs := testenv.CaptureDefaultLog()
	os.Exit(testenv.Main(m, testenv.ScanPackage(logs, "PAN", "ID number", "OTP")))
}

// The tests of this package are not parallel: RunDue claims every charge
// due in the package's one database, so two tests making charges at once
// would claim each other's. Their domain clock is fixed on epoch, a day
// the seeded rows (opsviewtest, dated seedDay) are far from.

// epoch is 10:00 in Shanghai on 2031-05-10: the domain's today.
var epoch = time.Date(2031, 5, 10, 2, 0, 0, 0, time.UTC)

// seedDay is the latest charge date of the seeded rows: after epoch, so
// RunDue at epoch claims none of them.
var seedDay = time.Date(2040, 1, 10, 12, 0, 0, 0, time.UTC)

// queue is the River queue of the tests' charge, query and refund jobs.
const queue = "console_test"

// env is the console over the real stack: Postgres, SoftHSM2, Vault,
// banksim over HTTP, the binding and mandate services with River workers
// that send charges and refunds to banksim, composed as cmd/quickpay
// composes them.
type env struct {
	*testenv.Stack
	clk       *clock.Fake
	bindings  *binding.Service
	mandates  *mandate.Service
	hooks     *webhooks.Service
	merchants *merchants.Store
	ops       *operators.Store
	views     *opsview.Reader
	idem      *idempotency.Store
	jobsUI    http.Handler
	gen       *conformance.Gen
	merchant  string // a merchant of the env's own
	url       string // the console's
	cfg       console.Config
}

func randHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func newEnv(t testing.TB) *env {
	t.Helper()
	ctx := context.Background()
	st := testenv.NewStack(t)
	e := &env{Stack: st, clk: clock.NewFake(epoch), gen: conformance.NewGen(), views: opsview.New(st.Pool)}

	charges, queries, refunds := &mandate.ChargeWorker{}, &mandate.QueryWorker{}, &mandate.RefundWorker{}
	workers := river.NewWorkers()
	river.AddWorker(workers, charges)
	river.AddWorker(workers, queries)
	river.AddWorker(workers, refunds)
	jobs, err := river.NewClient(riverpgxv5.New(st.Pool), &river.Config{
		Logger:            slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Workers:           workers,
		Queues:            map[string]river.QueueConfig{queue: {MaxWorkers: 4}},
		FetchCooldown:     10 * time.Millisecond,
		FetchPollInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Webhook deliveries are enqueued, never worked.
	insertOnly, err := river.NewClient(riverpgxv5.New(st.Pool), &river.Config{})
	if err != nil {
		t.Fatal(err)
	}
	e.hooks, err = webhooks.New(webhooks.Config{Pool: st.Pool, Vault: st.Vault, Jobs: insertOnly, AllowPrivateNetworks: true})
	if err != nil {
		t.Fatal(err)
	}
	e.bindings, err = binding.New(binding.Config{Pool: st.Pool, Vault: st.Vault, Banks: st.Banks, Clock: e.clk, Emit: e.hooks.Queue,
		CardEnded: func(ctx context.Context, tx pgx.Tx, merchantID, cardID, status string) error {
			return e.mandates.CancelForCard(ctx, tx, merchantID, cardID, status)
		}})
	if err != nil {
		t.Fatal(err)
	}
	carrier, err := sms.New(sms.Config{URL: st.SimURL + "/carrier/sms", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	e.mandates, err = mandate.New(mandate.Config{Pool: st.Pool, Cards: e.bindings, Hasher: st.Vault, Banks: st.Banks, SMS: carrier,
		Jobs: jobs, Queue: queue, Emit: e.hooks.EmitAll, Clock: e.clk,
		QueryBackoff: []time.Duration{20 * time.Millisecond, 40 * time.Millisecond, 80 * time.Millisecond},
		NotifyURL:    func(code string) string { return "http://127.0.0.1:1/callbacks/banks/" + code }})
	if err != nil {
		t.Fatal(err)
	}
	charges.Service, queries.Service, refunds.Service = e.mandates, e.mandates, e.mandates
	runCtx, cancel := context.WithCancel(ctx)
	if err := jobs.Start(runCtx); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		_ = jobs.StopAndCancel(sctx)
		cancel()
	})

	if e.merchants, err = merchants.NewStore(merchants.Config{Pool: st.Pool}); err != nil {
		t.Fatal(err)
	}
	m, _, err := e.merchants.Create(ctx, "console test "+randHex(t, 3), merchants.AllScopes)
	if err != nil {
		t.Fatal(err)
	}
	e.merchant = m.ID
	if e.ops, err = operators.NewStore(operators.Config{Pool: st.Pool, Sealer: st.Vault}); err != nil {
		t.Fatal(err)
	}
	if e.idem, err = idempotency.New(idempotency.Config{Pool: st.Pool, Hasher: st.Vault}); err != nil {
		t.Fatal(err)
	}
	uiCtx, uiCancel := context.WithCancel(ctx)
	t.Cleanup(uiCancel)
	if e.jobsUI, err = console.NewJobs(uiCtx, insertOnly, slog.Default()); err != nil {
		t.Fatal(err)
	}
	e.cfg = console.Config{Operators: e.ops, Views: e.views, Audit: st.Pool, Merchants: e.merchants, Mandates: e.mandates,
		Bindings: e.bindings, Webhooks: e.hooks, Vault: st.Vault, OnceKeys: e.idem, Jobs: e.jobsUI}
	e.url = e.serve(t, e.cfg)
	return e
}

// serve starts a console with cfg on a loopback server and returns its URL.
func (e *env) serve(t testing.TB, cfg console.Config) string {
	t.Helper()
	return e.serveOn(t, cfg, httptest.NewServer).URL
}

// serveTLS serves a console built from cfg over https; the server's
// Client trusts it.
func (e *env) serveTLS(t testing.TB, cfg console.Config) *httptest.Server {
	t.Helper()
	return e.serveOn(t, cfg, httptest.NewTLSServer)
}

func (e *env) serveOn(t testing.TB, cfg console.Config, start func(http.Handler) *httptest.Server) *httptest.Server {
	t.Helper()
	c, err := console.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The package's leak scan looks for unkeyed digests of every body
	// sent (the card finder's form holds a card number).
	srv := start(testenv.RecordBodies(c))
	t.Cleanup(srv.Close)
	return srv
}

// operator creates an operator of role and returns its enrolment.
func (e *env) operator(t testing.TB, ops *operators.Store, role operators.Role) operators.Enrolment {
	t.Helper()
	en, err := ops.Create(context.Background(), "op-"+string(role)+"-"+randHex(t, 4), role, "test")
	if err != nil {
		t.Fatal(err)
	}
	return en
}

// code is the enrolment's TOTP code at now, computed from its URI as an
// authenticator app does.
func code(t testing.TB, en operators.Enrolment, now time.Time) string {
	t.Helper()
	key, err := otp.NewKeyFromURL(en.TOTPURI)
	if err != nil {
		t.Fatal(err)
	}
	c, err := totp.GenerateCodeCustom(key.Secret(), now, totp.ValidateOpts{Period: uint(key.Period()), Digits: key.Digits(),
		Algorithm: key.Algorithm()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// agent is an operator's browser without script: a cookie jar that does
// not follow redirects, and the CSRF token of the last page it read.
type agent struct {
	base string
	c    *http.Client
	csrf string
	op   operators.Operator
}

func newAgent(t testing.TB, base string) *agent {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &agent{base: base, c: &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// page is an answer the agent read.
type page struct {
	status   int
	location string
	body     string
	header   http.Header
}

var csrfValue = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (a *agent) do(t testing.TB, method, path string, form url.Values) page {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, a.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	res, err := a.c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	p := page{status: res.StatusCode, location: res.Header.Get("Location"), body: string(b), header: res.Header}
	if m := csrfValue.FindStringSubmatch(p.body); m != nil {
		a.csrf = m[1]
	}
	return p
}

func (a *agent) get(t testing.TB, path string) page { return a.do(t, http.MethodGet, path, nil) }

// post sends form with the agent's CSRF token (unless form sets one).
func (a *agent) post(t testing.TB, path string, form url.Values) page {
	t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if _, ok := form["csrf"]; !ok {
		form.Set("csrf", a.csrf)
	}
	return a.do(t, http.MethodPost, path, form)
}

// postLogin posts the login form (read before) for en at the current
// code and wants to be sent on to next.
func (a *agent) postLogin(t testing.TB, en operators.Enrolment, next string) page {
	t.Helper()
	p := a.post(t, "/login", url.Values{"name": {en.Operator.Name}, "password": {en.Password},
		"code": {code(t, en, time.Now())}, "next": {next}})
	if p.status != http.StatusSeeOther || p.location != next {
		t.Fatalf("login: %d to %q: %s", p.status, p.location, text(p.body))
	}
	return p
}

// setCookie is the Set-Cookie line p sets for the cookie name, or "".
func setCookie(p page, name string) string {
	for _, c := range p.header.Values("Set-Cookie") {
		if strings.HasPrefix(c, name+"=") {
			return c
		}
	}
	return ""
}

// login logs en in through the login form at now's code and reads the
// overview (taking its CSRF token).
func (a *agent) login(t testing.TB, en operators.Enrolment, now time.Time) {
	t.Helper()
	if p := a.get(t, "/login"); p.status != http.StatusOK {
		t.Fatalf("login page: %d", p.status)
	}
	p := a.post(t, "/login", url.Values{"name": {en.Operator.Name}, "password": {en.Password}, "code": {code(t, en, now)}, "next": {"/"}})
	if p.status != http.StatusSeeOther || p.location != "/" {
		t.Fatalf("login: %d to %q: %s", p.status, p.location, text(p.body))
	}
	if p := a.get(t, "/"); p.status != http.StatusOK || !strings.Contains(p.body, en.Operator.Name) {
		t.Fatalf("overview after login: %d", p.status)
	}
	a.op = en.Operator
}

// as logs a new operator of role in to the env's console.
func (e *env) as(t testing.TB, role operators.Role) *agent {
	t.Helper()
	a := newAgent(t, e.url)
	a.login(t, e.operator(t, e.ops, role), time.Now())
	return a
}

var tags = regexp.MustCompile(`<[^>]*>`)

// text is an HTML body's text, for failure messages.
func text(body string) string {
	s := strings.Join(strings.Fields(tags.ReplaceAllString(body, " ")), " ")
	if len(s) > 600 {
		s = s[:600] + "…"
	}
	return s
}

// --- money on the real stack ---

// boundCard is a card bound at banksim's bank, with the account's card
// number (which no test output may show).
type boundCard struct {
	conformance.Account
	ID string
}

// bind binds a new debit card at bank for the env's merchant.
func (e *env) bind(t testing.TB, bank string) boundCard {
	t.Helper()
	ctx := context.Background()
	info, err := e.SimCtl.Bank(ctx, bank)
	if err != nil {
		t.Fatal(err)
	}
	a, err := e.gen.Account(info, "debit", 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.SimCtl.PutAccount(ctx, a); err != nil {
		t.Fatal(err)
	}
	b, err := e.bindings.StartBinding(ctx, e.merchant, binding.BindInput{ExternalUserID: "user-" + randHex(t, 4),
		HolderName: a.HolderName, IDNumber: sensitive.NewIDNumber(a.IDNumber), CardNumber: sensitive.NewPAN(a.CardNumber), Phone: a.Phone})
	if err != nil {
		t.Fatalf("start binding at %s: %v", bank, err)
	}
	texts, err := e.SimCtl.SMS(ctx, a.Phone)
	if err != nil || len(texts) == 0 {
		t.Fatalf("no bank SMS: %v", err)
	}
	bound, err := e.bindings.Confirm(ctx, e.merchant, b.ID, sensitive.NewOTP(texts[0].Code))
	if err != nil || bound.Status != binding.StatusBound {
		t.Fatalf("confirm binding: %v", err)
	}
	return boundCard{Account: a, ID: bound.CardID}
}

var consentCode = regexp.MustCompile(`(?:^|[^0-9])([0-9]{6})(?:[^0-9]|$)`)

// mandate makes an active variable mandate of one charge on card, due on
// the 10th monthly from epoch's month.
func (e *env) mandate(t testing.TB, card boundCard) mandate.Mandate {
	t.Helper()
	ctx := context.Background()
	m, err := e.mandates.Create(ctx, e.merchant, mandate.CreateInput{CardID: card.ID, Reference: "console-" + randHex(t, 4),
		Description: "console test", AmountType: mandate.AmountVariable, MaxAmount: 500_000,
		Schedule: mandate.Schedule{Interval: mandate.IntervalMonth, DayOfMonth: 10, MaxCharges: 1,
			StartDate: time.Date(2031, 5, 1, 0, 0, 0, 0, time.UTC)}})
	if err != nil {
		t.Fatalf("create mandate: %v", err)
	}
	texts, err := e.SimCtl.SMS(ctx, card.Phone)
	if err != nil || len(texts) == 0 {
		t.Fatalf("no consent SMS: %v", err)
	}
	c := consentCode.FindStringSubmatch(texts[0].Text)
	if c == nil {
		t.Fatal("no code in the consent text")
	}
	m, err = e.mandates.Confirm(ctx, e.merchant, m.ID, sensitive.NewOTP(c[1]))
	if err != nil || m.Status != mandate.StatusActive {
		t.Fatalf("confirm mandate: %v", err)
	}
	return m
}

// paidCharge debits amount from a new card at bank through a mandate of
// its own: posted, claimed by RunDue, sent by the River workers, and
// awaited until it succeeded.
func (e *env) paidCharge(t testing.TB, bank string, amount int64) (mandate.Charge, boundCard) {
	t.Helper()
	ctx := context.Background()
	card := e.bind(t, bank)
	m := e.mandate(t, card)
	ch, err := e.mandates.PostCharge(ctx, e.merchant, m.ID, mandate.ChargeInput{Amount: amount})
	if err != nil {
		t.Fatalf("post charge: %v", err)
	}
	if _, err := e.mandates.RunDue(ctx, e.clk.Now()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "charge "+ch.ID+" to settle", func() bool {
		ch, err = e.mandates.GetCharge(ctx, e.merchant, ch.ID)
		return err == nil && (ch.Status == mandate.ChargeSucceeded || ch.Status == mandate.ChargeFailed)
	})
	if ch.Status != mandate.ChargeSucceeded {
		t.Fatalf("charge %s = %s, want succeeded", ch.ID, ch.Status)
	}
	return ch, card
}

// refundsAtBank is what banksim credited back to card.
func (e *env) refundsAtBank(t testing.TB, card boundCard) (n int, sum int64) {
	t.Helper()
	entries, err := e.SimCtl.Ledger(context.Background(), card.CardNumber)
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range entries {
		if en.Type == "refund" {
			n++
			sum += en.Amount
		}
	}
	return n, sum
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("after %s: still waiting for %s", within, what)
		case <-tick.C:
		}
	}
}

// auditRows counts audit_log rows of action on subject.
func (e *env) auditRows(t testing.TB, action, subject string) int {
	t.Helper()
	var n int
	if err := e.Pool.QueryRow(context.Background(), `SELECT count(*) FROM audit_log WHERE action = $1 AND subject = $2`,
		action, subject).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// count runs a count query.
func (e *env) count(t testing.TB, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := e.Pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}
