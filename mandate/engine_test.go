package mandate_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/sensitive"
	"github.com/quickpay/quickpay/mandate"
)

// TestYearOfSchedules charges monthly mandates on days 31, 30 and 29 and a
// weekly one through 2027 (not a leap year), one RunDue per day, at three
// banks: the charge dates follow the month-end rule, every charge
// succeeds, and each bank's ledger holds exactly those debits.
func TestYearOfSchedules(t *testing.T) {
	w := newWorld(t)
	monthly := []struct {
		name  string
		bank  string
		day   int
		dates []string
	}{
		{"day 31 at ICBC", "ICBC", 31, []string{"2027-01-31", "2027-02-28", "2027-03-31", "2027-04-30", "2027-05-31",
			"2027-06-30", "2027-07-31", "2027-08-31", "2027-09-30", "2027-10-31", "2027-11-30", "2027-12-31"}},
		{"day 30 at CCB", "CCB", 30, []string{"2027-01-30", "2027-02-28", "2027-03-30", "2027-04-30", "2027-05-30",
			"2027-06-30", "2027-07-30", "2027-08-30", "2027-09-30", "2027-10-30", "2027-11-30", "2027-12-30"}},
		{"day 29 at CMB", "CMB", 29, []string{"2027-01-29", "2027-02-28", "2027-03-29", "2027-04-29", "2027-05-29",
			"2027-06-29", "2027-07-29", "2027-08-29", "2027-09-29", "2027-10-29", "2027-11-29", "2027-12-29"}},
	}
	type run struct {
		card    card
		mandate mandate.Mandate
	}
	runs := make([]run, len(monthly))
	for i, tc := range monthly {
		c := w.bindCard(t, tc.bank, 10_000_000)
		runs[i] = run{c, w.mandate(t, c, w.monthly(tc.day, int64(1000+tc.day)))}
	}
	wc := w.bindCard(t, "ICBC", 10_000_000)
	weekly := w.mandate(t, wc, mandate.CreateInput{AmountType: mandate.AmountFixed, Amount: 700,
		Schedule: mandate.Schedule{Interval: mandate.IntervalWeek, Weekday: 3, StartDate: w.today()}})

	charged := 0
	for d := day("2027-01-01"); !d.After(day("2027-12-31")); d = d.AddDate(0, 0, 1) {
		w.setDay(d)
		st := w.runDue(t)
		charged += st.Claimed
	}
	if charged != 3*12+52 {
		t.Errorf("claimed %d charges in the year, want %d", charged, 3*12+52)
	}

	for i, tc := range monthly {
		t.Run(tc.name, func(t *testing.T) {
			r := runs[i]
			cs := w.charges(t, r.mandate)
			if got := chargeDates(cs); !slices.Equal(got, tc.dates) {
				t.Errorf("charge dates\n got %v\nwant %v", got, tc.dates)
			}
			for _, c := range cs {
				if c.Status != mandate.ChargeSucceeded || len(c.Attempts) != 1 || c.Amount != int64(1000+tc.day) {
					t.Errorf("charge %s: status %s, %d attempts, amount %d", c.Period, c.Status, len(c.Attempts), c.Amount)
				}
			}
			ledger := w.ledger(t, r.card)
			var debitDays []string
			for _, e := range ledger {
				debitDays = append(debitDays, e.At.In(shanghai).Format(time.DateOnly))
			}
			if !slices.Equal(debitDays, tc.dates) {
				t.Errorf("the bank debited on\n %v\nwant %v", debitDays, tc.dates)
			}
			w.checkBooks(t, r.card)
			m := w.getMandate(t, r.mandate)
			if m.Status != mandate.StatusActive || m.ChargesCount != 12 || m.NextPeriod != "2028-01" {
				t.Errorf("mandate after the year = status %s, %d charges, next %s", m.Status, m.ChargesCount, m.NextPeriod)
			}
		})
	}

	t.Run("weekly on Wednesdays", func(t *testing.T) {
		cs := w.charges(t, weekly)
		if len(cs) != 52 {
			t.Fatalf("%d weekly charges in 2027, want 52", len(cs))
		}
		dates := chargeDates(cs)
		if dates[0] != "2027-01-06" || dates[51] != "2027-12-29" || cs[0].Period != "2027-W01" || cs[51].Period != "2027-W52" {
			t.Errorf("first %s (%s), last %s (%s)", dates[0], cs[0].Period, dates[51], cs[51].Period)
		}
		for i, c := range cs {
			if c.ChargeDate.Weekday() != time.Wednesday || c.Status != mandate.ChargeSucceeded {
				t.Errorf("charge %s on a %s, status %s", dates[i], c.ChargeDate.Weekday(), c.Status)
			}
			if i > 0 && c.ChargeDate.Sub(cs[i-1].ChargeDate) != 7*24*time.Hour {
				t.Errorf("charges %s and %s are not a week apart", dates[i-1], dates[i])
			}
		}
		if l := w.ledger(t, wc); len(l) != 52 {
			t.Errorf("the bank made %d weekly debits, want 52", len(l))
		}
		w.checkBooks(t, wc)
	})
}

