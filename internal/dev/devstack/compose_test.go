package devstack_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// composeModel is the part of a rendered Compose model these tests read.
type composeModel struct {
	Services map[string]composeService `json:"services"`
	Volumes  map[string]any            `json:"volumes"`
}

type composeService struct {
	Image       string                                        `json:"image"`
	Build       *struct{ Context, Dockerfile, Target string } `json:"build"`
	Command     []string                                      `json:"command"`
	Entrypoint  []string                                      `json:"entrypoint"`
	Environment map[string]*string                            `json:"environment"`
	DependsOn   map[string]struct {
		Condition string `json:"condition"`
	} `json:"depends_on"`
	Ports []struct {
		HostIP    string `json:"host_ip"`
		Target    int    `json:"target"`
		Published string `json:"published"`
	} `json:"ports"`
	Volumes []composeMount `json:"volumes"`
}

type composeMount struct {
	Type     string `json:"type"`
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"read_only"`
}

func (s composeService) env(k string) string {
	if v := s.Environment[k]; v != nil {
		return *v
	}
	return ""
}

// volume is the named volume s mounts at target ("" if none).
func (s composeService) volume(target string) (name string, readOnly bool) {
	for _, v := range s.Volumes {
		if v.Target == target && v.Type == "volume" {
			return v.Source, v.ReadOnly
		}
	}
	return "", false
}

// render renders docker-compose.yml as `docker compose config` does:
// with `docker compose` itself where it is installed, else with
// cmd/quickpay/docker/composeconfig, which loads the file with the same
// library (compose-go) and needs no Docker engine either.
func render(t *testing.T) (composeModel, string) {
	t.Helper()
	root := filepath.Join("..", "..", "..")
	file, err := filepath.Abs(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var cmd *exec.Cmd
	how := "docker compose config"
	if exec.CommandContext(ctx, "docker", "compose", "version").Run() == nil {
		cmd = exec.CommandContext(ctx, "docker", "compose", "-f", file, "config", "--format", "json")
	} else {
		how = "composeconfig (compose-go)"
		cmd = exec.CommandContext(ctx, "go", "run", ".", file)
		cmd.Dir = filepath.Join(root, "cmd", "quickpay", "docker", "composeconfig")
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", how, err, stderr.String())
	}
	var m composeModel
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("%s printed no model: %v", how, err)
	}
	return m, how
}

// TestComposeModel renders the compose model (no Docker engine runs here)
// and checks what an operator relies on: the stack's state is kept whole
// across `down`/`up`, Vault is a real server unsealed by the dev-only step,
// every port is on the host's loopback, images are pinned, and what the
// file mounts exists.
func TestComposeModel(t *testing.T) {
	m, how := render(t)
	t.Logf("rendered with %s", how)
	root := filepath.Join("..", "..", "..")

	for _, name := range []string{"postgres", "vault", "vault-unseal", "banksim", "quickpay", "prometheus", "grafana"} {
		s, ok := m.Services[name]
		if !ok {
			t.Errorf("service %s missing", name)
			continue
		}
		if s.Image == "" && s.Build == nil {
			t.Errorf("service %s has neither image nor build", name)
		}
		if s.Build != nil {
			if _, err := os.Stat(filepath.Join(s.Build.Context, s.Build.Dockerfile)); err != nil {
				t.Errorf("service %s: dockerfile: %v", name, err)
			}
		}
	}
	q, v, u := m.Services["quickpay"], m.Services["vault"], m.Services["vault-unseal"]

	t.Run("state is kept in named volumes, all of it", func(t *testing.T) {
		for _, c := range []struct{ service, target, why string }{
			{"postgres", "/var/lib/postgresql/data", "Postgres's data"},
			{"vault", "/vault/file", "Vault's storage"},
			{"vault-unseal", "/var/lib/vault-unseal", "Vault's unseal key and root token"},
			{"quickpay", "/var/lib/vault-unseal", "the root token quickpay reads"},
			{"quickpay", "/var/lib/quickpay/softhsm", "the SoftHSM2 token"},
		} {
			name, _ := m.Services[c.service].volume(c.target)
			if name == "" {
				t.Errorf("%s: %s at %s is not in a named volume", c.service, c.why, c.target)
				continue
			}
			if _, ok := m.Volumes[name]; !ok {
				t.Errorf("%s mounts volume %s, which the file does not declare", c.service, name)
			}
		}
		if a, _ := u.volume("/var/lib/vault-unseal"); a != "" {
			if b, ro := q.volume("/var/lib/vault-unseal"); b != a || !ro {
				t.Errorf("quickpay mounts %q (read-only %v) at /var/lib/vault-unseal, want vault-unseal's %q read-only", b, ro, a)
			}
		}
		hsm, _ := q.volume("/var/lib/quickpay/softhsm")
		if conf := q.env("SOFTHSM2_CONF"); hsm == "" || filepath.Dir(conf) != "/var/lib/quickpay/softhsm" {
			t.Errorf("SOFTHSM2_CONF=%q is not in the SoftHSM2 volume", conf)
		}
	})

	t.Run("vault is a real server on file storage, unsealed by the dev-only step", func(t *testing.T) {
		if slices.ContainsFunc(v.Command, func(a string) bool { return strings.HasPrefix(a, "-dev") }) ||
			v.env("VAULT_DEV_ROOT_TOKEN_ID") != "" {
			t.Errorf("vault runs in dev mode (%v), which forgets everything when it stops", v.Command)
		}
		var cfg struct {
			Storage struct {
				File struct {
					Path string `json:"path"`
				} `json:"file"`
			} `json:"storage"`
		}
		if err := json.Unmarshal([]byte(v.env("VAULT_LOCAL_CONFIG")), &cfg); err != nil || cfg.Storage.File.Path != "/vault/file" {
			t.Errorf("VAULT_LOCAL_CONFIG: file storage at %q (%v), want /vault/file, the volume", cfg.Storage.File.Path, err)
		}
		if !slices.Equal(u.Entrypoint, []string{"vaultunseal"}) || !slices.Contains(u.Command, "http://vault:8200") {
			t.Errorf("vault-unseal runs %v %v, want vaultunseal against http://vault:8200", u.Entrypoint, u.Command)
		}
		if c := u.DependsOn["vault"].Condition; c != "service_healthy" {
			t.Errorf("vault-unseal waits for vault to be %q, want service_healthy", c)
		}
		for dep, want := range map[string]string{"vault-unseal": "service_completed_successfully", "postgres": "service_healthy",
			"banksim": "service_started"} {
			if c := q.DependsOn[dep].Condition; c != want {
				t.Errorf("quickpay waits for %s to be %q, want %s", dep, c, want)
			}
		}
		if q.env("VAULT_TOKEN") != "" {
			t.Error("quickpay has VAULT_TOKEN in its environment; it reads the token from the vault-unseal volume")
		}
	})

	t.Run("quickpay starts through the entrypoint, which deletes nothing", func(t *testing.T) {
		if !slices.Equal(q.Entrypoint, []string{"quickpay-compose-start"}) {
			t.Errorf("quickpay's entrypoint is %v, want quickpay-compose-start", q.Entrypoint)
		}
		script := filepath.Join(root, "cmd", "quickpay", "docker", "entrypoint.sh")
		b, err := os.ReadFile(script)
		if err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("sh", "-n", script).CombinedOutput(); err != nil {
			t.Errorf("sh -n entrypoint.sh: %v\n%s", err, out)
		}
		if regexp.MustCompile(`(?m)^\s*[^#\n]*\brm\b`).Match(b) {
			t.Error("entrypoint.sh removes files: the SoftHSM2 token must survive restarts")
		}
		for _, step := range []string{"quickpay keys provision-softhsm", "quickpay migrate", "exec quickpay serve --listen 0.0.0.0:8080"} {
			if !bytes.Contains(b, []byte(step)) {
				t.Errorf("entrypoint.sh lacks %q", step)
			}
		}
		df, err := os.ReadFile(filepath.Join(root, "cmd", "quickpay", "Dockerfile"))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"./cmd/quickpay/docker/vaultunseal", "cmd/quickpay/docker/entrypoint.sh /usr/local/bin/quickpay-compose-start"} {
			if !bytes.Contains(df, []byte(want)) {
				t.Errorf("the Dockerfile lacks %q", want)
			}
		}
	})

	t.Run("ports are published on the host's loopback only", func(t *testing.T) {
		published := map[string]bool{}
		for name, s := range m.Services {
			for _, p := range s.Ports {
				if p.HostIP != "127.0.0.1" {
					t.Errorf("%s publishes %s on %q, want 127.0.0.1", name, p.Published, p.HostIP)
				}
				published[name+" "+p.Published] = true
			}
		}
		for _, want := range []string{"quickpay 8080", "quickpay 8081", "quickpay 8082", "banksim 9090", "prometheus 9091", "grafana 3000"} {
			if !published[want] {
				t.Errorf("%s is not published", want)
			}
		}
		for k, want := range map[string]string{"QUICKPAY_METRICS_LISTEN": "0.0.0.0:8082", "QUICKPAY_CONSOLE_LISTEN": "0.0.0.0:8081"} {
			if got := q.env(k); got != want {
				t.Errorf("quickpay %s=%q, want %s", k, got, want)
			}
		}
		for _, k := range []string{"QUICKPAY_DATABASE_URL", "VAULT_ADDR", "QUICKPAY_BANKSIM_URL", "QUICKPAY_PUBLIC_URL"} {
			if q.env(k) == "" {
				t.Errorf("quickpay lacks %s", k)
			}
		}
	})

	t.Run("images are pinned and mounted files exist", func(t *testing.T) {
		pinned := regexp.MustCompile(`:v?[0-9]+(\.[0-9]+)*$`)
		for name, s := range m.Services {
			if s.Image != "" && !pinned.MatchString(s.Image) {
				t.Errorf("%s's image %s is not pinned to a version", name, s.Image)
			}
			for _, vol := range s.Volumes {
				if vol.Type != "bind" {
					continue
				}
				if _, err := os.Stat(vol.Source); err != nil {
					t.Errorf("%s mounts %s, which is missing: %v", name, vol.Source, err)
				}
				if !vol.ReadOnly {
					t.Errorf("%s mounts %s writable; the repository's files are mounted read-only", name, vol.Source)
				}
			}
		}
		for _, c := range []struct{ service, target string }{
			{"prometheus", "/etc/prometheus/prometheus.yml"},
			{"prometheus", "/etc/prometheus/alerts.yml"},
			{"grafana", "/etc/grafana/provisioning"},
			{"grafana", "/var/lib/grafana/dashboards"},
		} {
			if !slices.ContainsFunc(m.Services[c.service].Volumes, func(v composeMount) bool {
				return v.Type == "bind" && v.Target == c.target && strings.Contains(filepath.ToSlash(v.Source), "/docs/observability/")
			}) {
				t.Errorf("%s does not mount docs/observability at %s", c.service, c.target)
			}
		}
	})
}
