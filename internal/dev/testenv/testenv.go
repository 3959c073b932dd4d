// Package testenv gives test packages the real components quickpay runs on:
// a fresh PostgreSQL database per test package (cloned from a migrated
// template), a real Vault server on loopback, and a fresh SoftHSM2 token in a
// temp dir with its PIN stored in that Vault.
//
// Use it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
//
// Each component starts on first use and stops when the package's tests end.
// A component that cannot start fails the test with a message that says what
// to install or start; nothing falls back to a fake.
//
// Environment:
//   - QUICKPAY_TEST_DATABASE_URL: the server to create databases on
//     (default postgres://postgres@127.0.0.1:5432/postgres). When nothing
//     answers there, a private cluster is started in a temp dir.
//   - QUICKPAY_DEVVAULT: the devvault binary (default .quickpay/bin/devvault
//     at the module root; built on first use if missing).
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/miekg/pkcs11"

	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/dev/devstack"
	"github.com/quickpay/quickpay/internal/dev/pgcluster"
	"github.com/quickpay/quickpay/internal/dev/sim"
	"github.com/quickpay/quickpay/softhsm"
	"github.com/quickpay/quickpay/vaultkeys"
)

const defaultAdminURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// HSMPINPath is where testenv stores the token's user PIN in Vault, as
// production does.
const HSMPINPath = "secret/quickpay/hsm"

type env struct {
	mu       sync.Mutex
	cleanups []func()
	sims     []*sim.Sim // every Stack's banksim, for a package's leak scan

	dbURL   string
	dbErr   error
	dbOnce  sync.Once
	vault   *devstack.Vault
	vErr    error
	vOnce   sync.Once
	hsm     *softhsm.Token
	p11     *pkcs11.Ctx
	hsmErr  error
	hsmOnce sync.Once
}

// The one environment of this test process. Test binaries are one process
// per package, so this is per package.
var pkgEnv = &env{}

func (e *env) onExit(f func()) {
	e.mu.Lock()
	e.cleanups = append(e.cleanups, f)
	e.mu.Unlock()
}

// Main runs the package's tests and then stops everything testenv started.
//
// Each after func runs once the tests have passed, before anything stops
// (a package's leak scan of its database and logs); an error it returns
// is printed and fails the package.
func Main(m *testing.M, after ...func() error) int {
	code := m.Run()
	for _, f := range after {
		if code != 0 {
			break
		}
		if err := f(); err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: after the tests: %v\n", err)
			code = 1
		}
	}
	pkgEnv.mu.Lock()
	cs := pkgEnv.cleanups
	pkgEnv.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
	return code
}

// DatabaseURL returns the URL of this package's fresh, migrated database.
func DatabaseURL(t testing.TB) string {
	t.Helper()
	pkgEnv.dbOnce.Do(func() { pkgEnv.dbURL, pkgEnv.dbErr = newDatabase() })
	if pkgEnv.dbErr != nil {
		t.Fatalf("testenv: postgres: %v", pkgEnv.dbErr)
	}
	return pkgEnv.dbURL
}

// Pool opens a pool on this package's database, closed when t ends.
func Pool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	return PoolOf(t, 0)
}

// PoolOf is Pool with at most maxConns connections (0: db.Open's default),
// for tests of what a pool running out of connections does.
func PoolOf(t testing.TB, maxConns int32) *pgxpool.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := db.Open(ctx, db.Config{URL: DatabaseURL(t), MaxConns: maxConns})
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

var nonWord = regexp.MustCompile(`[^a-z0-9]+`)