// TestVariableAmounts: a variable mandate charges what the biller posts,
// up to max_amount, and a period without a posted amount fails on its date
// without a bank call.
func TestVariableAmounts(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	c := w.bindCard(t, "ICBC", 10_000_000)
	m := w.mandate(t, c, mandate.CreateInput{AmountType: mandate.AmountVariable, MaxAmount: 50_000, Description: "电费",
		Schedule: mandate.Schedule{Interval: mandate.IntervalMonth, DayOfMonth: 10, StartDate: w.today()}})

	t.Run("over max_amount is refused", func(t *testing.T) {
		if _, err := w.svc.PostCharge(ctx, w.merchant, m.ID, mandate.ChargeInput{Amount: 50_001}); !errors.Is(err, mandate.ErrAmountOverMax) {
			t.Fatalf("posting 50001 over a 50000 max: %v", err)
		}
		if cs := w.charges(t, m); len(cs) != 0 {
			t.Fatalf("a refused amount left charges: %+v", cs)
		}
	})
	t.Run("posted amount is charged on its date", func(t *testing.T) {
		ch, err := w.svc.PostCharge(ctx, w.merchant, m.ID, mandate.ChargeInput{Amount: 31_415})
		if err != nil || ch.Period != "2027-01" || ch.Status != mandate.ChargeScheduled {
			t.Fatalf("post = %+v, %v", ch, err)
		}
		if _, err := w.svc.PostCharge(ctx, w.merchant, m.ID, mandate.ChargeInput{Amount: 100, Period: "2027-01"}); !errors.Is(err, mandate.ErrPeriodCharged) {
			t.Fatalf("posting the period twice: %v", err)
		}
		w.setDay(day("2027-01-09"))
		if st := w.runDue(t); st.Claimed != 0 {
			t.Fatalf("claimed %d the day before the charge date", st.Claimed)
		}
		w.setDay(day("2027-01-10"))
		if st := w.runDue(t); st.Claimed != 1 {
			t.Fatalf("claimed %d on the charge date, want 1", st.Claimed)
		}
		got := w.oneCharge(t, m)
		if got.Status != mandate.ChargeSucceeded || got.Amount != 31_415 {
			t.Fatalf("charge = %s %d", got.Status, got.Amount)
		}
	})
	t.Run("no amount posted fails the period without a debit", func(t *testing.T) {
		w.setDay(day("2027-02-09"))
		w.runDue(t)
		if cs := w.charges(t, m); len(cs) != 1 {
			t.Fatalf("the period failed before its date: %+v", cs)
		}
		w.setDay(day("2027-02-10"))
		st := w.runDue(t)
		if st.Skipped != 1 || st.Claimed != 0 {
			t.Fatalf("run = %+v, want one skipped period and no claim", st)
		}
		cs := w.charges(t, m)
		if len(cs) != 2 {
			t.Fatalf("charges = %+v", cs)
		}
		feb := cs[1]
		if feb.Period != "2027-02" || feb.Status != mandate.ChargeFailed || feb.FailureCode != "no_amount_posted" || len(feb.Attempts) != 0 {
			t.Fatalf("february = %+v", feb)
		}
		evs := chargeEvents(w.events(t, w.merchant), feb.ID)
		if !slices.Equal(types(evs), []string{"charge.failed"}) || evs[0].Data.FailureCode == nil || *evs[0].Data.FailureCode != "no_amount_posted" {
			t.Fatalf("february's events = %+v", evs)
		}
		if got := w.getMandate(t, m); got.NextPeriod != "2027-03" || got.Status != mandate.StatusActive {
			t.Fatalf("mandate = next %s, %s", got.NextPeriod, got.Status)
		}
	})
	t.Run("exactly max_amount is charged", func(t *testing.T) {
		if _, err := w.svc.PostCharge(ctx, w.merchant, m.ID, mandate.ChargeInput{Amount: 50_000}); err != nil {
			t.Fatal(err)
		}
		w.setDay(day("2027-03-10"))
		w.runDue(t)
		cs := w.charges(t, m)
		if len(cs) != 3 || cs[2].Status != mandate.ChargeSucceeded || cs[2].Amount != 50_000 {
			t.Fatalf("march = %+v", cs)
		}
	})
	var amounts []int64
	for _, e := range w.ledger(t, c) {
		amounts = append(amounts, e.Amount)
	}
	if !slices.Equal(amounts, []int64{31_415, 50_000}) {
		t.Errorf("the bank debited %v, want [31415 50000]", amounts)
	}
	w.checkBooks(t, c)
}

