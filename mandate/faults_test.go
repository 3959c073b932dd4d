package mandate_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/dev/simclient"
	"github.com/quickpay/quickpay/mandate"
)

const msgUnknown = "charge outcome unknown; settling by query"

// TestChargeFaults charges through every banksim fault mode and the real
// declines, one charge at a time (a fault hits the next charge at its
// bank), and checks the charge, its attempts, the mandate and the card;
// then each card's ledger against quickpay's attempts.
func TestChargeFaults(t *testing.T) {
	w := newWorld(t)
	type want struct {
		charge       mandate.ChargeStatus
		failure      string
		debits       int
		unknownFirst bool                  // the first answer left the outcome unknown
		mandate      mandate.MandateStatus // "" : active
		reason       string
		card         binding.CardStatus // "" : active
	}
	hard := func(code string, unknownFirst bool) want {
		return want{charge: mandate.ChargeFailed, failure: code, unknownFirst: unknownFirst,
			mandate: mandate.StatusCancelled, reason: "card_revoked", card: binding.CardRevoked}
	}
	ok := want{charge: mandate.ChargeSucceeded, debits: 1, unknownFirst: true}
	retry := want{charge: mandate.ChargeRetryScheduled, failure: "insufficient_funds"}
	retryAsync := retry
	retryAsync.unknownFirst = true // CMB answers every charge "processing"
	cases := []struct {
		name    string
		bank    string
		balance int64  // default 1 000 000
		status  string // the account's status after binding
		faults  []simclient.Fault
		want    want
	}{
		{name: "timeout after the debit settles by query", bank: "ICBC",
			faults: []simclient.Fault{{Operation: "charge", Mode: "timeout", Apply: true}}, want: ok},
		{name: "timeout before the debit is sent again under its order number", bank: "ICBC",
			faults: []simclient.Fault{{Operation: "charge", Mode: "timeout"}}, want: ok},
		{name: "bank 503 is sent again under its order number", bank: "ICBC",
			faults: []simclient.Fault{{Operation: "charge", Mode: "error"}}, want: ok},
		{name: "bank system error code settles by query", bank: "ICBC",
			faults: []simclient.Fault{{Operation: "charge", Mode: "decline", Code: "system_error"}}, want: ok},
		{name: "processing settles by query or callback", bank: "ICBC",
			faults: []simclient.Fault{{Operation: "charge", Mode: "processing"}}, want: ok},
		{name: "dropped answer settles by query", bank: "ICBC",
			faults: []simclient.Fault{{Operation: "charge", Mode: "drop_response"}}, want: ok},
		{name: "dropped answer and a failing first query", bank: "ICBC",
			faults: []simclient.Fault{{Operation: "charge", Mode: "drop_response"}, {Operation: "query", Mode: "error", Count: 3}},
			want:   ok},
		{name: "declined for funds is retried later", bank: "ICBC",
			faults: []simclient.Fault{{Operation: "charge", Mode: "decline", Code: "insufficient_funds"}}, want: retry},
		{name: "no funds at the bank is retried later", bank: "ICBC", balance: 1, want: retry},
		{name: "card frozen pauses the mandate", bank: "ICBC",
			faults: []simclient.Fault{{Operation: "charge", Mode: "decline", Code: "card_frozen"}},
			want:   want{charge: mandate.ChargeFailed, failure: "card_frozen", mandate: mandate.StatusPaused, reason: "card_frozen"}},
		{name: "elements mismatch is a hard decline that pauses the mandate", bank: "CCB",
			faults: []simclient.Fault{{Operation: "charge", Mode: "decline", Code: "phone_mismatch"}},
			want:   want{charge: mandate.ChargeFailed, failure: "elements_mismatch", mandate: mandate.StatusPaused, reason: "elements_mismatch"}},
		{name: "card closed revokes the card and cancels its mandates", bank: "ICBC",
			faults: []simclient.Fault{{Operation: "charge", Mode: "decline", Code: "card_closed"}}, want: hard("card_closed", false)},
		{name: "agreement invalid revokes the card and cancels its mandates", bank: "ICBC",
			faults: []simclient.Fault{{Operation: "charge", Mode: "decline", Code: "agreement_invalid"}}, want: hard("agreement_invalid", false)},
		{name: "card closed learned by query after a lost answer", bank: "ICBC", status: "closed",
			faults: []simclient.Fault{{Operation: "charge", Mode: "drop_response"}}, want: hard("card_closed", true)},
		{name: "CCB timeout after the debit settles by query", bank: "CCB",
			faults: []simclient.Fault{{Operation: "charge", Mode: "timeout", Apply: true}}, want: ok},
		{name: "CCB dropped answer settles by query", bank: "CCB",
			faults: []simclient.Fault{{Operation: "charge", Mode: "drop_response"}}, want: ok},
		{name: "CCB closed card", bank: "CCB", status: "closed", want: hard("card_closed", false)},
		{name: "CMB settles by callback", bank: "CMB", want: ok},
		{name: "CMB dropped answer", bank: "CMB",
			faults: []simclient.Fault{{Operation: "charge", Mode: "drop_response"}}, want: ok},
		{name: "CMB no funds is retried later", bank: "CMB", balance: 1, want: retryAsync},
	}
	type done struct {
		card           card
		mandate, later mandate.Mandate
		want           want
		amount         int64
	}
	var all []done
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			balance := tc.balance
			if balance == 0 {
				balance = 1_000_000
			}
			c := w.bindCard(t, tc.bank, balance)
			if tc.status != "" {
				w.putAccount(t, c, balance, tc.status)
			}
			amount := int64(10_000 + i)
			m := w.mandate(t, c, w.dueToday(amount))
			// A second mandate on the card, not due yet: a hard decline
			// ends it too.
			later := w.mandate(t, c, w.monthly(20, 500))
			for _, f := range tc.faults {
				f.BankCode = tc.bank
				w.fault(t, f)
			}
			if st := w.runDue(t); st.Claimed != 1 {
				t.Fatalf("claimed %d, want 1", st.Claimed)
			}
			if err := w.SimCtl.ClearFaults(ctx, tc.bank); err != nil {
				t.Fatal(err)
			}
			all = append(all, done{c, m, later, tc.want, amount})

			ch := w.oneCharge(t, m)
			if ch.Status != tc.want.charge || ch.FailureCode != tc.want.failure {
				t.Errorf("charge = %s (%q), want %s (%q)", ch.Status, ch.FailureCode, tc.want.charge, tc.want.failure)
			}
			if len(ch.Attempts) != 1 {
				t.Fatalf("%d attempts, want 1 (one order number for the charge)", len(ch.Attempts))
			}
			if got := w.logged(msgUnknown, ch.Attempts[0].OrderNo); got != tc.want.unknownFirst {
				t.Errorf("outcome unknown at first: %v, want %v", got, tc.want.unknownFirst)
			}
			if n := len(w.ledger(t, c)); n != tc.want.debits {
				t.Errorf("%d debits, want %d", n, tc.want.debits)
			}
			if tc.want.charge == mandate.ChargeRetryScheduled {
				if next := w.today().AddDate(0, 0, 1); !ch.NextAttemptAt.Equal(nineAM(next).Add(-9 * time.Hour)) {
					t.Errorf("retry at %s, want 00:00 Shanghai on %s", ch.NextAttemptAt, next.Format(time.DateOnly))
				}
			}
			wantMandate, wantCard := tc.want.mandate, tc.want.card
			if wantMandate == "" {
				wantMandate = mandate.StatusActive
			}
			if wantCard == "" {
				wantCard = binding.CardActive
			}
			got := w.getMandate(t, m)
			if got.Status != wantMandate || got.StatusReason != tc.want.reason {
				t.Errorf("mandate = %s (%q), want %s (%q)", got.Status, got.StatusReason, wantMandate, tc.want.reason)
			}
			if wantMandate == mandate.StatusCancelled {
				if l := w.getMandate(t, later); l.Status != mandate.StatusCancelled {
					t.Errorf("the card's other mandate is %s", l.Status)
				}
			}
			if s := w.cardStatus(t, c); s != wantCard {
				t.Errorf("card = %s, want %s", s, wantCard)
			}
			evs := chargeEvents(w.events(t, w.merchant), ch.ID)
			wantEvent := map[mandate.ChargeStatus]string{mandate.ChargeSucceeded: "charge.succeeded", mandate.ChargeFailed: "charge.failed",
				mandate.ChargeRetryScheduled: "charge.retry_scheduled"}[tc.want.charge]
			if len(evs) != 1 || evs[0].Type != wantEvent {
				t.Errorf("charge events = %v, want [%s]", types(evs), wantEvent)
			}
		})
	}

	t.Run("retries succeed the next day once funded", func(t *testing.T) {
		for _, d := range all {
			if d.want.charge == mandate.ChargeRetryScheduled {
				w.putAccount(t, d.card, 1_000_000, "")
			}
		}
		w.setDay(w.today().AddDate(0, 0, 1))
		w.runDue(t)
		n := 0
		for _, d := range all {
			if d.want.charge != mandate.ChargeRetryScheduled {
				continue
			}
			n++
			ch := w.oneCharge(t, d.mandate)
			if ch.Status != mandate.ChargeSucceeded || len(ch.Attempts) != 2 || ch.Attempts[0].Status != mandate.AttemptFailed ||
				ch.Attempts[1].Status != mandate.AttemptSucceeded || ch.Retries != 1 {
				t.Errorf("%s: charge %s, retries %d, attempts %+v", d.card.BankCode, ch.Status, ch.Retries, ch.Attempts)
			}
			if got := types(chargeEvents(w.events(t, w.merchant), ch.ID)); !slices.Equal(got, []string{"charge.retry_scheduled", "charge.succeeded"}) {
				t.Errorf("events = %v", got)
			}
			if l := w.ledger(t, d.card); len(l) != 1 || l[0].Amount != d.amount || l[0].OrderNo != ch.Attempts[1].OrderNo {
				t.Errorf("ledger = %+v", l)
			}
		}
		if n != 3 {
			t.Fatalf("%d retry cases, want 3", n)
		}
	})

	t.Run("every ledger equals the succeeded attempts", func(t *testing.T) {
		if len(all) != len(cases) {
			t.Fatalf("%d of %d cases ran", len(all), len(cases))
		}
		for _, d := range all {
			w.checkBooks(t, d.card)
		}
	})
}

