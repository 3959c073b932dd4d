package mandate_test

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/bankadapters/channels"
	"github.com/quickpay/quickpay/bankadapters/conformance"
	"github.com/quickpay/quickpay/bankadapters/formrsa"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/dev/simclient"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/sensitive"
	"github.com/quickpay/quickpay/internal/sms"
	"github.com/quickpay/quickpay/internal/webhooks"
	"github.com/quickpay/quickpay/mandate"
)

func TestMain(m *testing.M) {
	// After the tests: no card data or code in the database or the logs.
	logs := testenv.CaptureDefaultLog()
	os.Exit(testenv.Main(m, testenv.ScanPackage(logs, "PAN", "ID number", "OTP")))
}

// The tests of this package do not call t.Parallel: RunDue, Pending and
// Reconcile work across every merchant in the package's one database (as
// the scheduler does in production), so two worlds at once would claim
// each other's charges under each other's clocks. Each world deletes its
// mandates, charges and attempts when it ends, so the next starts clean.

var shanghai = func() *time.Location {
	l, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		panic(err)
	}
	return l
}()

// worldStart is 09:00 in Shanghai on Friday 2027-01-01.
var worldStart = time.Date(2027, 1, 1, 1, 0, 0, 0, time.UTC)

// testQueryBackoff are the real waits before each status query: short, so
// that an unknown outcome settles (or runs out of queries) in about a
// second.
var testQueryBackoff = []time.Duration{20 * time.Millisecond, 40 * time.Millisecond, 80 * time.Millisecond, 160 * time.Millisecond}

