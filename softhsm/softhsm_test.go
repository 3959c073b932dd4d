package softhsm_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/quickpay/quickpay/softhsm"
	"github.com/quickpay/quickpay/vaultkeys"
)

// These tests run one after another: the PKCS#11 module's state and
// SOFTHSM2_CONF are process-wide, and Provision initializes and finalizes the
// module itself, so no HSM may stay open across a Provision call.

const (
	userPIN = "51739264"
	soPIN   = "80264419"
)

type pin string

func (p pin) PIN(context.Context) (string, error) { return string(p), nil }

func keyLabels() []string {
	var labels []string
	for _, p := range vaultkeys.Purposes {
		labels = append(labels, vaultkeys.Label(p, 1))
	}
	return labels
}

// wantObjects is how many token objects carry each label: one secret key
// for data and fp, a private and a public key for jwt.
var wantObjects = map[string]int{
	vaultkeys.Label(vaultkeys.PurposeData, 1): 1,
	vaultkeys.Label(vaultkeys.PurposeFP, 1):   1,
	vaultkeys.Label(vaultkeys.PurposeJWT, 1):  2,
}

func provision(t *testing.T, dir, user string) (*softhsm.Token, error) {
	t.Helper()
	return softhsm.Provision(context.Background(), softhsm.Config{
		Dir: dir, TokenLabel: "qp-provision-test", UserPIN: user, SOPIN: soPIN, Keys: keyLabels(),
	})
}

type keyState struct {
	objects                int
	sensitive, extractable bool
}

// inspect opens the token, reads every key's object count and attributes,
// and closes it again before returning, so the next Provision starts clean.
func inspect(t *testing.T, tok *softhsm.Token) map[string]keyState {
	t.Helper()
	ctx := context.Background()
	h, err := vaultkeys.OpenHSM(ctx, vaultkeys.HSMConfig{Module: tok.Module, TokenLabel: tok.Label, PIN: pin(userPIN), PoolSize: 1})
	if err != nil {
		t.Fatalf("open provisioned token: %v", err)
	}
	defer func() {
		if err := h.Close(); err != nil {
			t.Errorf("close hsm: %v", err)
		}
	}()
	states := make(map[string]keyState)
	for _, label := range keyLabels() {
		var st keyState
		err := h.Do(ctx, func(s pkcs11.SessionHandle) error {
			p := h.P11()
			if err := p.FindObjectsInit(s, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, label)}); err != nil {
				return err
			}
			objs, _, err := p.FindObjects(s, 16)
			if ferr := p.FindObjectsFinal(s); err == nil {
				err = ferr
			}
			st.objects = len(objs)
			return err
		})
		if err != nil {
			t.Fatalf("count objects labelled %s: %v", label, err)
		}
		if st.sensitive, st.extractable, err = h.KeyAttributes(ctx, label); err != nil {
			t.Fatalf("KeyAttributes(%s): %v", label, err)
		}
		states[label] = st
	}
	if len(states) != len(wantObjects) {
		t.Fatalf("inspected %d labels, want %d", len(states), len(wantObjects))
	}
	return states
}

