package operators_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	"golang.org/x/crypto/bcrypt"

	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/ids"
	"github.com/quickpay/quickpay/internal/operators"
	"github.com/quickpay/quickpay/vaultkeys"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// start is a moment 10 s into a TOTP step, so that moving the clock by
// less than 20 s stays in it.
var start = time.Date(2026, 3, 1, 9, 0, 10, 0, time.UTC)

type fixture struct {
	pool  *pgxpool.Pool
	clock *clock.Fake
	store *operators.Store
}

func newVault(t testing.TB, pool *pgxpool.Pool) *vaultkeys.Vault {
	t.Helper()
	v, err := vaultkeys.New(vaultkeys.Config{Pool: pool, HSM: testenv.HSM(t, 2)})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	return v
}

// newFixture is a store over the package's database and HSM, with a fake
// clock and the cheapest bcrypt cost (under the race detector cost 12
// takes seconds a comparison; TestDefaultCost checks the default).
func newFixture(t testing.TB, cfg operators.Config) fixture {
	t.Helper()
	pool := testenv.Pool(t)
	clk := clock.NewFake(start)
	cfg.Pool, cfg.Sealer, cfg.Clock = pool, newVault(t, pool), clk
	if cfg.BcryptCost == 0 {
		cfg.BcryptCost = bcrypt.MinCost
	}
	s, err := operators.NewStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return fixture{pool: pool, clock: clk, store: s}
}

// uniqueName is a name no other test of the package uses.
func uniqueName(prefix string) string { return prefix + "." + ids.New("x")[2:12] }

