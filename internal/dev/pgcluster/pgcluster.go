// Package pgcluster runs a private PostgreSQL cluster with the installed
// initdb and pg_ctl, for `quickpay dev` and for tests on machines where no
// server listens. It listens on loopback TCP only, with trust auth for the
// postgres user.
//
// # Running as root
//
// PostgreSQL refuses to run as root, so as root the tools run as the
// "postgres" user (runuser), which must be able to reach the data
// directory. A checkout under a folder only root may enter (a clone in
// /root, a `mktemp -d` folder: mode 0700) hides its .quickpay/pg from that
// user. Start does not open the user's folders for it; it keeps the data in
// the postgres user's home instead, in <home>/quickpay/<name>, owned by
// postgres with mode 0700, and makes the requested directory a symbolic link
// to it. The link is the record: the next Start on the same path follows it
// to the same data, and removing the checkout's state leaves a directory
// under <home>/quickpay that `rm -rf` of the link's target removes.
package pgcluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Cluster is a running private cluster.
type Cluster struct {
	// Dir is the data directory the server runs on: the directory given to
	// Start, or the one in the postgres user's home it links to (see the
	// package doc).
	Dir  string
	Port int
	bin  string
}

// BinDir finds the directory with initdb and pg_ctl: PATH first, then
// Debian's /usr/lib/postgresql/<newest>/bin.
func BinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(matches, func(i, j int) bool { return version(matches[i]) > version(matches[j]) })
	if len(matches) > 0 {
		return filepath.Dir(matches[0]), nil
	}
	return "", errors.New("initdb not found: install PostgreSQL (`apt-get install postgresql`; `make run` does it)")
}

func version(p string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(p))))
	return n
}

// Start initializes dir as a cluster if it is not one yet and starts it on a
// free loopback port. When running as root it runs the server as the
// "postgres" user, since PostgreSQL refuses to run as root; if that user
// cannot reach dir, the data lives in its home and dir links there (package
// doc, "Running as root").
func Start(ctx context.Context, dir string) (*Cluster, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if dir, err = placeData(ctx, dir); err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, bin: bin}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := c.chown(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		if out, err := c.run(ctx, "initdb", "-D", dir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-instructions"); err != nil {
			return nil, fmt.Errorf("initdb %s: %w\n%s", dir, err, out)
		}
	}
	// A cluster left running by a killed `quickpay dev` is stopped first, so
	// this start owns it and knows its port.
	if _, err := os.Stat(filepath.Join(dir, "postmaster.pid")); err == nil {
		if _, err := c.run(ctx, "pg_ctl", "-D", dir, "status"); err == nil {
			if out, err := c.run(ctx, "pg_ctl", "-D", dir, "-m", "fast", "-w", "stop"); err != nil {
				return nil, fmt.Errorf("stop leftover cluster in %s: %w\n%s", dir, err, out)
			}
		}
	}
	// The port is free when picked but could be taken before the server
	// binds it; try a few.
	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		c.Port = port
		opts := fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=200", port)
		out, err := c.run(ctx, "pg_ctl", "-D", dir, "-l", filepath.Join(dir, "server.log"), "-o", opts, "-w", "-t", "60", "start")
		if err == nil {
			return c, nil
		}
		lastErr = fmt.Errorf("pg_ctl start %s: %w\n%s (see %s)", dir, err, out, filepath.Join(dir, "server.log"))
	}
	return nil, lastErr
}

// URL is the connection URL of database name on the cluster.
func (c *Cluster) URL(name string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.Port, name)
}

// EnsureDatabase creates database name in the cluster unless it exists,
// and reports whether it created it.
func (c *Cluster) EnsureDatabase(ctx context.Context, name string) (created bool, err error) {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return false, err
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return false, err
	}
	if exists {
		return false, nil
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return false, err
	}
	return true, nil
}

// Stop shuts the cluster down (fast mode) and waits for it.
func (c *Cluster) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := c.run(ctx, "pg_ctl", "-D", c.Dir, "-m", "fast", "-w", "stop"); err != nil {
		return fmt.Errorf("pg_ctl stop: %w\n%s", err, out)
	}
	return nil
}

