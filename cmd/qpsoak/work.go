package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	openapi_types "github.com/oapi-codegen/runtime/types"

	"github.com/quickpay/quickpay/api/client"
	"github.com/quickpay/quickpay/bankadapters/conformance"
	"github.com/quickpay/quickpay/internal/dev/simclient"
)

// figures are what one soak did and found; the one line it prints.
type figures struct {
	Seed               uint64  `json:"seed"`
	Rounds             int     `json:"rounds"`
	Bindings           int     `json:"bindings"`
	BindingsFailed     int     `json:"bindings_failed"`
	Mandates           int     `json:"mandates"`
	Charges            int     `json:"charges"`
	ChargesSucceeded   int     `json:"charges_succeeded"`
	Refunds            int     `json:"refunds"`
	RefundsSucceeded   int     `json:"refunds_succeeded"`
	OverRefundsRefused int     `json:"over_refunds_refused"`
	FaultsArmed        int     `json:"faults_armed"`
	FaultsFired        int     `json:"faults_fired"`
	ServeKills         int     `json:"serve_kills"`
	RunDueKills        int     `json:"run_due_kills"`
	ServeExits         int     `json:"serve_unexpected_exits"`
	PGRestarts         int     `json:"pg_restarts"`
	HSMFaults          int     `json:"hsm_faults"`
	Events             int     `json:"events"`
	DeliveryPOSTs      int     `json:"delivery_posts"`
	DeliveriesRefused  int     `json:"first_deliveries_refused"`
	DeliveredSeconds   float64 `json:"delivered_seconds_after_settled"`
	Violations         int     `json:"violations"`
	SettleSeconds      float64 `json:"settle_seconds"`
	SinceLastCrash     float64 `json:"settled_seconds_after_last_crash"`
	// RescueWaits are, for each run-due killed mid-run, the seconds from
	// the kill until the run started after it saw every charge answered
	// (it waits for the killed run's, which River rescues).
	RescueWaits    []float64 `json:"rescue_waits_seconds"`
	ElapsedSeconds float64   `json:"elapsed_seconds"`
}

func (f figures) line() string {
	return fmt.Sprintf("soak seed=%d rounds=%d charges=%d (succeeded %d) refunds=%d (succeeded %d) bindings=%d (failed %d) mandates=%d "+
		"faults_fired=%d/%d kills=%d (serve %d, run-due %d) serve_exits=%d pg_restarts=%d hsm_faults=%d "+
		"events=%d (delivery posts %d, first deliveries refused %d, all delivered %.1fs after settling) "+
		"violations=%d settle=%.1fs settled_after_last_crash=%.1fs answered_after_run_kill_max=%.1fs elapsed=%.0fs",
		f.Seed, f.Rounds, f.Charges, f.ChargesSucceeded, f.Refunds, f.RefundsSucceeded, f.Bindings, f.BindingsFailed, f.Mandates,
		f.FaultsFired, f.FaultsArmed, f.ServeKills+f.RunDueKills, f.ServeKills, f.RunDueKills, f.ServeExits, f.PGRestarts, f.HSMFaults,
		f.Events, f.DeliveryPOSTs, f.DeliveriesRefused, f.DeliveredSeconds, f.Violations, f.SettleSeconds, f.SinceLastCrash, slices.Max(append([]float64{0}, f.RescueWaits...)), f.ElapsedSeconds)
}

// soak is one run's state.
type soak struct {
	st    *stack
	rng   *rand.Rand
	rngMu sync.Mutex
	gen   *conformance.Gen
	banks []simclient.BankInfo
	say   func(format string, a ...any)
	// perRound is how many cards a round binds.
	perRound int

	mu        sync.Mutex
	fig       figures
	cards     []boundCard
	lastCrash time.Time
	// secrets are the card numbers and ID numbers the soak bound, which
	// no file of the evidence (logs, database files) may hold in clear.
	secrets map[string]bool
	// hook is the merchant's webhook endpoint (soak mode only).
	hook *endpoint
}