func (f fixture) create(t testing.TB, role operators.Role) operators.Enrolment {
	t.Helper()
	e, err := f.store.Create(context.Background(), uniqueName("alice"), role, "cli:test")
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// code is the enrolment's TOTP code at the fake clock's time moved by d.
func (f fixture) code(t testing.TB, e operators.Enrolment, d time.Duration) string {
	t.Helper()
	key, err := otp.NewKeyFromURL(e.TOTPURI)
	if err != nil {
		t.Fatal(err)
	}
	c, err := totp.GenerateCode(key.Secret(), f.clock.Now().Add(d))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (f fixture) login(t testing.TB, e operators.Enrolment) (operators.Session, string) {
	t.Helper()
	s, tok, err := f.store.Login(context.Background(), e.Operator.Name, e.Password, f.code(t, e, 0), "192.0.2.7")
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	return s, tok
}

type loginRow struct {
	Actor, Subject, Outcome, Reason string
	Details                         string
}

// logins returns the operator.login audit rows about operatorID, oldest
// first.
func (f fixture) logins(t testing.TB, operatorID string) []loginRow {
	t.Helper()
	rows, err := f.pool.Query(context.Background(), `
		SELECT actor, coalesce(subject, ''), details->>'outcome', coalesce(details->>'reason', ''), details::text
		FROM audit_log WHERE action = 'operator.login' AND subject = $1 ORDER BY id`, operatorID)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[loginRow])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (f fixture) lastReason(t testing.TB, operatorID string) string {
	t.Helper()
	l := f.logins(t, operatorID)
	if len(l) == 0 {
		t.Fatal("no operator.login audit row")
	}
	return l[len(l)-1].Reason
}

func TestLogin(t *testing.T) {
	t.Parallel()
	f := newFixture(t, operators.Config{})
	ctx := context.Background()
	tests := []struct {
		name string
		// try logs in as e and returns the result.
		try        func(t *testing.T, e operators.Enrolment) error
		wantErr    error
		wantReason string // of the last operator.login row; "" for success
	}{
		{
			name: "right password and current code",
			try: func(t *testing.T, e operators.Enrolment) error {
				_, _, err := f.store.Login(ctx, e.Operator.Name, e.Password, f.code(t, e, 0), "192.0.2.7")
				return err
			},
		},
		{
			name: "name in another case",
			try: func(t *testing.T, e operators.Enrolment) error {
				_, _, err := f.store.Login(ctx, strings.ToUpper(e.Operator.Name), e.Password, f.code(t, e, 0), "")
				return err
			},
		},
		{
			name: "code of the previous step",
			try: func(t *testing.T, e operators.Enrolment) error {
				_, _, err := f.store.Login(ctx, e.Operator.Name, e.Password, f.code(t, e, -30*time.Second), "")
				return err
			},
		},
		{
			name: "code of the next step",
			try: func(t *testing.T, e operators.Enrolment) error {
				_, _, err := f.store.Login(ctx, e.Operator.Name, e.Password, f.code(t, e, 30*time.Second), "")
				return err
			},
		},
		{
			name: "code two steps old",
			try: func(t *testing.T, e operators.Enrolment) error {
				_, _, err := f.store.Login(ctx, e.Operator.Name, e.Password, f.code(t, e, -60*time.Second), "")
				return err
			},
			wantErr: operators.ErrBadLogin, wantReason: "wrong_code",
		},
		{
			name: "wrong password",
			try: func(t *testing.T, e operators.Enrolment) error {
				_, _, err := f.store.Login(ctx, e.Operator.Name, e.Password+"x", f.code(t, e, 0), "")
				return err
			},
			wantErr: operators.ErrBadLogin, wantReason: "wrong_password",
		},
		{
			name: "wrong code",
			try: func(t *testing.T, e operators.Enrolment) error {
				c := []byte(f.code(t, e, 0))
				c[0] = '0' + (c[0]-'0'+1)%10
				_, _, err := f.store.Login(ctx, e.Operator.Name, e.Password, string(c), "")
				return err
			},
			wantErr: operators.ErrBadLogin, wantReason: "wrong_code",
		},
		{
			name: "empty code",
			try: func(t *testing.T, e operators.Enrolment) error {
				_, _, err := f.store.Login(ctx, e.Operator.Name, e.Password, "", "")
				return err
			},
			wantErr: operators.ErrBadLogin, wantReason: "wrong_code",
		},
		{
			name: "replayed code refused",
			try: func(t *testing.T, e operators.Enrolment) error {
				c := f.code(t, e, 0)
				if _, _, err := f.store.Login(ctx, e.Operator.Name, e.Password, c, ""); err != nil {
					t.Fatalf("first use: %v", err)
				}
				_, _, err := f.store.Login(ctx, e.Operator.Name, e.Password, c, "")
				return err
			},
			wantErr: operators.ErrBadLogin, wantReason: "replayed_code",
		},
		{
			name: "code of an earlier step after a later one refused",
			try: func(t *testing.T, e operators.Enrolment) error {
				if _, _, err := f.store.Login(ctx, e.Operator.Name, e.Password, f.code(t, e, 30*time.Second), ""); err != nil {
					t.Fatalf("next step's code: %v", err)
				}
				_, _, err := f.store.Login(ctx, e.Operator.Name, e.Password, f.code(t, e, 0), "")
				return err
			},
			wantErr: operators.ErrBadLogin, wantReason: "replayed_code",
		},
		{
			name: "disabled operator",
			try: func(t *testing.T, e operators.Enrolment) error {
				if err := f.store.Disable(ctx, e.Operator.Name, "cli:test"); err != nil {
					t.Fatal(err)
				}
				_, _, err := f.store.Login(ctx, e.Operator.Name, e.Password, f.code(t, e, 0), "")
				return err
			},
			wantErr: operators.ErrBadLogin, wantReason: "disabled",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := f.create(t, operators.RoleViewer)
			err := tt.try(t, e)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
			if got := f.lastReason(t, e.Operator.ID); got != tt.wantReason {
				t.Errorf("audit reason %q, want %q", got, tt.wantReason)
			}
		})
	}
}

func TestLoginUnknownName(t *testing.T) {
	t.Parallel()
	f := newFixture(t, operators.Config{})
	source := "198.51.100." + ids.New("x")[2:5] // this test's rows
	for _, name := range []string{"nobody", "", "Not A Name!", strings.Repeat("a", 65)} {
		if _, _, err := f.store.Login(context.Background(), name, "pw-typed-as-name", "123456", source); !errors.Is(err, operators.ErrBadLogin) {
			t.Errorf("%q: got %v, want ErrBadLogin", name, err)
		}
	}
	var n int
	var text string
	err := f.pool.QueryRow(context.Background(), `
		SELECT count(*), coalesce(string_agg(actor || coalesce(subject, '') || details::text, ' '), '')
		FROM audit_log WHERE action = 'operator.login' AND details->>'source' = $1
			AND details->>'reason' = 'unknown_operator' AND actor = 'operator:unknown'`, source).Scan(&n, &text)
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Errorf("%d unknown_operator rows, want 4", n)
	}
	if strings.Contains(text, "nobody") {
		t.Errorf("an unknown name is in the audit trail: %s", text)
	}
}

