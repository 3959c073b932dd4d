package main_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quickpay/quickpay/internal/dev/devstack"
	"github.com/quickpay/quickpay/mandate"
	"github.com/quickpay/quickpay/vaultkeys"
)

// TestDevStack runs what `make run` runs, twice, on one state dir: the
// stack comes up, /readyz answers 200, .quickpay/env holds DESIGN.md's
// variables and every address, and drives the CLI, /metrics answers on its
// own listener only, Ctrl-C leaves no process behind, and the second run
// finds the first run's data.
//
// The state dir is a checkout's .quickpay under a folder only its owner may
// enter (a clone in /root or `mktemp -d`): as root, the private cluster's
// server runs as postgres, which cannot traverse it, and the folder must
// keep its mode.
func TestDevStack(t *testing.T) {
	if _, err := devstack.DevVaultBinary(context.Background()); err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	for _, c := range []string{"quickpay", "banksim"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(bin, c), "../"+c).CombinedOutput()
		if err != nil {
			t.Fatalf("build %s: %v\n%s", c, err, out)
		}
	}
	private, err := os.MkdirTemp("", "quickpay-devtest-") // mode 0700
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(private, "checkout", ".quickpay")
	t.Cleanup(func() {
		// As root the cluster's data is where pg links to, outside.
		if data, err := filepath.EvalSymlinks(filepath.Join(state, "pg")); err == nil {
			_ = os.RemoveAll(data)
		}
		_ = os.RemoveAll(private)
	})

	first := startDev(t, bin, state)
	env := first.env
	// make run prints a link to the hosted page a person can open.
	if resp, err := http.Get(first.hostedLink(t)); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
			t.Errorf("hosted link: %d %s, want 200 text/html", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	for _, k := range []string{"QUICKPAY_URL", "QUICKPAY_DATABASE_URL", "QUICKPAY_BANKSIM_URL", "VAULT_ADDR",
		"VAULT_TOKEN", "SOFTHSM2_CONF", "QUICKPAY_HSM_TOKEN_LABEL", "QUICKPAY_DEMO_CLIENT_ID", "QUICKPAY_DEMO_CLIENT_SECRET",
		"QUICKPAY_LISTEN", "QUICKPAY_PUBLIC_URL", "QUICKPAY_METRICS_LISTEN"} {
		if _, ok := env[k]; !ok {
			t.Errorf(".quickpay/env lacks %s", k)
		}
	}
	// A process started from the file listens, and tells banks to call
	// back, where this stack's serve is, not at the defaults.
	if want := "http://" + env["QUICKPAY_LISTEN"]; env["QUICKPAY_URL"] != want || env["QUICKPAY_PUBLIC_URL"] != want {
		t.Errorf("env: QUICKPAY_URL %s, QUICKPAY_PUBLIC_URL %s; want both %s (QUICKPAY_LISTEN)", env["QUICKPAY_URL"], env["QUICKPAY_PUBLIC_URL"], want)
	}
	getOK(t, env["QUICKPAY_URL"]+"/readyz")
	t.Run("metrics on their own listener only", func(t *testing.T) {
		if env["QUICKPAY_METRICS_LISTEN"] == env["QUICKPAY_LISTEN"] {
			t.Fatalf("metrics and the API share %s", env["QUICKPAY_LISTEN"])
		}
		body := getBody(t, "http://"+env["QUICKPAY_METRICS_LISTEN"]+"/metrics", http.StatusOK)
		if !strings.Contains(body, `quickpay_http_requests_total{method="GET",route="/readyz",status="200"}`) {
			t.Fatalf("metrics listener does not count the API's requests:\n%.2000s", body)
		}
		getBody(t, env["QUICKPAY_URL"]+"/metrics", http.StatusNotFound)
	})
	getOK(t, env["QUICKPAY_BANKSIM_URL"]+"/healthz")
	// The demo cardholders are open at banksim, and each bank knows the platform.
	getOK(t, env["QUICKPAY_BANKSIM_URL"]+"/sim/accounts/6222029015443424642")
	sec, err := vaultkeys.NewSecrets(context.Background(), vaultkeys.SecretsConfig{Addr: env["VAULT_ADDR"], Token: env["VAULT_TOKEN"]})
	if err != nil {
		t.Fatal(err)
	}
	defer sec.Close()
	for _, code := range []string{"ICBC", "CCB", "CMB"} {
		ch, err := sec.Read(context.Background(), "secret/quickpay/banks/"+code)
		if err != nil || ch["merchant_no"] == nil || ch["dialect"] == nil {
			t.Fatalf("bank %s channel settings in vault: %v, %v", code, ch["merchant_no"], err)
		}
	}
	walkthrough(t, bin, env, true)
	if out := cli(t, bin, env, "keys", "rotate", "data"); !strings.Contains(out, "qp-data-v2 is now current") {
		t.Fatalf("rotate said %q", out)
	}
	first.stop(t)

	second := startDev(t, bin, state)
	getOK(t, second.env["QUICKPAY_URL"]+"/readyz")
	walkthrough(t, bin, second.env, false)
	var keys []struct {
		Label, State string
	}
	if err := json.Unmarshal([]byte(cli(t, bin, second.env, "keys", "list", "--json")), &keys); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, k := range keys {
		found = found || (k.Label == "qp-data-v2" && k.State == "current")
	}
	if !found {
		t.Fatalf("second run lost the first run's rotation: %+v", keys)
	}
	second.stop(t)

	fi, err := os.Stat(private)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("%s has mode %o after the runs, want 0700 as made", private, fi.Mode().Perm())
	}
}