func newDatabase() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	admin := os.Getenv("QUICKPAY_TEST_DATABASE_URL")
	if admin == "" {
		admin = defaultAdminURL
	}
	conn, err := connect(ctx, admin)
	if err != nil {
		// No server here: run a private one for this package.
		dir, derr := os.MkdirTemp("", "quickpay-testpg-")
		if derr != nil {
			return "", derr
		}
		c, serr := pgcluster.Start(ctx, dir)
		if serr != nil {
			return "", fmt.Errorf("nothing answers at %s (%v) and a private cluster failed: %w", admin, err, serr)
		}
		pkgEnv.onExit(func() { _ = c.Stop(); _ = os.RemoveAll(dir) })
		admin = c.URL("postgres")
		if conn, err = connect(ctx, admin); err != nil {
			return "", err
		}
	}
	defer conn.Close(context.Background())

	hash, err := db.SchemaHash()
	if err != nil {
		return "", err
	}
	tmpl := "qp_tmpl_" + hash
	// One migrator per server at a time; others wait and then clone.
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(hashtext('quickpay.testenv.template'))`); err != nil {
		return "", err
	}
	defer conn.Exec(context.Background(), `SELECT pg_advisory_unlock(hashtext('quickpay.testenv.template'))`)
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, tmpl).Scan(&exists); err != nil {
		return "", err
	}
	if !exists {
		if err := buildTemplate(ctx, conn, admin, tmpl); err != nil {
			return "", fmt.Errorf("template database: %w", err)
		}
	}
	pkg := nonWord.ReplaceAllString(strings.ToLower(strings.TrimSuffix(filepath.Base(os.Args[0]), ".test")), "_")
	name := fmt.Sprintf("qp_test_%.20s_%s", pkg, randHex(4))
	if _, err := conn.Exec(ctx, fmt.Sprintf(`CREATE DATABASE %s TEMPLATE %s`, ident(name), ident(tmpl))); err != nil {
		return "", fmt.Errorf("create test database: %w", err)
	}
	pkgEnv.onExit(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if c, err := connect(ctx, admin); err == nil {
			_, _ = c.Exec(ctx, fmt.Sprintf(`DROP DATABASE IF EXISTS %s WITH (FORCE)`, ident(name)))
			c.Close(ctx)
		}
	})
	return withDatabase(admin, name)
}

// buildTemplate migrates a scratch database and renames it to tmpl, so a
// half-built template is never cloned. Older templates are dropped.
func buildTemplate(ctx context.Context, conn *pgx.Conn, admin, tmpl string) error {
	scratch := tmpl + "_build"
	if _, err := conn.Exec(ctx, fmt.Sprintf(`DROP DATABASE IF EXISTS %s WITH (FORCE)`, ident(scratch))); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf(`CREATE DATABASE %s`, ident(scratch))); err != nil {
		return err
	}
	url, err := withDatabase(admin, scratch)
	if err != nil {
		return err
	}
	pool, err := db.Open(ctx, db.Config{URL: url})
	if err != nil {
		return err
	}
	err = db.Migrate(ctx, pool)
	pool.Close()
	if err != nil {
		return err
	}
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE datname LIKE 'qp\_tmpl\_%' AND datname <> $1 AND datname NOT LIKE '%\_build'`, tmpl)
	if err != nil {
		return err
	}
	old, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, o := range old {
		_, _ = conn.Exec(ctx, fmt.Sprintf(`ALTER DATABASE %s IS_TEMPLATE false`, ident(o)))
		_, _ = conn.Exec(ctx, fmt.Sprintf(`DROP DATABASE IF EXISTS %s WITH (FORCE)`, ident(o)))
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf(`ALTER DATABASE %s RENAME TO %s`, ident(scratch), ident(tmpl))); err != nil {
		return err
	}
	_, err = conn.Exec(ctx, fmt.Sprintf(`ALTER DATABASE %s IS_TEMPLATE true`, ident(tmpl)))
	return err
}

func connect(ctx context.Context, dsn string) (*pgx.Conn, error) {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return pgx.Connect(cctx, dsn)
}

