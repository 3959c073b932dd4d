package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/quickpay/quickpay/bankadapters/conformance"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/dev/simclient"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/sensitive"
	"github.com/quickpay/quickpay/internal/sms"
	"github.com/quickpay/quickpay/mandate"
)

// chargeWorld is a stack whose bank channels are also where the quickpay
// binary reads them, a bound ICBC card with an active fixed mandate, and
// the environment that points a `quickpay` subprocess at all of it.
type chargeWorld struct {
	*testenv.Stack
	bin      string
	env      []string
	mandates *mandate.Service
	card     conformance.Account
	merchant string
	first    mandate.Mandate // the card's mandate, due today
}

func newChargeWorld(t *testing.T) *chargeWorld {
	t.Helper()
	ctx := context.Background()
	w := &chargeWorld{Stack: testenv.NewStack(t)}
	w.merchant = testenv.Merchant(t, w.Pool)

	// The binary reads channels at the default prefix: the same settings
	// (merchant numbers, keys) as the stack's adapters, which bind the card.
	for _, code := range w.Banks.Codes() {
		ch, err := w.Secrets.Read(ctx, w.BanksPrefix+"/"+code)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Secrets.Write(ctx, "secret/quickpay/banks/"+code, ch); err != nil {
			t.Fatal(err)
		}
	}

	bindings, err := binding.New(binding.Config{Pool: w.Pool, Vault: w.Vault, Banks: w.Banks})
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := river.NewClient(riverpgxv5.New(w.Pool), &river.Config{}) // insert-only
	if err != nil {
		t.Fatal(err)
	}
	carrier, err := sms.New(sms.Config{URL: w.SimURL + "/carrier/sms"})
	if err != nil {
		t.Fatal(err)
	}
	w.mandates, err = mandate.New(mandate.Config{Pool: w.Pool, Cards: bindings, Hasher: w.Vault, Banks: w.Banks,
		SMS: carrier, Jobs: jobs})
	if err != nil {
		t.Fatal(err)
	}

	info, err := w.SimCtl.Bank(ctx, "ICBC")
	if err != nil {
		t.Fatal(err)
	}
	w.card, err = conformance.NewGen().Account(info, "debit", 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.SimCtl.PutAccount(ctx, w.card); err != nil {
		t.Fatal(err)
	}
	b, err := bindings.StartBinding(ctx, w.merchant, binding.BindInput{ExternalUserID: "crash-user",
		HolderName: w.card.HolderName, IDNumber: sensitive.NewIDNumber(w.card.IDNumber),
		CardNumber: sensitive.NewPAN(w.card.CardNumber), Phone: w.card.Phone})
	if err != nil {
		t.Fatal(err)
	}
	if b, err = bindings.Confirm(ctx, w.merchant, b.ID, w.lastCode(t)); err != nil {
		t.Fatal(err)
	}
	today := mandate.Schedule{}.DateAt(time.Now())
	m, err := w.mandates.Create(ctx, w.merchant, mandate.CreateInput{CardID: b.CardID, Reference: "water-7",
		AmountType: mandate.AmountFixed, Amount: 4321, Schedule: mandate.Schedule{Interval: mandate.IntervalMonth,
			DayOfMonth: today.Day(), StartDate: today}})
	if err != nil {
		t.Fatal(err)
	}
	if w.first, err = w.mandates.Confirm(ctx, w.merchant, m.ID, w.lastCode(t)); err != nil {
		t.Fatal(err)
	}

	w.bin = t.TempDir()
	if out, err := exec.Command("go", "build", "-o", filepath.Join(w.bin, "quickpay"), ".").CombinedOutput(); err != nil {
		t.Fatalf("build quickpay: %v\n%s", err, out)
	}
	vault := testenv.Vault(t)
	tok := testenv.SoftHSM(t)
	w.env = append(os.Environ(),
		"QUICKPAY_DATABASE_URL="+testenv.DatabaseURL(t), "VAULT_ADDR="+vault.Addr, "VAULT_TOKEN="+vault.Token,
		"SOFTHSM2_CONF="+tok.ConfPath, "QUICKPAY_HSM_TOKEN_LABEL="+tok.Label, "QUICKPAY_BANKSIM_URL="+w.SimURL,
		"QUICKPAY_RESCUE_STUCK_AFTER=1s", "QUICKPAY_LOG_LEVEL=warn")
	return w
}

func (w *chargeWorld) lastCode(t *testing.T) sensitive.OTP {
	t.Helper()
	texts, err := w.SimCtl.SMS(context.Background(), w.card.Phone)
	if err != nil || len(texts) == 0 {
		t.Fatalf("no SMS for the card's phone: %v", err)
	}
	return sensitive.NewOTP(texts[0].Code)
}

func (w *chargeWorld) runDue(t *testing.T, asOf time.Time) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(filepath.Join(w.bin, "quickpay"), "charges", "run-due", "--as-of", asOf.Format(time.RFC3339))
	cmd.Env = w.env
	return cmd
}

