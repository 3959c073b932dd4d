package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/mandate"
)

const chargesUsage = "usage: quickpay charges run-due [--as-of RFC3339] [--no-wait]"

// cmdCharges runs what is due: `charges run-due --as-of T` claims every
// charge due at T, works them in this process (River charge workers), and
// waits until each has its bank's answer, printing progress for large
// runs. Charges whose answer is unknown are left to the query jobs, which
// `serve` (or the next run) works.
func cmdCharges(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "run-due" {
		return errors.New(chargesUsage)
	}
	var c config
	fs := newFlags("charges run-due", &c)
	asOfFlag := fs.String("as-of", "", "run what is due at this instant, RFC 3339 (default: now)")
	noWait := fs.Bool("no-wait", false, "claim and enqueue only; leave the charges to serve's workers")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	asOf := time.Now()
	if *asOfFlag != "" {
		t, err := time.Parse(time.RFC3339, *asOfFlag)
		if err != nil {
			return fmt.Errorf("--as-of: want RFC 3339, e.g. 2027-01-31T09:00:00+08:00: %w", err)
		}
		asOf = t
	}
	if asOf.After(time.Now()) {
		// Ahead of time, the run acts as of then: its attempts are dated
		// then, and the cards' daily failure caps and the retries count
		// from then, as the run would have done at that time.
		c.Clock = clock.StartingAt(asOf)
	}
	log := c.logger()
	d, err := c.open(ctx, log, !*noWait)
	if err != nil {
		return err
	}
	defer d.close()
	if err := c.openDomain(ctx, d, log); err != nil {
		return err
	}
	if !*noWait {
		if err := d.river.Start(ctx); err != nil {
			return fmt.Errorf("start workers: %w", err)
		}
		defer func() {
			stop, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
			defer cancel()
			_ = d.river.Stop(stop)
		}()
	}
	for round := 0; ; round++ {
		start := time.Now()
		st, err := d.mandates.RunDue(ctx, asOf)
		if err != nil {
			return err
		}
		if round > 0 && st.Claimed == 0 {
			return nil
		}
		fmt.Printf("run-due as of %s: %d periods due (%d skipped: no amount posted), %d notices sent, %d charges claimed, %d put off by the card's daily failure cap\n",
			asOf.Format(time.RFC3339), st.Periods, st.Skipped, st.Notices, st.Claimed, st.Deferred)
		if *noWait {
			return nil
		}
		// Also wait for what earlier runs left processing: a crashed run's
		// charges are run again (querying first) after --rescue-stuck-after.
		processing, _, err := d.mandates.Pending(ctx)
		if err != nil {
			return err
		}
		if st.Claimed == 0 && processing == 0 {
			return nil
		}
		if processing > st.Claimed {
			fmt.Printf("waiting for %d charges still processing (a crashed run's are run again after %s)\n",
				processing-st.Claimed, c.RescueAfter)
		}
		if err := waitSettled(ctx, d.mandates, max(st.Claimed, processing), start, log); err != nil {
			return err
		}
		// Charges held back while a card had attempts open go now.
	}
}

