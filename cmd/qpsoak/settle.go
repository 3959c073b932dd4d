package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"iter"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/quickpay/quickpay/api/client"
	"github.com/quickpay/quickpay/internal/dev/simclient"
	"github.com/quickpay/quickpay/internal/sensitive"
)

// openWork counts what is not settled yet: charges processing or unknown,
// refunds pending.
func (s *soak) openWork(ctx context.Context) (int, error) {
	n := 0
	for _, st := range []client.ListChargesParamsStatus{client.ListChargesParamsStatusProcessing, client.ListChargesParamsStatusUnknown} {
		err := s.call(ctx, func(c *client.Client) error {
			one := client.ListLimit(1)
			r, err := c.ListChargesWithResponse(ctx, &client.ListChargesParams{Status: &st, Limit: &one})
			if err != nil {
				return err
			}
			n += len(r.JSON200.Data)
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	pending := client.ListRefundsParamsStatusPending
	err := s.call(ctx, func(c *client.Client) error {
		one := client.ListLimit(1)
		r, err := c.ListRefundsWithResponse(ctx, &client.ListRefundsParams{Status: &pending, Limit: &one})
		if err != nil {
			return err
		}
		n += len(r.JSON200.Data)
		return nil
	})
	return n, err
}

// settle ends the faults and works until nothing is open: a run-due (which
// waits for crashed runs' charges, rescued after QUICKPAY_RESCUE_STUCK_AFTER),
// the query and refund jobs polled with a deadline, and a reconciliation of
// every bank for the days touched. It returns when the work was first seen
// settled after the reconciliation.
func (s *soak) settle(ctx context.Context, days []string, within time.Duration) (time.Time, error) {
	if err := s.clearFaults(ctx); err != nil {
		return time.Time{}, err
	}
	if err := s.reviveExited(ctx); err != nil {
		return time.Time{}, err
	}
	deadline := time.Now().Add(within)
	wait := func(what string) error {
		lastRun := time.Time{}
		for {
			if err := s.reviveExited(ctx); err != nil {
				return err
			}
			if time.Since(lastRun) > 20*time.Second {
				if _, err := s.st.quickpay(ctx, "charges", "run-due"); err != nil {
					s.say("settle: %v", err)
				}
				lastRun = time.Now()
			}
			open, err := s.openWork(ctx)
			if err != nil {
				s.say("settle: %v", err)
			} else if open == 0 {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("settle: work still open %s after %s", what, within)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
			}
		}
	}
	if err := wait("before reconciling"); err != nil {
		return time.Time{}, err
	}
	banks := make([]string, 0, len(s.banks))
	for _, b := range s.banks {
		banks = append(banks, b.Code)
	}
	for _, day := range days {
		for _, bank := range banks {
			out, err := s.st.quickpay(ctx, "reconcile", "--date", day, "--bank", bank, "--json")
			if err != nil {
				s.say("reconcile %s %s: %v", day, bank, err)
			}
			_ = os.WriteFile(filepath.Join(s.st.dir, fmt.Sprintf("reconcile-%s-%s.json", day, bank)), out, 0o644)
		}
	}
	if err := wait("after reconciling"); err != nil {
		return time.Time{}, err
	}
	return time.Now(), nil
}

// collect reads quickpay's view through the API, every page.
func (s *soak) collect(ctx context.Context) (View, error) {
	var v View
	err := s.call(ctx, func(c *client.Client) (err error) {
		v = View{}
		if v.Charges, err = all(c.Charges(ctx, client.ListChargesParams{})); err != nil {
			return err
		}
		if v.Refunds, err = all(c.Refunds(ctx, client.ListRefundsParams{})); err != nil {
			return err
		}
		v.Events, err = all(c.Events(ctx, client.ListEventsParams{}))
		return err
	})
	return v, err
}

// feed reads every event of the merchant's feed.
func (s *soak) feed(ctx context.Context) (evs []client.Event, err error) {
	err = s.call(ctx, func(c *client.Client) error {
		evs, err = all(c.Events(ctx, client.ListEventsParams{}))
		return err
	})
	return evs, err
}

// all reads a list through its iterator, every page.
func all[T any](seq iter.Seq2[T, error]) ([]T, error) {
	var out []T
	for x, err := range seq {
		if err != nil {
			return nil, err
		}
		out = append(out, x)
	}
	return out, nil
}

// evidenceEntry is a ledger entry as the evidence keeps it: the card
// masked, no agreement number.
type evidenceEntry struct {
	Type      string    `json:"type"`
	BankCode  string    `json:"bank_code"`
	Card      string    `json:"card_masked"`
	OrderNo   string    `json:"order_no"`
	RefundOf  string    `json:"refund_of,omitempty"`
	Amount    int64     `json:"amount"`
	BankTxnNo string    `json:"bank_txn_no"`
	At        time.Time `json:"at"`
}

// writeEvidence writes the ledger (cards masked), quickpay's view, the
// violations and the figures into the evidence folder.
func writeEvidence(dir string, ledger []simclient.LedgerEntry, v View, violations []Violation, fig figures) error {
	entries := make([]evidenceEntry, 0, len(ledger))
	for _, e := range ledger {
		entries = append(entries, evidenceEntry{Type: e.Type, BankCode: e.BankCode, Card: sensitive.NewPAN(e.CardNumber).Masked(),
			OrderNo: e.OrderNo, RefundOf: e.RefundOf, Amount: e.Amount, BankTxnNo: e.BankTxnNo, At: e.At})
	}
	if violations == nil {
		violations = []Violation{}
	}
	for name, val := range map[string]any{
		"ledger.json": entries, "charges.json": v.Charges, "refunds.json": v.Refunds, "events.json": v.Events,
		"deliveries.json": v.Deliveries, "violations.json": violations, "figures.json": fig,
	} {
		b, err := json.MarshalIndent(val, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, name), append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// bankDays are the bank days (Asia/Shanghai) from start to now.
func bankDays(start time.Time) []string {
	loc, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		loc = time.FixedZone("CST", 8*3600)
	}
	set := map[string]bool{}
	for t := start; !t.After(time.Now().Add(time.Hour)); t = t.Add(time.Hour) {
		set[t.In(loc).Format(time.DateOnly)] = true
	}
	set[time.Now().In(loc).Format(time.DateOnly)] = true
	days := make([]string, 0, len(set))
	for d := range set {
		days = append(days, d)
	}
	sort.Strings(days)
	return days
}

// KindSecretInClear: a card number or ID number the soak bound, found in
// clear in a file of the evidence: a log, a database or WAL file, the
// token's files. Names the file, never the value.
const KindSecretInClear = "secret_in_clear"

// scanForSecrets reads every file under dir (the binaries excepted) for
// runs of 15 or more digits (an ID number's last may be X) and reports
// each file holding one of secrets.
func scanForSecrets(dir string, secrets map[string]bool) ([]Violation, error) {
	var out []Violation
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path == filepath.Join(dir, "bin") {
			return filepath.SkipDir
		}
		if d.Type()&fs.ModeSymlink != 0 { // the cluster's data, when it lives in the postgres user's home
			target, err := filepath.EvalSymlinks(path)
			if err != nil {
				return nil
			}
			more, err := scanForSecrets(target, secrets)
			for i := range more {
				more[i].Ref = path + " → " + more[i].Ref
			}
			out = append(out, more...)
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if n := countSecrets(b, secrets); n > 0 {
			rel, _ := filepath.Rel(dir, path)
			out = append(out, Violation{Kind: KindSecretInClear, Ref: rel, Detail: fmt.Sprintf("%d card or ID numbers in clear", n)})
		}
		return nil
	})
	return out, err
}

// countSecrets counts the digit runs in b that are secrets.
func countSecrets(b []byte, secrets map[string]bool) int {
	n := 0
	for i := 0; i < len(b); {
		if b[i] < '0' || b[i] > '9' {
			i++
			continue
		}
		j := i
		for j < len(b) && (b[j] >= '0' && b[j] <= '9' || b[j] == 'X') {
			j++
		}
		if j-i >= 15 && secrets[string(b[i:j])] {
			n++
		}
		i = j
	}
	return n
}
