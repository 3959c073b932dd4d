package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quickpay/quickpay/internal/dev/devstack"
)

// TestKeptAcrossRestarts runs the compose stack's start-up step as
// docker-compose.yml runs it, with local processes: a real Vault core on
// file storage (devvault -storage-dir, the vault service's stand-in) is initialized by
// the first run; a secret is written; Vault is stopped and started again on
// the same storage, sealed, as after `docker compose down`/`up`; the second
// run unseals it with the saved key and the secret reads back.
func TestKeptAcrossRestarts(t *testing.T) {
	bin := fileVaultBinary(t)
	storage, stateDir := t.TempDir(), t.TempDir()
	ctx := context.Background()

	addr := startFileVault(t, bin, storage)
	res, err := run(ctx, Config{Addr: addr.url, StateDir: stateDir, Wait: 30 * time.Second})
	if err != nil || res != Initialized {
		t.Fatalf("first start: %q, %v; want initialized", res, err)
	}
	first, err := readState(stateDir)
	if err != nil || first == nil {
		t.Fatalf("state after the first start: %+v, %v", first, err)
	}
	if info, err := os.Stat(filepath.Join(stateDir, stateFile)); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %v, %v; want 0600", stateFile, info.Mode(), err)
	}
	if tok, err := os.ReadFile(filepath.Join(stateDir, "root-token")); err != nil || string(tok) != first.RootToken {
		t.Errorf("root-token file does not hold the saved root token (%v)", err)
	}
	const path = "/v1/secret/data/quickpay/hsm"
	v := &vault{addr: addr.url, http: http.DefaultClient}
	if err := v.call(ctx, http.MethodPost, path, first.RootToken, map[string]any{"data": map[string]string{"pin": "kept"}}, nil); err != nil {
		t.Fatalf("write a secret to KV v2 at secret/: %v", err)
	}
	// A second run against the running Vault changes nothing.
	if res, err := run(ctx, Config{Addr: addr.url, StateDir: stateDir}); err != nil || res != AlreadyUnsealed {
		t.Errorf("again while unsealed: %q, %v; want already unsealed", res, err)
	}
	addr.stop(t)

	addr = startFileVault(t, bin, storage)
	var seal struct{ Sealed, Initialized bool }
	v.addr = addr.url
	if err := v.call(ctx, http.MethodGet, "/v1/sys/seal-status", "", nil, &seal); err != nil || !seal.Sealed || !seal.Initialized {
		t.Fatalf("restarted vault: %+v, %v; want initialized and sealed", seal, err)
	}
	res, err = run(ctx, Config{Addr: addr.url, StateDir: stateDir, Wait: 30 * time.Second})
	if err != nil || res != Unsealed {
		t.Fatalf("second start: %q, %v; want unsealed", res, err)
	}
	if second, err := readState(stateDir); err != nil || *second != *first {
		t.Errorf("the second start changed the saved key or token (%v)", err)
	}
	var got struct {
		Data struct{ Data map[string]string }
	}
	if err := v.call(ctx, http.MethodGet, path, first.RootToken, nil, &got); err != nil || got.Data.Data["pin"] != "kept" {
		t.Errorf("after the restart the secret reads %v, %v; want the first start's", got.Data.Data, err)
	}

	t.Run("a lost state volume fails loudly", func(t *testing.T) {
		_, err := run(ctx, Config{Addr: addr.url, StateDir: t.TempDir(), Wait: 30 * time.Second})
		if !errors.Is(err, ErrStateLost) {
			t.Errorf("run with an empty state directory: %v, want ErrStateLost", err)
		}
	})
	t.Run("a lost Vault volume fails loudly", func(t *testing.T) {
		fresh := startFileVault(t, bin, t.TempDir())
		_, err := run(ctx, Config{Addr: fresh.url, StateDir: stateDir, Wait: 30 * time.Second})
		if err == nil || !strings.Contains(err.Error(), "vault is new") {
			t.Errorf("run with an earlier Vault's key: %v, want a refusal", err)
		}
		var init struct{ Initialized bool }
		if err := (&vault{addr: fresh.url, http: http.DefaultClient}).call(ctx, http.MethodGet, "/v1/sys/init", "", nil, &init); err != nil || init.Initialized {
			t.Errorf("the refused run initialized the new Vault (%v)", err)
		}
	})
}

// fileVaultBinary returns the devvault binary (a real Vault core), which
// with -storage-dir serves file storage as the compose stack's vault does.
func fileVaultBinary(t *testing.T) string {
	t.Helper()
	bin, err := devstack.DevVaultBinary(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

type fileVault struct {
	url  string
	proc *devstack.Proc
}

func (f fileVault) stop(t *testing.T) {
	t.Helper()
	if err := f.proc.Stop(); err != nil {
		t.Logf("devvault stop: %v", err)
	}
}

func startFileVault(t *testing.T, bin, storage string) fileVault {
	t.Helper()
	p, line, err := devstack.StartProc("devvault", exec.Command(bin, "-storage-dir", storage), 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop() })
	var hello struct{ Addr string }
	if err := json.Unmarshal([]byte(line), &hello); err != nil || hello.Addr == "" {
		t.Fatalf("devvault announced %q", line)
	}
	return fileVault{url: hello.Addr, proc: p}
}