// TestPauseAndResume: periods that fall due while a mandate is paused are
// skipped, resuming does not charge them afterwards, and a charge waiting
// for its date fails when its mandate is paused.
func TestPauseAndResume(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)

	t.Run("paused periods are never charged", func(t *testing.T) {
		c := w.bindCard(t, "ICBC", 10_000_000)
		m := w.mandate(t, c, w.monthly(10, 12_345))
		w.setDay(day("2027-01-10"))
		w.runDue(t)
		w.setDay(day("2027-01-15"))
		if p, err := w.svc.Pause(ctx, w.merchant, m.ID); err != nil || p.Status != mandate.StatusPaused {
			t.Fatalf("pause = %+v, %v", p, err)
		}
		for d := day("2027-01-16"); d.Before(day("2027-03-20")); d = d.AddDate(0, 0, 1) {
			w.setDay(d)
			w.runDue(t)
		}
		if cs := w.charges(t, m); len(cs) != 1 {
			t.Fatalf("charges while paused: %v", chargeDates(cs))
		}
		r, err := w.svc.Resume(ctx, w.merchant, m.ID)
		if err != nil || r.Status != mandate.StatusActive || r.NextPeriod != "2027-04" || !r.NextChargeDate.Equal(day("2027-04-10")) {
			t.Fatalf("resume = %+v, %v", r, err)
		}
		for d := day("2027-03-20"); !d.After(day("2027-04-10")); d = d.AddDate(0, 0, 1) {
			w.setDay(d)
			w.runDue(t)
		}
		cs := w.charges(t, m)
		var periods []string
		for _, c := range cs {
			periods = append(periods, c.Period)
			if c.Status != mandate.ChargeSucceeded {
				t.Errorf("charge %s is %s", c.Period, c.Status)
			}
		}
		if !slices.Equal(periods, []string{"2027-01", "2027-04"}) {
			t.Fatalf("charged periods %v, want [2027-01 2027-04]", periods)
		}
		if l := w.ledger(t, c); len(l) != 2 {
			t.Fatalf("the bank made %d debits, want 2", len(l))
		}
		w.checkBooks(t, c)
		evs := mandateEvents(w.events(t, w.merchant), m.ID)
		if got := types(evs); !slices.Equal(got, []string{"mandate.activated", "mandate.paused", "mandate.resumed"}) {
			t.Fatalf("mandate events = %v", got)
		}
	})

	t.Run("pausing fails the charge waiting for its date", func(t *testing.T) {
		c := w.bindCard(t, "ICBC", 10_000_000)
		in := w.monthly(20, 5_000)
		in.NoticeDays = 2
		m := w.mandate(t, c, in)
		w.setDay(day("2027-04-18"))
		if st := w.runDue(t); st.Notices != 1 {
			t.Fatalf("run = %+v, want the notice", st)
		}
		if ch := w.oneCharge(t, m); ch.Status != mandate.ChargeScheduled {
			t.Fatalf("charge before its date = %s", ch.Status)
		}
		w.setDay(day("2027-04-19"))
		if _, err := w.svc.Pause(ctx, w.merchant, m.ID); err != nil {
			t.Fatal(err)
		}
		ch := w.oneCharge(t, m)
		if ch.Status != mandate.ChargeFailed || ch.FailureCode != "mandate_paused" {
			t.Fatalf("charge after pause = %s %s", ch.Status, ch.FailureCode)
		}
		if evs := chargeEvents(w.events(t, w.merchant), ch.ID); !slices.Equal(types(evs), []string{"charge.pre_debit_notice", "charge.failed"}) {
			t.Fatalf("charge events = %v", types(evs))
		}
		w.setDay(day("2027-04-20"))
		if st := w.runDue(t); st.Claimed != 0 {
			t.Fatalf("claimed %d for a paused mandate", st.Claimed)
		}
		if l := w.ledger(t, c); len(l) != 0 {
			t.Fatalf("the bank debited a paused mandate: %+v", l)
		}
	})
}

