// Package softhsm provisions a SoftHSM2 token for the local stack and tests:
// it writes the config file, initializes the token, sets the user PIN and
// creates the missing keys by label. Every step is idempotent, so a second
// `make run` finds and reuses what the first made.
//
// Production uses a real HSM, provisioned by its own tools; quickpay then
// only needs the module path, the token label and the PIN in Vault.
package softhsm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/miekg/pkcs11"

	"github.com/quickpay/quickpay/vaultkeys"
)

// Config describes the token to provision.
type Config struct {
	// Dir holds softhsm2.conf and the token files. Required.
	Dir string
	// TokenLabel names the token. Defaults to "quickpay".
	TokenLabel string
	// UserPIN and SOPIN are set when the token is first initialized. Required.
	UserPIN, SOPIN string
	// Module is the SoftHSM2 PKCS#11 library. Defaults to FindModule().
	Module string
	// Keys are labels ("qp-data-v1") to create when missing.
	Keys []string
}

// Token is a provisioned token.
type Token struct {
	ConfPath string // value for SOFTHSM2_CONF
	Module   string
	Label    string
}

// modulePaths are where Debian and others install libsofthsm2.so.
var modulePaths = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
	"/usr/lib64/pkcs11/libsofthsm2.so",
}

// FindModule returns the path of libsofthsm2.so.
func FindModule() (string, error) {
	for _, p := range modulePaths {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("libsofthsm2.so not found: install SoftHSM2 (`apt-get install softhsm2`; `make run` and `make test` do it)")
}

// ConfPath is where Provision writes the config for dir.
func ConfPath(dir string) string { return filepath.Join(dir, "softhsm2.conf") }

// Provision makes sure the token exists with the PINs and keys of cfg.
//
// SoftHSM2 reads SOFTHSM2_CONF when the module initializes, so Provision sets
// it for this process; a process that loads the module before calling
// Provision with another Dir would see the wrong tokens.
func Provision(ctx context.Context, cfg Config) (*Token, error) {
	if cfg.Dir == "" || cfg.UserPIN == "" || cfg.SOPIN == "" {
		return nil, errors.New("softhsm: Config needs Dir, UserPIN and SOPIN")
	}
	if cfg.TokenLabel == "" {
		cfg.TokenLabel = "quickpay"
	}
	if cfg.Module == "" {
		m, err := FindModule()
		if err != nil {
			return nil, err
		}
		cfg.Module = m
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	tokens := filepath.Join(dir, "tokens")
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	conf := ConfPath(dir)
	body := fmt.Sprintf("# written by quickpay softhsm.Provision\ndirectories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		return nil, fmt.Errorf("softhsm: write config: %w", err)
	}
	if err := os.Setenv("SOFTHSM2_CONF", conf); err != nil {
		return nil, err
	}

	p := pkcs11.New(cfg.Module)
	if p == nil {
		return nil, fmt.Errorf("softhsm: cannot load %s", cfg.Module)
	}
	defer p.Destroy()
	// Module state is process-wide: finalize only what this call initialized.
	if err := p.Initialize(); err == nil {
		defer p.Finalize()
	} else if !isCode(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		return nil, fmt.Errorf("softhsm: initialize: %w", err)
	}

	if _, err := vaultkeys.FindSlot(p, cfg.TokenLabel); err != nil {
		if err := initToken(p, cfg); err != nil {
			return nil, err
		}
	}
	// Logging in proves the user PIN fits an existing token, keys or not.
	h, err := vaultkeys.NewHSM(ctx, p, vaultkeys.HSMConfig{TokenLabel: cfg.TokenLabel, PIN: staticPIN(cfg.UserPIN), PoolSize: 1})
	if err != nil {
		return nil, fmt.Errorf("softhsm: open token: %w", err)
	}
	defer h.Close()
	for _, label := range cfg.Keys {
		if _, err := h.EnsureKey(ctx, label); err != nil {
			return nil, fmt.Errorf("softhsm: %w", err)
		}
	}
	return &Token{ConfPath: conf, Module: cfg.Module, Label: cfg.TokenLabel}, nil
}

// initToken initializes the first free slot as the token and sets its user PIN.
func initToken(p *pkcs11.Ctx, cfg Config) error {
	slots, err := p.GetSlotList(true)
	if err != nil {
		return fmt.Errorf("softhsm: list slots: %w", err)
	}
	free := -1
	for _, s := range slots {
		ti, err := p.GetTokenInfo(s)
		if err == nil && ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			free = int(s)
			break
		}
	}
	if free < 0 {
		return errors.New("softhsm: no free slot to initialize a token in")
	}
	if err := p.InitToken(uint(free), cfg.SOPIN, cfg.TokenLabel); err != nil {
		return fmt.Errorf("softhsm: init token: %w", err)
	}
	// SoftHSM moves a freshly initialized token to a new slot id.
	slot, err := vaultkeys.FindSlot(p, cfg.TokenLabel)
	if err != nil {
		return err
	}
	s, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return fmt.Errorf("softhsm: open session: %w", err)
	}
	defer p.CloseSession(s)
	if err := p.Login(s, pkcs11.CKU_SO, cfg.SOPIN); err != nil {
		return fmt.Errorf("softhsm: SO login: %w", err)
	}
	defer p.Logout(s)
	if err := p.InitPIN(s, cfg.UserPIN); err != nil {
		return fmt.Errorf("softhsm: set user PIN: %w", err)
	}
	return nil
}

type staticPIN string

func (p staticPIN) PIN(context.Context) (string, error) { return string(p), nil }

func isCode(err error, code uint) bool {
	var pe pkcs11.Error
	return errors.As(err, &pe) && uint(pe) == code
}
