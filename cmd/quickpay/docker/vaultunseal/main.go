// Command vaultunseal is docker-compose.yml's DEV-ONLY step that makes the
// compose stack's Vault usable at every start, so that Vault's data (the
// HSM PINs, bank channel settings, the keyed hasher's secrets) survives
// `docker compose down`/`up` together with Postgres and the SoftHSM token.
//
// At its first start it initializes Vault with ONE unseal key share and
// writes that key and the root token, in the clear, to the state directory
// (a named volume). At every start it unseals Vault with that key, and makes
// sure KV v2 is mounted at secret/ and AppRole is enabled, as `vault server
// -dev` would. It then exits.
//
// THIS IS FOR A DEVELOPER'S MACHINE ONLY. Anyone who can read the state
// volume holds the whole Vault: its root token and its only unseal key.
// A real deployment initializes Vault with several key shares held by
// different people (or auto-unseal through a KMS), never stores a root
// token, and gives quickpay an AppRole of its own (VAULT_ROLE_ID,
// VAULT_SECRET_ID).
//
//	vaultunseal --addr http://vault:8200 --state /var/lib/vault-unseal
//
// Files in the state directory: unseal.json ({"unseal_key", "root_token"},
// 0600) and root-token (the token alone, for the quickpay container's
// entrypoint).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "http://127.0.0.1:8200", "Vault's address")
	state := flag.String("state", "", "directory of the unseal key and root token (required)")
	wait := flag.Duration("wait", 2*time.Minute, "how long to wait for Vault to answer")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := run(ctx, Config{Addr: *addr, StateDir: *state, Wait: *wait})
	if err != nil {
		fmt.Fprintln(os.Stderr, "vaultunseal:", err)
		os.Exit(1)
	}
	fmt.Printf("vaultunseal: %s is unsealed (%s; DEV ONLY: its unseal key and root token are in %s)\n",
		*addr, res, *state)
}

// Config is one run's.
type Config struct {
	// Addr is Vault's address, e.g. http://vault:8200.
	Addr string
	// StateDir holds the unseal key and the root token. Required.
	StateDir string
	// Wait bounds the wait for Vault's API to answer. Defaults to 2m.
	Wait time.Duration
	// HTTP sends the requests. Defaults to a client with a 10 s timeout.
	HTTP *http.Client
}

// Result says what a run did.
type Result string

const (
	// Initialized: Vault was new; it was initialized and its key saved.
	Initialized Result = "initialized"
	// Unsealed: Vault was sealed (a restart) and was unsealed.
	Unsealed Result = "unsealed"
	// AlreadyUnsealed: Vault was usable already.
	AlreadyUnsealed Result = "already unsealed"
)

// state is what the state directory keeps.
type state struct {
	UnsealKey string `json:"unseal_key"`
	RootToken string `json:"root_token"`
}

const stateFile = "unseal.json"

// ErrStateLost is returned when Vault is initialized but the state
// directory has no key for it: the volumes were not kept together.
var ErrStateLost = errors.New("vault is initialized but the state directory has no unseal key: " +
	"its volume was removed without Vault's (remove both, with Postgres's and SoftHSM's: `docker compose down -v`)")