type boundCard struct {
	cardID, phone string
}

func (s *soak) intn(n int) int {
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	return s.rng.IntN(n)
}

func (s *soak) crashed() {
	s.mu.Lock()
	s.lastCrash = time.Now()
	s.mu.Unlock()
}

// call runs fn against a random serve instance and, when that fails as a
// dead instance does (a transport error or a 5xx after the client's own
// retries, 409 idempotency_key_in_use), against the others, for up to a
// minute. Callers pass their own Idempotency-Key, so a retry on another
// instance is the same request. A 4xx other than those is returned at once.
func (s *soak) call(ctx context.Context, fn func(c *client.Client) error) error {
	return s.callOn(ctx, s.intn(len(s.st.clients)), fn)
}

// callOn is call starting at instance first.
func (s *soak) callOn(ctx context.Context, first int, fn func(c *client.Client) error) error {
	deadline := time.Now().Add(time.Minute)
	var err error
	for i := 0; ; i++ {
		err = fn(s.st.clients[(first+i)%len(s.st.clients)])
		var apiErr *client.Error
		if err == nil || (errors.As(err, &apiErr) && apiErr.Status < 500 && apiErr.Code != "idempotency_key_in_use") {
			return err
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// bind opens an account at a random bank and binds its card through the
// API with the code the bank texted.
func (s *soak) bind(ctx context.Context) (boundCard, error) {
	return s.bindOn(ctx, s.intn(len(s.st.clients)))
}

// bindOn is bind through instance first (the others only if it fails as
// a dead instance does).
func (s *soak) bindOn(ctx context.Context, first int) (boundCard, error) {
	bank := s.banks[s.intn(len(s.banks))]
	acct, err := s.gen.Account(bank, "debit", 500_000_000)
	if err != nil {
		return boundCard{}, err
	}
	if err := s.st.sim.PutAccount(ctx, acct); err != nil {
		return boundCard{}, err
	}
	s.mu.Lock()
	s.secrets[acct.CardNumber], s.secrets[acct.IDNumber] = true, true
	s.mu.Unlock()
	user := "soak-" + client.NewIdempotencyKey()[:12]
	key := client.NewIdempotencyKey()
	req := client.CreateBindingRequest{ExternalUserId: &user, HolderName: acct.HolderName, IdNumber: acct.IDNumber,
		CardNumber: acct.CardNumber, Phone: acct.Phone}
	var id string
	if err := s.callOn(ctx, first, func(c *client.Client) error {
		r, err := c.CreateBindingWithResponse(ctx, &client.CreateBindingParams{IdempotencyKey: &key}, req)
		if err != nil {
			return err
		}
		if r.JSON201 == nil {
			return fmt.Errorf("create binding answered %d", r.StatusCode())
		}
		id = r.JSON201.Id
		return nil
	}); err != nil {
		return boundCard{}, fmt.Errorf("create binding at %s: %w", bank.Code, err)
	}
	code, err := s.smsCode(ctx, acct.Phone, 1)
	if err != nil {
		return boundCard{}, fmt.Errorf("binding %s: %w", id, err)
	}
	key = client.NewIdempotencyKey()
	var card string
	if err := s.callOn(ctx, first, func(c *client.Client) error {
		r, err := c.ConfirmBindingWithResponse(ctx, id, &client.ConfirmBindingParams{IdempotencyKey: &key}, client.ConfirmBindingRequest{Otp: code})
		if err == nil && r.JSON200 != nil && r.JSON200.CardId != nil {
			card = *r.JSON200.CardId
		}
		return err
	}); err != nil {
		return boundCard{}, fmt.Errorf("confirm binding %s: %w", id, err)
	}
	if card == "" {
		return boundCard{}, fmt.Errorf("binding %s confirmed without a card", id)
	}
	return boundCard{cardID: card, phone: acct.Phone}, nil
}

// smsCode waits for the phone's n-th text and returns its code.
func (s *soak) smsCode(ctx context.Context, phone string, n int) (string, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		texts, err := s.st.sim.SMS(ctx, phone)
		if err == nil && len(texts) >= n && texts[0].Code != "" {
			return texts[0].Code, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no text number %d to the phone within 30s (%v)", n, err)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// mandate creates a monthly fixed mandate on card, due today, and
// consents to it with the texted code (the phone's texts-th text).
func (s *soak) mandate(ctx context.Context, card boundCard, texts int) error {
	loc, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		return err
	}
	today := time.Now().In(loc)
	day := today.Day()
	amount := int64(100 + s.intn(99_900))
	start := openapi_types.Date{Time: time.Date(today.Year(), today.Month(), today.Day(), 0, 0, 0, 0, time.UTC)}
	ref := "soak-" + client.NewIdempotencyKey()[:10]
	req := client.CreateMandateRequest{CardId: card.cardID, Reference: ref, AmountType: client.CreateMandateRequestAmountTypeFixed,
		Amount: &amount, Schedule: client.ScheduleRequest{Interval: client.ScheduleRequestIntervalMonth, DayOfMonth: &day, StartDate: start}}
	key := client.NewIdempotencyKey()
	var id string
	if err := s.call(ctx, func(c *client.Client) error {
		r, err := c.CreateMandateWithResponse(ctx, &client.CreateMandateParams{IdempotencyKey: &key}, req)
		if err != nil {
			return err
		}
		if r.JSON201 == nil {
			return fmt.Errorf("create mandate answered %d", r.StatusCode())
		}
		id = r.JSON201.Id
		return nil
	}); err != nil {
		return fmt.Errorf("create mandate: %w", err)
	}
	code, err := s.smsCode(ctx, card.phone, texts)
	if err != nil {
		return fmt.Errorf("mandate %s: %w", id, err)
	}
	key = client.NewIdempotencyKey()
	return s.call(ctx, func(c *client.Client) error {
		_, err := c.ConfirmMandateWithResponse(ctx, id, &client.ConfirmMandateParams{IdempotencyKey: &key}, client.ConfirmMandateRequest{Otp: code})
		return err
	})
}

// bindAndMandate binds n cards, concurrently, with one or two mandates each.
func (s *soak) bindAndMandate(ctx context.Context, n int) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			card, err := s.bind(ctx)
			s.mu.Lock()
			if err != nil {
				s.fig.BindingsFailed++
				s.mu.Unlock()
				s.say("binding failed: %v", err)
				return
			}
			s.fig.Bindings++
			s.cards = append(s.cards, card)
			s.mu.Unlock()
			mandates := 1 + s.intn(2)
			for i := range mandates {
				if err := s.mandate(ctx, card, 2+i); err != nil {
					s.say("mandate on %s failed: %v", card.cardID, err)
					continue
				}
				s.mu.Lock()
				s.fig.Mandates++
				s.mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// faultKinds are the faults a round arms, per operation: every mode
// banksim has for charges, the ones that make a query or a refund's
// answer unknown or late, and declines.
var faultKinds = []simclient.Fault{
	{Operation: "charge", Mode: simclient.FaultTimeout, Apply: true},
	{Operation: "charge", Mode: simclient.FaultTimeout},
	{Operation: "charge", Mode: simclient.FaultError},
	{Operation: "charge", Mode: simclient.FaultProcessing},
	{Operation: "charge", Mode: simclient.FaultDecline, Code: "insufficient_funds"},
	{Operation: "charge", Mode: simclient.FaultDropResponse},
	{Operation: "charge", Mode: simclient.FaultAmount},
	{Operation: "query", Mode: simclient.FaultTimeout},
	{Operation: "query", Mode: simclient.FaultError},
	{Operation: "query", Mode: simclient.FaultDropResponse},
	{Operation: "refund", Mode: simclient.FaultTimeout, Apply: true},
	{Operation: "refund", Mode: simclient.FaultError},
	{Operation: "refund", Mode: simclient.FaultProcessing},
	{Operation: "refund", Mode: simclient.FaultDecline, Code: "insufficient_funds"},
	{Operation: "refund", Mode: simclient.FaultDropResponse},
}

// armFaults arms each fault kind of the operations ops once, at a random
// bank: the next such call at that bank meets it.
func (s *soak) armFaults(ctx context.Context, ops ...string) error {
	for _, f := range faultKinds {
		if !strings.Contains(" "+strings.Join(ops, " ")+" ", " "+f.Operation+" ") {
			continue
		}
		f.BankCode = s.banks[s.intn(len(s.banks))].Code
		f.Count = 1
		if err := s.st.sim.AddFault(ctx, f); err != nil {
			return fmt.Errorf("arm %s %s at %s: %w", f.Operation, f.Mode, f.BankCode, err)
		}
		s.mu.Lock()
		s.fig.FaultsArmed++
		s.mu.Unlock()
	}
	return nil
}

// clearFaults counts the armed faults that fired and clears the rest.
func (s *soak) clearFaults(ctx context.Context) error {
	left, err := s.st.sim.ArmedFaults(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.fig.FaultsFired = s.fig.FaultsArmed - left
	s.mu.Unlock()
	return s.st.sim.ClearFaults(ctx, "")
}

// killServe kills one serve instance with SIGKILL and starts it again.
func (s *soak) killServe(ctx context.Context) error {
	inst := s.st.serves[s.intn(len(s.st.serves))]
	s.say("kill -9 serve%d", inst.n)
	inst.p.kill()
	s.crashed()
	s.mu.Lock()
	s.fig.ServeKills++
	s.mu.Unlock()
	return s.st.startServe(ctx, inst)
}

// reviveExited restarts serve instances that died on their own (a
// Postgres restart under them, a panic) and counts them: their logs say
// why.
func (s *soak) reviveExited(ctx context.Context) error {
	for _, inst := range s.st.serves {
		if !inst.p.exited() {
			continue
		}
		s.say("serve%d exited on its own (%v); see %s", inst.n, inst.p.err, inst.p.log)
		s.crashed()
		s.mu.Lock()
		s.fig.ServeExits++
		s.mu.Unlock()
		if err := s.st.startServe(ctx, inst); err != nil {
			return err
		}
	}
	return nil
}

// hsmFault fires the dev-only HSM fault (SIGUSR1: close all sessions,
// SIGUSR2: log out) in one serve instance and waits for its log line.
func (s *soak) hsmFault(ctx context.Context, logout bool) error {
	inst := s.st.serves[s.intn(len(s.st.serves))]
	sig, name := syscall.SIGUSR1, "close all sessions"
	if logout {
		sig, name = syscall.SIGUSR2, "logout"
	}
	before := countLines(inst.p.log, `"msg":"dev fault fired"`)
	s.say("HSM fault in serve%d: %s", inst.n, name)
	if err := inst.p.cmd.Process.Signal(sig); err != nil {
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	for countLines(inst.p.log, `"msg":"dev fault fired"`) <= before {
		if time.Now().After(deadline) || inst.p.exited() {
			return fmt.Errorf("serve%d did not log the HSM fault within 60s (log %s)", inst.n, inst.p.log)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if n := countLines(inst.p.log, `"level":"ERROR","msg":"dev fault fired"`); n > 0 {
		return fmt.Errorf("serve%d could not fire the HSM fault (log %s)", inst.n, inst.p.log)
	}
	// Recovery: a binding through that instance encrypts and fingerprints
	// the card in its HSM pool (and signs a token, if one is due).
	card, err := s.bindOn(ctx, inst.n)
	if err != nil {
		return fmt.Errorf("serve%d after the HSM fault (%s): %w", inst.n, name, err)
	}
	s.mu.Lock()
	s.fig.Bindings++
	s.cards = append(s.cards, card)
	s.mu.Unlock()
	s.mu.Lock()
	s.fig.HSMFaults++
	s.mu.Unlock()
	return nil
}

func countLines(path, substr string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return strings.Count(string(b), substr)
}

// monthEnd runs `charges run-due` as the month-end run does, killing it
// (kill -9) mid-run when killRun is set and starting another, which waits
// for what the first left. Serve's workers share the jobs.
func (s *soak) monthEnd(ctx context.Context, round int, killRun bool) error {
	name := fmt.Sprintf("run-due-r%02d", round)
	p, err := s.st.startQuickpay(name, "charges", "run-due")
	if err != nil {
		return err
	}
	var killedAt time.Time
	if killRun {
		wait := time.Duration(100+s.intn(1500)) * time.Millisecond
		select {
		case <-p.done:
		case <-time.After(wait):
			s.say("kill -9 %s after %s", name, wait)
			p.kill()
			killedAt = time.Now()
			s.crashed()
			s.mu.Lock()
			s.fig.RunDueKills++
			s.mu.Unlock()
			if p, err = s.st.startQuickpay(name+"-again", "charges", "run-due"); err != nil {
				return err
			}
		}
	}
	select {
	case <-p.done:
		switch {
		case p.err != nil:
			s.say("%s ended: %v (log %s)", p.name, p.err, p.log)
		case !killedAt.IsZero():
			w := time.Since(killedAt)
			s.say("%s saw every charge answered %.1fs after the kill", p.name, w.Seconds())
			s.mu.Lock()
			s.fig.RescueWaits = append(s.fig.RescueWaits, w.Seconds())
			s.mu.Unlock()
		}
	case <-time.After(5 * time.Minute):
		p.kill()
		s.say("%s did not end within 5m; killed (log %s)", p.name, p.log)
	case <-ctx.Done():
		p.kill()
		return ctx.Err()
	}
	return nil
}

// refunds refunds part of a random share of the succeeded charges, and
// asks once for more than a charge has left, which quickpay must refuse.
func (s *soak) refunds(ctx context.Context) error {
	succeeded := client.ListChargesParamsStatusSucceeded
	var charges []client.Charge
	if err := s.call(ctx, func(c *client.Client) error {
		charges = charges[:0]
		for ch, err := range c.Charges(ctx, client.ListChargesParams{Status: &succeeded}) {
			if err != nil {
				return err
			}
			charges = append(charges, ch)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("list succeeded charges: %w", err)
	}
	overTried := false
	for _, ch := range charges {
		left := ch.Amount - ch.AmountRefunded
		if left <= 0 || s.intn(3) != 0 {
			continue
		}
		amount := 1 + int64(s.intn(int(min(left, 1<<30))))
		if !overTried && s.intn(2) == 0 {
			amount, overTried = left+1, true
		}
		key := client.NewIdempotencyKey()
		err := s.call(ctx, func(c *client.Client) error {
			_, err := c.CreateRefundWithResponse(ctx, ch.Id, &client.CreateRefundParams{IdempotencyKey: key}, client.CreateRefundRequest{Amount: amount})
			return err
		})
		var apiErr *client.Error
		switch {
		case err == nil && amount > left:
			s.say("refund of %d fen on charge %s with %d fen left was taken", amount, ch.Id, left)
		case err == nil:
		case amount > left && errors.As(err, &apiErr) && apiErr.Status/100 == 4:
			s.mu.Lock()
			s.fig.OverRefundsRefused++
			s.mu.Unlock()
		case errors.As(err, &apiErr) && apiErr.Status == http.StatusUnprocessableEntity:
			// Earlier refunds still pending count against the charge.
		default:
			s.say("refund on charge %s: %v", ch.Id, err)
		}
	}
	return nil
}