// waitSettled polls until no charge is waiting for its first answer,
// printing a progress line every second for runs of 1,000 or more.
func waitSettled(ctx context.Context, svc *mandate.Service, claimed int, start time.Time, log *slog.Logger) error {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	lastPrint := time.Now()
	for {
		processing, unknown, err := svc.Pending(ctx)
		if err != nil {
			return err
		}
		if processing == 0 {
			el := time.Since(start)
			fmt.Printf("settled %d charges in %s (%.0f/s); %d unknown, settling by query\n",
				claimed, el.Round(time.Millisecond), float64(claimed)/el.Seconds(), unknown)
			return nil
		}
		if claimed >= 1000 && time.Since(lastPrint) >= time.Second {
			done := max(0, claimed-processing)
			fmt.Printf("  %d/%d answered (%.0f/s)\n", done, claimed, float64(done)/time.Since(start).Seconds())
			lastPrint = time.Now()
		}
		select {
		case <-ctx.Done():
			log.Warn("interrupted; claimed charges finish in serve's workers (or the next run)")
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// reconcileUsage is cmdReconcile's usage line.
const reconcileUsage = "usage: quickpay reconcile --date YYYY-MM-DD [--bank CODE] [--json]"

// cmdReconcile compares banks' statements of a bank day with quickpay's
// books and writes the day's settlement files (DESIGN.md "Settlement
// file").
//
// Without --bank, every bank that serves statements is reconciled (unless
// it has a reconciliation of the day whose statement was final), and the
// settlement files of every day not written yet through --date are
// written, oldest first; a statement not final yet stops it with a
// non-zero exit naming the banks. Run again, it writes nothing twice.
//
// With --bank, only that bank is reconciled, final or not (a day still
// open can be compared as often as wanted); the day's files are written
// if that completes the set of final reconciliations.
func cmdReconcile(ctx context.Context, args []string) error {
	var c config
	fs := newFlags("reconcile", &c)
	bank := fs.String("bank", "", "reconcile only this bank, e.g. ICBC (default: every bank, and write the settlement files)")
	date := fs.String("date", "", "the bank day, YYYY-MM-DD (Asia/Shanghai)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *date == "" || fs.NArg() > 0 {
		return errors.New(reconcileUsage)
	}
	day, err := mandate.ParseDate(*date)
	if err != nil {
		return fmt.Errorf("--date: %w", err)
	}
	log := c.logger()
	d, err := c.open(ctx, log, false)
	if err != nil {
		return err
	}
	defer d.close()
	if err := c.openDomain(ctx, d, log); err != nil {
		return err
	}
	out := reconcileOutput{Day: *date}
	var runErr error
	if *bank != "" {
		rec, err := d.mandates.Reconcile(ctx, *bank, day)
		if err != nil {
			return err
		}
		out.Reconciliations = []mandate.Reconciliation{rec}
		if out.Waiting, err = d.mandates.SettlementPending(ctx, day); err != nil {
			return err
		}
		if len(out.Waiting) == 0 {
			run, err := d.mandates.WriteSettlementFiles(ctx, day)
			out.Written, runErr = run.Written, err
		}
	} else {
		run, err := d.mandates.WriteSettlementFiles(ctx, day)
		out.Reconciliations, out.Written, runErr = run.Reconciliations, run.Written, err
	}
	var notFinal *mandate.StatementNotFinalError
	if errors.As(runErr, &notFinal) {
		out.NotFinal = notFinal.Banks
	}
	if sd, err := d.mandates.SettlementDay(ctx, day); err == nil {
		out.Settlement = &sd
	} else if !errors.Is(err, mandate.ErrSettlementNotReady) {
		return err
	}
	if *asJSON {
		if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
			return err
		}
	} else if err := out.print(os.Stdout); err != nil {
		return err
	}
	return runErr
}

// reconcileOutput is what cmdReconcile prints.
type reconcileOutput struct {
	Day             string                   `json:"day"`
	Reconciliations []mandate.Reconciliation `json:"reconciliations"`
	// Written are the days whose settlement files this run wrote.
	Written []mandate.SettlementDay `json:"written"`
	// Settlement is the day's files, if written (by this run or before).
	Settlement *mandate.SettlementDay `json:"settlement"`
	// NotFinal are the banks whose statements stopped the run; Waiting,
	// with --bank, those the day's files still wait for.
	NotFinal []string `json:"not_final,omitempty"`
	Waiting  []string `json:"waiting,omitempty"`
}

func (o reconcileOutput) print(w io.Writer) error {
	for _, rec := range o.Reconciliations {
		final := "final"
		if !rec.Final {
			final = "not final"
		}
		fmt.Fprintf(w, "reconciliation %d of %s %s: %d statement debits, %d matched, %d unknown attempts settled, %d mismatches (statement %s)\n",
			rec.RunID, rec.BankCode, rec.Date.Format(time.DateOnly), rec.Entries, rec.Matched, rec.Settled, len(rec.Mismatches), final)
		if len(rec.Mismatches) == 0 {
			continue
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KIND\tORDER\tMERCHANT\tBANK AMOUNT\tOUR AMOUNT")
		for _, m := range rec.Mismatches {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\n", m.Kind, m.OrderNo, m.MerchantID, m.BankAmount, m.OurAmount)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	for _, sd := range o.Written {
		fmt.Fprintf(w, "settlement files of %s written: %d movements\n", sd.Day.Format(time.DateOnly), sd.Movements)
	}
	switch {
	case len(o.NotFinal) > 0:
		fmt.Fprintf(w, "settlement files of %s not written: the statement is not final yet at %s; run again later\n",
			o.Day, strings.Join(o.NotFinal, ", "))
	case o.Settlement != nil && len(o.Written) == 0:
		fmt.Fprintf(w, "settlement files of %s: written at %s (%d movements)\n", o.Day,
			o.Settlement.WrittenAt.Format(time.RFC3339), o.Settlement.Movements)
	case len(o.Waiting) > 0:
		fmt.Fprintf(w, "settlement files of %s not written: waiting for a final reconciliation at %s (or run without --bank)\n",
			o.Day, strings.Join(o.Waiting, ", "))
	}
	return nil
}

// runScheduler runs what is due every interval until ctx ends (inside
// serve). Runs are safe side by side: claims skip what another holds.
func runScheduler(ctx context.Context, svc *mandate.Service, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		st, err := svc.RunDue(ctx, time.Now())
		switch {
		case err != nil && ctx.Err() == nil:
			log.Error("scheduler run", "err", err)
		case st != (mandate.RunStats{}):
			log.Info("scheduler run", "periods", st.Periods, "skipped", st.Skipped, "notices", st.Notices,
				"claimed", st.Claimed, "deferred", st.Deferred)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