// Restart shuts the cluster down (fast mode: sessions are ended, as a
// crash or a failover would end them) and starts it again on the same
// port, waiting at most a minute for it to accept connections.
func (c *Cluster) Restart(ctx context.Context) error {
	args := []string{"-D", c.Dir, "-m", "fast", "-l", filepath.Join(c.Dir, "server.log"), "-w", "-t", "60", "restart"}
	if out, err := c.run(ctx, "pg_ctl", args...); err != nil {
		return fmt.Errorf("pg_ctl restart: %w\n%s", err, out)
	}
	return nil
}

func (c *Cluster) run(ctx context.Context, tool string, args ...string) ([]byte, error) {
	path := filepath.Join(c.bin, tool)
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, path, args...)
	}
	cmd.Dir = c.Dir
	return cmd.CombinedOutput()
}

// chown hands dir to the postgres user when running as root.
func (c *Cluster) chown() error {
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := postgresUser()
	if err != nil {
		return err
	}
	return filepath.Walk(c.Dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, u.uid, u.gid)
	})
}

type account struct {
	uid, gid int
	home     string
}

func postgresUser() (account, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return account{}, fmt.Errorf("running as root needs a postgres user to run the server as: %w", err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return account{}, fmt.Errorf("postgres user has a non-numeric uid %q or gid %q", u.Uid, u.Gid)
	}
	return account{uid: uid, gid: gid, home: u.HomeDir}, nil
}

// placeData returns the directory the cluster's data lives in for dir: dir
// itself, unless the process is root and the postgres user cannot reach
// dir; then a directory in that user's home, which dir becomes a link to
// (or already is, from an earlier Start).
func placeData(ctx context.Context, dir string) (string, error) {
	if os.Geteuid() != 0 {
		return dir, nil
	}
	if fi, err := os.Lstat(dir); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		target, err := filepath.EvalSymlinks(dir)
		if err != nil {
			return "", fmt.Errorf("%s links to a cluster directory that is gone (%w); remove the link to start a new cluster", dir, err)
		}
		return target, nil
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", err
	}
	if postgresCanEnter(ctx, parent) {
		return dir, nil
	}
	// A directory left by an earlier failed initdb is empty and can go;
	// one with files in it is someone's data, which this does not move.
	switch entries, err := os.ReadDir(dir); {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return "", err
	case len(entries) > 0:
		return "", fmt.Errorf("the postgres user cannot reach %s, which already holds files: move them away (a new cluster is then made in the postgres user's home and linked there)", dir)
	default:
		if err := os.Remove(dir); err != nil {
			return "", err
		}
	}
	pg, err := postgresUser()
	if err != nil {
		return "", err
	}
	if pg.home == "" || !postgresCanEnter(ctx, pg.home) {
		return "", fmt.Errorf("the postgres user can reach neither %s nor its home directory %q: give it a home it owns (Debian: /var/lib/postgresql)", parent, pg.home)
	}
	base := filepath.Join(pg.home, "quickpay")
	if err := os.MkdirAll(base, 0o700); err != nil {
		return "", err
	}
	if err := os.Lchown(base, pg.uid, pg.gid); err != nil {
		return "", err
	}
	suffix := make([]byte, 4)
	if _, err := rand.Read(suffix); err != nil {
		return "", err
	}
	// The name says where the link is, for whoever lists the home; the
	// suffix keeps a fresh checkout at the same path off an old one's data.
	name := strings.Trim(strings.ReplaceAll(dir, "/", "_"), "_")
	if len(name) > 64 {
		name = name[len(name)-64:]
	}
	data := filepath.Join(base, name+"-"+hex.EncodeToString(suffix))
	if err := os.Mkdir(data, 0o700); err != nil {
		return "", err
	}
	if err := os.Symlink(data, dir); err != nil {
		_ = os.Remove(data)
		return "", err
	}
	return data, nil
}

// postgresCanEnter reports whether the postgres user may search dir (and so
// reach what is below it): asked of the system as that user, so groups,
// ACLs and every parent's mode count as they will for the server.
func postgresCanEnter(ctx context.Context, dir string) bool {
	cmd := exec.CommandContext(ctx, "runuser", "-u", "postgres", "--", "test", "-x", dir)
	cmd.Dir = "/"
	return cmd.Run() == nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