// TestBadConfigStopsStartUp: a variable that fails to parse stops a command
// with a message naming it, before it does anything (before, serve with
// QUICKPAY_SCHEDULER_INTERVAL=30 ran with 0 and panicked in
// time.NewTicker; QUICKPAY_CHARGE_WORKERS=eight ran one worker).
func TestBadConfigStopsStartUp(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "quickpay")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	tests := []struct {
		key, value string
		args       []string
	}{
		{"QUICKPAY_SCHEDULER_INTERVAL", "30", []string{"serve"}},
		{"QUICKPAY_CHARGE_WORKERS", "eight", []string{"serve"}},
		{"QUICKPAY_RESCUE_STUCK_AFTER", "0s", []string{"charges", "run-due"}},
		{"QUICKPAY_HSM_POOL_SIZE", "-1", []string{"migrate"}},
	}
	for _, tt := range tests {
		t.Run(tt.key+"="+tt.value, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(bin, tt.args...)
			// Nothing to reach: a command that read past its configuration
			// would fail for another reason, with another message.
			cmd.Env = append(os.Environ(), tt.key+"="+tt.value, "QUICKPAY_DATABASE_URL=postgres://nobody@127.0.0.1:1/none")
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 2 {
				t.Fatalf("quickpay %v: %v, want exit status 2\n%s", tt.args, err, out)
			}
			if !strings.Contains(string(out), tt.key) || strings.Contains(string(out), "panic") {
				t.Fatalf("quickpay %v said %q; want the variable named, no panic", tt.args, out)
			}
		})
	}
}

type devRun struct {
	cmd  *exec.Cmd
	done chan error
	env  map[string]string
	pids []int
	path string
	out  lockedBuffer // what `quickpay dev` prints
}

// lockedBuffer is a bytes.Buffer a process writes while a test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// hostedLink waits for the hosted binding link `quickpay dev` prints.
func (r *devRun) hostedLink(t *testing.T) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		for _, f := range strings.Fields(r.out.String()) {
			if strings.HasPrefix(f, r.env["QUICKPAY_URL"]+"/bind/") {
				return f
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no hosted binding link printed within a minute:\n%s", r.out.String())
		}
		time.Sleep(100 * time.Millisecond) // polling the process's output
	}
}

func startDev(t *testing.T, bin, state string) *devRun {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "quickpay"), "dev", "--dir", state, "--listen", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "QUICKPAY_DATABASE_URL=") // the private cluster, as on a fresh machine
	r := &devRun{cmd: cmd, done: make(chan error, 1), path: filepath.Join(state, "env")}
	cmd.Stdout, cmd.Stderr = &r.out, nil
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	deadline := time.Now().Add(3 * time.Minute)
	for {
		if env, err := readEnv(r.path); err == nil && env["QUICKPAY_URL"] != "" {
			r.env = env
			break
		}
		select {
		case err := <-r.done:
			t.Fatalf("quickpay dev exited before the stack was up: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no .quickpay/env within 3 minutes")
		}
	}
	r.pids = append(children(cmd.Process.Pid), postmasterPID(t, state))
	if len(r.pids) < 4 {
		t.Fatalf("expected serve, banksim, vault and postgres, found pids %v", r.pids)
	}
	return r
}

// stop sends Ctrl-C's SIGINT and checks that every process is gone.
func (r *devRun) stop(t *testing.T) {
	t.Helper()
	if err := r.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("quickpay dev exited with %v after Ctrl-C", err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("quickpay dev did not stop within 90s of Ctrl-C")
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, pid := range r.pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("process %d still runs after quickpay dev stopped", pid)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if _, err := os.Stat(r.path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists after stop: %v", r.path, err)
	}
}

func cli(t *testing.T, bin string, env map[string]string, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "quickpay"), args...)
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("quickpay %v: %v\n%s", args, err, ee.Stderr)
		}
		t.Fatal(err)
	}
	return string(out)
}

func getBody(t *testing.T, url string, status int) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != status {
		t.Fatalf("GET %s = %d, want %d", url, resp.StatusCode, status)
	}
	return string(b)
}

func getOK(t *testing.T, url string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %d", url, resp.StatusCode)
	}
}