// pollHint is extra context for a poll that timed out; set by a test.
var pollHint = func(*testing.T) string { return "" }

// poll calls f until it reports true or the deadline passes.
func poll(t *testing.T, within time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s%s", within, what, pollHint(t))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCrashRecoverySettlesByQuery kills the worker process after the order
// number is persisted and the bank has debited, before the answer comes
// back; a new process settles the charge by query, and the card is
// debited exactly once.
func TestCrashRecoverySettlesByQuery(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newChargeWorld(t)
	// The bank debits, then holds its answer until the caller gives up.
	if err := w.SimCtl.AddFault(ctx, simclient.Fault{BankCode: "ICBC", Operation: "charge", Mode: "timeout", Apply: true}); err != nil {
		t.Fatal(err)
	}

	first := w.runDue(t, time.Now())
	var out1 bytes.Buffer
	first.Stdout, first.Stderr = &out1, &out1
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	pollHint = func(*testing.T) string { return "\nfirst run's output:\n" + out1.String() }
	var orderNo string
	poll(t, 60*time.Second, "the attempt to be persisted and the bank to debit", func() bool {
		err := w.Pool.QueryRow(ctx, `SELECT order_no FROM charge_attempts WHERE merchant_id = $1 AND status = 'processing'`,
			w.merchant).Scan(&orderNo)
		if err != nil {
			return false
		}
		ledger, err := w.SimCtl.Ledger(ctx, w.card.CardNumber)
		return err == nil && len(ledger) == 1
	})
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	var status mandate.ChargeStatus
	if err := w.Pool.QueryRow(ctx, `SELECT status FROM charges WHERE merchant_id = $1`, w.merchant).Scan(&status); err != nil {
		t.Fatal(err)
	}
	if status != mandate.ChargeProcessing {
		t.Fatalf("after the kill the charge is %s, want processing (the answer never came back)", status)
	}
	if err := w.SimCtl.ClearFaults(ctx, "ICBC"); err != nil {
		t.Fatal(err)
	}

	second := w.runDue(t, time.Now())
	out2, err := second.CombinedOutput()
	if err != nil {
		t.Fatalf("second run: %v\n%s", err, out2)
	}
	var attempts, succeeded int
	if err := w.Pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE status = 'succeeded')
		FROM charge_attempts WHERE merchant_id = $1`, w.merchant).Scan(&attempts, &succeeded); err != nil {
		t.Fatal(err)
	}
	if err := w.Pool.QueryRow(ctx, `SELECT status FROM charges WHERE merchant_id = $1`, w.merchant).Scan(&status); err != nil {
		t.Fatal(err)
	}
	if status != mandate.ChargeSucceeded || attempts != 1 || succeeded != 1 {
		t.Fatalf("charge %s with %d attempts (%d succeeded), want succeeded with the one attempt\n%s", status, attempts, succeeded, out2)
	}
	ledger, err := w.SimCtl.Ledger(ctx, w.card.CardNumber)
	if err != nil {
		t.Fatal(err)
	}
	if len(ledger) != 1 || ledger[0].OrderNo != orderNo || ledger[0].Amount != 4321 {
		t.Fatalf("ledger = %+v, want one debit of 4321 under %s", ledger, orderNo)
	}
	if !strings.Contains(string(out2), "settled") {
		t.Errorf("second run printed no settlement line:\n%s", out2)
	}
	var queried bool
	if err := w.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM river_job WHERE kind = 'mandate_charges'
		AND args->'order_nos' @> jsonb_build_array($1::text) AND attempt >= 2 AND state = 'completed')`, orderNo).Scan(&queried); err != nil {
		t.Fatal(err)
	}
	if !queried {
		t.Error("the charge job did not run a second time (the query-first path)")
	}

	// The day's statement agrees: one debit, matched, no mismatch.
	rec := exec.Command(filepath.Join(w.bin, "quickpay"), "reconcile", "--bank", "ICBC",
		"--date", ledger[0].At.Format(time.DateOnly))
	rec.Env = w.env
	out3, err := rec.CombinedOutput()
	if err != nil {
		t.Fatalf("reconcile: %v\n%s", err, out3)
	}
	if !strings.Contains(string(out3), "1 statement debits, 1 matched, 0 unknown attempts settled, 0 mismatches") {
		t.Fatalf("reconcile printed:\n%s", out3)
	}
}

