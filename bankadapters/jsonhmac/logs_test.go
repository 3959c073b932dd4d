package jsonhmac_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/bankadapters/conformance"
	"github.com/quickpay/quickpay/internal/sensitive"
)

// TestLogsHoldNoCardData captures every adapter log line, at debug level,
// through binds (right and wrong codes), charges and faults, and scans them
// for the cardholder's data.
func TestLogsHoldNoCardData(t *testing.T) {
	ctx := context.Background()
	base := startSim(t)
	_, newBank := register(t, base, "ICBC")
	var buf bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewJSONHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return buf.Write(p)
	}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	b, err := newBank(base, bankadapters.CallOptions{Logger: log, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	c := conformance.NewClient(base)
	info, err := c.Bank(ctx, "ICBC")
	if err != nil {
		t.Fatal(err)
	}
	acct, err := conformance.NewGen().Account(info, "debit", 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.PutAccount(ctx, acct); err != nil {
		t.Fatal(err)
	}

	sess, err := b.BindApply(ctx, conformance.BindRequest(acct, "req-logs-1"))
	if err != nil {
		t.Fatal(err)
	}
	texts, err := c.SMS(ctx, acct.Phone)
	if err != nil || len(texts) == 0 {
		t.Fatalf("no SMS: %v", err)
	}
	code := texts[0].Code
	wrong := "000000"
	if code == wrong {
		wrong = "111111"
	}
	if _, err := b.BindConfirm(ctx, sess.BindRef, sensitive.NewOTP(wrong)); err == nil {
		t.Fatal("wrong code accepted")
	}
	agreement, err := b.BindConfirm(ctx, sess.BindRef, sensitive.NewOTP(code))
	if err != nil {
		t.Fatal(err)
	}
	bad := acct
	bad.HolderName = "不是本人"
	if _, err := b.BindApply(ctx, conformance.BindRequest(bad, "req-logs-2")); err == nil {
		t.Fatal("mismatched name accepted")
	}
	for i, mode := range []string{"", "drop_response", "timeout", "error"} {
		if mode != "" {
			if err := c.AddFault(ctx, conformance.Fault{BankCode: "ICBC", Operation: "charge", Mode: mode}); err != nil {
				t.Fatal(err)
			}
		}
		r, err := b.Charge(ctx, bankadapters.ChargeRequest{OrderNo: fmt.Sprintf("ord-logs-%d", i), AgreementNo: agreement,
			Amount: 100, Currency: "CNY", Description: "log test"})
		log.Info("charge done", "status", r.Status, "err", err, "cause", r.Cause)
	}

	mu.Lock()
	out := buf.String()
	mu.Unlock()
	if !strings.Contains(out, `"op":"charge"`) || !strings.Contains(out, "timeout") {
		t.Fatalf("log capture did not see the calls:\n%s", out)
	}
	for name, secret := range map[string]string{
		"card number": acct.CardNumber, "card digits": acct.CardNumber[6:], "ID number": acct.IDNumber,
		"phone": acct.Phone, "OTP": code, "holder name": acct.HolderName, "agreement": agreement,
	} {
		if strings.Contains(out, secret) {
			t.Errorf("adapter logs contain the %s", name)
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
