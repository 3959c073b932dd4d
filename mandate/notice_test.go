package mandate_test

import (
	"context"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quickpay/quickpay/mandate"
)

// crash is what crashingSMS panics with: the process dying at that point.
type crash struct{}

// crashingSMS passes texts to the carrier; once armed, the next text goes
// out and then the "process" dies (a panic) before the caller hears of it.
type crashingSMS struct {
	mandate.SMS
	armed atomic.Bool
}

func (c *crashingSMS) Send(ctx context.Context, to, text string) error {
	err := c.SMS.Send(ctx, to, text)
	if err == nil && c.armed.CompareAndSwap(true, false) {
		panic(crash{})
	}
	return err
}

// TestNoticeCrashAfterTextResendsOnlyThatNotice: pre-debit notices are
// texted outside any transaction. A run that dies after a text and before
// recording it leaves that notice claimed, the rest of its batch claimed
// and unsent; no run texts them while the claim holds, and the run after
// it has passed texts that one notice a second time and each other once.
func TestNoticeCrashAfterTextResendsOnlyThatNotice(t *testing.T) {
	ctx := context.Background()
	var sender *crashingSMS
	w := newWorld(t, func(c *mandate.Config) { sender = &crashingSMS{SMS: c.SMS}; c.SMS = sender })
	var cards []card
	var ms []mandate.Mandate
	for i := range 3 {
		c := w.bindCard(t, "ICBC", 1_000_000)
		in := w.monthly(w.today().Day()+2, int64(2_000+i))
		// The label names no number: banksim takes a text's first run of
		// 4–8 digits for its code, and the leak scan looks for it.
		in.NoticeDays, in.Description = 2, "水费"
		cards, ms = append(cards, c), append(ms, w.mandate(t, c, in))
	}
	notices := func(t *testing.T, c card) int { t.Helper(); return preDebitTexts(t, w, c) }
	total := func(t *testing.T) (n int, crashed int) {
		t.Helper()
		crashed = -1
		for i, c := range cards {
			k := notices(t, c)
			n += k
			if k > 0 && crashed < 0 {
				crashed = i
			}
		}
		return n, crashed
	}

	sender.armed.Store(true)
	func() {
		defer func() {
			if r := recover(); r != (crash{}) {
				t.Fatalf("run did not die in the window: %v", r)
			}
		}()
		_, _ = w.svc.RunDue(ctx, w.clock.Now())
	}()
	n, crashed := total(t)
	if n != 1 {
		t.Fatalf("%d notices texted before the crash, want 1", n)
	}
	for i, m := range ms {
		if ch := w.oneCharge(t, m); !ch.NoticeSentAt.IsZero() {
			t.Errorf("charge %d's notice recorded though the run died before recording any", i)
		}
	}
	if evs := types(w.events(t, w.merchant)); slices.Contains(evs, "charge.pre_debit_notice") {
		t.Errorf("events after the crash = %v, want no pre_debit_notice", evs)
	}

	t.Run("the claim holds: no run texts the batch again within it", func(t *testing.T) {
		w.setNow(w.clock.Now().Add(mandate.NoticeLease - time.Minute))
		if st := w.runDue(t); st.Notices != 0 {
			t.Fatalf("run within the claim = %+v, want no notice", st)
		}
		if n, _ := total(t); n != 1 {
			t.Fatalf("%d notices texted, want still 1", n)
		}
	})
	t.Run("after the claim, the crashed notice again and the others once", func(t *testing.T) {
		w.setNow(w.clock.Now().Add(2 * time.Minute))
		if st := w.runDue(t); st.Notices != 3 {
			t.Fatalf("run after the claim = %+v, want 3 notices", st)
		}
		for i, c := range cards {
			want := 1
			if i == crashed {
				want = 2 // texted, then the run died before recording it
			}
			if n := notices(t, c); n != want {
				t.Errorf("card %d got %d notices, want %d", i, n, want)
			}
		}
		evs := w.events(t, w.merchant)
		for i, m := range ms {
			ch := w.oneCharge(t, m)
			if ch.NoticeSentAt.IsZero() || ch.Status != mandate.ChargeScheduled {
				t.Errorf("charge %d = %s, notice %s", i, ch.Status, ch.NoticeSentAt)
			}
			if got := types(chargeEvents(evs, ch.ID)); len(got) != 1 || got[0] != "charge.pre_debit_notice" {
				t.Errorf("charge %d's events = %v, want one pre_debit_notice", i, got)
			}
		}
	})
}

// TestNoticeNotRecordedKeepsItsClaim: a notice texted whose record fails
// (here Postgres refuses the write, by a trigger) keeps its claim: the
// run goes on with the batch's other notices and ends without error, no
// run texts that notice again while the claim holds, and once it has run
// out the notice is texted again and recorded.
func TestNoticeNotRecordedKeepsItsClaim(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	var cards []card
	var ms []mandate.Mandate
	for i := range 3 {
		c := w.bindCard(t, "ICBC", 1_000_000)
		in := w.monthly(w.today().Day()+2, int64(3_000+i))
		in.NoticeDays, in.Description = 2, "燃气费"
		cards, ms = append(cards, c), append(ms, w.mandate(t, c, in))
	}
	noticesTo := func(t *testing.T, c card) int { t.Helper(); return preDebitTexts(t, w, c) }
	if _, err := w.Pool.Exec(ctx, `
CREATE FUNCTION refuse_notice_record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'notice record refused by the test'; END $$;
CREATE TRIGGER refuse_notice_record BEFORE UPDATE OF notice_sent_at ON charges FOR EACH ROW
WHEN (NEW.mandate_id = '`+ms[0].ID+`' AND NEW.notice_sent_at IS NOT NULL)
EXECUTE FUNCTION refuse_notice_record()`); err != nil {
		t.Fatal(err)
	}
	st, err := w.svc.RunDue(ctx, w.clock.Now())
	if err != nil || st.Notices != 2 {
		t.Fatalf("run with one notice's record refused = %+v, %v; want the other 2 notices and no error", st, err)
	}
	for i, c := range cards {
		if n := noticesTo(t, c); n != 1 {
			t.Errorf("card %d got %d notices, want 1", i, n)
		}
	}
	if ch := w.oneCharge(t, ms[0]); !ch.NoticeSentAt.IsZero() {
		t.Fatal("the refused record was written")
	}
	w.setNow(w.clock.Now().Add(mandate.NoticeLease - time.Minute))
	if st := w.runDue(t); st.Notices != 0 || noticesTo(t, cards[0]) != 1 {
		t.Fatalf("run within the claim = %+v, card 0 got %d notices; want no notice", st, noticesTo(t, cards[0]))
	}
	if _, err := w.Pool.Exec(ctx, `DROP TRIGGER refuse_notice_record ON charges`); err != nil {
		t.Fatal(err)
	}
	w.setNow(w.clock.Now().Add(2 * time.Minute))
	if st := w.runDue(t); st.Notices != 1 || noticesTo(t, cards[0]) != 2 {
		t.Fatalf("run after the claim = %+v, card 0 got %d notices; want it texted again", st, noticesTo(t, cards[0]))
	}
	if ch := w.oneCharge(t, ms[0]); ch.NoticeSentAt.IsZero() {
		t.Error("the notice texted again is not recorded")
	}
}

// preDebitTexts counts the pre-debit notices c's phone received.
func preDebitTexts(t *testing.T, w *world, c card) int {
	t.Helper()
	texts, err := w.SimCtl.SMS(context.Background(), c.Phone)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, tx := range texts {
		if strings.Contains(tx.Text, "扣款提醒") {
			n++
		}
	}
	return n
}