// TestFailureCap: with five charges due the same day on a card without
// funds, quickpay makes at most three failed attempts per card per bank
// day, so banksim never answers "try tomorrow"; a charge alone on its
// card is retried on the charge date + 1, 3 and 5 days, or on the
// merchant's own retry days.
// TestFailureCapCountsTheCard: the bank's cap is per card, and a card
// unbound and bound again is a new card row of the same card: its failures
// that day still count, so the new mandate's charge waits for tomorrow.
func TestFailureCapCountsTheCard(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	first := w.bindCard(t, "ICBC", 1)
	for i := range mandate.CardFailuresPerDay {
		w.mandate(t, first, w.dueToday(int64(1_000+i)))
	}
	if st := w.runDue(t); st.Claimed != mandate.CardFailuresPerDay {
		t.Fatalf("first run: %+v, want %d claimed", st, mandate.CardFailuresPerDay)
	}
	if _, err := w.bindings.Unbind(ctx, first.Merchant, first.ID); err != nil {
		t.Fatal(err)
	}
	again := w.bindAccount(t, first.Merchant, first.Account)
	if again.ID == first.ID {
		t.Fatal("binding the card again reused its card row")
	}
	m := w.mandate(t, again, w.dueToday(4_000))
	if st := w.runDue(t); st.Claimed != 0 || st.Deferred != 1 {
		t.Fatalf("the card bound again: %+v, want its charge deferred to tomorrow", st)
	}
	if ch := w.oneCharge(t, m); len(ch.Attempts) != 0 || ch.NextAttemptAt.IsZero() {
		t.Fatalf("charge = %s with %d attempts, next %s; want none sent today", ch.Status, len(ch.Attempts), ch.NextAttemptAt)
	}
}

