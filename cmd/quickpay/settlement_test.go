package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quickpay/quickpay/internal/dev/simclient"
	"github.com/quickpay/quickpay/mandate"
)

// TestReconcileWritesSettlementFiles charges a mandate through `charges
// run-due`, then runs `quickpay reconcile --date D` for the charge's bank
// day: while banksim's day is open it names the banks whose statements
// are not final and exits non-zero, writing nothing; once banksim's clock
// has passed the day it reconciles every bank and writes the day's files,
// whose merchant file holds the bank's debit; run again, it writes nothing
// and says when the files were written.
//
// Not parallel: the files take every merchant's movements of the day in
// the package's database.
func TestReconcileWritesSettlementFiles(t *testing.T) {
	ctx := context.Background()
	w := newChargeWorld(t)
	// The charge would be a missing debit to the other tests'
	// reconciliations of the day, at banksims of their own.
	t.Cleanup(func() {
		for _, sql := range []string{
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
	var ledger []simclient.LedgerEntry
	poll(t, 30*time.Second, "the bank's debit", func() bool {
		var err error
		ledger, err = w.SimCtl.Ledger(ctx, w.card.CardNumber)
		return err == nil && len(ledger) == 1
	})
	day, err := mandate.ParseDate(ledger[0].At.In(shanghai(t)).Format(time.DateOnly))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.mandates.SettlementDay(ctx, day); err == nil {
		t.Skip("the day's files were written by an earlier run of this test in this process")
	}
	reconcile := func(args ...string) (string, error) {
		cmd := exec.Command(filepath.Join(w.bin, "quickpay"), append([]string{"reconcile", "--date", day.Format(time.DateOnly)}, args...)...)
		cmd.Env = w.env
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}

	t.Run("an open day is refused", func(t *testing.T) {
		out, err := reconcile()
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			t.Fatalf("reconcile of an open day: %v, want a non-zero exit\n%s", err, out)
		}
		if !strings.Contains(out, "not final yet at CCB, CMB, ICBC") {
			t.Errorf("output does not name the banks:\n%s", out)
		}
		if _, err := w.mandates.SettlementDay(ctx, day); !errors.Is(err, mandate.ErrSettlementNotReady) {
			t.Errorf("the day after the refused run: %v", err)
		}
	})

	// The banks' day closes.
	w.Sim.SetNow(time.Date(day.Year(), day.Month(), day.Day()+1, 6, 0, 0, 0, shanghai(t)))

	t.Run("a closed day is written", func(t *testing.T) {
		out, err := reconcile()
		if err != nil {
			t.Fatalf("reconcile: %v\n%s", err, out)
		}
		for _, want := range []string{"reconciliation", "of ICBC " + day.Format(time.DateOnly) + ": 1 statement debits, 1 matched",
			"(statement final)", "settlement files of " + day.Format(time.DateOnly) + " written:"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		f, err := w.mandates.SettlementFile(ctx, w.merchant, day)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := f.WriteCSV(ctx, &buf); err != nil {
			t.Fatal(err)
		}
		recs, err := csv.NewReader(&buf).ReadAll()
		if err != nil || len(recs) != 3 {
			t.Fatalf("file %q, %v; want the header, one row, the total", recs, err)
		}
		if row := recs[1]; row[0] != "charge" || row[5] != "water-7" || row[7] != ledger[0].OrderNo ||
			row[9] != strconv.FormatInt(ledger[0].Amount, 10) {
			t.Errorf("row %q, bank debit %v", row, ledger[0])
		}
		if total := recs[2][9]; total != "4321" {
			t.Errorf("total %s, want 4321", total)
		}
	})

	t.Run("run again, it writes nothing", func(t *testing.T) {
		before, err := w.mandates.SettlementDay(ctx, day)
		if err != nil {
			t.Fatal(err)
		}
		out, err := reconcile("--json")
		if err != nil {
			t.Fatalf("second reconcile: %v\n%s", err, out)
		}
		var got struct {
			Reconciliations []json.RawMessage `json:"reconciliations"`
			Written         []json.RawMessage `json:"written"`
			Settlement      *struct {
				Movements int64     `json:"Movements"`
				WrittenAt time.Time `json:"WrittenAt"`
			} `json:"settlement"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("--json: %v\n%s", err, out)
		}
		if len(got.Reconciliations) != 0 || len(got.Written) != 0 || got.Settlement == nil ||
			!got.Settlement.WrittenAt.Equal(before.WrittenAt) || got.Settlement.Movements != before.Movements {
			t.Errorf("second run %s, want nothing done and the day written at %s", out, before.WrittenAt)
		}
	})
}

func shanghai(t *testing.T) *time.Location {
	t.Helper()
	l, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		t.Fatal(err)
	}
	return l
}