// TestRunDueAheadOfTime runs `charges run-due --as-of` ten days ahead for
// a card the bank keeps declining, with four charges due ten days before.
// The run acts as of then: three are tried and declined, the card's cap of
// failures for --as-of's bank day; the fourth is put off to the next day
// after --as-of, and so are the retries (a retry goes on a later day than
// its decline); and the command ends. Dated by the real clock, a try put
// off fell due again at once and the run never ended.
//
// Not parallel: run-due works every merchant's due charges in the
// package's database, and the crash test's would be charged through this
// test's banksim (and this one's through the crash test's).
func TestRunDueAheadOfTime(t *testing.T) {
	ctx := context.Background()
	w := newChargeWorld(t)
	if err := w.SimCtl.AddFault(ctx, simclient.Fault{BankCode: "ICBC", Operation: "charge", Mode: "decline",
		Code: "insufficient_funds", UntilCleared: true}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		m, err := w.mandates.Create(ctx, w.merchant, mandate.CreateInput{CardID: w.first.CardID,
			Reference: fmt.Sprintf("gas-%d", i), AmountType: mandate.AmountFixed, Amount: int64(1000 + i),
			Schedule: w.first.Schedule})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.mandates.Confirm(ctx, w.merchant, m.ID, w.lastCode(t)); err != nil {
			t.Fatal(err)
		}
	}
	asOf := time.Now().Add(10 * 24 * time.Hour).Truncate(time.Second)
	cmd := w.runDue(t, asOf)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() { ended <- cmd.Wait() }()
	select {
	case err := <-ended:
		if err != nil {
			t.Fatalf("run-due: %v\n%s", err, out.String())
		}
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		<-ended
		t.Fatalf("run-due --as-of %s did not end in 2 minutes:\n%s", asOf.Format(time.RFC3339), out.String())
	}

	var failed, days int
	if err := w.Pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE status = 'failed'), count(DISTINCT bank_day)
		FROM charge_attempts WHERE merchant_id = $1`, w.merchant).Scan(&failed, &days); err != nil {
		t.Fatal(err)
	}
	var waiting int
	var first time.Time
	if err := w.Pool.QueryRow(ctx, `SELECT count(*), min(next_attempt_at) FROM charges WHERE merchant_id = $1
		AND status IN ('scheduled', 'retry_scheduled')`, w.merchant).Scan(&waiting, &first); err != nil {
		t.Fatal(err)
	}
	if failed != mandate.CardFailuresPerDay || days != 1 || waiting != 4 || !first.After(asOf) {
		t.Fatalf("%d failed attempts on %d bank days, %d charges waiting, the first until %s; want %d on one day, "+
			"and all 4 waiting until after %s\n%s", failed, days, waiting, first, mandate.CardFailuresPerDay, asOf, out.String())
	}
	if ledger, err := w.SimCtl.Ledger(ctx, w.card.CardNumber); err != nil || len(ledger) != 0 {
		t.Fatalf("ledger = %+v, %v; want no debit", ledger, err)
	}
}

// serve starts `quickpay serve` on loopback ports of its own (its River
// workers work the charges queue, refunds included), its output in out.
func (w *chargeWorld) serve(t *testing.T, out *bytes.Buffer) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(filepath.Join(w.bin, "quickpay"), "serve")
	cmd.Env = append(slices.Clone(w.env), "QUICKPAY_LISTEN=127.0.0.1:0", "QUICKPAY_METRICS_LISTEN=127.0.0.1:0")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd
}

// TestRefundCrashRecoverySettlesByQuery kills the worker process after a
// refund is claimed (its refund number committed as sent) and the bank has
// credited the card, before the answer comes back: the crash window
// between the claim and the answer. A new process runs the job again,
// which asks the bank about the refund number before sending anything,
// settles the refund from the answer, and the card is credited exactly
// once.
//
// Not parallel, as TestRunDueAheadOfTime: serve works every job of the
// package's database.
func TestRefundCrashRecoverySettlesByQuery(t *testing.T) {
	ctx := context.Background()
	w := newChargeWorld(t)
	// The crash tests that run after this one reconcile the day's
	// statement of their own banksim against the package's database:
	// this test's debit and refund, made at its banksim, must be gone.
	t.Cleanup(func() {
		for _, sql := range []string{
			`DELETE FROM refund_jobs WHERE job_id IN (SELECT job_id FROM refunds WHERE merchant_id = $1)`,
			`DELETE FROM refunds WHERE merchant_id = $1`,
			`DELETE FROM charge_attempts WHERE merchant_id = $1`,
			`DELETE FROM charges WHERE merchant_id = $1`,
			`DELETE FROM mandates WHERE merchant_id = $1`,
		} {
			if _, err := w.Pool.Exec(context.Background(), sql, w.merchant); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	if out, err := w.runDue(t, time.Now()).CombinedOutput(); err != nil {
		t.Fatalf("run-due: %v\n%s", err, out)
	}
	var chargeID string
	var status mandate.ChargeStatus
	if err := w.Pool.QueryRow(ctx, `SELECT id, status FROM charges WHERE merchant_id = $1`, w.merchant).
		Scan(&chargeID, &status); err != nil || status != mandate.ChargeSucceeded {
		t.Fatalf("charge %s is %s (%v), want succeeded", chargeID, status, err)
	}
	r, err := w.mandates.CreateRefund(ctx, w.merchant, chargeID, mandate.RefundInput{Amount: 1234, Reason: "crash test"})
	if err != nil {
		t.Fatal(err)
	}
	// The bank credits, then holds its answer until the caller gives up.
	if err := w.SimCtl.AddFault(ctx, simclient.Fault{BankCode: "ICBC", Operation: "refund", Mode: "timeout", Apply: true}); err != nil {
		t.Fatal(err)
	}
	refundsOf := func() []simclient.LedgerEntry {
		ledger, err := w.SimCtl.Ledger(ctx, w.card.CardNumber)
		if err != nil {
			t.Fatal(err)
		}
		var out []simclient.LedgerEntry
		for _, e := range ledger {
			if e.Type == simclient.EntryRefund {
				out = append(out, e)
			}
		}
		return out
	}

	var out1 bytes.Buffer
	first := w.serve(t, &out1)
	pollHint = func(*testing.T) string { return "\nfirst process's output:\n" + out1.String() }
	poll(t, 60*time.Second, "the refund to be claimed and the bank to credit", func() bool {
		var sent bool
		if err := w.Pool.QueryRow(ctx, `SELECT sent_at IS NOT NULL FROM refunds WHERE id = $1`, r.ID).Scan(&sent); err != nil {
			t.Fatal(err)
		}
		return sent && len(refundsOf()) == 1
	})
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	got, err := w.mandates.GetRefund(ctx, w.merchant, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != mandate.RefundPending {
		t.Fatalf("after the kill the refund is %s, want pending (the answer never came back)", got.Status)
	}
	if err := w.SimCtl.ClearFaults(ctx, "ICBC"); err != nil {
		t.Fatal(err)
	}

	var out2 bytes.Buffer
	second := w.serve(t, &out2)
	pollHint = func(*testing.T) string { return "\nsecond process's output:\n" + out2.String() }
	// River runs the crashed job again once it counts as stuck
	// (QUICKPAY_RESCUE_STUCK_AFTER) and its rescuer next looks.
	poll(t, 2*time.Minute, "the refund to be settled", func() bool {
		got, err = w.mandates.GetRefund(ctx, w.merchant, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got.Status != mandate.RefundPending
	})
	if err := second.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = second.Wait()
	pollHint = func(*testing.T) string { return "" }

	credits := refundsOf()
	if got.Status != mandate.RefundSucceeded || len(credits) != 1 || credits[0].OrderNo != got.RefundNo ||
		credits[0].Amount != 1234 || got.BankReference != credits[0].BankTxnNo {
		t.Fatalf("refund %+v; bank refunds %v; want one credit of 1234 under the refund's number\n%s", got, credits, out2.String())
	}
	var refunded, held int64
	if err := w.Pool.QueryRow(ctx, `SELECT amount_refunded, amount_refund_held FROM charges WHERE id = $1`, chargeID).
		Scan(&refunded, &held); err != nil {
		t.Fatal(err)
	}
	if refunded != 1234 || held != 1234 {
		t.Errorf("charge refunded %d, held %d; want 1234 both", refunded, held)
	}
	var rerun bool
	if err := w.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM river_job WHERE kind = 'mandate_refund'
		AND args->'ids' @> jsonb_build_array($1::text) AND NOT (args ? 'query') AND attempt >= 2 AND state = 'completed')`,
		r.ID).Scan(&rerun); err != nil {
		t.Fatal(err)
	}
	if !rerun {
		t.Error("the refund job did not run a second time (the query-first path)")
	}
	var settledBy string
	if err := w.Pool.QueryRow(ctx, `SELECT details->>'source' FROM audit_log WHERE subject = $1 AND action = 'refund.settle'`,
		r.ID).Scan(&settledBy); err != nil || settledBy != "query" {
		t.Errorf("settled by %q (%v), want the job's query", settledBy, err)
	}
}