// readEnv parses the shell file `quickpay dev` writes: KEY='value' lines.
func readEnv(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, errors.New("bad line in env file")
		}
		env[k] = strings.Trim(v, "'")
	}
	return env, sc.Err()
}

// children lists the processes whose parent is pid.
func children(pid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces, so cut after ')'.
		fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}

func postmasterPID(t *testing.T, state string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(state, "pg", "postmaster.pid"))
	if err != nil {
		t.Fatalf("private cluster pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	if err != nil {
		return false
	}
	// A zombie is gone for our purposes once its parent has reaped it;
	// check its state.
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

// walkthrough does what `make run` prints: the demo merchant's token, a
// binding of the first demo card, the bank's SMS code, the confirmation.
func walkthrough(t *testing.T, bin string, env map[string]string, first bool) {
	t.Helper()
	post := func(path, token string, body any, out any) int {
		t.Helper()
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(http.MethodPost, env["QUICKPAY_URL"]+path, bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("POST %s: %d, undecodable answer: %v", path, resp.StatusCode, err)
		}
		return resp.StatusCode
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if st := post("/v1/oauth/token", "", map[string]string{"grant_type": "client_credentials",
		"client_id": env["QUICKPAY_DEMO_CLIENT_ID"], "client_secret": env["QUICKPAY_DEMO_CLIENT_SECRET"]}, &tok); st != 200 || tok.AccessToken == "" {
		t.Fatalf("demo token: %d", st)
	}
	var b struct{ ID, Status string }
	if st := post("/v1/bindings", tok.AccessToken, map[string]string{"external_user_id": "dev-test-" + strconv.FormatInt(time.Now().UnixNano(), 36),
		"holder_name": "张三", "id_number": "110105199003070017", "card_number": "6222029015443424642", "phone": "13800138001"}, &b); first && st != 201 {
		t.Fatalf("demo binding: %d %+v", st, b)
	} else if !first {
		// The data survived: the card is bound to the first run's user.
		if st != 409 {
			t.Fatalf("demo binding on the second run: %d, want 409 card_bound_elsewhere", st)
		}
		return
	}
	resp, err := http.Get(env["QUICKPAY_BANKSIM_URL"] + "/sim/sms?phone=13800138001")
	if err != nil {
		t.Fatal(err)
	}
	var texts []struct{ Code string }
	_ = json.NewDecoder(resp.Body).Decode(&texts)
	resp.Body.Close()
	if len(texts) == 0 {
		t.Fatal("no SMS for the demo phone")
	}
	var bound struct {
		Status string `json:"status"`
		CardID string `json:"card_id"`
	}
	if st := post("/v1/bindings/"+b.ID+"/confirm", tok.AccessToken, map[string]string{"otp": texts[0].Code}, &bound); st != 200 || bound.Status != "bound" {
		t.Fatalf("confirm: %d %+v", st, bound)
	}

	// The mandate part: create on the bound card, the carrier's consent
	// code, confirm, and `charges run-due` charges today's period.
	today := mandate.Schedule{}.DateAt(time.Now())
	var m struct{ ID, Status string }
	if st := post("/v1/mandates", tok.AccessToken, map[string]any{"card_id": bound.CardID, "reference": "water-001",
		"amount_type": "fixed", "amount": 1999, "currency": "CNY", "schedule": map[string]any{"interval": "month",
			"day_of_month": today.Day(), "start_date": today.Format(time.DateOnly)}}, &m); st != 201 || m.Status != "pending_confirmation" {
		t.Fatalf("demo mandate: %d %+v", st, m)
	}
	texts = nil
	resp, err = http.Get(env["QUICKPAY_BANKSIM_URL"] + "/sim/sms?phone=13800138001")
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&texts)
	resp.Body.Close()
	if len(texts) == 0 {
		t.Fatal("no consent SMS for the demo phone")
	}
	if st := post("/v1/mandates/"+m.ID+"/confirm", tok.AccessToken, map[string]string{"otp": texts[0].Code}, &m); st != 200 || m.Status != "active" {
		t.Fatalf("mandate confirm: %d %+v", st, m)
	}
	// serve's scheduler may claim it first; either way it is charged once.
	out := cli(t, bin, env, "charges", "run-due")
	if !strings.Contains(out, "run-due as of") {
		t.Fatalf("run-due output:\n%s", out)
	}
	var charges struct {
		Data []struct{ Status, Period string }
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequest(http.MethodGet, env["QUICKPAY_URL"]+"/v1/mandates/"+m.ID+"/charges", nil)
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = json.NewDecoder(resp.Body).Decode(&charges)
		resp.Body.Close()
		if len(charges.Data) == 1 && charges.Data[0].Status == "succeeded" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the demo mandate's charges: %+v, want this month's, succeeded (run-due said:\n%s)", charges.Data, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if charges.Data[0].Period != today.Format("2006-01") {
		t.Fatalf("charged period %s, want %s", charges.Data[0].Period, today.Format("2006-01"))
	}
}
