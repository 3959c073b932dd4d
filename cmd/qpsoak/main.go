// Command qpsoak runs quickpay's soak: a private stack (its own Postgres
// cluster, Vault, SoftHSM2 token, banksim) with two `quickpay serve`
// instances on one database, rounds of bindings, mandates with consent,
// month-end runs and refunds under banksim faults, serve and run-due
// processes killed with SIGKILL, one Postgres restart and HSM faults; then
// it settles and judges banksim's ledger against quickpay's API
// (docs/soak.md).
//
//	go run ./cmd/qpsoak [-seed N] [-rounds N] [-duration D] [-bindings N] [-instances 1|2] [-out DIR]
//	go run ./cmd/qpsoak -mode throughput -charges N
//
// It builds quickpay with -tags devfaults itself: that build's serve breaks
// its HSM sessions on SIGUSR1 and SIGUSR2 (cmd/quickpay/devfaults_on.go).
// It prints one line of figures, writes the evidence to -out, and exits 1
// on any violation.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/quickpay/quickpay/api/client"
	"github.com/quickpay/quickpay/bankadapters/conformance"
)

func main() {
	seed := flag.Uint64("seed", uint64(time.Now().UnixNano()), "seed of the soak's choices (faults, kills, amounts)")
	rounds := flag.Int("rounds", 8, "rounds at most")
	duration := flag.Duration("duration", 7*time.Minute, "no new round starts after this long")
	bindings := flag.Int("bindings", 10, "cards bound per round (each with one or two mandates)")
	instances := flag.Int("instances", 2, "serve instances, 1 or 2")
	rescue := flag.Duration("rescue-after", 30*time.Second, "QUICKPAY_RESCUE_STUCK_AFTER for the stack")
	settleWithin := flag.Duration("settle-within", 5*time.Minute, "how long settling may take before it counts as failed")
	mode := flag.String("mode", "soak", "soak, or throughput: charges/s of one serve instance against two, same run")
	charges := flag.Int("charges", 100, "throughput: charges per measurement")
	out := flag.String("out", "", "evidence folder (default .quickpay/soak/<timestamp>)")
	flag.Parse()
	if *instances != 1 && *instances != 2 {
		fmt.Fprintln(os.Stderr, "qpsoak: -instances must be 1 or 2")
		os.Exit(2)
	}
	if *out == "" {
		*out = filepath.Join(".quickpay", "soak", time.Now().UTC().Format("20060102T150405Z"))
	}
	dir, err := filepath.Abs(*out)
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "qpsoak:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	say := func(format string, a ...any) {
		fmt.Printf("%s  %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, a...))
	}

	switch *mode {
	case "soak":
		fig, violations, err := runSoak(ctx, dir, say, soakConfig{seed: *seed, rounds: *rounds, duration: *duration,
			bindings: *bindings, instances: *instances, rescue: *rescue, settleWithin: *settleWithin})
		if err != nil {
			fmt.Fprintln(os.Stderr, "qpsoak:", err)
		}
		fmt.Println(fig.line())
		fmt.Println("evidence:", dir)
		for _, v := range violations {
			fmt.Println("VIOLATION", v)
		}
		if err != nil || len(violations) > 0 {
			os.Exit(1)
		}
	case "throughput":
		line, err := runThroughput(ctx, dir, say, *charges, *rescue, *seed)
		if err != nil {
			fmt.Fprintln(os.Stderr, "qpsoak:", err)
			os.Exit(1)
		}
		fmt.Println(line)
		fmt.Println("evidence:", dir)
	default:
		fmt.Fprintf(os.Stderr, "qpsoak: -mode %q: want soak or throughput\n", *mode)
		os.Exit(2)
	}
}

type soakConfig struct {
	seed             uint64
	rounds, bindings int
	instances        int
	duration, rescue time.Duration
	settleWithin     time.Duration
}

// newSoak builds the binaries, brings the stack up and learns its banks.
func newSoak(ctx context.Context, dir string, say func(string, ...any), seed uint64, instances int, rescue time.Duration) (*soak, error) {
	say("building quickpay (-tags devfaults) and banksim")
	bin := filepath.Join(dir, "bin")
	if err := buildBinaries(ctx, bin); err != nil {
		return nil, err
	}
	say("starting the stack: postgres, vault, softhsm, banksim, %d serve", instances)
	st, err := startStack(ctx, dir, bin, instances, rescue)
	if err != nil {
		return nil, err
	}
	s := &soak{st: st, rng: rand.New(rand.NewPCG(seed, seed^0x5eed)), gen: conformance.NewGen(), say: say,
		secrets: map[string]bool{}}
	s.fig.Seed = seed
	banks, err := st.sim.Banks(ctx)
	if err != nil {
		st.close()
		return nil, err
	}
	for _, b := range banks {
		for _, bin := range b.BINs {
			if bin.CardType == "debit" {
				s.banks = append(s.banks, b)
				break
			}
		}
	}
	if len(s.banks) == 0 {
		st.close()
		return nil, errors.New("banksim has no bank issuing debit cards")
	}
	return s, nil
}