// run initializes (first start) or unseals Vault, then makes sure the
// mounts quickpay uses exist.
func run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.StateDir == "" {
		return "", errors.New("--state is required")
	}
	if cfg.Wait <= 0 {
		cfg.Wait = 2 * time.Minute
	}
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{Timeout: 10 * time.Second}
	}
	v := &vault{addr: cfg.Addr, http: cfg.HTTP}

	var init struct {
		Initialized bool `json:"initialized"`
	}
	if err := v.waitFor(ctx, cfg.Wait, func() error { return v.call(ctx, http.MethodGet, "/v1/sys/init", "", nil, &init) }); err != nil {
		return "", err
	}
	st, err := readState(cfg.StateDir)
	if err != nil {
		return "", err
	}
	result := AlreadyUnsealed
	switch {
	case !init.Initialized && st != nil:
		return "", fmt.Errorf("vault is new but %s holds a key of an earlier one: its volume was removed without the state's "+
			"(remove both, with Postgres's and SoftHSM's: `docker compose down -v`)", cfg.StateDir)
	case !init.Initialized:
		var out struct {
			Keys      []string `json:"keys"`
			RootToken string   `json:"root_token"`
		}
		if err := v.call(ctx, http.MethodPut, "/v1/sys/init", "", map[string]int{"secret_shares": 1, "secret_threshold": 1}, &out); err != nil {
			return "", err
		}
		if len(out.Keys) != 1 || out.RootToken == "" {
			return "", fmt.Errorf("vault init answered %d keys and a root token of %d bytes, want 1 and some", len(out.Keys), len(out.RootToken))
		}
		st = &state{UnsealKey: out.Keys[0], RootToken: out.RootToken}
		// Saved before anything else: a key lost now is a Vault lost.
		if err := writeState(cfg.StateDir, *st); err != nil {
			return "", err
		}
		result = Initialized
	case st == nil:
		return "", ErrStateLost
	}

	var seal struct {
		Sealed bool `json:"sealed"`
	}
	if err := v.call(ctx, http.MethodGet, "/v1/sys/seal-status", "", nil, &seal); err != nil {
		return "", err
	}
	if seal.Sealed {
		if err := v.call(ctx, http.MethodPut, "/v1/sys/unseal", "", map[string]string{"key": st.UnsealKey}, &seal); err != nil {
			return "", err
		}
		if seal.Sealed {
			return "", errors.New("vault is still sealed after the saved key")
		}
		if result != Initialized {
			result = Unsealed
		}
	}
	// Once unsealed, a standby-free single node answers at once; mounts are
	// read until it does.
	if err := v.waitFor(ctx, cfg.Wait, func() error {
		return v.call(ctx, http.MethodGet, "/v1/sys/mounts", st.RootToken, nil, nil)
	}); err != nil {
		return "", err
	}
	if err := v.ensure(ctx, st.RootToken, "/v1/sys/mounts", "secret/", map[string]any{"type": "kv", "options": map[string]string{"version": "2"}}); err != nil {
		return "", err
	}
	if err := v.ensure(ctx, st.RootToken, "/v1/sys/auth", "approle/", map[string]any{"type": "approle"}); err != nil {
		return "", err
	}
	return result, nil
}

func readState(dir string) (*state, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil || st.UnsealKey == "" || st.RootToken == "" {
		return nil, fmt.Errorf("%s is not a saved unseal key and root token", filepath.Join(dir, stateFile))
	}
	return &st, nil
}

// writeState writes both files through a rename each, so a crash leaves
// the old file or the new one.
func writeState(dir string, st state) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	for name, body := range map[string][]byte{stateFile: b, "root-token": []byte(st.RootToken)} {
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, body, 0o600); err != nil {
			return fmt.Errorf("save the unseal key: %w", err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("save the unseal key: %w", err)
		}
	}
	return nil
}

// vault is Vault's HTTP API, as much of it as this step uses.
type vault struct {
	addr string
	http *http.Client
}

// call sends body as JSON and decodes a 2xx answer into out (nil: ignored).
// Vault's error answers name no secret; their text is kept short.
func (v *vault) call(ctx context.Context, method, path, token string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, v.addr+path, rd)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	resp, err := v.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct{ Errors []string }
		_ = json.Unmarshal(b, &e)
		return fmt.Errorf("%s %s: %d %v", method, path, resp.StatusCode, e.Errors)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	return nil
}

// ensure enables what at list/name (a secrets engine or an auth method)
// unless it is there.
func (v *vault) ensure(ctx context.Context, token, list, name string, enable any) error {
	var got map[string]json.RawMessage
	if err := v.call(ctx, http.MethodGet, list, token, nil, &got); err != nil {
		return err
	}
	if _, ok := got[name]; ok {
		return nil
	}
	return v.call(ctx, http.MethodPost, list+"/"+name[:len(name)-1], token, enable, nil)
}

// waitFor retries try every 250 ms until it succeeds or wait passes.
func (v *vault) waitFor(ctx context.Context, wait time.Duration, try func() error) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		err := try()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("vault at %s did not answer within %s: %w", v.addr, wait, err)
		case <-tick.C:
		}
	}
}