func TestSessionAndLogout(t *testing.T) {
	t.Parallel()
	f := newFixture(t, operators.Config{})
	ctx := context.Background()
	e := f.create(t, operators.RoleOperator)
	s, tok := f.login(t, e)
	if !ids.Valid("ops", s.ID) || s.Operator.ID != e.Operator.ID || s.CSRFToken == "" || s.CSRFToken == tok {
		t.Fatalf("session %+v", s)
	}
	f.clock.Advance(time.Minute)
	got, err := f.store.Session(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != s.ID || got.Operator.Role != operators.RoleOperator || !got.LastSeenAt.Equal(start.Add(time.Minute)) ||
		!got.ExpiresAt.Equal(start.Add(16*time.Minute)) || !got.Operator.LastLoginAt.Equal(start) {
		t.Errorf("session %+v", got)
	}
	if !got.CheckCSRF(s.CSRFToken) || got.CheckCSRF("") || got.CheckCSRF(s.CSRFToken+"x") {
		t.Error("CheckCSRF disagrees with the session's token")
	}
	var stored []byte
	if err := f.pool.QueryRow(ctx, `SELECT token_hash FROM operator_sessions WHERE id = $1`, s.ID).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(stored, []byte(tok)) || len(stored) != 32 {
		t.Errorf("token_hash is %d bytes and holds the token: %v", len(stored), bytes.Contains(stored, []byte(tok)))
	}
	other := []byte(tok)
	other[0] ^= 1 // another base64url character
	if _, err := f.store.Session(ctx, string(other)); !errors.Is(err, operators.ErrNoSession) {
		t.Errorf("another token: got %v, want ErrNoSession", err)
	}
	if err := f.store.Logout(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Session(ctx, tok); !errors.Is(err, operators.ErrNoSession) {
		t.Errorf("after logout: got %v, want ErrNoSession", err)
	}
	if err := f.store.Logout(ctx, tok); !errors.Is(err, operators.ErrNoSession) {
		t.Errorf("second logout: got %v, want ErrNoSession", err)
	}
}

func TestSessionTimeouts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tests := []struct {
		name string
		// steps move the clock by each duration and then use the session;
		// all but the last use succeed.
		steps    []time.Duration
		lastLive bool
	}{
		{name: "used just before the idle timeout", steps: []time.Duration{15*time.Minute - time.Second}, lastLive: true},
		{name: "idle timeout ends it", steps: []time.Duration{15 * time.Minute}},
		{name: "use restarts the idle timeout", steps: []time.Duration{14 * time.Minute, 14 * time.Minute}, lastLive: true},
		{name: "absolute timeout ends a busy session", steps: slices.Repeat([]time.Duration{10 * time.Minute}, 8*6)},
		{name: "busy session lives until the absolute timeout", steps: slices.Repeat([]time.Duration{10 * time.Minute}, 8*6-1), lastLive: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Each case has its own clock, moved from the shared start.
			f := newFixture(t, operators.Config{})
			e := f.create(t, operators.RoleViewer)
			_, tok := f.login(t, e)
			for i, d := range tt.steps {
				f.clock.Advance(d)
				_, err := f.store.Session(ctx, tok)
				last := i == len(tt.steps)-1
				switch {
				case !last && err != nil:
					t.Fatalf("use %d after %s: %v", i+1, d, err)
				case last && tt.lastLive && err != nil:
					t.Fatalf("last use: %v, want the session live", err)
				case last && !tt.lastLive && !errors.Is(err, operators.ErrNoSession):
					t.Fatalf("last use: %v, want ErrNoSession", err)
				}
			}
		})
	}
}

// TestPeekDoesNotKeepASessionAlive: a peek finds a live session but does
// not restart its idle timeout, as a use does.
func TestPeekDoesNotKeepASessionAlive(t *testing.T) {
	t.Parallel()
	f := newFixture(t, operators.Config{})
	ctx := context.Background()
	e := f.create(t, operators.RoleViewer)
	_, tok := f.login(t, e)
	f.clock.Advance(10 * time.Minute)
	s, err := f.store.PeekSession(ctx, tok)
	if err != nil || s.Operator.ID != e.Operator.ID || s.CSRFToken == "" {
		t.Fatalf("peek of a live session: %+v, %v", s, err)
	}
	if want := start.Add(15 * time.Minute); !s.ExpiresAt.Equal(want) {
		t.Errorf("peek says the session expires at %s, want %s (the idle timeout from login)", s.ExpiresAt, want)
	}
	f.clock.Advance(6 * time.Minute) // 16 min after the last use
	if _, err := f.store.PeekSession(ctx, tok); !errors.Is(err, operators.ErrNoSession) {
		t.Errorf("peek 16 min after the last use: %v, want ErrNoSession", err)
	}
	if _, err := f.store.Session(ctx, tok); !errors.Is(err, operators.ErrNoSession) {
		t.Errorf("use 16 min after the last use (peeks between): %v, want ErrNoSession", err)
	}
}