// TestPreDebitNotice: notice_days before the charge the member gets a
// text and the biller an event, and the charge is not tried before its
// notice went out.
func TestPreDebitNotice(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)

	t.Run("notice three days ahead, then the charge", func(t *testing.T) {
		c := w.bindCard(t, "ICBC", 10_000_000)
		in := w.monthly(10, 8_888)
		in.NoticeDays, in.Description = 3, "物业费"
		m := w.mandate(t, c, in)
		before, err := w.SimCtl.SMS(ctx, c.Phone)
		if err != nil {
			t.Fatal(err)
		}
		w.setDay(day("2027-01-06"))
		if st := w.runDue(t); st.Notices != 0 || st.Periods != 0 {
			t.Fatalf("four days ahead: %+v", st)
		}
		w.setDay(day("2027-01-07"))
		if st := w.runDue(t); st.Notices != 1 || st.Claimed != 0 {
			t.Fatalf("three days ahead: %+v, want one notice and no claim", st)
		}
		texts, err := w.SimCtl.SMS(ctx, c.Phone)
		if err != nil || len(texts) != len(before)+1 {
			t.Fatalf("texts %d → %d, %v", len(before), len(texts), err)
		}
		text := texts[0].Text
		for _, want := range []string{"【quickpay】", "扣款提醒", "物业费", "2027-01-10", "¥88.88", c.CardNumber[len(c.CardNumber)-4:]} {
			if !strings.Contains(text, want) {
				t.Errorf("notice text lacks %q", want)
			}
		}
		ch := w.oneCharge(t, m)
		if ch.Status != mandate.ChargeScheduled || ch.NoticeSentAt.IsZero() || len(ch.Attempts) != 0 {
			t.Fatalf("charge at notice time = %+v", ch)
		}
		for _, d := range []string{"2027-01-08", "2027-01-09"} {
			w.setDay(day(d))
			if st := w.runDue(t); st.Claimed != 0 || st.Notices != 0 {
				t.Fatalf("%s: %+v", d, st)
			}
		}
		if l := w.ledger(t, c); len(l) != 0 {
			t.Fatalf("debited before the charge date: %+v", l)
		}
		w.setDay(day("2027-01-10"))
		if st := w.runDue(t); st.Claimed != 1 {
			t.Fatalf("charge date: %+v", st)
		}
		ch = w.oneCharge(t, m)
		evs := chargeEvents(w.events(t, w.merchant), ch.ID)
		if ch.Status != mandate.ChargeSucceeded || !slices.Equal(types(evs), []string{"charge.pre_debit_notice", "charge.succeeded"}) {
			t.Fatalf("charge %s, events %v", ch.Status, types(evs))
		}
		if evs[0].Seq >= evs[1].Seq {
			t.Fatalf("notice (seq %d) not before the charge (seq %d)", evs[0].Seq, evs[1].Seq)
		}
		w.checkBooks(t, c)
	})

	t.Run("carrier down holds the charge until its notice goes out", func(t *testing.T) {
		c := w.bindCard(t, "ICBC", 10_000_000)
		in := w.monthly(20, 2_020)
		in.NoticeDays = 3
		m := w.mandate(t, c, in)
		w.carrierDown.Store(true)
		for _, d := range []string{"2027-01-17", "2027-01-18", "2027-01-19", "2027-01-20"} {
			w.setDay(day(d))
			if st := w.runDue(t); st.Notices != 0 || st.Claimed != 0 {
				t.Fatalf("%s with the carrier down: %+v", d, st)
			}
		}
		ch := w.oneCharge(t, m)
		if ch.Status != mandate.ChargeScheduled || !ch.NoticeSentAt.IsZero() || len(ch.Attempts) != 0 {
			t.Fatalf("charge while its notice cannot go out = %+v", ch)
		}
		if l := w.ledger(t, c); len(l) != 0 {
			t.Fatalf("debited without a notice: %+v", l)
		}
		w.carrierDown.Store(false)
		w.setNow(w.clock.Now().Add(time.Hour))
		if st := w.runDue(t); st.Notices != 1 || st.Claimed != 1 {
			t.Fatalf("carrier back: %+v", st)
		}
		ch = w.oneCharge(t, m)
		evs := chargeEvents(w.events(t, w.merchant), ch.ID)
		if ch.Status != mandate.ChargeSucceeded || !slices.Equal(types(evs), []string{"charge.pre_debit_notice", "charge.succeeded"}) {
			t.Fatalf("charge %s, events %v", ch.Status, types(evs))
		}
		w.checkBooks(t, c)
	})

}

