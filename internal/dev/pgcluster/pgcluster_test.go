package pgcluster_test

import (
	"context"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/quickpay/quickpay/internal/dev/pgcluster"
)

// clusterDir returns a data directory the cluster can use. As root the
// server runs as postgres, which must be able to traverse every parent;
// t.TempDir's parents are 0700, so the base is made here and opened to 0755.
func clusterDir(t *testing.T) string {
	t.Helper()
	base, err := os.MkdirTemp("", "qp-pgcluster-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(base, "data")
}

// start starts a cluster on dir and stops it when t ends unless the test
// stopped it already.
func start(t *testing.T, dir string) (c *pgcluster.Cluster, stop func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, dir)
	if err != nil {
		t.Fatalf("Start(%s): %v", dir, err)
	}
	stopped := false
	stop = func() {
		t.Helper()
		stopped = true
		if err := c.Stop(); err != nil {
			t.Fatalf("Stop: %v", err)
		}
	}
	t.Cleanup(func() {
		if !stopped {
			_ = c.Stop()
		}
	})
	return c, stop
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// keepRow writes the row a later start of the cluster must find (wantKept).
func keepRow(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), `CREATE TABLE survives_restart (v text); INSERT INTO survives_restart VALUES ('kept')`); err != nil {
		t.Fatal(err)
	}
}

// wantKept checks that the row keepRow wrote is there.
func wantKept(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	var v string
	if err := conn.QueryRow(context.Background(), `SELECT v FROM survives_restart`).Scan(&v); err != nil || v != "kept" {
		t.Fatalf("row from the first run = %q, %v", v, err)
	}
}

func TestStartStopRestart(t *testing.T) {
	ctx := context.Background()
	dir := clusterDir(t)

	c, stop := start(t, dir)
	if c.Port == 0 {
		t.Fatal("cluster has no port")
	}
	firstURL := c.URL("postgres")
	conn := connect(t, firstURL)

	t.Run("answers queries", func(t *testing.T) {
		var one int
		if err := conn.QueryRow(ctx, `SELECT 1`).Scan(&one); err != nil || one != 1 {
			t.Fatalf("SELECT 1 = %d, %v", one, err)
		}
		var addr string
		if err := conn.QueryRow(ctx, `SELECT host(inet_server_addr())`).Scan(&addr); err != nil || addr != "127.0.0.1" {
			t.Fatalf("server address = %q, %v; want loopback", addr, err)
		}
	})

	keepRow(t, conn)
	_ = conn.Close(ctx)
	if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); err != nil {
		t.Fatalf("no cluster in %s: %v", dir, err)
	}
	stop()

	t.Run("stop ends the server", func(t *testing.T) {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(cctx, firstURL); err == nil {
			_ = conn.Close(ctx)
			t.Fatal("the stopped cluster still accepts connections")
		}
		if _, err := os.Stat(filepath.Join(dir, "postmaster.pid")); !os.IsNotExist(err) {
			t.Fatalf("postmaster.pid still present after Stop: %v", err)
		}
	})

	t.Run("second start reuses the data", func(t *testing.T) {
		c2, stop2 := start(t, dir)
		conn2 := connect(t, c2.URL("postgres"))
		wantKept(t, conn2)
		_ = conn2.Close(ctx)
		stop2()
	})

	t.Run("restart ends sessions and comes back on the same port", func(t *testing.T) {
		c2, stop2 := start(t, dir)
		defer stop2()
		before := connect(t, c2.URL("postgres"))
		defer before.Close(ctx)
		if created, err := c2.EnsureDatabase(ctx, "kept"); err != nil || !created {
			t.Fatalf("EnsureDatabase(kept) = %v, %v; want created", created, err)
		}
		if created, err := c2.EnsureDatabase(ctx, "kept"); err != nil || created {
			t.Fatalf("EnsureDatabase(kept) again = %v, %v; want it found", created, err)
		}
		if err := c2.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		if err := before.Ping(ctx); err == nil {
			t.Fatal("a session from before the restart still answers")
		}
		after := connect(t, c2.URL("kept"))
		defer after.Close(ctx)
		wantKept(t, connect(t, c2.URL("postgres")))
	})

	t.Run("start over a running cluster takes it over", func(t *testing.T) {
		// What `quickpay dev` meets after it was killed: the server still
		// runs, on a port nobody recorded.
		old, _ := start(t, dir)
		oldConn := connect(t, old.URL("postgres"))
		var oldStart time.Time
		if err := oldConn.QueryRow(ctx, `SELECT pg_postmaster_start_time()`).Scan(&oldStart); err != nil {
			t.Fatal(err)
		}
		c3, stop3 := start(t, dir)
		if err := oldConn.Ping(ctx); err == nil {
			t.Fatal("a session on the leftover server survived the second Start")
		}
		conn3 := connect(t, c3.URL("postgres"))
		var newStart time.Time
		if err := conn3.QueryRow(ctx, `SELECT pg_postmaster_start_time()`).Scan(&newStart); err != nil {
			t.Fatal(err)
		}
		if !newStart.After(oldStart) {
			t.Fatalf("server started at %s, not after the leftover's %s: it was not restarted", newStart, oldStart)
		}
		wantKept(t, conn3)
		_ = conn3.Close(ctx)
		stop3()
	})
}

