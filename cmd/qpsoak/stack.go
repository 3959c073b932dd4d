package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/quickpay/quickpay/api/client"
	"github.com/quickpay/quickpay/internal/dev/devstack"
	"github.com/quickpay/quickpay/internal/dev/pgcluster"
	"github.com/quickpay/quickpay/internal/dev/simclient"
)

// proc is a child process whose output goes to a log file in the evidence
// folder. It can be killed (SIGKILL) or signalled; it dies with qpsoak.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	log  string
}

// startProc starts cmd with its stdout and stderr appended to logPath.
// When announce is set, it waits up to timeout for the first stdout line
// and returns it (banksim announces its URL so).
func startProc(name string, cmd *exec.Cmd, logPath string, announce bool, timeout time.Duration) (*proc, string, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, "", err
	}
	cmd.Stderr = f
	var first chan string
	if announce {
		out, err := cmd.StdoutPipe()
		if err != nil {
			f.Close()
			return nil, "", err
		}
		first = make(chan string, 1)
		go func() {
			r := bufio.NewReader(out)
			line, _ := r.ReadString('\n')
			first <- strings.TrimSpace(line)
			_, _ = r.WriteTo(f)
		}()
	} else {
		cmd.Stdout = f
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, "", fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	if !announce {
		return p, "", nil
	}
	select {
	case line := <-first:
		if line == "" {
			<-p.done
			return nil, "", fmt.Errorf("%s exited before it announced itself: %v (log %s)", name, p.err, logPath)
		}
		return p, line, nil
	case <-p.done:
		return nil, "", fmt.Errorf("%s exited at start: %v (log %s)", name, p.err, logPath)
	case <-time.After(timeout):
		p.kill()
		return nil, "", fmt.Errorf("%s did not start within %s (log %s)", name, timeout, logPath)
	}
}

// kill sends SIGKILL and waits for the process to go.
func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and waits up to 30 s, then kills.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.kill()
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stack is the soak's private quickpay: its own Postgres cluster, Vault,
// SoftHSM2 token, banksim and serve instances, all under dir.
type stack struct {
	dir     string // the evidence folder; logs in dir/logs
	bin     string // quickpay and banksim, built for the soak
	pg      *pgcluster.Cluster
	dbURL   string
	vault   *devstack.Vault
	banksim *proc
	simURL  string
	sim     *simclient.Client
	env     []string // every quickpay command's environment
	serves  []*serveInstance
	merch   merchantCreds
	clients []*client.Client // one per serve instance

	mu   sync.Mutex
	runs int // quickpay CLI runs, for log names
}

type merchantCreds struct {
	MerchantID   string `json:"merchant_id"`
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret"`
}

// serveInstance is one `quickpay serve`; it keeps its addresses across
// restarts.
type serveInstance struct {
	n                        int
	listen, metrics, console string
	p                        *proc
	starts                   int
}

func (s *serveInstance) url() string { return "http://" + s.listen }

// buildBinaries builds quickpay (with the dev-only HSM fault switch,
// -tags devfaults) and banksim into bin.
func buildBinaries(ctx context.Context, bin string) error {
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return err
	}
	for _, b := range []struct{ out, pkg, tags string }{
		{"quickpay", "./cmd/quickpay", "devfaults"},
		{"banksim", "./cmd/banksim", ""},
	} {
		cmd := exec.CommandContext(ctx, "go", "build", "-tags", b.tags, "-o", filepath.Join(bin, b.out), b.pkg)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w\n%s", b.pkg, err, out)
		}
	}
	return nil
}