// TestRefusedNoticesDoNotHoldUpOthers: notices the carrier refuses (more
// than one batch of them) wait for the next run without keeping the
// notices behind them from going out.
func TestRefusedNoticesDoNotHoldUpOthers(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	w.setDay(day("2027-01-20"))
	// More refused notices than one batch (100), due before the good one.
	bad := w.bindCard(t, "ICBC", 10_000_000)
	in := w.monthly(10, 100)
	in.NoticeDays = 3
	var badMandates []mandate.Mandate
	for range 101 {
		badMandates = append(badMandates, w.mandate(t, bad, in))
	}
	good := w.bindCard(t, "ICBC", 10_000_000)
	in = w.monthly(11, 1_111)
	in.NoticeDays = 3
	goodMandate := w.mandate(t, good, in)
	w.refuse(bad.Phone)
	defer w.refuse("")

	w.setDay(day("2027-02-08"))
	if st := w.runDue(t); st.Notices != 1 {
		t.Fatalf("run = %+v, want the one notice the carrier takes", st)
	}
	ch := w.oneCharge(t, goodMandate)
	if ch.NoticeSentAt.IsZero() {
		t.Fatalf("the good notice waited behind the refused ones")
	}
	texts, err := w.SimCtl.SMS(ctx, good.Phone)
	if err != nil || len(texts) == 0 || !strings.Contains(texts[0].Text, "扣款提醒") {
		t.Fatalf("no notice text for the good card: %v", err)
	}
	w.setDay(day("2027-02-11"))
	if st := w.runDue(t); st.Claimed != 1 {
		t.Fatalf("run = %+v, want only the noticed charge claimed", st)
	}
	if ch := w.oneCharge(t, goodMandate); ch.Status != mandate.ChargeSucceeded {
		t.Fatalf("good charge = %s", ch.Status)
	}
	for _, m := range badMandates[:3] {
		if ch := w.oneCharge(t, m); ch.Status != mandate.ChargeScheduled || !ch.NoticeSentAt.IsZero() {
			t.Fatalf("refused charge = %s, notice %s", ch.Status, ch.NoticeSentAt)
		}
	}
	if l := w.ledger(t, bad); len(l) != 0 {
		t.Fatalf("debits without notice: %d", len(l))
	}
}

// TestUnbindCancelsMandates: unbinding a card cancels its mandates in the
// same transaction, fails the charge they had waiting, and nothing is
// attempted on the card afterwards.
func TestUnbindCancelsMandates(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	c := w.bindCard(t, "ICBC", 10_000_000)
	in := w.monthly(10, 9_900)
	in.NoticeDays = 3
	noticed := w.mandate(t, c, in)
	weekly := w.mandate(t, c, mandate.CreateInput{AmountType: mandate.AmountFixed, Amount: 300,
		Schedule: mandate.Schedule{Interval: mandate.IntervalWeek, Weekday: 2, StartDate: day("2027-01-08")}})
	other := w.bindCard(t, "ICBC", 10_000_000)
	control := w.mandate(t, other, w.monthly(12, 1_200))

	w.setDay(day("2027-01-07"))
	w.runDue(t)
	waiting := w.oneCharge(t, noticed)
	if waiting.Status != mandate.ChargeScheduled {
		t.Fatalf("noticed charge = %s", waiting.Status)
	}
	w.setDay(day("2027-01-08"))
	if got, err := w.bindings.Unbind(ctx, w.merchant, c.ID); err != nil || got.Status != binding.CardUnbound {
		t.Fatalf("unbind = %+v, %v", got, err)
	}

	evs := w.events(t, w.merchant)
	for _, m := range []mandate.Mandate{noticed, weekly} {
		got := w.getMandate(t, m)
		if got.Status != mandate.StatusCancelled || got.StatusReason != "card_unbound" || got.NextPeriod != "" {
			t.Errorf("mandate %s = %s (%s), next %q", m.ID, got.Status, got.StatusReason, got.NextPeriod)
		}
		me := mandateEvents(evs, m.ID)
		if len(me) == 0 || me[len(me)-1].Type != "mandate.cancelled" || me[len(me)-1].Data.StatusReason == nil ||
			*me[len(me)-1].Data.StatusReason != "card_unbound" {
			t.Errorf("mandate %s events = %v", m.ID, types(me))
		}
	}
	ch := w.oneCharge(t, noticed)
	if ch.Status != mandate.ChargeFailed || ch.FailureCode != "mandate_cancelled" {
		t.Errorf("waiting charge = %s %s", ch.Status, ch.FailureCode)
	}
	if ce := chargeEvents(evs, ch.ID); len(ce) == 0 || ce[len(ce)-1].Type != "charge.failed" {
		t.Errorf("waiting charge events = %v", types(ce))
	}

	for d := day("2027-01-08"); !d.After(day("2027-01-20")); d = d.AddDate(0, 0, 1) {
		w.setDay(d)
		w.runDue(t)
	}
	if as := w.attempts(t, c); len(as) != 0 {
		t.Errorf("attempts on an unbound card: %+v", as)
	}
	if l := w.ledger(t, c); len(l) != 0 {
		t.Errorf("debits on an unbound card: %+v", l)
	}
	if cs := w.charges(t, weekly); len(cs) != 0 {
		t.Errorf("weekly charges after the unbind: %v", chargeDates(cs))
	}
	// The control mandate on another card still charges, so the runs ran.
	if cs := w.charges(t, control); len(cs) != 1 || cs[0].Status != mandate.ChargeSucceeded {
		t.Errorf("control mandate charges = %+v", cs)
	}
	w.checkBooks(t, other)

	t.Run("a charge claimed before the unbind never reaches the bank", func(t *testing.T) {
		c := w.bindCard(t, "ICBC", 10_000_000)
		m := w.mandate(t, c, w.dueToday(4_400))
		// The workers wait while the charge is claimed and the card unbound.
		if err := w.jobs.QueuePause(ctx, w.queue, nil); err != nil {
			t.Fatal(err)
		}
		st, err := w.svc.RunDue(ctx, w.clock.Now())
		if err != nil || st.Claimed != 1 {
			t.Fatalf("run = %+v, %v", st, err)
		}
		if ch := w.oneCharge(t, m); ch.Status != mandate.ChargeProcessing {
			t.Fatalf("claimed charge = %s", ch.Status)
		}
		if _, err := w.bindings.Unbind(ctx, w.merchant, c.ID); err != nil {
			t.Fatal(err)
		}
		if err := w.jobs.QueueResume(ctx, w.queue, nil); err != nil {
			t.Fatal(err)
		}
		w.settle(t, true)
		ch := w.oneCharge(t, m)
		as := w.attempts(t, c)
		if ch.Status != mandate.ChargeFailed || ch.FailureCode != "card_unbound" || len(as) != 1 || as[0].BankResult != "" {
			t.Fatalf("charge = %s (%s), attempts %+v", ch.Status, ch.FailureCode, as)
		}
		if l := w.ledger(t, c); len(l) != 0 {
			t.Fatalf("debit on an unbound card: %+v", l)
		}
		if got := w.getMandate(t, m); got.Status != mandate.StatusCancelled {
			t.Fatalf("mandate = %s", got.Status)
		}
	})
}