func TestFailureCap(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	d0 := w.today()

	capped := w.bindCard(t, "ICBC", 1)
	var cappedMandates []mandate.Mandate
	for i := range 5 {
		cappedMandates = append(cappedMandates, w.mandate(t, capped, w.dueToday(int64(1_000+i))))
	}
	alone := w.bindCard(t, "ICBC", 1)
	aloneMandate := w.mandate(t, alone, w.dueToday(2_000))

	custom := w.newMerchant(t)
	if _, err := w.Pool.Exec(ctx, `UPDATE merchants SET retry_days = '{2,4}' WHERE id = $1`, custom); err != nil {
		t.Fatal(err)
	}
	customCard := w.bindCardFor(t, custom, "CCB", 1)
	customMandate := w.mandate(t, customCard, w.dueToday(3_000))

	for d := d0; !d.After(d0.AddDate(0, 0, 14)); d = d.AddDate(0, 0, 1) {
		w.setDay(d)
		st := w.runDue(t)
		if d.Equal(d0) {
			// Two of the card's five wait while three are open; once those
			// failed, the day's cap is used up and they go to tomorrow.
			if st.Claimed != 3+1+1 || st.Deferred != 0 {
				t.Errorf("first day: %+v, want 5 claimed, none deferred yet", st)
			}
			if st = w.runDue(t); st.Claimed != 0 || st.Deferred != 2 {
				t.Errorf("first day, second run: %+v, want the 2 held back deferred", st)
			}
		}
		rows, err := w.Pool.Query(ctx, `SELECT card_id, bank_day, count(*) FROM charge_attempts
			WHERE card_id = ANY($1) AND status = 'failed' GROUP BY 1, 2 HAVING count(*) > 3`,
			[]string{capped.ID, alone.ID, customCard.ID})
		if err != nil {
			t.Fatal(err)
		}
		var card string
		var day time.Time
		var n int
		if _, err := pgx.ForEachRow(rows, []any{&card, &day, &n}, func() error {
			t.Errorf("%d failed attempts on %s on one card", n, day.Format(time.DateOnly))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}

	bankDays := func(as []attempt) []string {
		var out []string
		for _, a := range as {
			out = append(out, a.BankDay.Format(time.DateOnly))
		}
		return out
	}
	plus := func(days ...int) []string {
		var out []string
		for _, n := range days {
			out = append(out, d0.AddDate(0, 0, n).Format(time.DateOnly))
		}
		return out
	}

	t.Run("five charges on one card: at most three failures a day", func(t *testing.T) {
		as := w.attempts(t, capped)
		perDay := map[string]int{}
		for _, a := range as {
			perDay[a.BankDay.Format(time.DateOnly)]++
			if a.Status != mandate.AttemptFailed || a.FailureCode != "insufficient_funds" {
				t.Errorf("attempt %s: %s %s (bank %s)", a.OrderNo, a.Status, a.FailureCode, a.BankResult)
			}
		}
		if len(as) != 5*4 {
			t.Errorf("%d attempts, want 20 (each charge tried once and retried three times)", len(as))
		}
		if perDay[d0.Format(time.DateOnly)] != 3 {
			t.Errorf("first day's attempts = %d, want the cap of 3", perDay[d0.Format(time.DateOnly)])
		}
		for day, n := range perDay {
			if n > mandate.CardFailuresPerDay {
				t.Errorf("%d attempts on %s", n, day)
			}
		}
		for _, m := range cappedMandates {
			ch := w.oneCharge(t, m)
			if ch.Status != mandate.ChargeFailed || ch.FailureCode != "insufficient_funds" || len(ch.Attempts) != 4 || ch.Retries != 3 {
				t.Errorf("charge %s: %s %s, %d attempts, %d retries", ch.ID, ch.Status, ch.FailureCode, len(ch.Attempts), ch.Retries)
			}
		}
	})
	t.Run("banksim never answered try tomorrow", func(t *testing.T) {
		var n int
		if err := w.Pool.QueryRow(ctx, `SELECT count(*) FROM charge_attempts WHERE card_id = ANY($1)
			AND (failure_code = 'try_tomorrow' OR status <> 'failed')`, []string{capped.ID, alone.ID, customCard.ID}).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Fatalf("%d attempts were answered try_tomorrow or did not fail", n)
		}
	})
	t.Run("default retry days are 1, 3 and 5", func(t *testing.T) {
		as := w.attempts(t, alone)
		if got, want := bankDays(as), plus(0, 1, 3, 5); !slices.Equal(got, want) {
			t.Errorf("attempts on %v, want %v", got, want)
		}
		ch := w.oneCharge(t, aloneMandate)
		if ch.Status != mandate.ChargeFailed || ch.FailureCode != "insufficient_funds" || !ch.NextAttemptAt.IsZero() {
			t.Errorf("charge = %s %s next %s", ch.Status, ch.FailureCode, ch.NextAttemptAt)
		}
		evs := types(chargeEvents(w.events(t, w.merchant), ch.ID))
		if !slices.Equal(evs, []string{"charge.retry_scheduled", "charge.retry_scheduled", "charge.retry_scheduled", "charge.failed"}) {
			t.Errorf("events = %v", evs)
		}
	})
	t.Run("merchant retry days 2 and 4", func(t *testing.T) {
		as := w.attempts(t, customCard)
		if got, want := bankDays(as), plus(0, 2, 4); !slices.Equal(got, want) {
			t.Errorf("attempts on %v, want %v", got, want)
		}
		ch := w.oneCharge(t, customMandate)
		if ch.Status != mandate.ChargeFailed || ch.Retries != 2 {
			t.Errorf("charge = %s after %d retries", ch.Status, ch.Retries)
		}
	})
	for _, c := range []card{capped, alone, customCard} {
		if l := w.ledger(t, c); len(l) != 0 {
			t.Errorf("debits on a card without funds: %+v", l)
		}
	}
}

// TestRetryOnALaterDay: a charge first tried after its date (no run on
// the day) and declined is retried on the day after the decline, not at
// once, and its further retries keep to the charge date plus the retry
// days: tries on d+1, d+2, d+3 and d+5.
func TestRetryOnALaterDay(t *testing.T) {
	w := newWorld(t)
	d0 := w.today()
	c := w.bindCard(t, "ICBC", 1)
	m := w.mandate(t, c, w.dueToday(2_200))

	w.setDay(d0.AddDate(0, 0, 1))
	if st := w.runDue(t); st.Claimed != 1 {
		t.Fatalf("first run a day late claimed %d, want the charge", st.Claimed)
	}
	if st := w.runDue(t); st.Claimed != 0 {
		t.Errorf("a second run on the decline's day claimed %d, want none", st.Claimed)
	}
	ch := w.oneCharge(t, m)
	if want := m.Schedule.DueAt(d0.AddDate(0, 0, 2)); ch.Status != mandate.ChargeRetryScheduled || !ch.NextAttemptAt.Equal(want) {
		t.Errorf("charge %s, next attempt %s; want retry_scheduled at %s", ch.Status, ch.NextAttemptAt, want)
	}
	for d := d0.AddDate(0, 0, 2); !d.After(d0.AddDate(0, 0, 7)); d = d.AddDate(0, 0, 1) {
		w.setDay(d)
		w.runDue(t)
	}
	var got []string
	for _, a := range w.attempts(t, c) {
		got = append(got, a.BankDay.Format(time.DateOnly))
	}
	var want []string
	for _, n := range []int{1, 2, 3, 5} {
		want = append(want, d0.AddDate(0, 0, n).Format(time.DateOnly))
	}
	if !slices.Equal(got, want) {
		t.Errorf("attempts on %v, want %v", got, want)
	}
	if ch := w.oneCharge(t, m); ch.Status != mandate.ChargeFailed || ch.Retries != 3 {
		t.Errorf("charge %s after %d retries, want failed after 3", ch.Status, ch.Retries)
	}
}

// TestRetryOnALaterBankDay: "a later day" is a later bank day
// (Asia/Shanghai, the day the card's cap counts). A Los Angeles mandate's
// charge, tried late and declined at 09:00 in Shanghai, would be retried
// at the next midnight in Los Angeles, 16:00 in Shanghai the same bank
// day; it waits for the first Los Angeles midnight on a later bank day.
func TestRetryOnALaterBankDay(t *testing.T) {
	w := newWorld(t)
	d0 := w.today()
	c := w.bindCard(t, "ICBC", 1)
	in := w.dueToday(2_300)
	in.Schedule.Timezone = "America/Los_Angeles"
	m := w.mandate(t, c, in)

	d1 := d0.AddDate(0, 0, 1)
	w.setDay(d1) // 09:00 in Shanghai, 17:00 of the charge date in Los Angeles
	if st := w.runDue(t); st.Claimed != 1 {
		t.Fatalf("run claimed %d, want the charge", st.Claimed)
	}
	w.setNow(time.Date(d1.Year(), d1.Month(), d1.Day(), 20, 0, 0, 0, shanghai)) // past midnight in Los Angeles
	if st := w.runDue(t); st.Claimed != 0 {
		t.Errorf("a run later on the decline's bank day claimed %d, want none", st.Claimed)
	}
	ch := w.oneCharge(t, m)
	if want := m.Schedule.DueAt(d0.AddDate(0, 0, 2)); ch.Status != mandate.ChargeRetryScheduled || !ch.NextAttemptAt.Equal(want) {
		t.Errorf("charge %s, next attempt %s; want retry_scheduled at %s", ch.Status, ch.NextAttemptAt, want)
	}
}

// TestFailureCapUnderConcurrentRuns: RunDue is safe to run concurrently
// (several schedulers), and the per-card cap holds across them: four
// runs claiming one charge per transaction never put more than three
// attempts on one card in a day.
func TestFailureCapUnderConcurrentRuns(t *testing.T) {
	w := newWorld(t)
	c := w.bindCard(t, "ICBC", 1)
	for i := range 12 {
		w.mandate(t, c, w.dueToday(int64(100+i)))
	}
	cfg := w.cfg
	cfg.ClaimBatch = 1
	var runs sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		svc, err := mandate.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		runs.Go(func() {
			_, err := svc.RunDue(context.Background(), w.clock.Now())
			errs <- err
		})
	}
	runs.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	w.settle(t, true)
	as := w.attempts(t, c)
	if len(as) != mandate.CardFailuresPerDay {
		t.Errorf("%d attempts on the card today, want the cap of %d", len(as), mandate.CardFailuresPerDay)
	}
	for _, a := range as {
		if a.FailureCode != "insufficient_funds" {
			t.Errorf("attempt %s: %s %s", a.OrderNo, a.Status, a.FailureCode)
		}
	}
}