// startStack brings the stack up as `quickpay dev` does, through quickpay's
// own commands (migrate, keys provision-softhsm, banks connect-sim,
// merchants create), then starts instances serve processes.
func startStack(ctx context.Context, dir, bin string, instances int, rescueAfter time.Duration) (*stack, error) {
	st := &stack{dir: dir, bin: bin}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return nil, err
	}
	var err error
	if st.pg, err = pgcluster.Start(ctx, filepath.Join(dir, "pg")); err != nil {
		return nil, err
	}
	if created, err := st.pg.EnsureDatabase(ctx, "quickpay"); err != nil || !created {
		st.close()
		if err == nil {
			err = errors.New("database quickpay already exists in the soak's fresh cluster")
		}
		return nil, err
	}
	st.dbURL = st.pg.URL("quickpay")
	if st.vault, err = devstack.StartVault(ctx, ""); err != nil {
		st.close()
		return nil, err
	}
	if st.banksim, st.simURL, err = startProc("banksim", exec.Command(filepath.Join(bin, "banksim"), "--listen", "127.0.0.1:0"),
		st.logPath("banksim"), true, 30*time.Second); err != nil {
		st.close()
		return nil, err
	}
	st.sim = simclient.NewClient(st.simURL)

	addrs, err := freeAddrs(3 * instances)
	if err != nil {
		st.close()
		return nil, err
	}
	for i := range instances {
		st.serves = append(st.serves, &serveInstance{n: i, listen: addrs[3*i], metrics: addrs[3*i+1], console: addrs[3*i+2]})
	}
	st.env = append(os.Environ(),
		"QUICKPAY_DATABASE_URL="+st.dbURL,
		"VAULT_ADDR="+st.vault.Addr,
		"VAULT_TOKEN="+st.vault.Token,
		"QUICKPAY_BANKSIM_URL="+st.simURL,
		// Banks post their async results to the first instance.
		"QUICKPAY_PUBLIC_URL="+st.serves[0].url(),
		"QUICKPAY_RESCUE_STUCK_AFTER="+rescueAfter.String(),
		// The month-end runs are `charges run-due` processes, which the
		// soak kills; serve's own scheduler would claim their work first.
		"QUICKPAY_SCHEDULER_INTERVAL=1h",
		// The soak's webhook endpoint listens on loopback.
		"QUICKPAY_WEBHOOKS_ALLOW_PRIVATE=true",
		"QUICKPAY_LOG_LEVEL=info",
	)
	out, err := st.quickpay(ctx, "keys", "provision-softhsm", "--dir", filepath.Join(dir, "softhsm"))
	if err != nil {
		st.close()
		return nil, err
	}
	conf := ""
	for line := range strings.SplitSeq(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "SOFTHSM2_CONF="); ok {
			conf = v
		}
	}
	if conf == "" {
		st.close()
		return nil, fmt.Errorf("keys provision-softhsm printed no SOFTHSM2_CONF: %s", out)
	}
	st.env = append(st.env, "SOFTHSM2_CONF="+conf)
	for _, args := range [][]string{{"migrate"}, {"banks", "connect-sim"}} {
		if _, err := st.quickpay(ctx, args...); err != nil {
			st.close()
			return nil, err
		}
	}
	out, err = st.quickpay(ctx, "merchants", "create", "--name", "soak", "--json")
	if err != nil {
		st.close()
		return nil, err
	}
	if err := json.Unmarshal(out, &st.merch); err != nil || st.merch.ClientSecret == "" {
		st.close()
		return nil, fmt.Errorf("merchants create --json printed no credentials (%v)", err)
	}
	for _, s := range st.serves {
		if err := st.startServe(ctx, s); err != nil {
			st.close()
			return nil, err
		}
		c, err := client.New(client.Config{BaseURL: s.url(), ClientID: st.merch.ClientID, ClientSecret: st.merch.ClientSecret,
			HTTPClient: &http.Client{Timeout: 20 * time.Second}})
		if err != nil {
			st.close()
			return nil, err
		}
		st.clients = append(st.clients, c)
	}
	return st, nil
}

func (st *stack) logPath(name string) string { return filepath.Join(st.dir, "logs", name+".log") }

// quickpay runs one quickpay CLI command to its end and returns its stdout;
// stderr goes to its log.
func (st *stack) quickpay(ctx context.Context, args ...string) ([]byte, error) {
	st.mu.Lock()
	st.runs++
	name := fmt.Sprintf("cli-%03d-%s", st.runs, args[0])
	st.mu.Unlock()
	cmd := exec.CommandContext(ctx, filepath.Join(st.bin, "quickpay"), args...)
	cmd.Env = st.env
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	logf, err := os.Create(st.logPath(name))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stderr = logf
	err = cmd.Run()
	if args[0] != "merchants" { // its stdout holds the client secret
		_, _ = logf.Write(stdout.Bytes())
	}
	if err != nil {
		return stdout.Bytes(), fmt.Errorf("quickpay %s: %w (log %s)", strings.Join(args, " "), err, st.logPath(name))
	}
	return stdout.Bytes(), nil
}

// startQuickpay starts a quickpay CLI command in the background (a
// month-end run the soak may kill).
func (st *stack) startQuickpay(name string, args ...string) (*proc, error) {
	cmd := exec.Command(filepath.Join(st.bin, "quickpay"), args...)
	cmd.Env = st.env
	p, _, err := startProc(name, cmd, st.logPath(name), false, 0)
	return p, err
}

// startServe starts (or restarts) instance s and waits until it is ready.
// A serve that exits at start (Postgres restarting under it) is started
// again, for up to 90 s.
func (st *stack) startServe(ctx context.Context, s *serveInstance) error {
	deadline := time.Now().Add(90 * time.Second)
	for {
		s.starts++
		cmd := exec.Command(filepath.Join(st.bin, "quickpay"), "serve", "--listen", s.listen,
			"--metrics-listen", s.metrics, "--console-listen", s.console)
		cmd.Env = st.env
		p, _, err := startProc(fmt.Sprintf("serve%d", s.n), cmd, st.logPath(fmt.Sprintf("serve%d", s.n)), false, 0)
		if err != nil {
			return err
		}
		s.p = p
		err = waitReady(ctx, s, time.Until(deadline))
		if err == nil || !p.exited() || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// waitReady polls serve's /readyz until it answers 200.
func waitReady(ctx context.Context, s *serveInstance, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	hc := &http.Client{Timeout: 2 * time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url()+"/readyz", nil)
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if s.p.exited() {
			return fmt.Errorf("serve%d exited at start: %v (log %s)", s.n, s.p.err, s.p.log)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("serve%d not ready within %s (log %s)", s.n, timeout, s.p.log)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// restartPostgres stops the cluster (fast shutdown) and starts it again on
// the same port.
func (st *stack) restartPostgres(ctx context.Context) error {
	return st.pg.Restart(ctx)
}

// close stops everything the stack started, newest first.
func (st *stack) close() {
	for _, s := range st.serves {
		if s.p != nil {
			s.p.stop()
		}
	}
	if st.banksim != nil {
		st.banksim.stop()
	}
	if st.vault != nil {
		_ = st.vault.Stop()
	}
	if st.pg != nil {
		_ = st.pg.Stop()
	}
}

// freeAddrs returns n distinct free loopback addresses.
func freeAddrs(n int) ([]string, error) {
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}