func TestDisableEndsSessions(t *testing.T) {
	t.Parallel()
	f := newFixture(t, operators.Config{})
	ctx := context.Background()
	e := f.create(t, operators.RoleAdmin)
	_, tok := f.login(t, e)
	if err := f.store.Disable(ctx, e.Operator.Name, "cli:test"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Session(ctx, tok); !errors.Is(err, operators.ErrNoSession) {
		t.Errorf("disabled operator's session: got %v, want ErrNoSession", err)
	}
	var ended int
	if err := f.pool.QueryRow(ctx, `SELECT count(*) FROM operator_sessions WHERE operator_id = $1 AND ended_at IS NOT NULL`,
		e.Operator.ID).Scan(&ended); err != nil {
		t.Fatal(err)
	}
	if ended != 1 {
		t.Errorf("%d ended sessions, want 1", ended)
	}
	got, err := f.store.Get(ctx, e.Operator.ID)
	if err != nil || !got.Disabled {
		t.Errorf("Get: %+v, %v; want disabled", got, err)
	}
	if err := f.store.Disable(ctx, e.Operator.Name, "cli:test"); err != nil {
		t.Errorf("disabling again: %v", err)
	}
	if err := f.store.Disable(ctx, "nobody-at-all", "cli:test"); !errors.Is(err, operators.ErrNotFound) {
		t.Errorf("unknown name: %v, want ErrNotFound", err)
	}
}

func TestDisabledOperatorSessionRefusedEvenIfNotEnded(t *testing.T) {
	t.Parallel()
	f := newFixture(t, operators.Config{})
	ctx := context.Background()
	e := f.create(t, operators.RoleViewer)
	_, tok := f.login(t, e)
	// A disable written by hand, without ending the sessions: the status
	// alone refuses them.
	if _, err := f.pool.Exec(ctx, `UPDATE operators SET status = 'disabled' WHERE id = $1`, e.Operator.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Session(ctx, tok); !errors.Is(err, operators.ErrNoSession) {
		t.Errorf("got %v, want ErrNoSession", err)
	}
}

func TestLockout(t *testing.T) {
	t.Parallel()
	f := newFixture(t, operators.Config{})
	ctx := context.Background()
	wrong := func(e operators.Enrolment) error {
		_, _, err := f.store.Login(ctx, e.Operator.Name, "wrong-password", f.code(t, e, 0), "")
		return err
	}
	right := func(e operators.Enrolment) error {
		_, _, err := f.store.Login(ctx, e.Operator.Name, e.Password, f.code(t, e, 0), "")
		return err
	}
	t.Run("ten failures lock, right credentials then refused, lockout end unlocks", func(t *testing.T) {
		e := f.create(t, operators.RoleViewer)
		for i := range 10 {
			if err := wrong(e); !errors.Is(err, operators.ErrBadLogin) {
				t.Fatalf("failure %d: %v", i+1, err)
			}
		}
		if err := right(e); !errors.Is(err, operators.ErrLocked) {
			t.Fatalf("right credentials while locked: %v, want ErrLocked", err)
		}
		if got := f.lastReason(t, e.Operator.ID); got != "locked" {
			t.Errorf("audit reason %q, want locked", got)
		}
		op, err := f.store.Get(ctx, e.Operator.ID)
		if err != nil || !op.LockedUntil.Equal(start.Add(30*time.Minute)) {
			t.Errorf("LockedUntil %s (%v), want %s", op.LockedUntil, err, start.Add(30*time.Minute))
		}
		f.clock.Advance(30*time.Minute - time.Second)
		if err := right(e); !errors.Is(err, operators.ErrLocked) {
			t.Fatalf("a second before the end: %v, want ErrLocked", err)
		}
		f.clock.Advance(time.Second)
		if err := right(e); err != nil {
			t.Fatalf("after the lockout: %v", err)
		}
		f.clock.Set(start)
	})
	t.Run("nine failures then right resets the count", func(t *testing.T) {
		e := f.create(t, operators.RoleViewer)
		for range 9 {
			if err := wrong(e); !errors.Is(err, operators.ErrBadLogin) {
				t.Fatal(err)
			}
		}
		if err := right(e); err != nil {
			t.Fatalf("tenth try right: %v", err)
		}
		for i := range 9 {
			if err := wrong(e); !errors.Is(err, operators.ErrBadLogin) {
				t.Fatalf("failure %d after the reset: %v", i+1, err)
			}
		}
	})
	t.Run("wrong codes count like wrong passwords", func(t *testing.T) {
		e := f.create(t, operators.RoleViewer)
		for range 10 {
			if _, _, err := f.store.Login(ctx, e.Operator.Name, e.Password, "000000", ""); !errors.Is(err, operators.ErrBadLogin) {
				t.Fatal(err)
			}
		}
		if err := right(e); !errors.Is(err, operators.ErrLocked) {
			t.Fatalf("got %v, want ErrLocked", err)
		}
	})
}

// TestLockoutExpiryRestartsTheCount: after a lockout ends, one more
// failure does not lock again at once.
func TestLockoutExpiryRestartsTheCount(t *testing.T) {
	t.Parallel()
	f := newFixture(t, operators.Config{MaxFailures: 3, Lockout: time.Minute})
	ctx := context.Background()
	e := f.create(t, operators.RoleViewer)
	for range 3 {
		if _, _, err := f.store.Login(ctx, e.Operator.Name, "wrong", "000000", ""); !errors.Is(err, operators.ErrBadLogin) {
			t.Fatal(err)
		}
	}
	f.clock.Advance(time.Minute)
	for i := range 2 {
		if _, _, err := f.store.Login(ctx, e.Operator.Name, "wrong", "000000", ""); !errors.Is(err, operators.ErrBadLogin) {
			t.Fatalf("failure %d after the lockout: %v", i+1, err)
		}
	}
	f.clock.Advance(40 * time.Second) // a new TOTP step
	if _, _, err := f.store.Login(ctx, e.Operator.Name, e.Password, f.code(t, e, 0), ""); err != nil {
		t.Fatalf("right after two new failures: %v", err)
	}
}

// TestConcurrentGuessesStopAtTheCap: every try is counted before its
// password is compared, so a burst of guesses gets exactly MaxFailures
// checked.
func TestConcurrentGuessesStopAtTheCap(t *testing.T) {
	t.Parallel()
	f := newFixture(t, operators.Config{})
	e := f.create(t, operators.RoleViewer)
	var mu sync.Mutex
	counts := map[error]int{}
	testenv.Concurrently(t, 25, time.Minute, func(ctx context.Context, i int) error {
		_, _, err := f.store.Login(ctx, e.Operator.Name, fmt.Sprintf("guess-%d", i), "000000", "")
		if !errors.Is(err, operators.ErrBadLogin) && !errors.Is(err, operators.ErrLocked) {
			return err
		}
		mu.Lock()
		counts[err]++
		mu.Unlock()
		return nil
	})
	if counts[operators.ErrBadLogin] != 10 || counts[operators.ErrLocked] != 15 {
		t.Errorf("got %d bad logins and %d locked, want 10 and 15", counts[operators.ErrBadLogin], counts[operators.ErrLocked])
	}
}

// TestUnreadableSecretGivesTheTryBack: a login whose check fails (here the
// TOTP ciphertext is damaged, so the HSM refuses it) is an error, not a
// failed login, and does not count toward the lockout.
func TestUnreadableSecretGivesTheTryBack(t *testing.T) {
	t.Parallel()
	f := newFixture(t, operators.Config{MaxFailures: 2})
	ctx := context.Background()
	e := f.create(t, operators.RoleViewer)
	if _, err := f.pool.Exec(ctx, `UPDATE operators SET totp_secret_ct = set_byte(totp_secret_ct, 20, get_byte(totp_secret_ct, 20) # 1)
		WHERE id = $1`, e.Operator.ID); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		_, _, err := f.store.Login(ctx, e.Operator.Name, e.Password, f.code(t, e, 0), "")
		if err == nil || errors.Is(err, operators.ErrBadLogin) || errors.Is(err, operators.ErrLocked) {
			t.Fatalf("got %v, want the vault's error", err)
		}
		if !errors.Is(err, vaultkeys.ErrDecrypt) {
			t.Errorf("got %v, want vaultkeys.ErrDecrypt", err)
		}
	}
	var failed int
	if err := f.pool.QueryRow(ctx, `SELECT failed_logins FROM operators WHERE id = $1`, e.Operator.ID).Scan(&failed); err != nil {
		t.Fatal(err)
	}
	if failed != 0 {
		t.Errorf("failed_logins %d, want 0", failed)
	}
}

func TestReset(t *testing.T) {
	t.Parallel()
	f := newFixture(t, operators.Config{})
	ctx := context.Background()
	old := f.create(t, operators.RoleOperator)
	_, tok := f.login(t, old)
	for range 10 {
		if _, _, err := f.store.Login(ctx, old.Operator.Name, "wrong", "000000", ""); !errors.Is(err, operators.ErrBadLogin) {
			t.Fatal(err)
		}
	}
	fresh, err := f.store.Reset(ctx, old.Operator.Name, "cli:test")
	if err != nil {
		t.Fatal(err)
	}
	if fresh.Operator.ID != old.Operator.ID || fresh.Password == old.Password || fresh.TOTPURI == old.TOTPURI {
		t.Fatalf("reset kept the id (%v), changed the password (%v) and the URI (%v)",
			fresh.Operator.ID == old.Operator.ID, fresh.Password != old.Password, fresh.TOTPURI != old.TOTPURI)
	}
	if _, err := f.store.Session(ctx, tok); !errors.Is(err, operators.ErrNoSession) {
		t.Errorf("session from before the reset: %v, want ErrNoSession", err)
	}
	f.clock.Advance(30 * time.Second)
	if _, _, err := f.store.Login(ctx, old.Operator.Name, old.Password, f.code(t, fresh, 0), ""); !errors.Is(err, operators.ErrBadLogin) {
		t.Errorf("old password: %v, want ErrBadLogin", err)
	}
	if _, _, err := f.store.Login(ctx, old.Operator.Name, fresh.Password, f.code(t, old, 0), ""); !errors.Is(err, operators.ErrBadLogin) {
		t.Errorf("old TOTP secret: %v, want ErrBadLogin", err)
	}
	if _, _, err := f.store.Login(ctx, old.Operator.Name, fresh.Password, f.code(t, fresh, 0), ""); err != nil {
		t.Errorf("new credentials (reset unlocked): %v", err)
	}
	if _, err := f.store.Reset(ctx, "nobody-at-all", "cli:test"); !errors.Is(err, operators.ErrNotFound) {
		t.Errorf("unknown name: %v, want ErrNotFound", err)
	}
}

func TestCreate(t *testing.T) {
	t.Parallel()
	f := newFixture(t, operators.Config{})
	ctx := context.Background()
	e := f.create(t, operators.RoleAdmin)
	if !ids.Valid("op", e.Operator.ID) || len(e.Password) < 20 || !e.Operator.CreatedAt.Equal(start) {
		t.Errorf("enrolment %+v: id, password length %d", e.Operator, len(e.Password))
	}
	key, err := otp.NewKeyFromURL(e.TOTPURI)
	if err != nil {
		t.Fatal(err)
	}
	if key.Issuer() != "quickpay" || key.AccountName() != e.Operator.Name || key.Period() != 30 ||
		key.Digits() != otp.DigitsSix || key.Algorithm() != otp.AlgorithmSHA1 || len(key.Secret()) < 32 {
		t.Errorf("totp key %s/%s period %d digits %v alg %v", key.Issuer(), key.AccountName(), key.Period(), key.Digits(), key.Algorithm())
	}
	tests := []struct {
		name    string
		opName  string
		role    operators.Role
		wantErr error
	}{
		{"name taken", e.Operator.Name, operators.RoleViewer, operators.ErrExists},
		{"name taken in another case", strings.ToUpper(e.Operator.Name), operators.RoleViewer, operators.ErrExists},
		{"empty name", " ", operators.RoleViewer, operators.ErrInvalidName},
		{"name with a space", "bob smith", operators.RoleViewer, operators.ErrInvalidName},
		{"unknown role", uniqueName("bob"), operators.Role("root"), operators.ErrInvalidRole},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := f.store.Create(ctx, tt.opName, tt.role, "cli:test"); !errors.Is(err, tt.wantErr) {
				t.Errorf("got %v, want %v", err, tt.wantErr)
			}
		})
	}
	list, err := f.store.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(list, func(o operators.Operator) bool { return o.ID == e.Operator.ID })
	if i < 0 || list[i].Name != e.Operator.Name || list[i].Role != e.Operator.Role || list[i].Disabled ||
		!list[i].CreatedAt.Equal(e.Operator.CreatedAt) || !list[i].LastLoginAt.IsZero() {
		t.Errorf("List does not hold %+v", e.Operator)
	}
	if !slices.IsSortedFunc(list, func(a, b operators.Operator) int { return strings.Compare(a.Name, b.Name) }) {
		t.Error("List is not by name")
	}
	if _, err := f.store.Get(ctx, "op_aaaaaaaaaaaaaaaaaaaaaaaa"); !errors.Is(err, operators.ErrNotFound) {
		t.Errorf("Get of an unknown id: %v", err)
	}
}

