// Package devstack starts the local components of `quickpay dev` and of the
// test environment: the devvault server (a real Vault core, built from the
// nested module internal/dev/devvault) and the paths they share.
package devstack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// ModuleRoot finds the quickpay checkout above the working directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(b), "module github.com/quickpay/quickpay\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the quickpay checkout")
		}
		dir = parent
	}
}

// DevVaultBinary returns the devvault binary: $QUICKPAY_DEVVAULT, or
// .quickpay/bin/devvault in the checkout, built there if missing (the first
// build of Vault's core takes minutes; later ones are cached).
func DevVaultBinary(ctx context.Context) (string, error) {
	if p := os.Getenv("QUICKPAY_DEVVAULT"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("QUICKPAY_DEVVAULT=%s: %w", p, err)
		}
		return p, nil
	}
	root, err := ModuleRoot()
	if err != nil {
		return "", fmt.Errorf("find devvault: %w (set QUICKPAY_DEVVAULT)", err)
	}
	bin := filepath.Join(root, ".quickpay", "bin", "devvault")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return "", err
	}
	// Build beside and rename, so concurrent test packages never run a
	// half-written binary.
	tmp := fmt.Sprintf("%s.%d", bin, os.Getpid())
	cmd := exec.CommandContext(ctx, "go", "build", "-o", tmp, ".")
	cmd.Dir = filepath.Join(root, "internal", "dev", "devvault")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build devvault (`make devvault`): %w\n%s", err, out)
	}
	return bin, os.Rename(tmp, bin)
}

// Vault is a running devvault process.
type Vault struct {
	*Proc
	Addr  string // http://127.0.0.1:port
	Token string // root token
}

// StartVault starts devvault on listen (default 127.0.0.1:0) and waits until
// it serves.
func StartVault(ctx context.Context, listen string) (*Vault, error) {
	bin, err := DevVaultBinary(ctx)
	if err != nil {
		return nil, err
	}
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	p, line, err := StartProc("vault", exec.Command(bin, "-listen", listen), 60*time.Second)
	if err != nil {
		return nil, err
	}
	var hello struct{ Addr, Token string }
	if err := json.Unmarshal([]byte(line), &hello); err != nil || hello.Addr == "" {
		_ = p.Stop()
		return nil, fmt.Errorf("devvault announced %q, want JSON with addr and token", line)
	}
	return &Vault{Proc: p, Addr: hello.Addr, Token: hello.Token}, nil
}