// world is quickpay's charging engine over a real stack: Postgres, SoftHSM,
// Vault, banksim over HTTP, River workers, a fake clock that banksim's
// clock follows, and the services wired as cmd/quickpay wires them.
type world struct {
	*testenv.Stack
	clock    *clock.Fake
	banks    *channels.Registry
	bindings *binding.Service
	hooks    *webhooks.Service
	svc      *mandate.Service
	cfg      mandate.Config // svc's
	jobs     *river.Client[pgx.Tx]
	queue    string
	merchant string
	gen      *conformance.Gen
	logs     *testenv.LogCapture // every log line of the world, for the leak check

	// carrierDown makes the SMS carrier answer 503; refusePhone (under mu)
	// makes it refuse texts to one number.
	carrierDown atomic.Bool
	refusePhone string
	// refundCallbacks counts refund callbacks applied.
	refundCallbacks atomic.Int64

	mu        sync.Mutex
	merchants []string
	secrets   []string // card and ID numbers that must never reach a log
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newWorld builds a world; tweaks adjust the mandate service's Config.
func newWorld(t *testing.T, tweaks ...func(*mandate.Config)) *world {
	t.Helper()
	ctx := context.Background()
	w := &world{Stack: testenv.NewStack(t), clock: clock.NewFake(worldStart), gen: conformance.NewGen(), logs: &testenv.LogCapture{}}
	w.Sim.SetNow(worldStart)
	logger := slog.New(slog.NewJSONHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w.merchant = w.newMerchant(t)

	// The same channels as the stack's (own merchant numbers, settings in
	// Vault); requests are stamped with the real clock, as banksim checks
	// signature timestamps against real time whatever its moved clock says.
	prefix := "secret/quickpay/mandate-banks-" + randHex(4)
	suffix := randHex(3)
	chans, err := w.SimCtl.ConnectPlatform(ctx, func(code string) string { return "QPM" + code + suffix }, w.HSM.BankPublicKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	for code, ch := range chans {
		if err := w.Secrets.Write(ctx, prefix+"/"+code, ch); err != nil {
			t.Fatal(err)
		}
	}
	w.banks, err = channels.Open(ctx, channels.Config{
		Secrets: w.Secrets, Prefix: prefix, BaseURL: w.SimURL,
		Signer:  func(code string) formrsa.Signer { return w.HSM.BankSigner(code) },
		Options: bankadapters.CallOptions{Timeout: 2 * time.Second, Logger: logger},
	})
	if err != nil {
		t.Fatal(err)
	}

	// The SMS carrier is banksim's, behind a real HTTP hop that can be
	// made to refuse (banksim's carrier itself always accepts).
	carrier := httptest.NewServer(http.HandlerFunc(w.serveCarrier))
	t.Cleanup(carrier.Close)
	sender, err := sms.New(sms.Config{URL: carrier.URL, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}

	// A stand-in for the API's POST /callbacks/banks/{code}: it verifies
	// the bank's signature and applies the result, as the route does.
	callbacks := http.NewServeMux()
	callbacks.HandleFunc("POST /callbacks/banks/{code}", w.serveCallback)
	cbServer := httptest.NewServer(callbacks)
	t.Cleanup(cbServer.Close)

	chargeW, queryW, refundW := &mandate.ChargeWorker{}, &mandate.QueryWorker{}, &mandate.RefundWorker{}
	workers := river.NewWorkers()
	river.AddWorker(workers, chargeW)
	river.AddWorker(workers, queryW)
	river.AddWorker(workers, refundW)
	// A queue of the world's own: jobs a finished world left behind are
	// never worked by the next world's services.
	w.queue = "charges_" + randHex(4)
	w.jobs, err = river.NewClient(riverpgxv5.New(w.Pool), &river.Config{
		Logger:            slog.New(slog.NewJSONHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Workers:           workers,
		Queues:            map[string]river.QueueConfig{w.queue: {MaxWorkers: 8}},
		FetchCooldown:     5 * time.Millisecond,
		FetchPollInterval: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	w.hooks, err = webhooks.New(webhooks.Config{Pool: w.Pool, Vault: w.Vault, Jobs: w.jobs, Clock: w.clock})
	if err != nil {
		t.Fatal(err)
	}
	w.bindings, err = binding.New(binding.Config{Pool: w.Pool, Vault: w.Vault, Banks: w.banks, Clock: w.clock,
		Logger: logger, Emit: w.hooks.Queue,
		CardEnded: func(ctx context.Context, tx pgx.Tx, merchantID, cardID, status string) error {
			return w.svc.CancelForCard(ctx, tx, merchantID, cardID, status)
		}})
	if err != nil {
		t.Fatal(err)
	}
	w.cfg = mandate.Config{
		Pool: w.Pool, Cards: w.bindings, Hasher: w.Vault, Banks: w.banks, SMS: sender, Jobs: w.jobs, Emit: w.hooks.EmitAll,
		Clock: w.clock, Logger: logger, QueryBackoff: testQueryBackoff, Queue: w.queue,
		NotifyURL: func(code string) string { return cbServer.URL + "/callbacks/banks/" + code },
	}
	for _, f := range tweaks {
		f(&w.cfg)
	}
	w.svc, err = mandate.New(w.cfg)
	if err != nil {
		t.Fatal(err)
	}
	chargeW.Service, queryW.Service, refundW.Service = w.svc, w.svc, w.svc

	// Cleanups run last first: River stops, then the world's rows go,
	// then the logs are checked.
	t.Cleanup(func() { w.checkLogs(t) })
	t.Cleanup(func() { w.deleteRows(t) })
	runCtx, cancel := context.WithCancel(context.Background())
	if err := w.jobs.Start(runCtx); err != nil {
		cancel()
		t.Fatal(err)
	}
	ticked := make(chan struct{})
	go func() {
		defer close(ticked)
		w.tickScheduler(runCtx)
	}()
	t.Cleanup(func() {
		cancel()
		<-ticked
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		_ = w.jobs.StopAndCancel(sctx)
	})
	return w
}

// limitBanks puts the world's banks behind bankadapters.WithLimit, as
// channels.Open does with QUICKPAY_BANK_LIMITS: one gate per bank code,
// shared by every call the service makes to that bank.
func limitBanks(limits map[string]bankadapters.Limit) func(*mandate.Config) {
	return func(c *mandate.Config) { c.Banks = newLimitedBanks(c.Banks, limits, nil) }
}

// limitedBanks are banks behind their limits; wrap (if not nil) sits
// between a bank's gate and the bank, seeing only the calls that passed it.
type limitedBanks struct {
	mandate.Banks
	limited map[string]bankadapters.Bank
}

func newLimitedBanks(banks mandate.Banks, limits map[string]bankadapters.Limit,
	wrap func(bankadapters.Bank) bankadapters.Bank) limitedBanks {
	l := limitedBanks{Banks: banks, limited: map[string]bankadapters.Bank{}}
	for code, lim := range limits {
		b, ok := banks.Bank(code)
		if !ok {
			panic("limitBanks: no bank " + code)
		}
		if wrap != nil {
			b = wrap(b)
		}
		l.limited[code] = bankadapters.WithLimit(b, lim)
	}
	return l
}

func (l limitedBanks) Bank(code string) (bankadapters.Bank, bool) {
	if b, ok := l.limited[code]; ok {
		return b, true
	}
	return l.Banks.Bank(code)
}

// tickScheduler makes the world's scheduled jobs available as soon as
// their time comes, until ctx ends. River's own scheduler does this every
// 5 s (not configurable), which would turn the test's 20 ms query backoff
// into seconds; this stand-in uses River's public JobRetry, which leaves a
// past scheduled_at as it is.
func (w *world) tickScheduler(ctx context.Context) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	params := river.NewJobListParams().Queues(w.queue).States(rivertype.JobStateScheduled).First(100)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		res, err := w.jobs.JobList(ctx, params)
		if err != nil {
			continue
		}
		for _, j := range res.Jobs {
			if !j.ScheduledAt.After(time.Now()) {
				_, _ = w.jobs.JobRetry(ctx, j.ID)
			}
		}
	}
}

// newMerchant adds a merchant (tenant) to the world.
func (w *world) newMerchant(t *testing.T) string {
	t.Helper()
	id := testenv.Merchant(t, w.Pool)
	w.mu.Lock()
	w.merchants = append(w.merchants, id)
	w.mu.Unlock()
	return id
}

func (w *world) serveCarrier(rw http.ResponseWriter, r *http.Request) {
	if w.carrierDown.Load() {
		http.Error(rw, "carrier unavailable", http.StatusServiceUnavailable)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	var msg struct {
		To string `json:"to"`
	}
	_ = json.Unmarshal(body, &msg)
	w.mu.Lock()
	refused := msg.To != "" && msg.To == w.refusePhone
	w.mu.Unlock()
	if refused {
		http.Error(rw, "number refused", http.StatusUnprocessableEntity)
		return
	}
	resp, err := http.Post(w.SimURL+"/carrier/sms", "application/json", bytes.NewReader(body))
	if err != nil {
		http.Error(rw, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	rw.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(rw, resp.Body)
}

// refuse makes the carrier refuse texts to phone ("" : none).
func (w *world) refuse(phone string) {
	w.mu.Lock()
	w.refusePhone = phone
	w.mu.Unlock()
}

func (w *world) serveCallback(rw http.ResponseWriter, r *http.Request) {
	code := r.PathValue("code")
	bank, ok := w.banks.Bank(code)
	parser, isParser := bank.(bankadapters.CallbackParser)
	if !ok || !isParser {
		http.NotFound(rw, r)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		http.Error(rw, "unreadable", http.StatusBadRequest)
		return
	}
	n, err := parser.ParseCallback(r.Header, body)
	if err != nil {
		http.Error(rw, "signature", http.StatusUnauthorized)
		return
	}
	switch n.Kind {
	case bankadapters.NoticeCharge:
		err = w.svc.ApplyResult(r.Context(), code, n.Charge)
	case bankadapters.NoticeRefund:
		err = w.svc.ApplyRefundResult(r.Context(), code, n.Refund)
		if err == nil {
			w.refundCallbacks.Add(1)
		}
	default:
		http.Error(rw, "notice kind", http.StatusBadRequest)
		return
	}
	if err != nil {
		http.Error(rw, "not applied", http.StatusInternalServerError)
		return
	}
	rw.WriteHeader(http.StatusNoContent)
}

// deleteRows removes the world's mandates, charges, attempts and refunds, and its
// queue's jobs, so that the next world's RunDue and Reconcile see none.
func (w *world) deleteRows(t *testing.T) {
	ctx := context.Background()
	w.mu.Lock()
	ms := slices.Clone(w.merchants)
	w.mu.Unlock()
	for _, sql := range []string{
		// An open batch of the world's would take the next world's
		// refunds into a job no worker will run.
		`DELETE FROM refund_jobs WHERE job_id IN (SELECT job_id FROM refunds WHERE merchant_id = ANY($1))`,
		`DELETE FROM refunds WHERE merchant_id = ANY($1)`,
		`DELETE FROM charge_attempts WHERE merchant_id = ANY($1)`,
		`DELETE FROM charges WHERE merchant_id = ANY($1)`,
		`DELETE FROM mandates WHERE merchant_id = ANY($1)`,
	} {
		if _, err := w.Pool.Exec(ctx, sql, ms); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
	if _, err := w.Pool.Exec(ctx, `DELETE FROM river_job WHERE queue = $1`, w.queue); err != nil {
		t.Errorf("cleanup: %v", err)
	}
}

// checkLogs fails the test if a card or ID number of the world is in any
// log line the world's services, adapters or River wrote.
func (w *world) checkLogs(t *testing.T) {
	logs := w.logs.String()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.secrets {
		if strings.Contains(logs, s) {
			t.Errorf("the logs hold a test card or ID number (%s…%s)", s[:4], s[len(s)-2:])
		}
	}
}

// --- time ---

// setNow moves quickpay's clock and banksim's together.
func (w *world) setNow(at time.Time) {
	w.clock.Set(at)
	w.Sim.SetNow(at)
}

// setDay moves both clocks to 09:00 Shanghai on date (a mandate date).
func (w *world) setDay(date time.Time) { w.setNow(nineAM(date)) }

func nineAM(date time.Time) time.Time {
	return time.Date(date.Year(), date.Month(), date.Day(), 9, 0, 0, 0, shanghai).UTC()
}

// today is the Shanghai date of the world's clock, as a mandate date.
func (w *world) today() time.Time {
	y, m, d := w.clock.Now().In(shanghai).Date()
	return mandate.DateOf(y, m, d)
}

func day(s string) time.Time {
	d, err := mandate.ParseDate(s)
	if err != nil {
		panic(err)
	}
	return d
}

// --- cards and mandates ---

// card is an account at banksim, bound in quickpay.
type card struct {
	conformance.Account
	ID       string
	Merchant string
}

// bindCard opens a debit account at bank with balance fen and binds it
// for the world's merchant.
func (w *world) bindCard(t *testing.T, bank string, balance int64) card {
	t.Helper()
	return w.bindCardFor(t, w.merchant, bank, balance)
}

func (w *world) bindCardFor(t *testing.T, merchantID, bank string, balance int64) card {
	t.Helper()
	ctx := context.Background()
	info, err := w.SimCtl.Bank(ctx, bank)
	if err != nil {
		t.Fatal(err)
	}
	a, err := w.gen.Account(info, "debit", balance)
	if err != nil {
		t.Fatal(err)
	}
	if !conformance.LuhnValid(a.CardNumber) {
		t.Fatalf("generated card number fails Luhn")
	}
	if err := w.SimCtl.PutAccount(ctx, a); err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	w.secrets = append(w.secrets, a.CardNumber, a.IDNumber)
	w.mu.Unlock()
	return w.bindAccount(t, merchantID, a)
}

// bindAccount binds the bank's account a for merchantID.
func (w *world) bindAccount(t *testing.T, merchantID string, a conformance.Account) card {
	t.Helper()
	ctx := context.Background()
	b, err := w.bindings.StartBinding(ctx, merchantID, binding.BindInput{ExternalUserID: "user-" + randHex(6),
		HolderName: a.HolderName, IDNumber: sensitive.NewIDNumber(a.IDNumber), CardNumber: sensitive.NewPAN(a.CardNumber),
		Phone: a.Phone})
	if err != nil {
		t.Fatalf("start binding at %s: %v", a.BankCode, err)
	}
	texts, err := w.SimCtl.SMS(ctx, a.Phone)
	if err != nil || len(texts) == 0 {
		t.Fatalf("no bank SMS: %v", err)
	}
	bound, err := w.bindings.Confirm(ctx, merchantID, b.ID, sensitive.NewOTP(texts[0].Code))
	if err != nil || bound.Status != binding.StatusBound || bound.CardID == "" {
		t.Fatalf("confirm binding = %+v, %v", bound, err)
	}
	return card{Account: a, ID: bound.CardID, Merchant: merchantID}
}

// putAccount replaces the bank's account of c (balance, status), keeping
// its agreements and ledger.
func (w *world) putAccount(t *testing.T, c card, balance int64, status string) {
	t.Helper()
	a := c.Account
	a.Balance, a.Status = balance, status
	if err := w.SimCtl.PutAccount(context.Background(), a); err != nil {
		t.Fatal(err)
	}
}

// consentCode is the first run of exactly 6 digits in a consent text.
var consentCode = regexp.MustCompile(`(?:^|[^0-9])([0-9]{6})(?:[^0-9]|$)`)

// mandate creates a mandate on c and confirms it with the code quickpay
// texted to the card's phone.
func (w *world) mandate(t *testing.T, c card, in mandate.CreateInput) mandate.Mandate {
	t.Helper()
	ctx := context.Background()
	in.CardID = c.ID
	if in.Reference == "" {
		in.Reference = "ref-" + randHex(4)
	}
	m, err := w.svc.Create(ctx, c.Merchant, in)
	if err != nil {
		t.Fatalf("create mandate: %v", err)
	}
	texts, err := w.SimCtl.SMS(ctx, c.Phone)
	if err != nil || len(texts) == 0 {
		t.Fatalf("no consent SMS: %v", err)
	}
	if !strings.HasPrefix(texts[0].Text, "【quickpay】") {
		t.Fatalf("newest text is not quickpay's consent text")
	}
	code := consentCode.FindStringSubmatch(texts[0].Text)
	if code == nil {
		t.Fatalf("no 6-digit code in the consent text")
	}
	m, err = w.svc.Confirm(ctx, c.Merchant, m.ID, sensitive.NewOTP(code[1]))
	if err != nil || m.Status != mandate.StatusActive {
		t.Fatalf("confirm mandate = %+v, %v", m, err)
	}
	return m
}

// monthly is a fixed monthly mandate on day from the world's today.
func (w *world) monthly(day int, amount int64) mandate.CreateInput {
	return mandate.CreateInput{AmountType: mandate.AmountFixed, Amount: amount,
		Schedule: mandate.Schedule{Interval: mandate.IntervalMonth, DayOfMonth: day, StartDate: w.today()}}
}

// dueToday is a fixed monthly mandate whose first charge is today.
func (w *world) dueToday(amount int64) mandate.CreateInput { return w.monthly(w.today().Day(), amount) }

// --- running ---

// runDue runs what is due at the world's now and waits until every
// claimed charge is answered and none is unknown.
func (w *world) runDue(t *testing.T) mandate.RunStats {
	t.Helper()
	st, err := w.svc.RunDue(context.Background(), w.clock.Now())
	if err != nil {
		t.Fatalf("run due at %s: %v", w.clock.Now().Format(time.RFC3339), err)
	}
	w.settle(t, true)
	return st
}

// settle waits, with a deadline, until no charge is processing, no job of
// the world's queue is waiting or running, and (if all) none is unknown.
// A job that failed (retryable or discarded) fails the test.
func (w *world) settle(t *testing.T, all bool) {
	t.Helper()
	ctx := context.Background()
	var processing, unknown, busy int
	w.waitFor(t, 30*time.Second, func() bool {
		var err error
		processing, unknown, err = w.svc.Pending(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var failed int
		if err := w.Pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE state IN ('available', 'running', 'pending')),
			count(*) FILTER (WHERE state IN ('retryable', 'discarded')) FROM river_job WHERE queue = $1`, w.queue).
			Scan(&busy, &failed); err != nil {
			t.Fatal(err)
		}
		if failed > 0 {
			var errs []string
			rows, _ := w.Pool.Query(ctx, `SELECT kind || ': ' || errors::text FROM river_job
				WHERE queue = $1 AND state IN ('retryable', 'discarded')`, w.queue)
			errs, _ = pgx.CollectRows(rows, pgx.RowTo[string])
			t.Fatalf("charge jobs failed: %v", errs)
		}
		return processing == 0 && busy == 0 && (!all || unknown == 0)
	}, func() string {
		return fmt.Sprintf("charges still pending: processing %d, unknown %d, jobs %d", processing, unknown, busy)
	})
}

// waitFor polls cond every 10 ms until it holds, failing with what()
// after timeout.
func (w *world) waitFor(t *testing.T, timeout time.Duration, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, what())
		}
		<-tick.C
	}
}

// --- looking ---

// charges returns all of m's charges (every page), by charge date.
func (w *world) charges(t *testing.T, m mandate.Mandate) []mandate.Charge {
	t.Helper()
	var cs []mandate.Charge
	for p := (mandate.Page{Limit: mandate.MaxListLimit}); ; {
		page, more, err := w.svc.MandateCharges(context.Background(), m.MerchantID, m.ID, p)
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, page...)
		if !more {
			break
		}
		p.StartingAfter = page[len(page)-1].ID
	}
	// The tests read a mandate's charges by date.
	slices.SortFunc(cs, func(a, b mandate.Charge) int {
		return cmp.Or(a.ChargeDate.Compare(b.ChargeDate), strings.Compare(a.ID, b.ID))
	})
	return cs
}

// oneCharge returns m's only charge.
func (w *world) oneCharge(t *testing.T, m mandate.Mandate) mandate.Charge {
	t.Helper()
	cs := w.charges(t, m)
	if len(cs) != 1 {
		t.Fatalf("mandate has %d charges, want 1: %+v", len(cs), cs)
	}
	return cs[0]
}

func (w *world) getMandate(t *testing.T, m mandate.Mandate) mandate.Mandate {
	t.Helper()
	got, err := w.svc.Get(context.Background(), m.MerchantID, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func (w *world) cardStatus(t *testing.T, c card) binding.CardStatus {
	t.Helper()
	got, err := w.bindings.GetCard(context.Background(), c.Merchant, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	return got.Status
}

func chargeDates(cs []mandate.Charge) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.ChargeDate.Format(time.DateOnly)
	}
	return out
}

func (w *world) ledger(t *testing.T, c card) []simclient.LedgerEntry {
	t.Helper()
	l, err := w.SimCtl.Ledger(context.Background(), c.CardNumber)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// attempt is a charge_attempts row.
type attempt struct {
	OrderNo, ChargeID, FailureCode, BankResult string
	Status                                     mandate.AttemptStatus
	Amount                                     int64
	BankDay                                    time.Time
	Queries                                    int
}

// attempts returns the card's attempts by bank day, charge and sequence.
func (w *world) attempts(t *testing.T, c card) []attempt {
	t.Helper()
	rows, err := w.Pool.Query(context.Background(), `SELECT order_no, charge_id, status, coalesce(failure_code, ''),
		coalesce(bank_result, ''), amount, bank_day, queries FROM charge_attempts WHERE card_id = $1
		ORDER BY bank_day, charge_id, seq`, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	var out []attempt
	var a attempt
	if _, err := pgx.ForEachRow(rows, []any{&a.OrderNo, &a.ChargeID, &a.Status, &a.FailureCode, &a.BankResult,
		&a.Amount, &a.BankDay, &a.Queries}, func() error {
		out = append(out, a)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkBooks compares the bank's ledger of c with quickpay's attempts:
// the debits are exactly the succeeded attempts (order number and
// amount), no order is debited twice and no charge has two debits.
func (w *world) checkBooks(t *testing.T, c card) {
	t.Helper()
	ledger := w.ledger(t, c)
	debits := map[string]int64{}
	for _, e := range ledger {
		if e.Type != simclient.EntryDebit {
			continue // refunds: checkRefundBooks
		}
		if _, dup := debits[e.OrderNo]; dup {
			t.Errorf("order %s debited twice", e.OrderNo)
		}
		debits[e.OrderNo] = e.Amount
	}
	ours := map[string]int64{}
	chargeOf := map[string]string{}
	for _, a := range w.attempts(t, c) {
		chargeOf[a.OrderNo] = a.ChargeID
		if a.Status == mandate.AttemptSucceeded {
			ours[a.OrderNo] = a.Amount
		}
	}
	if !maps.Equal(debits, ours) {
		t.Errorf("bank debits %v, quickpay's succeeded attempts %v", debits, ours)
	}
	perCharge := map[string]int{}
	for no := range debits {
		if ch, ok := chargeOf[no]; ok {
			perCharge[ch]++
			if perCharge[ch] > 1 {
				t.Errorf("charge %s has %d debits", ch, perCharge[ch])
			}
		}
	}
}

// event is a webhook event with the fields the tests read.
type event struct {
	Seq  int
	Type string
	Data struct {
		ID           string  `json:"id"` // refund events
		Amount       int64   `json:"amount"`
		ChargeID     string  `json:"charge_id"`
		MandateID    string  `json:"mandate_id"`
		Status       string  `json:"status"`
		Period       string  `json:"period"`
		FailureCode  *string `json:"failure_code"`
		StatusReason *string `json:"status_reason"`
	}
}

// events returns every event of merchantID, oldest first.
func (w *world) events(t *testing.T, merchantID string) []event {
	t.Helper()
	var out []event
	after := ""
	for {
		evs, more, err := w.hooks.ListEvents(context.Background(), merchantID, after, webhooks.MaxListLimit)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			e := event{Seq: len(out), Type: ev.Type}
			if err := json.Unmarshal(ev.Data, &e.Data); err != nil {
				t.Fatal(err)
			}
			out = append(out, e)
		}
		if !more || len(evs) == 0 {
			return out
		}
		after = evs[len(evs)-1].ID
	}
}

// chargeEvents are the charge.* events about one charge, oldest first.
func chargeEvents(evs []event, chargeID string) []event {
	var out []event
	for _, e := range evs {
		if e.Data.ChargeID == chargeID && strings.HasPrefix(e.Type, "charge.") {
			out = append(out, e)
		}
	}
	return out
}

func types(evs []event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Type
	}
	return out
}

// mandateEvents are the mandate.* events about one mandate.
func mandateEvents(evs []event, mandateID string) []event {
	var out []event
	for _, e := range evs {
		if e.Data.MandateID == mandateID && e.Data.ChargeID == "" {
			out = append(out, e)
		}
	}
	return out
}

// logged reports whether the world's logs have a line with message msg
// about order number orderNo.
func (w *world) logged(msg, orderNo string) bool {
	for _, line := range strings.Split(w.logs.String(), "\n") {
		var rec struct {
			Msg     string `json:"msg"`
			OrderNo string `json:"order_no"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == msg && rec.OrderNo == orderNo {
			return true
		}
	}
	return false
}

// armedFaults is how many faults banksim still holds (GET /sim/faults).
func (w *world) armedFaults(t *testing.T) int {
	t.Helper()
	n, err := w.SimCtl.ArmedFaults(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (w *world) fault(t *testing.T, f simclient.Fault) {
	t.Helper()
	if err := w.SimCtl.AddFault(context.Background(), f); err != nil {
		t.Fatal(err)
	}
}