func withDatabase(admin, name string) (string, error) {
	u, err := url.Parse(admin)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", fmt.Errorf("testenv: QUICKPAY_TEST_DATABASE_URL must be a postgres:// URL")
	}
	// The server's address stays as given: host and port, or a Unix
	// socket's directory in ?host=.
	u.Path, u.RawPath = "/"+name, ""
	q := u.Query()
	if q.Get("sslmode") == "" {
		q.Set("sslmode", "disable")
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Vault returns this package's Vault server, started on first use.
func Vault(t testing.TB) *devstack.Vault {
	t.Helper()
	pkgEnv.vOnce.Do(func() {
		pkgEnv.vault, pkgEnv.vErr = devstack.StartVault(context.Background(), "")
		if pkgEnv.vErr == nil {
			v := pkgEnv.vault
			pkgEnv.onExit(func() { _ = v.Stop() })
		}
	})
	if pkgEnv.vErr != nil {
		t.Fatalf("testenv: vault: %v", pkgEnv.vErr)
	}
	return pkgEnv.vault
}

// StartVault starts a Vault server of t's own, stopped when t ends (or
// earlier, by the test).
func StartVault(t testing.TB) *devstack.Vault {
	t.Helper()
	v, err := devstack.StartVault(context.Background(), "")
	if err != nil {
		t.Fatalf("testenv: vault: %v", err)
	}
	t.Cleanup(func() { _ = v.Stop() })
	return v
}

// Secrets returns a Vault client on this package's Vault server.
func Secrets(t testing.TB) *vaultkeys.Secrets {
	t.Helper()
	v := Vault(t)
	s, err := vaultkeys.NewSecrets(context.Background(), vaultkeys.SecretsConfig{Addr: v.Addr, Token: v.Token})
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// SoftHSM returns this package's token, provisioned on first use in a temp
// dir with the initial key versions; its PIN is in Vault at HSMPINPath.
func SoftHSM(t testing.TB) *softhsm.Token {
	t.Helper()
	sec := Secrets(t)
	pkgEnv.hsmOnce.Do(func() {
		dir, err := os.MkdirTemp("", "quickpay-softhsm-")
		if err != nil {
			pkgEnv.hsmErr = err
			return
		}
		pkgEnv.onExit(func() { _ = os.RemoveAll(dir) })
		pin, so := randHex(8), randHex(8)
		pkgEnv.hsm, pkgEnv.hsmErr = softhsm.Provision(context.Background(), softhsm.Config{
			Dir: dir, TokenLabel: "quickpay-test", UserPIN: pin, SOPIN: so, Keys: vaultkeys.FirstLabels(),
		})
		if pkgEnv.hsmErr != nil {
			return
		}
		if pkgEnv.hsmErr = sec.Write(context.Background(), HSMPINPath, map[string]any{"pin": pin}); pkgEnv.hsmErr != nil {
			return
		}
		// The module's state is process-wide: one initialized context serves
		// every HSM a test opens, and is finalized only at exit.
		p := pkcs11.New(pkgEnv.hsm.Module)
		if err := p.Initialize(); err != nil {
			pkgEnv.hsmErr = fmt.Errorf("initialize %s: %w", pkgEnv.hsm.Module, err)
			return
		}
		pkgEnv.p11 = p
		pkgEnv.onExit(func() { _ = p.Finalize(); p.Destroy() })
	})
	if pkgEnv.hsmErr != nil {
		t.Fatalf("testenv: softhsm: %v", pkgEnv.hsmErr)
	}
	return pkgEnv.hsm
}

// HSM opens a session pool on this package's token with the PIN read from
// Vault, closed when t ends.
func HSM(t testing.TB, poolSize int) *vaultkeys.HSM {
	t.Helper()
	tok := SoftHSM(t)
	h, err := vaultkeys.NewHSM(context.Background(), pkgEnv.p11, vaultkeys.HSMConfig{
		TokenLabel: tok.Label, PIN: Secrets(t).PIN(HSMPINPath, "pin"), PoolSize: poolSize,
	})
	if err != nil {
		t.Fatalf("testenv: open hsm: %v", err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

// PGDump returns a pg_dump (SQL text) of this package's database, for scans
// that prove no sensitive value is stored in clear.
func PGDump(t testing.TB) string {
	t.Helper()
	out, err := dump(DatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Dump is PGDump after the tests (Main's after funcs): the package's
// database as the tests left it.
func Dump() (string, error) {
	pkgEnv.dbOnce.Do(func() { pkgEnv.dbErr = errors.New("no test of the package made its database") })
	if pkgEnv.dbErr != nil {
		return "", pkgEnv.dbErr
	}
	return dump(pkgEnv.dbURL)
}

func dump(url string) (string, error) {
	bin, err := exec.LookPath("pg_dump")
	if err != nil {
		dir, derr := pgcluster.BinDir()
		if derr != nil {
			return "", fmt.Errorf("pg_dump not found: %v", err)
		}
		bin = filepath.Join(dir, "pg_dump")
	}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return "", err
	}
	out, err := exec.Command(bin, "--no-owner", "-h", cfg.Host, "-p", fmt.Sprint(cfg.Port), "-U", cfg.User, cfg.Database).Output()
	if err != nil {
		return "", fmt.Errorf("pg_dump: %w", err)
	}
	return string(out), nil
}

// Sims returns the banksim of every Stack this package made.
func Sims() []*sim.Sim {
	pkgEnv.mu.Lock()
	defer pkgEnv.mu.Unlock()
	return slices.Clone(pkgEnv.sims)
}

// Strings returns the rows of a query of one text column, in order,
// failing t on an error.
func Strings(t testing.TB, pool *pgxpool.Pool, sql string, args ...any) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}