func TestProvision(t *testing.T) {
	// Provision sets SOFTHSM2_CONF for the process; put it back afterwards.
	t.Setenv("SOFTHSM2_CONF", os.Getenv("SOFTHSM2_CONF"))
	dir := t.TempDir()

	first, err := provision(t, dir, userPIN)
	if err != nil {
		t.Fatalf("first Provision: %v", err)
	}
	if first.ConfPath != softhsm.ConfPath(dir) || os.Getenv("SOFTHSM2_CONF") != first.ConfPath {
		t.Fatalf("config at %s, SOFTHSM2_CONF=%s; want both %s", first.ConfPath, os.Getenv("SOFTHSM2_CONF"), softhsm.ConfPath(dir))
	}
	if first.Label != "qp-provision-test" {
		t.Fatalf("token label = %q", first.Label)
	}

	t.Run("keys exist once, sensitive and not extractable", func(t *testing.T) {
		for label, st := range inspect(t, first) {
			if st.objects != wantObjects[label] {
				t.Errorf("%s: %d objects on the token, want %d", label, st.objects, wantObjects[label])
			}
			if !st.sensitive || st.extractable {
				t.Errorf("%s: sensitive=%v extractable=%v, want true, false", label, st.sensitive, st.extractable)
			}
		}
	})

	t.Run("second provision with the same PINs reuses token and keys", func(t *testing.T) {
		second, err := provision(t, dir, userPIN)
		if err != nil {
			t.Fatalf("second Provision: %v", err)
		}
		if *second != *first {
			t.Fatalf("second Provision gave %+v, first %+v", *second, *first)
		}
		for label, st := range inspect(t, second) {
			if st.objects != wantObjects[label] {
				t.Errorf("%s: %d objects after a second Provision, want %d", label, st.objects, wantObjects[label])
			}
			if !st.sensitive || st.extractable {
				t.Errorf("%s: sensitive=%v extractable=%v, want true, false", label, st.sensitive, st.extractable)
			}
		}
	})

	t.Run("wrong user PIN on the existing token fails without showing it", func(t *testing.T) {
		const wrong = "99990000"
		_, err := provision(t, dir, wrong)
		if err == nil {
			t.Fatal("Provision accepted a wrong user PIN for an existing token")
		}
		for _, secret := range []string{wrong, userPIN, soPIN} {
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("error shows a PIN: %v", err)
			}
		}
		// The failed attempt must leave the token usable with the right PIN.
		if _, err := provision(t, dir, userPIN); err != nil {
			t.Fatalf("Provision with the right PIN after a wrong one: %v", err)
		}
	})

	t.Run("wrong user PIN with no keys to create fails", func(t *testing.T) {
		// Production bug: with empty Config.Keys, Provision never logs in, so
		// a wrong PIN for an existing token passes unnoticed. Unskip once
		// Provision checks the PIN whether or not it creates keys.
		_, err := softhsm.Provision(context.Background(), softhsm.Config{
			Dir: dir, TokenLabel: first.Label, UserPIN: "99990000", SOPIN: soPIN,
		})
		if err == nil {
			t.Fatal("Provision accepted a wrong user PIN for an existing token")
		}
	})
}

func TestProvisionNeedsDirAndPINs(t *testing.T) {
	t.Setenv("SOFTHSM2_CONF", os.Getenv("SOFTHSM2_CONF"))
	dir := t.TempDir()
	tests := []struct {
		name string
		cfg  softhsm.Config
	}{
		{"no dir", softhsm.Config{UserPIN: userPIN, SOPIN: soPIN}},
		{"no user PIN", softhsm.Config{Dir: dir, SOPIN: soPIN}},
		{"no SO PIN", softhsm.Config{Dir: dir, UserPIN: userPIN}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := softhsm.Provision(context.Background(), tt.cfg); err == nil {
				t.Fatal("Provision accepted an incomplete Config")
			}
			if _, err := os.Stat(softhsm.ConfPath(dir)); !os.IsNotExist(err) {
				t.Fatalf("an incomplete Config still wrote %s (%v)", softhsm.ConfPath(dir), err)
			}
		})
	}
}

func TestProvisionLeavesAnotherOwnersModuleInitialized(t *testing.T) {
	// Production bug: Provision finalizes the module even when
	// C_Initialize answered CKR_CRYPTOKI_ALREADY_INITIALIZED, which ends
	// every session of whoever initialized it (here an open HSM), for good.
	// Unskip once Provision finalizes only what it initialized.

	t.Setenv("SOFTHSM2_CONF", os.Getenv("SOFTHSM2_CONF"))
	ctx := context.Background()
	dir := t.TempDir()
	tok, err := provision(t, dir, userPIN)
	if err != nil {
		t.Fatal(err)
	}
	h, err := vaultkeys.OpenHSM(ctx, vaultkeys.HSMConfig{Module: tok.Module, TokenLabel: tok.Label, PIN: pin(userPIN), PoolSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = h.Close() }()
	label := vaultkeys.Label(vaultkeys.PurposeData, 1)
	if _, _, err := h.KeyAttributes(ctx, label); err != nil {
		t.Fatalf("before the second Provision: %v", err)
	}
	if _, err := provision(t, dir, userPIN); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.KeyAttributes(ctx, label); err != nil {
		t.Fatalf("open HSM broken by Provision: %v", err)
	}
}
