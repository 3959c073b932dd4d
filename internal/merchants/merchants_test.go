package merchants_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/crypto/bcrypt"

	"github.com/quickpay/quickpay/internal/audit"
	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/ids"
	"github.com/quickpay/quickpay/internal/limits"
	"github.com/quickpay/quickpay/internal/merchants"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

var start = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)

type fixture struct {
	pool  *pgxpool.Pool
	clock *clock.Fake
	store *merchants.Store
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	pool := testenv.Pool(t)
	clk := clock.NewFake(start)
	store, err := merchants.NewStore(merchants.Config{Pool: pool, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	return fixture{pool: pool, clock: clk, store: store}
}

func (f fixture) create(t *testing.T, scopes ...string) (merchants.Merchant, string) {
	t.Helper()
	if len(scopes) == 0 {
		scopes = merchants.AllScopes
	}
	m, secret, err := f.store.Create(context.Background(), "Acme Lending", scopes)
	if err != nil {
		t.Fatal(err)
	}
	return m, secret
}

type loginRow struct {
	MerchantID *string
	Actor      string
	Subject    *string
	Outcome    string
	Failed     *int
	RequestID  *string
	Details    string
}

// logins returns the auth.login audit rows of clientID, oldest first.
func (f fixture) logins(t *testing.T, clientID string) []loginRow {
	t.Helper()
	rows, err := f.pool.Query(context.Background(), `
		SELECT merchant_id, actor, subject, details->>'outcome', (details->>'failed_logins')::int, request_id, details::text
		FROM audit_log WHERE action = 'auth.login' AND subject = $1 ORDER BY id`, clientID)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (loginRow, error) {
		var l loginRow
		err := r.Scan(&l.MerchantID, &l.Actor, &l.Subject, &l.Outcome, &l.Failed, &l.RequestID, &l.Details)
		return l, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func outcomes(rows []loginRow) []string {
	var out []string
	for _, r := range rows {
		out = append(out, r.Outcome)
	}
	return out
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func TestCreate(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := merchants.WithActor(context.Background(), "cli:test")

	t.Run("secret is random, shown once and stored only as a bcrypt hash", func(t *testing.T) {
		m, secret, err := f.store.Create(ctx, "Acme Lending", []string{"bind", "withhold"})
		if err != nil {
			t.Fatal(err)
		}
		raw, err := base64.RawURLEncoding.DecodeString(secret)
		if err != nil || len(raw) < 32 {
			t.Fatalf("secret %d chars decodes to %d bytes (%v), want ≥ 32 bytes of base64url", len(secret), len(raw), err)
		}
		if !ids.Valid("mch", m.ID) || !ids.Valid("qpc", m.ClientID) {
			t.Fatalf("ids %q, %q are not mch_/qpc_ ids", m.ID, m.ClientID)
		}
		var row, hash string
		if err := f.pool.QueryRow(context.Background(),
			`SELECT m::text, client_secret_hash FROM merchants m WHERE id = $1`, m.ID).Scan(&row, &hash); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(row, secret) {
			t.Fatal("the merchants row holds the clear client secret")
		}
		if cost, err := bcrypt.Cost([]byte(hash)); err != nil || cost < 10 {
			t.Fatalf("client_secret_hash cost = %d (%v), want a bcrypt hash of cost ≥ 10", cost, err)
		}
		if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(secret)); err != nil {
			t.Fatalf("stored hash does not match the secret: %v", err)
		}
		var actor, details string
		if err := f.pool.QueryRow(context.Background(),
			`SELECT actor, details::text FROM audit_log WHERE action = 'merchant.create' AND merchant_id = $1`, m.ID).
			Scan(&actor, &details); err != nil {
			t.Fatalf("no merchant.create audit row: %v", err)
		}
		if actor != "cli:test" || !strings.Contains(details, m.ClientID) || strings.Contains(details, secret) {
			t.Fatalf("audit row actor %q details %s: want cli:test, the client id, no secret", actor, details)
		}

		m2, secret2, err := f.store.Create(ctx, "Acme Lending", []string{"bind"})
		if err != nil {
			t.Fatal(err)
		}
		if secret2 == secret || m2.ClientID == m.ClientID || m2.ID == m.ID {
			t.Fatal("a second merchant got the same credentials")
		}
	})

	t.Run("scopes", func(t *testing.T) {
		tests := []struct {
			name string
			in   []string
			want []string
		}{
			{"none", nil, nil},
			{"empty", []string{}, nil},
			{"unknown", []string{"bind", "admin"}, nil},
			{"case matters", []string{"Bind"}, nil},
			{"duplicates collapse", []string{"bind", "bind"}, []string{"bind"}},
			{"canonical order", []string{"withhold", "bind"}, []string{"bind", "withhold"}},
			{"withhold only", []string{"withhold"}, []string{"withhold"}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				m, _, err := f.store.Create(ctx, "Scopes Co", tt.in)
				if tt.want == nil {
					if !errors.Is(err, merchants.ErrInvalidScopes) {
						t.Fatalf("err = %v, want ErrInvalidScopes", err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				got, err := f.store.Get(context.Background(), m.ID)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(m.Scopes, tt.want) || !slices.Equal(got.Scopes, tt.want) {
					t.Fatalf("scopes = %v, stored %v, want %v", m.Scopes, got.Scopes, tt.want)
				}
			})
		}
	})

	t.Run("names", func(t *testing.T) {
		for _, bad := range []string{"", "   ", strings.Repeat("名", 201), "\xff\xfe"} {
			if _, _, err := f.store.Create(ctx, bad, []string{"bind"}); !errors.Is(err, merchants.ErrInvalidName) {
				t.Errorf("Create(%.10q) err = %v, want ErrInvalidName", bad, err)
			}
		}
		if _, _, err := f.store.Create(ctx, strings.Repeat("名", 200), []string{"bind"}); err != nil {
			t.Errorf("a 200-character name: %v", err)
		}
	})
}

func TestGet(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	m, _ := f.create(t)
	got, err := f.store.Get(context.Background(), m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != m.ID || got.ClientID != m.ClientID || got.Name != m.Name || !got.CreatedAt.Equal(m.CreatedAt) ||
		!slices.Equal(got.Scopes, m.Scopes) {
		t.Fatalf("Get = %+v, want %+v", got, m)
	}
	if !got.CreatedAt.Equal(start) {
		t.Errorf("created_at = %v, want the injected clock's %v", got.CreatedAt, start)
	}
	for _, id := range []string{ids.New("mch"), "garbage", ""} {
		if _, err := f.store.Get(context.Background(), id); !errors.Is(err, merchants.ErrNotFound) {
			t.Errorf("Get(%q) err = %v, want ErrNotFound", id, err)
		}
	}
}

func TestAuthenticate(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	m, secret := f.create(t)
	ctx := audit.WithRequestID(context.Background(), "req-auth-1")

	t.Run("right secret", func(t *testing.T) {
		got, err := f.store.Authenticate(ctx, m.ClientID, secret)
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != m.ID || !slices.Equal(got.Scopes, m.Scopes) {
			t.Fatalf("Authenticate = %+v, want %+v", got, m)
		}
	})
	t.Run("wrong secret", func(t *testing.T) {
		if _, err := f.store.Authenticate(ctx, m.ClientID, secret[:len(secret)-1]+"x"); !errors.Is(err, merchants.ErrInvalidClient) {
			t.Fatalf("err = %v, want ErrInvalidClient", err)
		}
	})
	t.Run("unknown client has the same error", func(t *testing.T) {
		unknown := ids.New("qpc")
		if _, err := f.store.Authenticate(ctx, unknown, secret); !errors.Is(err, merchants.ErrInvalidClient) {
			t.Fatalf("err = %v, want ErrInvalidClient", err)
		}
		rows := f.logins(t, unknown)
		if len(rows) != 1 || rows[0].Outcome != "failed" || rows[0].MerchantID != nil {
			t.Fatalf("audit rows for the unknown client = %+v, want one failed without merchant", rows)
		}
	})
	t.Run("client id that is not one is kept out of the trail", func(t *testing.T) {
		// A caller who swapped id and secret.
		if _, err := f.store.Authenticate(ctx, secret, m.ClientID); !errors.Is(err, merchants.ErrInvalidClient) {
			t.Fatalf("err = %v, want ErrInvalidClient", err)
		}
		var n int
		if err := f.pool.QueryRow(context.Background(),
			`SELECT count(*) FROM audit_log a WHERE strpos(a::text, $1) > 0`, secret).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Fatalf("%d audit rows hold the secret", n)
		}
	})
	t.Run("every attempt is audited with the request id", func(t *testing.T) {
		rows := f.logins(t, m.ClientID)
		if got, want := outcomes(rows), []string{"ok", "failed"}; !slices.Equal(got, want) {
			t.Fatalf("outcomes = %v, want %v", got, want)
		}
		for _, r := range rows {
			if r.MerchantID == nil || *r.MerchantID != m.ID || r.Actor != "api:"+m.ClientID ||
				r.RequestID == nil || *r.RequestID != "req-auth-1" || strings.Contains(r.Details, secret) {
				t.Errorf("audit row %+v: want merchant %s, actor api:%s, request id req-auth-1, no secret", r, m.ID, m.ClientID)
			}
		}
	})
}

// TestUnknownClientCostsABcrypt checks the dummy comparison: without it an
// unknown client would answer after one database round trip (about a
// millisecond), a known one only after bcrypt (tens of milliseconds, ten
// times more under the race detector), which tells client ids apart. The
// two are measured in turns, so that load on the machine slows both, and
// the test is not parallel.
func TestUnknownClientCostsABcrypt(t *testing.T) {
	f := newFixture(t)
	m, _ := f.create(t)
	ctx := context.Background()
	timed := func(clientID string) time.Duration {
		t0 := time.Now()
		if _, err := f.store.Authenticate(ctx, clientID, "wrong"); !errors.Is(err, merchants.ErrInvalidClient) {
			t.Fatalf("err = %v, want ErrInvalidClient", err)
		}
		return time.Since(t0)
	}
	var known, unknown []time.Duration
	for range 3 { // three failures do not lock
		known = append(known, timed(m.ClientID))
		unknown = append(unknown, timed(ids.New("qpc")))
	}
	slices.Sort(known)
	slices.Sort(unknown)
	if unknown[1] < known[1]/10 {
		t.Fatalf("unknown client took %v, a known one %v: the unknown path skips bcrypt", unknown[1], known[1])
	}
}

func TestLockoutPerSource(t *testing.T) {
	t.Parallel()
	const stranger, merchant = "203.0.113.7", "198.51.100.2"

	t.Run("ten failures refuse their source until the window passes, even the right secret; other sources work", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		m, secret := f.create(t)
		ctx := context.Background()
		fail := func(n int) {
			t.Helper()
			for i := range n {
				if _, err := f.store.AuthenticateFrom(ctx, m.ClientID, stranger, "wrong"); !errors.Is(err, merchants.ErrInvalidClient) {
					t.Fatalf("failure %d: err = %v, want ErrInvalidClient", i+1, err)
				}
			}
		}
		fail(9)
		// A right secret does not count, from any source.
		if _, err := f.store.AuthenticateFrom(ctx, m.ClientID, stranger, secret); err != nil {
			t.Fatalf("9 failures must not refuse the source: %v", err)
		}
		fail(1)
		_, err := f.store.AuthenticateFrom(ctx, m.ClientID, stranger, secret)
		var th *merchants.ThrottledError
		if !errors.As(err, &th) || !errors.Is(err, merchants.ErrThrottled) || th.RetryAfter != merchants.DefaultTokenFailures.Window {
			t.Fatalf("right secret from the source after 10 failures: %v, want throttled for 15m", err)
		}
		if _, err := f.store.AuthenticateFrom(ctx, m.ClientID, merchant, secret); err != nil {
			t.Fatalf("the merchant's own address: %v", err)
		}
		if _, err := f.store.AuthenticateFrom(ctx, m.ClientID, merchant, "wrong"); !errors.Is(err, merchants.ErrInvalidClient) {
			t.Fatalf("a wrong secret from another address is checked: %v", err)
		}
		f.clock.Advance(merchants.DefaultTokenFailures.Window - time.Second)
		if _, err := f.store.AuthenticateFrom(ctx, m.ClientID, stranger, secret); !errors.Is(err, merchants.ErrThrottled) {
			t.Fatalf("a second before the window passes: %v, want ErrThrottled", err)
		}
		f.clock.Advance(time.Second)
		if _, err := f.store.AuthenticateFrom(ctx, m.ClientID, stranger, secret); err != nil {
			t.Fatalf("after the window: %v", err)
		}

		// Refused attempts cost no audit row; checked ones name their source.
		rows := f.logins(t, m.ClientID)
		want := slices.Concat(repeat("failed", 9), []string{"ok", "failed", "ok", "failed", "ok"})
		if got := outcomes(rows); !slices.Equal(got, want) {
			t.Fatalf("audit outcomes = %v, want %v", got, want)
		}
		if !strings.Contains(rows[0].Details, stranger) || !strings.Contains(rows[11].Details, merchant) {
			t.Errorf("audit rows lack the source: %s; %s", rows[0].Details, rows[11].Details)
		}
		for _, r := range rows {
			if strings.Contains(r.Details, secret) {
				t.Fatal("an audit row holds the secret")
			}
		}
	})

	t.Run("concurrent failures are refused past exactly ten", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		m, _ := f.create(t)
		const n = 13
		errs := make(chan error, n)
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				_, err := f.store.AuthenticateFrom(context.Background(), m.ClientID, stranger, "wrong")
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		invalid, throttled := 0, 0
		for err := range errs {
			switch {
			case errors.Is(err, merchants.ErrThrottled):
				throttled++
			case errors.Is(err, merchants.ErrInvalidClient):
				invalid++
			default:
				t.Fatalf("unexpected error %v", err)
			}
		}
		if invalid != 10 || throttled != n-10 {
			t.Fatalf("%d invalid, %d throttled; want 10 and %d", invalid, throttled, n-10)
		}
		if got := outcomes(f.logins(t, m.ClientID)); !slices.Equal(got, repeat("failed", 10)) {
			t.Fatalf("audit outcomes %v, want 10 failed", got)
		}
	})
}

// TestSourceFailuresAcrossClients: each unknown client id would start a
// count of its own, so one source is also counted across every client id;
// an IPv6 source counts by its /64.
func TestSourceFailuresAcrossClients(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testenv.Pool(t)
	clk := clock.NewFake(start)
	store, err := merchants.NewStore(merchants.Config{Pool: pool, Clock: clk,
		SourceFailures: limits.Rule{Cap: 3, Window: 15 * time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	m, secret, err := store.Create(ctx, "Acme Lending", merchants.AllScopes)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("made-up client ids", func(t *testing.T) {
		const source = "192.0.2.77"
		for i := range 3 {
			if _, err := store.AuthenticateFrom(ctx, fmt.Sprintf("cli_madeup%d", i), source, "wrong"); !errors.Is(err, merchants.ErrInvalidClient) {
				t.Fatalf("failure %d: %v, want ErrInvalidClient", i+1, err)
			}
		}
		if _, err := store.AuthenticateFrom(ctx, m.ClientID, source, secret); !errors.Is(err, merchants.ErrThrottled) {
			t.Fatalf("a fourth client id from the source: %v, want ErrThrottled", err)
		}
		if _, err := store.AuthenticateFrom(ctx, m.ClientID, "192.0.2.78", secret); err != nil {
			t.Fatalf("another source: %v", err)
		}
	})
	t.Run("one IPv6 /64", func(t *testing.T) {
		for i := range 3 {
			if _, err := store.AuthenticateFrom(ctx, m.ClientID, fmt.Sprintf("2001:db8:1:1::%x", i+1), "wrong"); !errors.Is(err, merchants.ErrInvalidClient) {
				t.Fatalf("failure %d: %v, want ErrInvalidClient", i+1, err)
			}
		}
		if _, err := store.AuthenticateFrom(ctx, m.ClientID, "2001:db8:1:1::ffff", secret); !errors.Is(err, merchants.ErrThrottled) {
			t.Fatalf("another address of the /64: %v, want ErrThrottled", err)
		}
		if _, err := store.AuthenticateFrom(ctx, m.ClientID, "2001:db8:1:2::1", secret); err != nil {
			t.Fatalf("another /64: %v", err)
		}
	})
}

func TestRPSCeiling(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := merchants.WithActor(context.Background(), "cli:test")
	// stored is the rps_ceiling column, nil for NULL.
	stored := func(t *testing.T, id string) *int {
		t.Helper()
		var n *int
		if err := f.pool.QueryRow(context.Background(), `SELECT rps_ceiling FROM merchants WHERE id = $1`, id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// ceiling wants the ceiling as Get, RPSCeiling and Authenticate read it.
	ceiling := func(t *testing.T, m merchants.Merchant, secret string, want int) {
		t.Helper()
		got, err := f.store.Get(context.Background(), m.ID)
		if err != nil {
			t.Fatal(err)
		}
		n, err := f.store.RPSCeiling(context.Background(), m.ID)
		if err != nil {
			t.Fatal(err)
		}
		auth, err := f.store.Authenticate(context.Background(), m.ClientID, secret)
		if err != nil {
			t.Fatal(err)
		}
		if got.RPSCeiling != want || n != want || auth.RPSCeiling != want {
			t.Fatalf("ceiling: Get %d, RPSCeiling %d, Authenticate %d; want %d", got.RPSCeiling, n, auth.RPSCeiling, want)
		}
	}
	type auditRow struct {
		Actor, Details string
	}
	audits := func(t *testing.T, id, action string) []auditRow {
		t.Helper()
		rows, err := f.pool.Query(context.Background(),
			`SELECT actor, details::text FROM audit_log WHERE action = $1 AND merchant_id = $2 ORDER BY id`, action, id)
		if err != nil {
			t.Fatal(err)
		}
		out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[auditRow])
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	t.Run("none by default: NULL", func(t *testing.T) {
		m, secret := f.create(t)
		if m.RPSCeiling != 0 || stored(t, m.ID) != nil {
			t.Fatalf("ceiling %d, stored %v; want none, NULL", m.RPSCeiling, stored(t, m.ID))
		}
		ceiling(t, m, secret, 0)
		if a := audits(t, m.ID, "merchant.create"); len(a) != 1 || strings.Contains(a[0].Details, "rps_ceiling") {
			t.Fatalf("merchant.create audit %+v: want one row without rps_ceiling", a)
		}
	})

	t.Run("given at creation, changed and taken away, each audited", func(t *testing.T) {
		m, secret, err := f.store.CreateWith(ctx, merchants.NewMerchant{Name: "Ceiling Co", Scopes: []string{"bind"}, RPSCeiling: 3})
		if err != nil {
			t.Fatal(err)
		}
		if m.RPSCeiling != 3 {
			t.Fatalf("created with ceiling %d, want 3", m.RPSCeiling)
		}
		ceiling(t, m, secret, 3)
		if a := audits(t, m.ID, "merchant.create"); len(a) != 1 || !strings.Contains(a[0].Details, `"rps_ceiling": 3`) {
			t.Fatalf("merchant.create audit %+v: want rps_ceiling 3", a)
		}
		if err := f.store.SetRPSCeiling(ctx, m.ID, 5); err != nil {
			t.Fatal(err)
		}
		ceiling(t, m, secret, 5)
		if err := f.store.SetRPSCeiling(ctx, m.ID, 0); err != nil {
			t.Fatal(err)
		}
		ceiling(t, m, secret, 0)
		if n := stored(t, m.ID); n != nil {
			t.Fatalf("rps_ceiling = %d after 0, want NULL", *n)
		}
		a := audits(t, m.ID, "merchant.rps_ceiling")
		if len(a) != 2 || a[0].Actor != "cli:test" ||
			!strings.Contains(a[0].Details, `"rps_ceiling": 5`) || !strings.Contains(a[0].Details, `"previous": 3`) ||
			!strings.Contains(a[1].Details, `"rps_ceiling": 0`) || !strings.Contains(a[1].Details, `"previous": 5`) {
			t.Fatalf("merchant.rps_ceiling audit rows %+v: want 3→5 then 5→0 by cli:test", a)
		}
	})

	t.Run("refused: out of range, unknown merchant", func(t *testing.T) {
		m, secret, err := f.store.CreateWith(ctx, merchants.NewMerchant{Name: "Ceiling Co", Scopes: []string{"bind"}, RPSCeiling: 7})
		if err != nil {
			t.Fatal(err)
		}
		for _, bad := range []int{-1, merchants.MaxRPSCeiling + 1} {
			if err := f.store.SetRPSCeiling(ctx, m.ID, bad); !errors.Is(err, merchants.ErrInvalidRPSCeiling) {
				t.Errorf("SetRPSCeiling(%d) err = %v, want ErrInvalidRPSCeiling", bad, err)
			}
			if _, _, err := f.store.CreateWith(ctx, merchants.NewMerchant{Name: "X", Scopes: []string{"bind"}, RPSCeiling: bad}); !errors.Is(err, merchants.ErrInvalidRPSCeiling) {
				t.Errorf("CreateWith(ceiling %d) err = %v, want ErrInvalidRPSCeiling", bad, err)
			}
		}
		if err := f.store.SetRPSCeiling(ctx, m.ID, merchants.MaxRPSCeiling); err != nil {
			t.Fatalf("the highest ceiling: %v", err)
		}
		ceiling(t, m, secret, merchants.MaxRPSCeiling)
		for _, id := range []string{ids.New("mch"), "garbage"} {
			if err := f.store.SetRPSCeiling(ctx, id, 1); !errors.Is(err, merchants.ErrNotFound) {
				t.Errorf("SetRPSCeiling(%q) err = %v, want ErrNotFound", id, err)
			}
			if _, err := f.store.RPSCeiling(context.Background(), id); !errors.Is(err, merchants.ErrNotFound) {
				t.Errorf("RPSCeiling(%q) err = %v, want ErrNotFound", id, err)
			}
		}
		if n := len(audits(t, m.ID, "merchant.rps_ceiling")); n != 1 {
			t.Fatalf("%d merchant.rps_ceiling audit rows, want 1 (refusals write none)", n)
		}
	})
}
