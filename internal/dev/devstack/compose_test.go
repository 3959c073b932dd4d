package devstack_test

import (
	"os"
	"path/filepath"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestComposeFileParses stands in for `docker compose config`, since no
// Docker engine runs here: the file must parse and wire the four services.
func TestComposeFileParses(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Services map[string]struct {
			Image     string         `yaml:"image"`
			Build     map[string]any `yaml:"build"`
			DependsOn map[string]any `yaml:"depends_on"`
			Env       map[string]any `yaml:"environment"`
			Ports     []string       `yaml:"ports"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	for _, name := range []string{"postgres", "vault", "banksim", "quickpay"} {
		s, ok := f.Services[name]
		if !ok {
			t.Errorf("service %s missing", name)
			continue
		}
		if s.Image == "" && s.Build == nil {
			t.Errorf("service %s has neither image nor build", name)
		}
		if df, ok := s.Build["dockerfile"].(string); ok {
			if _, err := os.Stat(filepath.Join("..", "..", "..", df)); err != nil {
				t.Errorf("service %s: dockerfile %s: %v", name, df, err)
			}
		}
	}
	q := f.Services["quickpay"]
	for _, dep := range []string{"postgres", "vault", "banksim"} {
		if _, ok := q.DependsOn[dep]; !ok {
			t.Errorf("quickpay does not depend on %s", dep)
		}
	}
	for _, v := range []string{"QUICKPAY_DATABASE_URL", "VAULT_ADDR", "VAULT_TOKEN", "SOFTHSM2_CONF", "QUICKPAY_BANKSIM_URL",
		"QUICKPAY_METRICS_LISTEN"} {
		if _, ok := q.Env[v]; !ok {
			t.Errorf("quickpay lacks %s", v)
		}
	}
	// The API and /metrics are published on the host's loopback only.
	for _, want := range []string{"127.0.0.1:8080:8080", "127.0.0.1:8082:8082"} {
		found := false
		for _, p := range q.Ports {
			found = found || p == want
		}
		if !found {
			t.Errorf("quickpay does not publish %s (ports %v)", want, q.Ports)
		}
	}
}