// TestMandateCompletion: a mandate completes when its schedule has no
// period left (max_charges, end_date), and its last charges are still
// made, retried included.
func TestMandateCompletion(t *testing.T) {
	w := newWorld(t)
	full := w.bindCard(t, "ICBC", 10_000_000)
	maxIn := w.monthly(10, 2_500)
	maxIn.Schedule.MaxCharges = 2
	byCount := w.mandate(t, full, maxIn)
	byEnd := w.mandate(t, full, mandate.CreateInput{AmountType: mandate.AmountFixed, Amount: 600,
		Schedule: mandate.Schedule{Interval: mandate.IntervalWeek, Weekday: 3, StartDate: w.today(), EndDate: day("2027-01-20")}})
	poor := w.bindCard(t, "ICBC", 1)
	oneIn := w.monthly(5, 3_300)
	oneIn.Schedule.MaxCharges = 1
	once := w.mandate(t, poor, oneIn)

	for d := day("2027-01-01"); !d.After(day("2027-03-31")); d = d.AddDate(0, 0, 1) {
		w.setDay(d)
		w.runDue(t)
		if d.Equal(day("2027-01-05")) {
			w.putAccount(t, poor, 1_000_000, "") // funds arrive after the first try
		}
	}
	evs := w.events(t, w.merchant)
	for _, tc := range []struct {
		name   string
		m      mandate.Mandate
		reason string
		dates  []string
	}{
		{"max_charges 2", byCount, "max_charges", []string{"2027-01-10", "2027-02-10"}},
		{"end_date", byEnd, "end_date", []string{"2027-01-06", "2027-01-13", "2027-01-20"}},
		{"max_charges 1, retried", once, "max_charges", []string{"2027-01-05"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs := w.charges(t, tc.m)
			if got := chargeDates(cs); !slices.Equal(got, tc.dates) {
				t.Errorf("charge dates %v, want %v", got, tc.dates)
			}
			for _, c := range cs {
				if c.Status != mandate.ChargeSucceeded {
					t.Errorf("charge %s = %s (%s)", c.Period, c.Status, c.FailureCode)
				}
			}
			m := w.getMandate(t, tc.m)
			if m.Status != mandate.StatusCompleted || m.StatusReason != tc.reason || m.NextPeriod != "" {
				t.Errorf("mandate = %s (%s), next %q", m.Status, m.StatusReason, m.NextPeriod)
			}
			if me := mandateEvents(evs, tc.m.ID); len(me) == 0 || me[len(me)-1].Type != "mandate.completed" {
				t.Errorf("mandate events = %v", types(me))
			}
		})
	}
	if l := w.ledger(t, full); len(l) != 5 {
		t.Errorf("%d debits on the full card, want 5", len(l))
	}
	if cs := w.charges(t, once); len(cs) != 1 || len(cs[0].Attempts) != 2 || cs[0].Attempts[0].FailureCode != "insufficient_funds" {
		t.Errorf("the last charge was not retried: %+v", cs)
	}
	if l := w.ledger(t, poor); len(l) != 1 || l[0].Amount != 3_300 {
		t.Errorf("debits on the poor card: %+v", l)
	}
	w.checkBooks(t, full)
	w.checkBooks(t, poor)
}

