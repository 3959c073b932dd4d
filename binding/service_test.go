package binding_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/quickpay/quickpay/bankadapters/conformance"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/audit"
	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/sensitive"
	"github.com/quickpay/quickpay/internal/webhooks"
	"github.com/quickpay/quickpay/vaultkeys"
)

func TestMain(m *testing.M) {
	// After the tests: no card data or code in the database or the logs.
	logs := testenv.CaptureDefaultLog()
	os.Exit(testenv.Main(m, testenv.ScanPackage(logs, "PAN", "ID number", "OTP")))
}

type world struct {
	*testenv.Stack
	svc      *binding.Service
	clock    *clock.Fake
	gen      *conformance.Gen
	merchant string

	mu     sync.Mutex
	events []string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{Stack: testenv.NewStack(t), clock: clock.NewFake(time.Now()), gen: conformance.NewGen()}
	w.merchant = testenv.Merchant(t, w.Pool)
	svc, err := binding.New(binding.Config{Pool: w.Pool, Vault: w.Vault, Banks: w.Banks, Clock: w.clock,
		Emit: func(_ *pgx.Batch, events []webhooks.Pending) (func(context.Context, pgx.Tx) error, error) {
			return func(context.Context, pgx.Tx) error {
				w.mu.Lock()
				defer w.mu.Unlock()
				for _, e := range events {
					w.events = append(w.events, e.Type)
				}
				return nil
			}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	w.svc = svc
	return w
}

// account opens a card at bank (debit unless cardType says credit).
func (w *world) account(t *testing.T, bank, cardType string) conformance.Account {
	t.Helper()
	info, err := w.SimCtl.Bank(context.Background(), bank)
	if err != nil {
		t.Fatal(err)
	}
	a, err := w.gen.Account(info, cardType, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.SimCtl.PutAccount(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	return a
}

func input(a conformance.Account) binding.BindInput {
	return binding.BindInput{HolderName: a.HolderName, IDNumber: sensitive.NewIDNumber(a.IDNumber),
		CardNumber: sensitive.NewPAN(a.CardNumber), Phone: a.Phone,
		Expiry: sensitive.NewExpiry(a.Expiry), CVV2: sensitive.NewCVV2(a.CVV2)}
}

// startImplicit opens an account at bank and starts its binding for the
// member the merchant knows as externalID (made, if new, at confirm).
func (w *world) startImplicit(t *testing.T, bank, externalID string) (conformance.Account, binding.BindInput, binding.Binding) {
	t.Helper()
	a := w.account(t, bank, "debit")
	in := input(a)
	in.ExternalUserID = externalID
	b, err := w.svc.StartBinding(context.Background(), w.merchant, in)
	if err != nil {
		t.Fatal(err)
	}
	return a, in, b
}

// code returns the newest SMS code the phone received.
func (w *world) code(t *testing.T, phone string) sensitive.OTP {
	t.Helper()
	texts, err := w.SimCtl.SMS(context.Background(), phone)
	if err != nil || len(texts) == 0 {
		t.Fatalf("no SMS for the phone: %v", err)
	}
	return sensitive.NewOTP(texts[0].Code)
}

// namesake opens a CCB card whose holder has a's name and another ID number.
func (w *world) namesake(t *testing.T, a conformance.Account) conformance.Account {
	t.Helper()
	n := w.account(t, "CCB", "debit")
	n.HolderName = a.HolderName
	if err := w.SimCtl.PutAccount(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	return n
}

// refusesNamesake wants a binding of a's namesake's card for the member
// refused at apply: identity mismatch on id_number.
func (w *world) refusesNamesake(t *testing.T, memberID string, a conformance.Account) {
	t.Helper()
	in := input(w.namesake(t, a))
	in.MemberID = memberID
	_, err := w.svc.StartBinding(context.Background(), w.merchant, in)
	var im *binding.IdentityMismatchError
	if !errors.As(err, &im) || im.Field != "id_number" {
		t.Fatalf("namesake's card: err = %v, want identity mismatch on id_number", err)
	}
}

// hold locks the row of table with id in a transaction of the test's,
// which it returns (rolled back when the test ends unless committed).
func (w *world) hold(t *testing.T, table, id string) pgx.Tx {
	t.Helper()
	ctx := context.Background()
	tx, err := w.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(ctx) })
	if _, err := tx.Exec(ctx, `SELECT 1 FROM `+table+` WHERE id = $1 FOR UPDATE`, id); err != nil {
		t.Fatal(err)
	}
	return tx
}

// waitLocked polls, with a deadline, until n statements like pattern (a
// LIKE pattern) wait for a lock.
func (w *world) waitLocked(t *testing.T, pattern string, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var waiting int
		if err := w.Pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE $1`, pattern).
			Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d statements like %q wait for a lock, want %d", waiting, pattern, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (w *world) texts(t *testing.T, phone string) int {
	t.Helper()
	texts, err := w.SimCtl.SMS(context.Background(), phone)
	if err != nil {
		t.Fatal(err)
	}
	return len(texts)
}

func (w *world) sawEvent(typ string) bool { return w.eventCount(typ) > 0 }

func (w *world) eventCount(typ string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, e := range w.events {
		if e == typ {
			n++
		}
	}
	return n
}

func TestExplicitMemberBindsAndUnbinds(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	a := w.account(t, "ICBC", "debit")
	m, err := w.svc.CreateMember(ctx, w.merchant, binding.MemberInput{ExternalID: "user-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.svc.CreateMember(ctx, w.merchant, binding.MemberInput{ExternalID: "user-1"}); !errors.Is(err, binding.ErrMemberExists) {
		t.Fatalf("second member with one external id: %v", err)
	}
	in := input(a)
	in.MemberID = m.ID
	b, err := w.svc.StartBinding(ctx, w.merchant, in)
	if err != nil {
		t.Fatal(err)
	}
	if b.Status != binding.StatusOTPSent || b.Card.MaskedPAN != a.CardNumber[:6]+"*********"+a.CardNumber[15:] || b.Card.BankCode != "ICBC" {
		t.Fatalf("binding = %+v", b)
	}
	bound, err := w.svc.Confirm(ctx, w.merchant, b.ID, w.code(t, a.Phone))
	if err != nil {
		t.Fatal(err)
	}
	if bound.Status != binding.StatusBound || bound.CardID == "" || bound.MemberID != m.ID || !w.sawEvent("binding.bound") {
		t.Fatalf("confirmed binding = %+v", bound)
	}
	again, err := w.svc.Confirm(ctx, w.merchant, b.ID, w.code(t, a.Phone))
	if err != nil || again.CardID != bound.CardID {
		t.Fatalf("confirming again = %+v, %v", again, err)
	}
	cards, err := w.svc.ListCards(ctx, w.merchant, m.ID)
	if err != nil || len(cards) != 1 || cards[0].Status != binding.CardActive {
		t.Fatalf("cards = %+v, %v", cards, err)
	}
	st, err := w.SimCtl.Account(ctx, a.CardNumber)
	if err != nil || len(st.Agreements) != 1 {
		t.Fatalf("bank agreements = %+v, %v", st.Agreements, err)
	}

	card, err := w.svc.Unbind(ctx, w.merchant, bound.CardID)
	if err != nil || card.Status != binding.CardUnbound || !w.sawEvent("card.unbound") {
		t.Fatalf("unbind = %+v, %v", card, err)
	}
	if st, _ = w.SimCtl.Account(ctx, a.CardNumber); st.Agreements[0].Status == "active" {
		t.Fatalf("the bank's agreement is still active: %+v", st.Agreements)
	}
	if card, err = w.svc.Unbind(ctx, w.merchant, bound.CardID); err != nil || card.Status != binding.CardUnbound {
		t.Fatalf("unbinding again = %+v, %v", card, err)
	}

	// The trail, oldest first: who (the merchant), what, on what, outcome.
	rows, err := w.Pool.Query(ctx, `SELECT action || ' ' || subject || ' ' || (details->>'outcome') FROM audit_log
		WHERE merchant_id = $1 AND actor = $2 AND subject IN ($3, $4) AND action <> 'vault.detokenize' ORDER BY id`,
		w.merchant, "api:"+w.merchant, b.ID, bound.CardID)
	if err != nil {
		t.Fatal(err)
	}
	trail, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"bind.apply " + b.ID + " ok", "otp.send " + b.ID + " ok", "otp.verify " + b.ID + " ok",
		"bind.bound " + b.ID + " ok", "card.unbind " + bound.CardID + " ok"}
	if !slices.Equal(trail, want) {
		t.Errorf("audit trail = %q, want %q", trail, want)
	}
}

func TestImplicitMemberIsCreatedOnceAndChecked(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	a, _, b := w.startImplicit(t, "CMB", "p2p-user-77")
	if b.MemberID != "" {
		t.Fatalf("implicit binding has a member before it is bound: %+v", b)
	}
	if _, err := w.svc.FindMember(ctx, w.merchant, "p2p-user-77"); !errors.Is(err, binding.ErrNotFound) {
		t.Fatalf("member exists before the binding is confirmed: %v", err)
	}
	bound, err := w.svc.Confirm(ctx, w.merchant, b.ID, w.code(t, a.Phone))
	if err != nil {
		t.Fatal(err)
	}
	m, err := w.svc.FindMember(ctx, w.merchant, "p2p-user-77")
	if err != nil || m.ID != bound.MemberID || m.Kind != binding.KindImplicit {
		t.Fatalf("member = %+v, %v; binding member %s", m, err, bound.MemberID)
	}

	t.Run("second card, same person, same member", func(t *testing.T) {
		b2 := w.account(t, "ICBC", "debit")
		b2.HolderName, b2.IDNumber = a.HolderName, a.IDNumber
		if err := w.SimCtl.PutAccount(ctx, b2); err != nil {
			t.Fatal(err)
		}
		in := input(b2)
		in.ExternalUserID = "p2p-user-77"
		b, err := w.svc.StartBinding(ctx, w.merchant, in)
		if err != nil {
			t.Fatal(err)
		}
		if b.MemberID != m.ID {
			t.Fatalf("the same external id resolved to %q, want %q", b.MemberID, m.ID)
		}
		if _, err := w.svc.Confirm(ctx, w.merchant, b.ID, w.code(t, b2.Phone)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("another person under the same external id", func(t *testing.T) {
		c := w.account(t, "ICBC", "debit")
		in := input(c)
		in.ExternalUserID = "p2p-user-77"
		_, err := w.svc.StartBinding(ctx, w.merchant, in)
		var im *binding.IdentityMismatchError
		if !errors.As(err, &im) || im.Field != "id_number" {
			t.Fatalf("err = %v, want identity mismatch on id_number", err)
		}
	})
}

// TestPartlyDeclaredIdentityIsCompletedByTheBank: a member declared with a
// name only keeps the ID number its first binding verified, so a card of
// a namesake with another ID number is refused.
func TestPartlyDeclaredIdentityIsCompletedByTheBank(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	a := w.account(t, "ICBC", "debit")
	m, err := w.svc.CreateMember(ctx, w.merchant, binding.MemberInput{ExternalID: "named-only", Name: a.HolderName})
	if err != nil {
		t.Fatal(err)
	}
	in := input(a)
	in.MemberID = m.ID
	b, err := w.svc.StartBinding(ctx, w.merchant, in)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.svc.Confirm(ctx, w.merchant, b.ID, w.code(t, a.Phone)); err != nil {
		t.Fatal(err)
	}
	w.refusesNamesake(t, m.ID, a)
}

// TestConfirmOutlivesItsCaller: a caller that goes away after the bank
// confirmed (its context cancelled while the confirm waits for the
// member's row, which the test holds) does not roll the binding back: the
// bank's agreement exists, and so does the card.
func TestConfirmOutlivesItsCaller(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	a := w.account(t, "ICBC", "debit")
	m, err := w.svc.CreateMember(ctx, w.merchant, binding.MemberInput{ExternalID: "hangs-up"})
	if err != nil {
		t.Fatal(err)
	}
	in := input(a)
	in.MemberID = m.ID
	b, err := w.svc.StartBinding(ctx, w.merchant, in)
	if err != nil {
		t.Fatal(err)
	}
	code := w.code(t, a.Phone)
	hold := w.hold(t, "members", m.ID)
	callerCtx, hangUp := context.WithCancel(ctx)
	defer hangUp()
	done := make(chan error, 1)
	go func() {
		_, err := w.svc.Confirm(callerCtx, w.merchant, b.ID, code)
		done <- err
	}()
	w.waitLocked(t, "%FROM members m%", 1)
	hangUp()
	if err := hold.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("confirm whose caller went away: %v", err)
	}
	if got, err := w.svc.GetBinding(ctx, w.merchant, b.ID); err != nil || got.Status != binding.StatusBound {
		t.Fatalf("binding %s, %v; want bound", got.Status, err)
	}
}

// TestNewAgreementReplacesAGoneOne: two bindings of one card for one
// member, begun together. The first is bound; the bank then loses its
// agreement (unbound there, out of band); the second's confirm gets a new
// agreement from the bank and is bound to the same card, which keeps the
// new agreement rather than the gone one; or, if the card was unbound
// while the confirm waited for its row, to a card made anew.
func TestNewAgreementReplacesAGoneOne(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	agreement := func(t *testing.T, cardID string) string {
		t.Helper()
		var ct []byte
		if err := w.Pool.QueryRow(ctx, `SELECT agreement_ct FROM cards WHERE id = $1`, cardID).Scan(&ct); err != nil {
			t.Fatal(err)
		}
		pt, err := w.Vault.Decrypt(ctx, ct, binding.CardAgreementAAD(w.merchant, cardID), sensitive.Access{
			MerchantID: w.merchant, Actor: "test", Subject: cardID, Reason: "test"})
		if err != nil {
			t.Fatal(err)
		}
		return string(pt)
	}
	// setUp binds the first of two bindings and ends its agreement at the
	// bank; it returns the bound one and the second, with its code.
	setUp := func(t *testing.T, externalID string) (binding.Binding, string, sensitive.OTP) {
		t.Helper()
		a := w.account(t, "ICBC", "debit")
		m, err := w.svc.CreateMember(ctx, w.merchant, binding.MemberInput{ExternalID: externalID})
		if err != nil {
			t.Fatal(err)
		}
		in := input(a)
		in.MemberID = m.ID
		var ids []string
		var codes []sensitive.OTP
		for range 2 {
			b, err := w.svc.StartBinding(ctx, w.merchant, in)
			if err != nil {
				t.Fatal(err)
			}
			ids, codes = append(ids, b.ID), append(codes, w.code(t, a.Phone))
		}
		first, err := w.svc.Confirm(ctx, w.merchant, ids[0], codes[0])
		if err != nil {
			t.Fatal(err)
		}
		bank, _ := w.Banks.Bank("ICBC")
		if err := bank.Unbind(ctx, agreement(t, first.CardID)); err != nil {
			t.Fatal(err)
		}
		return first, ids[1], codes[1]
	}

	t.Run("the card keeps the new agreement", func(t *testing.T) {
		first, second, code := setUp(t, "re-agreed")
		gone := agreement(t, first.CardID)
		got, err := w.svc.Confirm(ctx, w.merchant, second, code)
		if err != nil || got.CardID != first.CardID {
			t.Fatalf("second confirm: card %q, %v; want the first's card %s", got.CardID, err, first.CardID)
		}
		if agreement(t, first.CardID) == gone {
			t.Fatal("the card kept the agreement the bank no longer has")
		}
		var audited int
		if err := w.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE action = 'bind.bound' AND subject = $1
			AND (details->>'agreement_replaced')::boolean`, second).Scan(&audited); err != nil || audited != 1 {
			t.Fatalf("%d bind.bound audit rows naming the replaced agreement (%v), want 1", audited, err)
		}
	})

	t.Run("a card unbound meanwhile is made anew", func(t *testing.T) {
		first, second, code := setUp(t, "re-agreed-unbound")
		hold := w.hold(t, "cards", first.CardID)
		done := make(chan error, 1)
		var got binding.Binding
		go func() {
			var err error
			got, err = w.svc.Confirm(ctx, w.merchant, second, code)
			done <- err
		}()
		w.waitLocked(t, "%UPDATE cards SET agreement_ct%", 1)
		if _, err := hold.Exec(ctx, `UPDATE cards SET status = 'unbound' WHERE id = $1`, first.CardID); err != nil {
			t.Fatal(err)
		}
		if err := hold.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil || got.CardID == "" || got.CardID == first.CardID {
			t.Fatalf("second confirm: card %q, %v; want a new card", got.CardID, err)
		}
		if c, err := w.svc.GetCard(ctx, w.merchant, got.CardID); err != nil || c.Status != binding.CardActive {
			t.Fatalf("the new card: %+v, %v; want active", c, err)
		}
	})
}

// TestIdentityAcrossAnFPRotation: a member declared before an fp key
// rotation keeps fingerprints under the old version until re-keying
// reaches its row; a binding of the same identity made after it is
// fingerprinted under the new one, and is bound, not refused
// identity_mismatch at confirm. Later tests in this package run with two
// accepted fp versions (when the whole package runs; one with -run): the
// old one cannot be retired while earlier tests' rows hold it.
func TestIdentityAcrossAnFPRotation(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	a := w.account(t, "ICBC", "debit")
	m, err := w.svc.CreateMember(ctx, w.merchant, binding.MemberInput{ExternalID: "rotated", Name: a.HolderName,
		IDNumber: sensitive.NewIDNumber(a.IDNumber)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Vault.Rotate(ctx, vaultkeys.PurposeFP, "test"); err != nil {
		t.Fatal(err)
	}
	in := input(a)
	in.MemberID = m.ID
	b, err := w.svc.StartBinding(ctx, w.merchant, in)
	if err != nil {
		t.Fatal(err)
	}
	if bound, err := w.svc.Confirm(ctx, w.merchant, b.ID, w.code(t, a.Phone)); err != nil || bound.Status != binding.StatusBound {
		t.Fatalf("confirm after the rotation: %s, %v; want bound", bound.Status, err)
	}
}

// TestImplicitBindingCompletesADeclaredMember: a binding by external user
// id whose member was meanwhile declared explicitly, by name alone,
// completes that member's identity as a binding by member id does, so a
// namesake's card is then refused.
func TestImplicitBindingCompletesADeclaredMember(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	a, in, b := w.startImplicit(t, "ICBC", "declared-later")
	m, err := w.svc.CreateMember(ctx, w.merchant, binding.MemberInput{ExternalID: in.ExternalUserID, Name: a.HolderName})
	if err != nil {
		t.Fatal(err)
	}
	if bound, err := w.svc.Confirm(ctx, w.merchant, b.ID, w.code(t, a.Phone)); err != nil || bound.MemberID != m.ID {
		t.Fatalf("confirm: member %q, %v; want the declared member %s", bound.MemberID, err, m.ID)
	}
	w.refusesNamesake(t, m.ID, a)
}

// TestPartlyDeclaredIdentityConfirmedTwiceAtOnce: two bindings of one
// member declared by name alone, with cards of two namesakes, confirmed at
// once. Both wait for the member's row (the test holds it); the first to
// get it completes the identity, and the second, reading it after, is
// refused identity_mismatch and its agreement released. Neither may
// complete the member with its own ID number.
func TestPartlyDeclaredIdentityConfirmedTwiceAtOnce(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	a := w.account(t, "ICBC", "debit")
	namesake := w.namesake(t, a)
	m, err := w.svc.CreateMember(ctx, w.merchant, binding.MemberInput{ExternalID: "named-twice", Name: a.HolderName})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	var codes []sensitive.OTP
	for _, acc := range []conformance.Account{a, namesake} {
		in := input(acc)
		in.MemberID = m.ID
		b, err := w.svc.StartBinding(ctx, w.merchant, in)
		if err != nil {
			t.Fatal(err)
		}
		ids, codes = append(ids, b.ID), append(codes, w.code(t, acc.Phone))
	}

	hold := w.hold(t, "members", m.ID)
	type result struct {
		id  string
		err error
	}
	results := make(chan result, 2)
	for i := range ids {
		go func() {
			_, err := w.svc.Confirm(ctx, w.merchant, ids[i], codes[i])
			results <- result{ids[i], err}
		}()
	}
	w.waitLocked(t, "%FROM members m%", 2)
	if err := hold.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	var bound, refused int
	for range ids {
		var im *binding.IdentityMismatchError
		switch r := <-results; {
		case r.err == nil:
			bound++
		case errors.As(r.err, &im) && im.Field == "id_number":
			refused++
			var released int
			if err := w.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE action = 'bind.release'
				AND subject = $1 AND details->>'outcome' = 'ok'`, r.id).Scan(&released); err != nil {
				t.Fatal(err)
			}
			if released != 1 {
				t.Errorf("%d bind.release audit rows for the refused binding, want 1", released)
			}
		default:
			t.Errorf("confirm: %v", r.err)
		}
	}
	if bound != 1 || refused != 1 {
		t.Fatalf("%d bound and %d refused identity_mismatch, want one of each", bound, refused)
	}
	cards, err := w.svc.ListCards(ctx, w.merchant, m.ID)
	if err != nil || len(cards) != 1 {
		t.Fatalf("the member has %d cards (%v), want 1", len(cards), err)
	}
}

func TestRepeatBinds(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	a := w.account(t, "CCB", "debit")
	m, err := w.svc.CreateMember(ctx, w.merchant, binding.MemberInput{ExternalID: "rep-1"})
	if err != nil {
		t.Fatal(err)
	}
	in := input(a)
	in.MemberID = m.ID
	b, err := w.svc.StartBinding(ctx, w.merchant, in)
	if err != nil {
		t.Fatal(err)
	}
	bound, err := w.svc.Confirm(ctx, w.merchant, b.ID, w.code(t, a.Phone))
	if err != nil {
		t.Fatal(err)
	}
	sent := w.texts(t, a.Phone)

	again, err := w.svc.StartBinding(ctx, w.merchant, in)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Existing || again.CardID != bound.CardID || again.Status != binding.StatusBound {
		t.Fatalf("binding the same card again = %+v, want the existing card %s", again, bound.CardID)
	}
	if w.texts(t, a.Phone) != sent {
		t.Fatal("binding an already bound card sent an SMS")
	}

	other, err := w.svc.CreateMember(ctx, w.merchant, binding.MemberInput{ExternalID: "rep-2"})
	if err != nil {
		t.Fatal(err)
	}
	in.MemberID = other.ID
	if _, err := w.svc.StartBinding(ctx, w.merchant, in); !errors.Is(err, binding.ErrCardBoundElsewhere) {
		t.Fatalf("binding for another member: %v", err)
	}
}

func TestOTPRules(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	start := func(t *testing.T) (conformance.Account, binding.Binding) {
		t.Helper()
		a := w.account(t, "ICBC", "debit")
		in := input(a)
		in.ExternalUserID = "otp-" + a.Phone
		b, err := w.svc.StartBinding(ctx, w.merchant, in)
		if err != nil {
			t.Fatal(err)
		}
		return a, b
	}
	wrong := func(code sensitive.OTP) sensitive.OTP {
		c := []byte(code.Reveal())
		c[5] = '0' + (c[5]-'0'+1)%10
		return sensitive.NewOTP(string(c))
	}

	t.Run("five wrong codes end the binding", func(t *testing.T) {
		a, b := start(t)
		code := w.code(t, a.Phone)
		for i := 1; i <= 4; i++ {
			_, err := w.svc.Confirm(ctx, w.merchant, b.ID, wrong(code))
			var oe *binding.OTPIncorrectError
			if !errors.As(err, &oe) || oe.AttemptsLeft != 5-i {
				t.Fatalf("wrong code %d: %v", i, err)
			}
		}
		if _, err := w.svc.Confirm(ctx, w.merchant, b.ID, wrong(code)); !errors.Is(err, binding.ErrOTPAttemptsExceeded) {
			t.Fatalf("fifth wrong code: %v", err)
		}
		if _, err := w.svc.Confirm(ctx, w.merchant, b.ID, code); !errors.Is(err, binding.ErrOTPAttemptsExceeded) {
			t.Fatalf("right code after the fifth wrong one: %v", err)
		}
		got, err := w.svc.GetBinding(ctx, w.merchant, b.ID)
		if err != nil || got.Status != binding.StatusFailed || !w.sawEvent("binding.failed") {
			t.Fatalf("binding = %+v, %v", got, err)
		}
	})
	t.Run("an expired code", func(t *testing.T) {
		a, b := start(t)
		code := w.code(t, a.Phone)
		w.clock.Advance(binding.OTPValidity + time.Second)
		if _, err := w.svc.Confirm(ctx, w.merchant, b.ID, code); !errors.Is(err, binding.ErrBindingExpired) {
			t.Fatalf("confirm after 5 minutes: %v", err)
		}
		if got, _ := w.svc.GetBinding(ctx, w.merchant, b.ID); got.Status != binding.StatusExpired {
			t.Fatalf("status = %s", got.Status)
		}
	})
	t.Run("resend too soon, then at most five sends", func(t *testing.T) {
		a, b := start(t)
		_, err := w.svc.Resend(ctx, w.merchant, b.ID)
		var soon *binding.ResendTooSoonError
		if !errors.As(err, &soon) || soon.RetryAfter <= 0 || soon.RetryAfter > binding.OTPResendGap {
			t.Fatalf("immediate resend: %v", err)
		}
		for send := 2; send <= binding.OTPMaxSends; send++ {
			w.clock.Advance(binding.OTPResendGap)
			got, err := w.svc.Resend(ctx, w.merchant, b.ID)
			if err != nil || got.OTPSends != send {
				t.Fatalf("send %d: %+v, %v", send, got, err)
			}
		}
		w.clock.Advance(binding.OTPResendGap)
		if _, err := w.svc.Resend(ctx, w.merchant, b.ID); !errors.Is(err, binding.ErrResendLimit) {
			t.Fatalf("sixth send: %v", err)
		}
		if n := w.texts(t, a.Phone); n != binding.OTPMaxSends {
			t.Fatalf("%d texts, want %d", n, binding.OTPMaxSends)
		}
		if _, err := w.svc.Confirm(ctx, w.merchant, b.ID, w.code(t, a.Phone)); err != nil {
			t.Fatalf("newest code: %v", err)
		}
	})
}

func TestBindingRefusals(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	good := w.account(t, "ICBC", "debit")
	credit := w.account(t, "CMB", "credit")
	for _, tc := range []struct {
		name  string
		edit  func(*binding.BindInput)
		field string
		want  error
	}{
		{"no member given", func(in *binding.BindInput) { in.ExternalUserID = "" }, "member_id", binding.ErrInvalid},
		{"bad card number", func(in *binding.BindInput) { in.CardNumber = sensitive.NewPAN("6222021234567890123") }, "card_number", binding.ErrInvalid},
		{"bad id number", func(in *binding.BindInput) { in.IDNumber = sensitive.NewIDNumber("110105199003070018") }, "id_number", binding.ErrInvalid},
		{"bad phone", func(in *binding.BindInput) { in.Phone = "12345678901" }, "phone", binding.ErrInvalid},
		{"bad name", func(in *binding.BindInput) { in.HolderName = "X" }, "holder_name", binding.ErrInvalid},
		{"unsupported BIN", func(in *binding.BindInput) { in.CardNumber = sensitive.NewPAN("4111111111111111") }, "", binding.ErrCardUnsupported},
		{"name the bank refuses", func(in *binding.BindInput) { in.HolderName = "不是本人" }, "holder_name", binding.ErrElementsMismatch},
		{"phone the bank refuses", func(in *binding.BindInput) { in.Phone = "13912345678" }, "phone", binding.ErrElementsMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := input(good)
			in.ExternalUserID = "refusal-user"
			tc.edit(&in)
			before := w.texts(t, good.Phone)
			_, err := w.svc.StartBinding(ctx, w.merchant, in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			var f interface{ ErrorFields() map[string]any }
			if tc.field != "" && (!errors.As(err, &f) || f.ErrorFields()["field"] != tc.field) {
				t.Fatalf("err = %v, want field %s", err, tc.field)
			}
			if w.texts(t, good.Phone) != before {
				t.Fatal("a refused binding sent an SMS")
			}
		})
	}
	t.Run("credit card needs expiry and cvv2", func(t *testing.T) {
		in := input(credit)
		in.ExternalUserID = "credit-user"
		in.CVV2 = sensitive.CVV2{}
		_, err := w.svc.StartBinding(ctx, w.merchant, in)
		var fe *binding.FieldError
		if !errors.As(err, &fe) || fe.Field != "cvv2" {
			t.Fatalf("err = %v", err)
		}
		in = input(credit)
		in.ExternalUserID = "credit-user"
		b, err := w.svc.StartBinding(ctx, w.merchant, in)
		if err != nil || b.Card.CardType != "credit" {
			t.Fatalf("credit binding = %+v, %v", b, err)
		}
	})
	t.Run("bank down answers unavailable and the binding can be retried", func(t *testing.T) {
		if err := w.SimCtl.AddFault(ctx, conformance.Fault{BankCode: "ICBC", Operation: "bind_apply", Mode: conformance.FaultError}); err != nil {
			t.Fatal(err)
		}
		in := input(good)
		in.ExternalUserID = "retry-user"
		if _, err := w.svc.StartBinding(ctx, w.merchant, in); !errors.Is(err, binding.ErrBankUnavailable) {
			t.Fatalf("err = %v", err)
		}
		if _, err := w.svc.StartBinding(ctx, w.merchant, in); err != nil {
			t.Fatalf("retry: %v", err)
		}
	})
	t.Run("another merchant sees nothing", func(t *testing.T) {
		other := testenv.Merchant(t, w.Pool)
		in := input(good)
		in.ExternalUserID = "tenant-user"
		b, err := w.svc.StartBinding(ctx, w.merchant, in)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.svc.GetBinding(ctx, other, b.ID); !errors.Is(err, binding.ErrNotFound) {
			t.Fatalf("other merchant's GetBinding: %v", err)
		}
		if _, err := w.svc.Confirm(ctx, other, b.ID, w.code(t, good.Phone)); !errors.Is(err, binding.ErrNotFound) {
			t.Fatalf("other merchant's Confirm: %v", err)
		}
	})
}

func TestExpiredBindingStaysExpired(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	a, _, b := w.startImplicit(t, "ICBC", "exp-user")
	w.clock.Advance(binding.OTPValidity + time.Second)
	if got, _ := w.svc.GetBinding(ctx, w.merchant, b.ID); got.Status != binding.StatusExpired || got.FailureCode != "binding_expired" {
		t.Fatalf("GetBinding after expiry = %+v", got)
	}
	sent := w.texts(t, a.Phone)
	if _, err := w.svc.Resend(ctx, w.merchant, b.ID); !errors.Is(err, binding.ErrBindingExpired) {
		t.Fatalf("resend of an expired binding: %v", err)
	}
	if w.texts(t, a.Phone) != sent {
		t.Fatal("an expired binding got a new code")
	}
	if _, err := w.svc.Resend(ctx, w.merchant, b.ID); !errors.Is(err, binding.ErrBindingExpired) {
		t.Fatalf("second resend: %v", err)
	}
}

// TestAgreements reads a batch of cards' agreement numbers: each is the
// bank's, only the merchant's own cards answer, and every decryption has
// its audit row, written together with the others.
func TestAgreements(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	bind := func(merchant, ext string) (cardID, agreementNo string) {
		t.Helper()
		a := w.account(t, "ICBC", "debit")
		in := input(a)
		in.ExternalUserID = ext
		b, err := w.svc.StartBinding(ctx, merchant, in)
		if err != nil {
			t.Fatal(err)
		}
		bound, err := w.svc.Confirm(ctx, merchant, b.ID, w.code(t, a.Phone))
		if err != nil {
			t.Fatal(err)
		}
		st, err := w.SimCtl.Account(ctx, a.CardNumber)
		if err != nil || len(st.Agreements) != 1 {
			t.Fatalf("bank agreements: %d, %v", len(st.Agreements), err)
		}
		return bound.CardID, st.Agreements[0].AgreementNo
	}
	card1, agr1 := bind(w.merchant, "user-1")
	card2, agr2 := bind(w.merchant, "user-2")
	other := testenv.Merchant(t, w.Pool)
	otherCard, _ := bind(other, "user-3")

	got, err := w.svc.Agreements(ctx, []binding.CardRef{
		{MerchantID: w.merchant, CardID: card1},
		{MerchantID: w.merchant, CardID: card2},
		{MerchantID: w.merchant, CardID: "card_missing"},
		{MerchantID: w.merchant, CardID: otherCard}, // another merchant's card
		{MerchantID: other, CardID: card1},          // asked for by another merchant
	}, "worker:test", "agreements test")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{card1: agr1, card2: agr2}
	if len(got) != len(want) {
		t.Fatalf("got %d cards, want %d (only the merchant's own)", len(got), len(want))
	}
	for ref, ca := range got {
		if ref.MerchantID != w.merchant || ca.Err != nil || ca.Card.ID != ref.CardID || ca.Agreement == "" ||
			ca.Agreement != want[ref.CardID] {
			t.Errorf("card %s of %s: err %v, agreement is the bank's: %v", ref.CardID, ref.MerchantID, ca.Err,
				ca.Agreement == want[ref.CardID])
		}
	}

	rows, err := w.Pool.Query(ctx, `SELECT merchant_id, subject, details->>'reason', (details->>'ok')::boolean
		FROM audit_log WHERE actor = 'worker:test' AND action = 'vault.detokenize'`)
	if err != nil {
		t.Fatal(err)
	}
	type auditRow struct {
		Merchant, Subject, Reason string
		OK                        bool
	}
	audited, err := pgx.CollectRows(rows, pgx.RowToStructByPos[auditRow])
	if err != nil {
		t.Fatal(err)
	}
	wantRows := []auditRow{{w.merchant, card1, "agreements test", true}, {w.merchant, card2, "agreements test", true}}
	bySubject := func(a, b auditRow) int { return strings.Compare(a.Subject, b.Subject) }
	slices.SortFunc(audited, bySubject)
	slices.SortFunc(wantRows, bySubject)
	if !slices.Equal(audited, wantRows) {
		t.Errorf("audit rows = %+v, want %+v", audited, wantRows)
	}
}

// TestConfirmFindsWhatChangedSinceApply: an implicit member that another
// binding created between a binding's apply and its confirm is found and
// checked at confirm. (A card bound meanwhile the bank itself refuses.)
func TestConfirmFindsWhatChangedSinceApply(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	start := func(a conformance.Account, externalID string) binding.Binding {
		t.Helper()
		in := input(a)
		in.ExternalUserID = externalID
		b, err := w.svc.StartBinding(ctx, w.merchant, in)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	t.Run("the member appeared: same person, same member", func(t *testing.T) {
		a, b := w.account(t, "ICBC", "debit"), w.account(t, "CMB", "debit")
		b.HolderName, b.IDNumber = a.HolderName, a.IDNumber
		if err := w.SimCtl.PutAccount(ctx, b); err != nil {
			t.Fatal(err)
		}
		first, second := start(a, "race-1"), start(b, "race-1")
		one, err := w.svc.Confirm(ctx, w.merchant, first.ID, w.code(t, a.Phone))
		if err != nil {
			t.Fatal(err)
		}
		two, err := w.svc.Confirm(ctx, w.merchant, second.ID, w.code(t, b.Phone))
		if err != nil {
			t.Fatal(err)
		}
		if two.Status != binding.StatusBound || two.MemberID != one.MemberID || two.CardID == "" || two.CardID == one.CardID {
			t.Fatalf("second binding = %+v, want bound to a new card of member %s", two, one.MemberID)
		}
		cards, err := w.svc.ListCards(ctx, w.merchant, one.MemberID)
		if err != nil || len(cards) != 2 {
			t.Fatalf("member's cards = %v, %v; want 2", cards, err)
		}
	})

	t.Run("the member appeared: another person is refused", func(t *testing.T) {
		a, b := w.account(t, "ICBC", "debit"), w.account(t, "CMB", "debit")
		first, second := start(a, "race-2"), start(b, "race-2")
		if _, err := w.svc.Confirm(ctx, w.merchant, first.ID, w.code(t, a.Phone)); err != nil {
			t.Fatal(err)
		}
		got, err := w.svc.Confirm(ctx, w.merchant, second.ID, w.code(t, b.Phone))
		if !errors.Is(err, binding.ErrIdentityMismatch) || got.Status != binding.StatusFailed {
			t.Fatalf("second confirm = %+v, %v; want failed, identity mismatch", got, err)
		}
		if again, err := w.svc.GetBinding(ctx, w.merchant, second.ID); err != nil || again.Status != binding.StatusFailed ||
			again.FailureCode != "identity_mismatch" || again.CardID != "" {
			t.Fatalf("refused binding reads %+v, %v", again, err)
		}
	})

	// Two bindings of one card, both begun before either is confirmed: the
	// bank answers the second confirm "already bound".
	startWithCode := func(a conformance.Account, externalID string) (binding.Binding, sensitive.OTP) {
		t.Helper()
		b := start(a, externalID)
		return b, w.code(t, a.Phone)
	}
	t.Run("the same card twice for one member: the second confirm returns its card", func(t *testing.T) {
		a := w.account(t, "ICBC", "debit")
		first, code1 := startWithCode(a, "race-4")
		second, code2 := startWithCode(a, "race-4")
		one, err := w.svc.Confirm(ctx, w.merchant, first.ID, code1)
		if err != nil {
			t.Fatal(err)
		}
		two, err := w.svc.Confirm(ctx, w.merchant, second.ID, code2)
		if err != nil || two.Status != binding.StatusBound || two.CardID != one.CardID || two.MemberID != one.MemberID {
			t.Fatalf("second confirm = %+v, %v; want bound to card %s of member %s", two, err, one.CardID, one.MemberID)
		}
		if again, err := w.svc.GetBinding(ctx, w.merchant, second.ID); err != nil || again.CardID != one.CardID {
			t.Fatalf("second binding reads %+v, %v", again, err)
		}
		cards, err := w.svc.ListCards(ctx, w.merchant, one.MemberID)
		if err != nil || len(cards) != 1 {
			t.Fatalf("member's cards = %v, %v; want the one", cards, err)
		}
	})

	t.Run("the same card for two members: the second confirm is card_bound_elsewhere", func(t *testing.T) {
		a := w.account(t, "CCB", "debit")
		first, code1 := startWithCode(a, "race-5")
		second, code2 := startWithCode(a, "race-5-other")
		if _, err := w.svc.Confirm(ctx, w.merchant, first.ID, code1); err != nil {
			t.Fatal(err)
		}
		got, err := w.svc.Confirm(ctx, w.merchant, second.ID, code2)
		if !errors.Is(err, binding.ErrCardBoundElsewhere) || got.Status != binding.StatusFailed || got.CardID != "" {
			t.Fatalf("second confirm = %+v, %v; want failed, card bound elsewhere", got, err)
		}
		if again, err := w.svc.GetBinding(ctx, w.merchant, second.ID); err != nil || again.Status != binding.StatusFailed ||
			again.FailureCode != "card_bound_elsewhere" || again.MemberID != "" {
			t.Fatalf("refused binding reads %+v, %v", again, err)
		}
		if _, err := w.svc.FindMember(ctx, w.merchant, "race-5-other"); !errors.Is(err, binding.ErrNotFound) {
			t.Fatalf("the refused implicit binding made a member: %v", err)
		}
	})

	t.Run("the card bound at another merchant meanwhile: the confirm is retryable", func(t *testing.T) {
		a := w.account(t, "ICBC", "debit")
		here, code := startWithCode(a, "race-6")
		other := testenv.Merchant(t, w.Pool)
		in := input(a)
		in.ExternalUserID = "race-6"
		there, err := w.svc.StartBinding(ctx, other, in)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.svc.Confirm(ctx, other, there.ID, w.code(t, a.Phone)); err != nil {
			t.Fatal(err)
		}
		got, err := w.svc.Confirm(ctx, w.merchant, here.ID, code)
		if !errors.Is(err, binding.ErrBankUnavailable) {
			t.Fatalf("confirm = %+v, %v; want bank unavailable", got, err)
		}
		if again, err := w.svc.GetBinding(ctx, w.merchant, here.ID); err != nil || again.Status != binding.StatusOTPSent {
			t.Fatalf("binding after the refused confirm reads %+v, %v; want still otp_sent", again, err)
		}
	})

	t.Run("a member declared by name: a namesake's card begun at the same time is refused", func(t *testing.T) {
		a := w.account(t, "ICBC", "debit")
		namesake := w.namesake(t, a)
		m, err := w.svc.CreateMember(ctx, w.merchant, binding.MemberInput{ExternalID: "race-7", Name: a.HolderName})
		if err != nil {
			t.Fatal(err)
		}
		startFor := func(acc conformance.Account) (binding.Binding, sensitive.OTP) {
			t.Helper()
			in := input(acc)
			in.MemberID = m.ID
			b, err := w.svc.StartBinding(ctx, w.merchant, in)
			if err != nil {
				t.Fatal(err)
			}
			return b, w.code(t, acc.Phone)
		}
		first, code1 := startFor(a)
		second, code2 := startFor(namesake)
		if _, err := w.svc.Confirm(ctx, w.merchant, first.ID, code1); err != nil {
			t.Fatal(err)
		}
		got, err := w.svc.Confirm(ctx, w.merchant, second.ID, code2)
		var im *binding.IdentityMismatchError
		if !errors.As(err, &im) || im.Field != "id_number" || got.Status != binding.StatusFailed {
			t.Fatalf("namesake's confirm = %+v, %v; want failed, identity mismatch on id_number", got, err)
		}
		state, err := w.SimCtl.Account(ctx, namesake.CardNumber)
		if err != nil {
			t.Fatal(err)
		}
		for _, ag := range state.Agreements {
			if ag.Status == "active" {
				t.Fatalf("the namesake's agreement %s is still active at the bank", ag.AgreementNo)
			}
		}
	})

	// A card bound to another member between apply and confirm, without
	// the bank's knowing, is made in the database: another member's active
	// card with the same number, written between apply and confirm. The
	// binding fails, and neither its card nor its implicit member is made
	// (a member exists once its binding succeeds).
	t.Run("the card appeared for another member: card_bound_elsewhere", func(t *testing.T) {
		a := w.account(t, "ICBC", "debit")
		pending := start(a, "race-3")
		other, err := w.svc.CreateMember(ctx, w.merchant, binding.MemberInput{ExternalID: "race-3-other"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Pool.Exec(ctx, `INSERT INTO cards (id, merchant_id, member_id, status, bank_code, bank_name,
			card_type, masked_pan, last4, pan_ct, pan_fp, agreement_ct, binding_id)
			SELECT 'card_race3', merchant_id, $2, 'active', bank_code, bank_name, card_type, masked_pan, last4,
				pan_ct, pan_fp, '\x00', id FROM bindings WHERE id = $1`, pending.ID, other.ID); err != nil {
			t.Fatal(err)
		}
		got, err := w.svc.Confirm(ctx, w.merchant, pending.ID, w.code(t, a.Phone))
		if !errors.Is(err, binding.ErrCardBoundElsewhere) || got.Status != binding.StatusFailed || got.CardID != "" {
			t.Fatalf("confirm = %+v, %v; want failed, card bound elsewhere", got, err)
		}
		var active int
		if err := w.Pool.QueryRow(ctx, `SELECT count(*) FROM cards c JOIN bindings b ON b.pan_fp = c.pan_fp
			WHERE b.id = $1 AND c.status = 'active'`, pending.ID).Scan(&active); err != nil || active != 1 {
			t.Fatalf("active cards with the number = %d, %v; want 1 (the other member's)", active, err)
		}
		if _, err := w.svc.FindMember(ctx, w.merchant, "race-3"); !errors.Is(err, binding.ErrNotFound) {
			t.Fatalf("the refused implicit binding made a member: %v", err)
		}
	})
}

// TestBankFailuresAreAudited: when the bank fails an unbind or a resend,
// nothing changes but the audit trail: the failed try, and for an unbind
// the decryption of the agreement number that was sent, are committed.
// A bank that refuses to end an agreement answers card_declined.
func TestBankFailuresAreAudited(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	a, _, b := w.startImplicit(t, "ICBC", "audited-user")
	audited := func(action, subject, outcome string) int {
		t.Helper()
		var n int
		if err := w.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE action = $1 AND subject = $2
			AND details->>'outcome' = $3`, action, subject, outcome).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	fault := func(op, mode, code string) {
		t.Helper()
		// Three calls: the adapter's first try and its two retries.
		if err := w.SimCtl.AddFault(ctx, conformance.Fault{BankCode: "ICBC", Operation: op, Mode: mode, Code: code,
			Count: 3}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("resend with the bank down", func(t *testing.T) {
		w.clock.Advance(binding.OTPResendGap)
		fault("bind_resend", conformance.FaultError, "")
		if _, err := w.svc.Resend(ctx, w.merchant, b.ID); !errors.Is(err, binding.ErrBankUnavailable) {
			t.Fatalf("resend: %v, want bank unavailable", err)
		}
		if n := audited("otp.send", b.ID, audit.OutcomeFailed); n != 1 {
			t.Fatalf("failed otp.send rows = %d, want 1", n)
		}
		got, err := w.svc.GetBinding(ctx, w.merchant, b.ID)
		if err != nil || got.Status != binding.StatusOTPSent {
			t.Fatalf("binding after the failed resend = %+v, %v; want still otp_sent", got, err)
		}
	})
	_ = w.SimCtl.ClearFaults(ctx, "ICBC")
	bound, err := w.svc.Confirm(ctx, w.merchant, b.ID, w.code(t, a.Phone))
	if err != nil {
		t.Fatal(err)
	}

	for i, tc := range []struct {
		mode, code string
		want       error
	}{
		{conformance.FaultError, "", binding.ErrBankUnavailable},
		{conformance.FaultDecline, "card_frozen", binding.ErrCardDeclined},
	} {
		t.Run("unbind: "+tc.mode, func(t *testing.T) {
			fault("unbind", tc.mode, tc.code)
			if _, err := w.svc.Unbind(ctx, w.merchant, bound.CardID); !errors.Is(err, tc.want) {
				t.Fatalf("unbind: %v, want %v", err, tc.want)
			}
			if n := audited("card.unbind", bound.CardID, audit.OutcomeFailed); n != i+1 {
				t.Fatalf("failed card.unbind rows = %d, want %d", n, i+1)
			}
			var detok int
			if err := w.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE action = 'vault.detokenize'
				AND subject = $1`, bound.CardID).Scan(&detok); err != nil || detok != i+1 {
				t.Fatalf("agreement decryptions audited = %d, %v; want %d", detok, err, i+1)
			}
			card, err := w.svc.GetCard(ctx, w.merchant, bound.CardID)
			if err != nil || card.Status != binding.CardActive {
				t.Fatalf("card after the failed unbind = %+v, %v; want active", card, err)
			}
		})
		_ = w.SimCtl.ClearFaults(ctx, "ICBC")
	}
	if card, err := w.svc.Unbind(ctx, w.merchant, bound.CardID); err != nil || card.Status != binding.CardUnbound {
		t.Fatalf("unbind once the bank answers = %+v, %v", card, err)
	}
}

// TestResendRefusedByTheBank: a bank that refuses to send another code
// ends the binding (failed, with binding.failed), and the answer says why;
// it is not a 503 to retry.
func TestResendRefusedByTheBank(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	for _, tc := range []struct {
		code, failure string
		want          error
	}{
		{"card_frozen", "card_declined", binding.ErrCardDeclined},
		{"otp_locked", "otp_attempts_exceeded", binding.ErrOTPAttemptsExceeded},
	} {
		t.Run(tc.code, func(t *testing.T) {
			a := w.account(t, "ICBC", "debit")
			b, err := w.svc.StartBinding(ctx, w.merchant, func() binding.BindInput {
				in := input(a)
				in.ExternalUserID = "resend-" + tc.code
				return in
			}())
			if err != nil {
				t.Fatal(err)
			}
			w.clock.Advance(binding.OTPResendGap)
			failedBefore := w.eventCount("binding.failed")
			if err := w.SimCtl.AddFault(ctx, conformance.Fault{BankCode: "ICBC", Operation: "bind_resend",
				Mode: conformance.FaultDecline, Code: tc.code, Count: 1}); err != nil {
				t.Fatal(err)
			}
			if _, err := w.svc.Resend(ctx, w.merchant, b.ID); !errors.Is(err, tc.want) {
				t.Fatalf("resend: %v, want %v", err, tc.want)
			}
			got, err := w.svc.GetBinding(ctx, w.merchant, b.ID)
			if err != nil || got.Status != binding.StatusFailed || got.FailureCode != tc.failure {
				t.Fatalf("binding after the refused resend = %+v, %v; want failed %s", got, err, tc.failure)
			}
			if n := w.eventCount("binding.failed"); n != failedBefore+1 {
				t.Fatalf("%d binding.failed events, want %d", n, failedBefore+1)
			}
		})
	}
}

// TestResendAfterTheCardWasBound: the bank answers a resend "already
// bound" when another binding of the card, the same member's, was confirmed
// meanwhile: the binding is bound to that card.
func TestResendAfterTheCardWasBound(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	a, in, first := w.startImplicit(t, "ICBC", "resend-bound")
	code1 := w.code(t, a.Phone)
	second, err := w.svc.StartBinding(ctx, w.merchant, in)
	if err != nil {
		t.Fatal(err)
	}
	one, err := w.svc.Confirm(ctx, w.merchant, first.ID, code1)
	if err != nil {
		t.Fatal(err)
	}
	w.clock.Advance(binding.OTPResendGap)
	if err := w.SimCtl.AddFault(ctx, conformance.Fault{BankCode: "ICBC", Operation: "bind_resend",
		Mode: conformance.FaultDecline, Code: "already_bound", Count: 1}); err != nil {
		t.Fatal(err)
	}
	got, err := w.svc.Resend(ctx, w.merchant, second.ID)
	if err != nil || got.Status != binding.StatusBound || got.CardID != one.CardID || got.MemberID != one.MemberID {
		t.Fatalf("resend = %+v, %v; want bound to card %s", got, err, one.CardID)
	}
}
