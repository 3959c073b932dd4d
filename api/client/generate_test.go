package client_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedIsFresh regenerates the client from api/openapi.yaml into a
// temporary directory and fails when quickpay.gen.go differs: run
// `go generate ./api/client` after changing the document.
func TestGeneratedIsFresh(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "quickpay.gen.go")
	// The config's output wins over -o, so the copy names the temporary file.
	cfg, err := os.ReadFile("oapi-codegen.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg = bytes.Replace(cfg, []byte("\noutput: quickpay.gen.go\n"), []byte("\noutput: "+out+"\n"), 1)
	if !bytes.Contains(cfg, []byte(out)) {
		t.Fatal("oapi-codegen.yaml has no line `output: quickpay.gen.go`")
	}
	cfgPath := filepath.Join(dir, "oapi-codegen.yaml")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "tool", "oapi-codegen", "-config", cfgPath, "../openapi.yaml")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("oapi-codegen: %v\n%s", err, msg)
	}
	want, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("quickpay.gen.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("quickpay.gen.go is stale: run go generate ./api/client")
	}
}