// TestManyMandatesOnOneCardChargeTheSameDay: the cap holds back a card's
// fourth open attempt only until the first three are answered; charges
// that succeed all go out on their date, none is put off a day.
func TestManyMandatesOnOneCardChargeTheSameDay(t *testing.T) {
	w := newWorld(t)
	c := w.bindCard(t, "ICBC", 1_000_000)
	var ms []mandate.Mandate
	for i := range 5 {
		ms = append(ms, w.mandate(t, c, w.dueToday(int64(100+i))))
	}
	// The first run enqueues on a queue no worker serves, so none of its
	// three attempts can be answered while it still claims (run-due
	// repeats until nothing is claimable: answered in time, the other two
	// would rightly go out in the same run). Its jobs then move to the
	// world's queue.
	cfg := w.cfg
	cfg.Queue = "unserved_" + randHex(4)
	held, err := mandate.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	first, err := held.RunDue(context.Background(), w.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Pool.Exec(context.Background(), `UPDATE river_job SET queue = $1 WHERE queue = $2`,
		w.queue, cfg.Queue); err != nil {
		t.Fatal(err)
	}
	w.settle(t, true)
	second := w.runDue(t)
	if first.Claimed != 3 || second.Claimed != 2 || first.Deferred+second.Deferred != 0 {
		t.Fatalf("runs: %+v then %+v, want 3 then 2 claimed, none deferred", first, second)
	}
	for _, m := range ms {
		ch := w.oneCharge(t, m)
		if ch.Status != mandate.ChargeSucceeded || len(ch.Attempts) != 1 ||
			!w.today().Equal(mandate.Schedule{}.DateAt(ch.Attempts[0].CreatedAt)) {
			t.Errorf("charge %s: %s with %d attempts, want succeeded today in one", ch.ID, ch.Status, len(ch.Attempts))
		}
	}
	if l := w.ledger(t, c); len(l) != 5 {
		t.Fatalf("ledger has %d debits, want 5", len(l))
	}
	w.checkBooks(t, c)
}
