package bankadapters_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/bankadapters/formrsa"
	"github.com/quickpay/quickpay/bankadapters/jsonhmac"
	"github.com/quickpay/quickpay/internal/sensitive"
)

func TestParseLimits(t *testing.T) {
	t.Parallel()
	got, err := bankadapters.ParseLimits(" icbc=200:32, CCB=0:4 ,")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bankadapters.Limit{"ICBC": {PerSecond: 200, Concurrent: 32}, "CCB": {Concurrent: 4}}
	if len(got) != len(want) || got["ICBC"] != want["ICBC"] || got["CCB"] != want["CCB"] {
		t.Fatalf("limits = %+v, want %+v", got, want)
	}
	for _, bad := range []string{"ICBC", "ICBC=200", "ICBC=x:1", "ICBC=1:y", "=1:1", "ICBC=-1:1", "ICBC=1:-1",
		"ICBC=NaN:1", "ICBC=Inf:1", "ICBC=1:1,icbc=2:2"} {
		if _, err := bankadapters.ParseLimits(bad); err == nil || !strings.Contains(err.Error(), "QUICKPAY_BANK_LIMITS") {
			t.Errorf("%q: %v, want an error naming QUICKPAY_BANK_LIMITS", bad, err)
		}
	}
	if got, err := bankadapters.ParseLimits(""); err != nil || len(got) != 0 {
		t.Errorf("empty: %v, %v; want no limits", got, err)
	}
}

// heldBank is a stand-in Bank (not a simulation of one) whose calls block
// until released, so the test can count how many are inside at once.
type heldBank struct {
	inside, most atomic.Int32
	release      chan struct{}
}

func (b *heldBank) hold() {
	n := b.inside.Add(1)
	for {
		m := b.most.Load()
		if n <= m || b.most.CompareAndSwap(m, n) {
			break
		}
	}
	<-b.release
	b.inside.Add(-1)
}

func (b *heldBank) Code() string { return "HELD" }
func (b *heldBank) BindApply(context.Context, bankadapters.BindRequest) (bankadapters.BindSession, error) {
	b.hold()
	return bankadapters.BindSession{}, nil
}
func (b *heldBank) BindResend(context.Context, string) error { b.hold(); return nil }
func (b *heldBank) BindConfirm(context.Context, string, sensitive.OTP) (string, error) {
	b.hold()
	return "A1", nil
}
func (b *heldBank) Charge(context.Context, bankadapters.ChargeRequest) (bankadapters.ChargeResult, error) {
	b.hold()
	return bankadapters.ChargeResult{}, nil
}
func (b *heldBank) Query(context.Context, string) (bankadapters.ChargeResult, error) {
	b.hold()
	return bankadapters.ChargeResult{}, nil
}
func (b *heldBank) Unbind(context.Context, string) error { b.hold(); return nil }
func (b *heldBank) Refund(context.Context, bankadapters.RefundRequest) (bankadapters.RefundResult, error) {
	b.hold()
	return bankadapters.RefundResult{}, nil
}
func (b *heldBank) QueryRefund(context.Context, string) (bankadapters.RefundResult, error) {
	b.hold()
	return bankadapters.RefundResult{}, nil
}

// statementBank adds the optional capability.
type statementBank struct{ *heldBank }

func (statementBank) Statement(context.Context, time.Time) (bankadapters.Statement, error) {
	return bankadapters.Statement{}, nil
}

// callbackBank and fullBank add the other capability and both.
type callbackBank struct{ *heldBank }

func (callbackBank) ParseCallback(map[string][]string, []byte) (bankadapters.Notice, error) {
	return bankadapters.Notice{}, nil
}

type fullBank struct{ *heldBank }

func (fullBank) Statement(context.Context, time.Time) (bankadapters.Statement, error) {
	return bankadapters.Statement{}, nil
}

func (fullBank) ParseCallback(map[string][]string, []byte) (bankadapters.Notice, error) {
	return bankadapters.Notice{}, nil
}

func TestWithLimitBoundsConcurrentCalls(t *testing.T) {
	t.Parallel()
	raw := &heldBank{release: make(chan struct{})}
	bank := bankadapters.WithLimit(raw, bankadapters.Limit{Concurrent: 2})
	done := make(chan error, 5)
	for range 5 {
		go func() {
			_, err := bank.BindConfirm(context.Background(), "ref", sensitive.OTP{})
			done <- err
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for raw.inside.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	// A call that cannot get a slot before its deadline is not sent.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := bank.Unbind(ctx, "A1")
	if !errors.Is(err, bankadapters.ErrNotSent) || bankadapters.OutcomeOf(err) != bankadapters.OutcomeUnavailable {
		t.Errorf("queued past its deadline: %v, want ErrNotSent classed unavailable", err)
	}
	close(raw.release)
	for range 5 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
	if most := raw.most.Load(); most != 2 {
		t.Errorf("at most %d calls inside at once, want 2", most)
	}
}

func TestWithLimitKeepsCapabilities(t *testing.T) {
	t.Parallel()
	lim := bankadapters.Limit{PerSecond: 1000, Concurrent: 1}
	for _, c := range []struct {
		name            string
		bank            bankadapters.Bank
		statements, cbs bool
	}{
		{"plain", &heldBank{}, false, false},
		{"statements", statementBank{&heldBank{}}, true, false},
		{"callbacks", callbackBank{&heldBank{}}, false, true},
		{"both", fullBank{&heldBank{}}, true, true},
		{"json-hmac adapter", jsonHMACBank(t), true, true},
		{"form-rsa adapter", formRSABank(t), true, true},
	} {
		got := bankadapters.WithLimit(c.bank, lim)
		if _, ok := got.(bankadapters.Statementer); ok != c.statements {
			t.Errorf("%s: Statementer %v, want %v", c.name, ok, c.statements)
		}
		if _, ok := got.(bankadapters.CallbackParser); ok != c.cbs {
			t.Errorf("%s: CallbackParser %v, want %v", c.name, ok, c.cbs)
		}
		if got == c.bank {
			t.Errorf("%s: a limit returned the bank unwrapped", c.name)
		}
	}
	raw := &heldBank{}
	if got := bankadapters.WithLimit(raw, bankadapters.Limit{}); got != bankadapters.Bank(raw) {
		t.Error("no limit should return the bank itself")
	}
}

func jsonHMACBank(t *testing.T) bankadapters.Bank {
	t.Helper()
	b, err := jsonhmac.New(jsonhmac.Config{Code: "ICBC", BaseURL: "http://127.0.0.1:1", MerchantNo: "m", Secret: []byte("s")})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// unusedSigner stands in for the HSM: the test makes no call.
type unusedSigner struct{}

func (unusedSigner) SignSHA256(context.Context, []byte) ([]byte, error) {
	return nil, errors.New("unusedSigner signs nothing")
}

func formRSABank(t *testing.T) bankadapters.Bank {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	b, err := formrsa.New(formrsa.Config{Code: "CCB", BaseURL: "http://127.0.0.1:1", MerchantNo: "m", Signer: unusedSigner{},
		BankPublicKeyPEM: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))})
	if err != nil {
		t.Fatal(err)
	}
	return b
}