// TestStartUnderPrivateParent starts a cluster where `quickpay dev` keeps
// it, .quickpay/pg of a checkout under a folder only root may enter (a
// clone in `mktemp -d`). As root the server runs as postgres, which cannot
// traverse that folder: the data must land where it can, the folder must
// keep its mode, and a second start must find the first one's data.
func TestStartUnderPrivateParent(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root runs the server as another user")
	}
	ctx := context.Background()
	private, err := os.MkdirTemp("", "qp-private-parent-") // mode 0700
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(private, "checkout", ".quickpay", "pg")
	t.Cleanup(func() {
		if target, err := filepath.EvalSymlinks(dir); err == nil {
			_ = os.RemoveAll(target)
		}
		_ = os.RemoveAll(private)
	})

	c, stop := start(t, dir)
	conn := connect(t, c.URL("postgres"))
	keepRow(t, conn)
	_ = conn.Close(ctx)
	stop()

	t.Run("the private folder keeps its mode", func(t *testing.T) {
		fi, err := os.Stat(private)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 {
			t.Fatalf("%s has mode %o after Start, want 0700", private, fi.Mode().Perm())
		}
	})
	t.Run("the data is postgres's own and private", func(t *testing.T) {
		target, err := os.Readlink(dir)
		if err != nil {
			t.Fatalf("%s is not a link to the data: %v", dir, err)
		}
		if target != c.Dir {
			t.Fatalf("%s links to %s, but the cluster ran on %s", dir, target, c.Dir)
		}
		if strings.HasPrefix(target, private+"/") {
			t.Fatalf("data %s is still under the private folder", target)
		}
		fi, err := os.Stat(target)
		if err != nil {
			t.Fatal(err)
		}
		pg, err := user.Lookup("postgres")
		if err != nil {
			t.Fatal(err)
		}
		if uid := strconv.Itoa(int(fi.Sys().(*syscall.Stat_t).Uid)); uid != pg.Uid || fi.Mode().Perm() != 0o700 {
			t.Fatalf("data dir owner uid %s mode %o, want postgres (%s) and 0700", uid, fi.Mode().Perm(), pg.Uid)
		}
		if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); err != nil {
			t.Fatalf("no cluster through the link: %v", err)
		}
	})
	t.Run("second start reuses the data", func(t *testing.T) {
		c2, stop2 := start(t, dir)
		if c2.Dir != c.Dir {
			t.Fatalf("second start ran on %s, the first on %s", c2.Dir, c.Dir)
		}
		conn2 := connect(t, c2.URL("postgres"))
		wantKept(t, conn2)
		_ = conn2.Close(ctx)
		stop2()
	})
}

// TestStartUnderPrivateParentLeftovers: what an older quickpay left in
// .quickpay/pg under a private folder. An empty directory (its initdb
// failed) gives way to the link; one holding files is someone's data and is
// refused, untouched.
func TestStartUnderPrivateParentLeftovers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root runs the server as another user")
	}
	private, err := os.MkdirTemp("", "qp-private-parent-") // mode 0700
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(private) })

	t.Run("an empty directory is replaced by the link", func(t *testing.T) {
		dir := filepath.Join(private, "empty", ".quickpay", "pg")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if target, err := filepath.EvalSymlinks(dir); err == nil && target != dir {
				_ = os.RemoveAll(target)
			}
		})
		c, stop := start(t, dir)
		stop()
		if target, err := os.Readlink(dir); err != nil || target != c.Dir {
			t.Fatalf("%s: link to %q (%v), want one to %s", dir, target, err, c.Dir)
		}
	})
	t.Run("a directory holding files is refused", func(t *testing.T) {
		dir := filepath.Join(private, "full", ".quickpay", "pg")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		kept := filepath.Join(dir, "PG_VERSION")
		if err := os.WriteFile(kept, []byte("15\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if c, err := pgcluster.Start(ctx, dir); err == nil {
			_ = c.Stop()
			t.Fatalf("Start over an unreachable directory with files succeeded, on %s", c.Dir)
		} else if !strings.Contains(err.Error(), "cannot reach") {
			t.Fatalf("Start: %v; want it to say the postgres user cannot reach the directory", err)
		}
		if _, err := os.Stat(kept); err != nil {
			t.Fatalf("the directory's file is gone: %v", err)
		}
	})
}