// TestCancelStopsTheLastCharge: a mandate completes once its last charge
// is made, days before that charge's date when it gives notice; cancelling
// it then still stops that charge, and so does unbinding its card.
func TestCancelStopsTheLastCharge(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	w.setDay(day("2027-03-01"))
	last := func(c card) mandate.Mandate {
		in := w.monthly(10, 4_200)
		in.NoticeDays, in.Schedule.MaxCharges = 3, 1
		return w.mandate(t, c, in)
	}
	byMerchant, byUnbind := w.bindCard(t, "ICBC", 1_000_000), w.bindCard(t, "CCB", 1_000_000)
	cancelled, unbound := last(byMerchant), last(byUnbind)
	w.setDay(day("2027-03-07"))
	w.runDue(t)
	for _, m := range []mandate.Mandate{cancelled, unbound} {
		if got := w.getMandate(t, m); got.Status != mandate.StatusCompleted {
			t.Fatalf("mandate with its last charge made = %s, want completed", got.Status)
		}
	}
	got, err := w.svc.Cancel(ctx, byMerchant.Merchant, cancelled.ID)
	if err != nil || got.Status != mandate.StatusCancelled {
		t.Fatalf("cancel the completed mandate = %s, %v; want cancelled", got.Status, err)
	}
	if _, err := w.svc.Cancel(ctx, byMerchant.Merchant, cancelled.ID); err != nil {
		t.Fatalf("cancel again: %v", err)
	}
	if _, err := w.bindings.Unbind(ctx, byUnbind.Merchant, byUnbind.ID); err != nil {
		t.Fatal(err)
	}
	if got := w.getMandate(t, unbound); got.Status != mandate.StatusCancelled || got.StatusReason != "card_unbound" {
		t.Fatalf("mandate after its card was unbound = %s (%s), want cancelled (card_unbound)", got.Status, got.StatusReason)
	}
	w.setDay(day("2027-03-10"))
	w.runDue(t)
	for _, tc := range []struct {
		m    mandate.Mandate
		c    card
		code string
	}{{cancelled, byMerchant, "mandate_cancelled"}, {unbound, byUnbind, "mandate_cancelled"}} {
		ch := w.oneCharge(t, tc.m)
		if ch.Status != mandate.ChargeFailed || ch.FailureCode != tc.code || len(ch.Attempts) != 0 {
			t.Errorf("charge of a cancelled mandate = %s (%s), %d attempts; want failed %s, none sent",
				ch.Status, ch.FailureCode, len(ch.Attempts), tc.code)
		}
		if l := w.ledger(t, tc.c); len(l) != 0 {
			t.Errorf("debits after the cancel: %+v", l)
		}
	}
	// A completed mandate with nothing left to charge stays completed.
	done := w.bindCard(t, "ICBC", 1_000_000)
	m := w.mandate(t, done, func() mandate.CreateInput { in := w.dueToday(1_000); in.Schedule.MaxCharges = 1; return in }())
	w.runDue(t)
	if _, err := w.svc.Cancel(ctx, done.Merchant, m.ID); !errors.Is(err, mandate.ErrInvalidState) {
		t.Fatalf("cancel a completed mandate with nothing pending: %v, want invalid state", err)
	}
}

