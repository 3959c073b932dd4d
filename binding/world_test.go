package binding_test

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/quickpay/quickpay/bankadapters/conformance"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/sensitive"
	"github.com/quickpay/quickpay/internal/webhooks"
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

func input2(a conformance.Account, externalID string) binding.BindInput {
	in := input(a)
	in.ExternalUserID = externalID
	return in
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

// startExplicit creates the merchant's member mi and starts binding a's
// card to it.
func (w *world) startExplicit(t *testing.T, a conformance.Account, mi binding.MemberInput) (binding.Member, binding.BindInput, binding.Binding) {
	t.Helper()
	ctx := context.Background()
	m, err := w.svc.CreateMember(ctx, w.merchant, mi)
	if err != nil {
		t.Fatal(err)
	}
	in := input(a)
	in.MemberID = m.ID
	b, err := w.svc.StartBinding(ctx, w.merchant, in)
	if err != nil {
		t.Fatal(err)
	}
	return m, in, b
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

// waitArmed polls, with a deadline, until banksim has n faults armed.
func waitArmed(t *testing.T, w *world, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := w.SimCtl.ArmedFaults(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d faults armed, want %d", got, n)
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

func liveAgreements(ags []conformance.Agreement) int {
	n := 0
	for _, a := range ags {
		if a.Status == "active" {
			n++
		}
	}
	return n
}