// runSoak is the soak: rounds, then settling, then the judge.
func runSoak(ctx context.Context, dir string, say func(string, ...any), cfg soakConfig) (figures, []Violation, error) {
	start := time.Now()
	s, err := newSoak(ctx, dir, say, cfg.seed, cfg.instances, cfg.rescue)
	if err != nil {
		return figures{Seed: cfg.seed}, nil, err
	}
	defer s.st.close()
	s.perRound = cfg.bindings
	// The merchant's webhook endpoint, before any event: it refuses one
	// first delivery in ten, so that the proof includes quickpay's retries.
	// Its draws come from their own RNG: deliveries arrive when they
	// arrive, and must not move the soak's other seeded choices.
	refusals := rand.New(rand.NewPCG(cfg.seed, cfg.seed^0xde11_7e55))
	if s.hook, err = startEndpoint(func() bool { return refusals.IntN(10) == 0 }); err != nil {
		return s.fig, nil, err
	}
	defer s.hook.close()
	if err := s.call(ctx, func(c *client.Client) error { return s.hook.register(ctx, c) }); err != nil {
		return s.fig, nil, err
	}
	pgRound := cfg.rounds / 2
	for r := 0; r < cfg.rounds && time.Since(start) < cfg.duration; r++ {
		// The last round's run is killed too, so that settling measures a
		// crashed run's wait for River's rescue.
		last := r == cfg.rounds-1 || time.Since(start) > cfg.duration*3/4
		if err := s.round(ctx, r, r == pgRound, r%2 == 0 || last); err != nil {
			return s.fig, nil, fmt.Errorf("round %d: %w", r, err)
		}
		s.fig.Rounds++
	}

	say("settling: faults off, run-due, queries, refunds, reconciliation")
	settleStart := time.Now()
	settledAt, settleErr := s.settle(ctx, bankDays(start), cfg.settleWithin)
	if settleErr == nil {
		s.fig.SettleSeconds = settledAt.Sub(settleStart).Seconds()
		s.fig.SinceLastCrash = settledAt.Sub(s.lastCrash).Seconds()
		say("waiting for every event to reach the webhook endpoint")
		var deliveredAt time.Time
		if deliveredAt, settleErr = s.awaitDeliveries(ctx, cfg.settleWithin); settleErr == nil {
			s.fig.DeliveredSeconds = deliveredAt.Sub(settledAt).Seconds()
		}
	}
	v, err := s.collect(ctx)
	if err != nil {
		return s.fig, nil, fmt.Errorf("read quickpay's view: %w", err)
	}
	if v.Deliveries, err = s.deliveriesOf(ctx, &v); err != nil {
		return s.fig, nil, fmt.Errorf("read quickpay's view: %w", err)
	}
	s.fig.Events = len(v.Events)
	s.fig.DeliveryPOSTs, s.fig.DeliveriesRefused = s.hook.counts()
	ledger, err := s.st.sim.Ledger(ctx, "")
	if err != nil {
		return s.fig, nil, fmt.Errorf("read the bank's ledger: %w", err)
	}
	violations := Judge(ledger, v)
	leaks, err := scanForSecrets(dir, s.secrets)
	if err != nil {
		return s.fig, violations, fmt.Errorf("scan the evidence: %w", err)
	}
	violations = append(violations, leaks...)
	s.tally(v)
	s.fig.Violations = len(violations)
	s.fig.ElapsedSeconds = time.Since(start).Seconds()
	if err := writeEvidence(dir, ledger, v, violations, s.fig); err != nil {
		return s.fig, violations, err
	}
	return s.fig, violations, settleErr
}

// round is one round: bindings and mandates (an HSM fault fired among
// them), a month-end run under charge and query faults with a serve
// instance killed (and the run itself when killRun; Postgres restarted
// when pgRestart), then refunds under refund faults (an instance killed
// among them every third round).
func (s *soak) round(ctx context.Context, r int, pgRestart, killRun bool) error {
	s.say("round %d", r)
	if err := s.reviveExited(ctx); err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Among the bindings' HSM work: close-all on even rounds, logout on odd.
		select {
		case <-time.After(time.Duration(200+s.intn(1500)) * time.Millisecond):
		case <-ctx.Done():
			return
		}
		if err := s.hsmFault(ctx, r%2 == 1); err != nil {
			errs <- err
		}
	}()
	s.bindAndMandate(ctx, s.bindingsPerRound())
	wg.Wait()

	if err := s.armFaults(ctx, "charge", "query"); err != nil {
		return err
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-time.After(time.Duration(s.intn(2500)) * time.Millisecond):
		case <-ctx.Done():
			return
		}
		if err := s.killServe(ctx); err != nil {
			errs <- err
		}
	}()
	if pgRestart {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-time.After(time.Duration(500+s.intn(2000)) * time.Millisecond):
			case <-ctx.Done():
				return
			}
			s.say("postgres: fast shutdown, then start")
			if err := s.st.restartPostgres(ctx); err != nil {
				errs <- err
				return
			}
			s.crashed()
			s.mu.Lock()
			s.fig.PGRestarts++
			s.mu.Unlock()
		}()
	}
	runErr := s.monthEnd(ctx, r, killRun)
	wg.Wait()
	if runErr != nil {
		return runErr
	}
	if err := s.reviveExited(ctx); err != nil {
		return err
	}
	if err := s.armFaults(ctx, "refund"); err != nil {
		return err
	}
	if r%3 == 1 { // an instance dies among the refunds' jobs too
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-time.After(time.Duration(s.intn(1500)) * time.Millisecond):
			case <-ctx.Done():
				return
			}
			if err := s.killServe(ctx); err != nil {
				errs <- err
			}
		}()
	}
	refundErr := s.refunds(ctx)
	wg.Wait()
	if refundErr != nil {
		return refundErr
	}
	close(errs)
	for err := range errs {
		return err
	}
	return nil
}

func (s *soak) bindingsPerRound() int { return s.perRound }

// tally counts charges and refunds from quickpay's view.
func (s *soak) tally(v View) {
	s.fig.Charges, s.fig.Refunds = len(v.Charges), len(v.Refunds)
	for _, c := range v.Charges {
		if c.Status == "succeeded" {
			s.fig.ChargesSucceeded++
		}
	}
	for _, r := range v.Refunds {
		if r.Status == "succeeded" {
			s.fig.RefundsSucceeded++
		}
	}
}