// TestDefaultCost: without BcryptCost, passwords are hashed at cost 12.
func TestDefaultCost(t *testing.T) {
	t.Parallel()
	f := newFixture(t, operators.Config{BcryptCost: 0})
	s, err := operators.NewStore(operators.Config{Pool: f.pool, Sealer: newVault(t, f.pool)})
	if err != nil {
		t.Fatal(err)
	}
	e, err := s.Create(context.Background(), uniqueName("cost"), operators.RoleViewer, "cli:test")
	if err != nil {
		t.Fatal(err)
	}
	var hash string
	if err := f.pool.QueryRow(context.Background(), `SELECT password_hash FROM operators WHERE id = $1`, e.Operator.ID).Scan(&hash); err != nil {
		t.Fatal(err)
	}
	if cost, err := bcrypt.Cost([]byte(hash)); err != nil || cost != 12 {
		t.Errorf("cost %d (%v), want 12", cost, err)
	}
}

// TestAuditWithoutSecrets: every create, login (right, wrong, locked),
// logout, disable and reset is audited, and no row, nor anything else in
// the database, holds a password, a TOTP secret or URI, or a code.
func TestAuditWithoutSecrets(t *testing.T) {
	t.Parallel()
	f := newFixture(t, operators.Config{MaxFailures: 2})
	ctx := context.Background()
	e := f.create(t, operators.RoleOperator)
	secrets := []string{e.Password, e.TOTPURI}
	codes := []string{}
	c := f.code(t, e, 0)
	codes = append(codes, c)
	_, tok, err := f.store.Login(ctx, e.Operator.Name, e.Password, c, "192.0.2.9")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.store.Logout(ctx, tok); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(30 * time.Second)
	c = f.code(t, e, 0)
	codes = append(codes, c)
	for range 2 {
		if _, _, err := f.store.Login(ctx, e.Operator.Name, e.Password+"-wrong", c, "192.0.2.9"); !errors.Is(err, operators.ErrBadLogin) {
			t.Fatal(err)
		}
	}
	if _, _, err := f.store.Login(ctx, e.Operator.Name, e.Password, c, "192.0.2.9"); !errors.Is(err, operators.ErrLocked) {
		t.Fatal(err)
	}
	r, err := f.store.Reset(ctx, e.Operator.Name, "cli:reset-admin")
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, r.Password, r.TOTPURI)
	if err := f.store.Disable(ctx, e.Operator.Name, "cli:disable-admin"); err != nil {
		t.Fatal(err)
	}
	for _, uri := range []string{e.TOTPURI, r.TOTPURI} {
		key, err := otp.NewKeyFromURL(uri)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, key.Secret(), strings.ToLower(key.Secret()))
	}

	rows, err := f.pool.Query(ctx, `SELECT actor, action, coalesce(details->>'outcome', ''), coalesce(details->>'reason', ''), details::text
		FROM audit_log WHERE subject = $1 AND action LIKE 'operator.%' ORDER BY id`, e.Operator.ID)
	if err != nil {
		t.Fatal(err)
	}
	type row struct{ Actor, Action, Outcome, Reason, Details string }
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	if err != nil {
		t.Fatal(err)
	}
	var seq []string
	for _, r := range got {
		seq = append(seq, strings.TrimSpace(fmt.Sprintf("%s %s %s %s", r.Actor, r.Action, r.Outcome, r.Reason)))
		for _, v := range append(slices.Clone(secrets), codes...) {
			if strings.Contains(r.Details, v) {
				t.Errorf("%s row holds a secret or code (%d characters)", r.Action, len(v))
			}
		}
	}
	op := "operator:" + e.Operator.ID
	want := []string{
		"cli:test operator.create",
		op + " operator.login ok",
		op + " operator.logout",
		op + " operator.login failed wrong_password",
		op + " operator.login failed wrong_password",
		op + " operator.login failed locked",
		"cli:reset-admin operator.reset",
		"cli:disable-admin operator.disable",
	}
	if !slices.Equal(seq, want) {
		t.Errorf("audit rows:\n%s\nwant:\n%s", strings.Join(seq, "\n"), strings.Join(want, "\n"))
	}
	// Opening the secret is audited too, with who and why.
	var opened int
	if err := f.pool.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE action = 'vault.detokenize' AND actor = $1
		AND subject = $2 AND details->>'reason' = 'operator login'`, op, e.Operator.ID).Scan(&opened); err != nil {
		t.Fatal(err)
	}
	if opened != 3 {
		t.Errorf("%d vault.detokenize rows, want 3 (one a checked login)", opened)
	}

	dump := testenv.PGDump(t)
	if !strings.Contains(dump, e.Operator.ID) {
		t.Fatal("the dump does not hold the operator: it would prove nothing")
	}
	for _, v := range secrets {
		if strings.Contains(dump, v) {
			t.Errorf("the database holds a password, TOTP secret or URI (%d characters) in clear", len(v))
		}
	}
}

func TestEnrolmentPrintsNoSecret(t *testing.T) {
	e := operators.Enrolment{
		Operator: operators.Operator{ID: "op_x", Name: "alice", Role: operators.RoleAdmin},
		Password: "Secret-Password-1234567", TOTPURI: "otpauth://totp/quickpay:alice?secret=JBSWY3DPEHPK3PXP",
	}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("enrolled", "enrolment", e)
	js, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	outs := map[string]string{
		"%v": fmt.Sprintf("%v", e), "%+v": fmt.Sprintf("%+v", e), "%#v": fmt.Sprintf("%#v", e),
		"%s": fmt.Sprintf("%s", e), "json": string(js), "slog": logs.String(),
		"nested": fmt.Sprintf("%+v", struct{ E operators.Enrolment }{e}),
	}
	for how, out := range outs {
		if !strings.Contains(out, "op_x") {
			t.Errorf("%s: %q does not name the operator", how, out)
		}
		if strings.Contains(out, "Secret-Password") || strings.Contains(out, "JBSWY3DP") {
			t.Errorf("%s: %q holds the password or secret", how, out)
		}
	}
}

func TestRoles(t *testing.T) {
	for _, s := range []string{"viewer", "operator", "admin"} {
		if r, err := operators.ParseRole(s); err != nil || string(r) != s {
			t.Errorf("ParseRole(%q) = %q, %v", s, r, err)
		}
	}
	for _, s := range []string{"", "Admin", "root"} {
		if _, err := operators.ParseRole(s); !errors.Is(err, operators.ErrInvalidRole) {
			t.Errorf("ParseRole(%q): %v, want ErrInvalidRole", s, err)
		}
	}
	v, o, a, bad := operators.RoleViewer, operators.RoleOperator, operators.RoleAdmin, operators.Role("root")
	tests := []struct {
		r, min operators.Role
		want   bool
	}{
		{v, v, true}, {v, o, false}, {v, a, false},
		{o, v, true}, {o, o, true}, {o, a, false},
		{a, v, true}, {a, o, true}, {a, a, true},
		{bad, v, false}, {a, bad, false}, {bad, bad, false},
	}
	for _, tt := range tests {
		if got := tt.r.AtLeast(tt.min); got != tt.want {
			t.Errorf("%q.AtLeast(%q) = %v, want %v", tt.r, tt.min, got, tt.want)
		}
	}
}

func TestQRCode(t *testing.T) {
	const uri = "otpauth://totp/quickpay:alice?algorithm=SHA1&digits=6&issuer=quickpay&period=30&secret=JBSWY3DPEHPK3PXP"
	b, err := operators.QRCode(uri)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if r := img.Bounds(); r.Dx() != 256 || r.Dy() != 256 {
		t.Errorf("image %v, want 256×256", r)
	}
	term, err := operators.QRTerminal(uri)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(term, "\n"), "\n")
	// A version-4+ code with its quiet zone is at least 41 modules wide,
	// drawn two rows a line.
	if len(lines) < 20 || len([]rune(lines[0])) < 41 || !strings.ContainsAny(term, "█▀▄") {
		t.Errorf("terminal code of %d lines of %d cells", len(lines), len([]rune(lines[0])))
	}
}

// TestTOTPSecretsFollowDataKeyRotation: EncryptedColumn lets a data key
// rotation re-encrypt the TOTP secrets, so that retiring the old version
// (which checks only registered columns) locks no operator out. Not
// parallel: it rotates the package database's data key, which the other
// tests, paused at t.Parallel until it ends, then use at its new version.
func TestTOTPSecretsFollowDataKeyRotation(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, operators.Config{})
	e := f.create(t, operators.RoleViewer)
	v, err := vaultkeys.New(vaultkeys.Config{Pool: f.pool, HSM: testenv.HSM(t, 2), Columns: []vaultkeys.Column{operators.EncryptedColumn()}})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := v.Rotate(ctx, vaultkeys.PurposeData, "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Reencrypt(ctx, vaultkeys.PurposeData); err != nil {
		t.Fatal(err)
	}
	if err := v.SetMinDecryption(ctx, vaultkeys.PurposeData, pol.Current, "test"); err != nil {
		t.Fatalf("retire the old data key: %v", err)
	}
	var version int
	if err := f.pool.QueryRow(ctx, `SELECT qp_key_version(totp_secret_ct) FROM operators WHERE id = $1`, e.Operator.ID).
		Scan(&version); err != nil {
		t.Fatal(err)
	}
	if version != pol.Current {
		t.Errorf("secret under version %d, want %d", version, pol.Current)
	}
	store, err := operators.NewStore(operators.Config{Pool: f.pool, Sealer: v, Clock: f.clock, BcryptCost: bcrypt.MinCost})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.Login(ctx, e.Operator.Name, e.Password, f.code(t, e, 0), ""); err != nil {
		t.Errorf("login after the rotation: %v", err)
	}
}

// BenchmarkLogin is one right login at the default bcrypt cost (12): the
// slow hash, the TOTP secret opened in the HSM, and the reservation and
// session transactions. Each iteration moves the clock a TOTP step on, so
// its code is new.
func BenchmarkLogin(b *testing.B) {
	f := newFixture(b, operators.Config{BcryptCost: operators.DefaultBcryptCost})
	e := f.create(b, operators.RoleViewer)
	ctx := context.Background()
	for b.Loop() {
		f.clock.Advance(30 * time.Second)
		if _, _, err := f.store.Login(ctx, e.Operator.Name, e.Password, f.code(b, e, 0), ""); err != nil {
			b.Fatal(err)
		}
	}
}