// TestConsentAfterTheLastDate: a mandate consented after its only charge
// date has passed (the code was sent before midnight, confirmed after) is
// completed at once, and says so with mandate.completed after
// mandate.activated.
func TestConsentAfterTheLastDate(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	c := w.bindCard(t, "ICBC", 1_000_000)
	date := day("2027-04-10")
	w.setNow(time.Date(2027, 4, 10, 23, 58, 0, 0, shanghai))
	in := w.monthly(10, 1_500)
	in.CardID, in.Reference, in.Schedule.EndDate = c.ID, "ref-"+randHex(4), date
	m, err := w.svc.Create(ctx, c.Merchant, in)
	if err != nil {
		t.Fatal(err)
	}
	texts, err := w.SimCtl.SMS(ctx, c.Phone)
	if err != nil || len(texts) == 0 {
		t.Fatalf("no consent SMS: %v", err)
	}
	code := consentCode.FindStringSubmatch(texts[0].Text)
	if code == nil {
		t.Fatal("no 6-digit code in the consent text")
	}
	w.setNow(time.Date(2027, 4, 11, 0, 1, 0, 0, shanghai))
	got, err := w.svc.Confirm(ctx, c.Merchant, m.ID, sensitive.NewOTP(code[1]))
	if err != nil || got.Status != mandate.StatusCompleted || got.StatusReason != "end_date" {
		t.Fatalf("confirm = %s (%s), %v; want completed (end_date)", got.Status, got.StatusReason, err)
	}
	if me := types(mandateEvents(w.events(t, c.Merchant), m.ID)); !slices.Equal(me, []string{"mandate.activated", "mandate.completed"}) {
		t.Fatalf("mandate events = %v, want activated then completed", me)
	}
	var audited int
	if err := w.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE action = 'mandate.complete' AND subject = $1`,
		m.ID).Scan(&audited); err != nil || audited != 1 {
		t.Fatalf("mandate.complete audit rows = %d, %v; want 1", audited, err)
	}
}

// TestVariableMaxCharges: a variable mandate with max_charges takes amounts
// posted ahead only for the charges it has left, so no period is debited
// after it completes.
func TestVariableMaxCharges(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	c := w.bindCard(t, "ICBC", 10_000_000)
	m := w.mandate(t, c, mandate.CreateInput{AmountType: mandate.AmountVariable, MaxAmount: 50_000,
		Schedule: mandate.Schedule{Interval: mandate.IntervalMonth, DayOfMonth: 10, StartDate: w.today(), MaxCharges: 2}})
	post := func(period string, amount int64) error {
		_, err := w.svc.PostCharge(ctx, w.merchant, m.ID, mandate.ChargeInput{Amount: amount, Period: period})
		return err
	}
	beyond := func(period string) {
		t.Helper()
		var fe *mandate.FieldError
		if err := post(period, 300); !errors.As(err, &fe) || fe.Field != "period" {
			t.Fatalf("posting %s beyond max_charges 2: %v, want a period field error", period, err)
		}
	}
	for _, p := range []string{"2027-01", "2027-02"} {
		if err := post(p, 1_000); err != nil {
			t.Fatalf("posting %s: %v", p, err)
		}
	}
	beyond("2027-03")
	if err := post("2027-02", 2_000); !errors.Is(err, mandate.ErrPeriodCharged) {
		t.Fatalf("posting a posted period again: %v, want ErrPeriodCharged", err)
	}

	w.setDay(day("2027-01-10"))
	w.runDue(t)
	beyond("2027-03") // one charge made, one posted: none left
	if got := w.getMandate(t, m); got.Status != mandate.StatusActive || got.NextPeriod != "2027-02" {
		t.Fatalf("after january: %s, next %s", got.Status, got.NextPeriod)
	}
	w.setDay(day("2027-02-10"))
	w.runDue(t)
	if got := w.getMandate(t, m); got.Status != mandate.StatusCompleted || got.StatusReason != "max_charges" {
		t.Fatalf("after february: %s (%s), want completed by max_charges", got.Status, got.StatusReason)
	}
	if _, err := w.svc.PostCharge(ctx, w.merchant, m.ID, mandate.ChargeInput{Amount: 300, Period: "2027-03"}); !errors.Is(err, mandate.ErrInvalidState) {
		t.Fatalf("posting to a completed mandate: %v, want ErrInvalidState", err)
	}
	w.setDay(day("2027-03-10"))
	w.runDue(t)
	if l := w.ledger(t, c); len(l) != 2 || l[0].Amount != 1_000 || l[1].Amount != 1_000 {
		t.Fatalf("the bank debited %+v, want two debits of 1000", l)
	}
	w.checkBooks(t, c)
}

// TestRunDueNotAheadOfItsClock: a run as of a time after the service's
// clock is refused; one as of the clock's time goes ahead.
func TestRunDueNotAheadOfItsClock(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	if _, err := w.svc.RunDue(ctx, w.clock.Now().Add(time.Minute)); err == nil || !strings.Contains(err.Error(), "after the clock") {
		t.Fatalf("a run ahead of the clock: %v, want refused", err)
	}
	if _, err := w.svc.RunDue(ctx, w.clock.Now()); err != nil {
		t.Fatalf("a run as of the clock: %v", err)
	}
}
