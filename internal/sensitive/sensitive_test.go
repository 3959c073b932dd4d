package sensitive_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/quickpay/quickpay/internal/sensitive"
)

const testPAN = "6222021234567890128"

type holder struct {
	Card  sensitive.PAN
	ID    sensitive.IDNumber
	cvv   sensitive.CVV2
	Code  sensitive.OTP
	Exp   sensitive.Expiry
	inner struct{ pan sensitive.PAN }
}

func TestNoFormattingRevealsTheValue(t *testing.T) {
	h := holder{
		Card: sensitive.NewPAN(testPAN),
		ID:   sensitive.NewIDNumber("110101199003074514"),
		cvv:  sensitive.NewCVV2("123"),
		Code: sensitive.NewOTP("654321"),
		Exp:  sensitive.NewExpiry("1230"),
	}
	h.inner.pan = sensitive.NewPAN(testPAN)
	secrets := []string{testPAN, "110101199003074514", "654321", "1230", "7890128"}

	var out []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		out = append(out, fmt.Sprintf(verb, h), fmt.Sprintf(verb, h.Card), fmt.Sprintf(verb, &h))
	}
	out = append(out, h.Card.String(), fmt.Sprint(h.cvv), fmt.Errorf("bind: %v", h.Card).Error())
	js, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, string(js))
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.Info("bind", "pan", h.Card, "holder", h, "err", errors.New(fmt.Sprint(h.ID)))
	slog.New(slog.NewTextHandler(&buf, nil)).Info("bind", "pan", h.Card, "otp", h.Code)
	out = append(out, buf.String())

	for _, s := range out {
		for _, sec := range secrets {
			if strings.Contains(s, sec) {
				t.Errorf("output reveals a sensitive value: %q", s)
			}
		}
	}
	if !strings.Contains(string(js), sensitive.Redacted) {
		t.Errorf("JSON %s lacks the redaction marker", js)
	}
}

func TestRevealAndMasking(t *testing.T) {
	p := sensitive.NewPAN(testPAN)
	if p.Reveal() != testPAN {
		t.Fatalf("Reveal = %q", p.Reveal())
	}
	if got, want := p.Masked(), "622202*********0128"; got != want {
		t.Errorf("Masked = %q, want %q", got, want)
	}
	if got := p.Last4(); got != "0128" {
		t.Errorf("Last4 = %q", got)
	}
	if !(sensitive.PAN{}).IsZero() || p.IsZero() {
		t.Error("IsZero wrong")
	}
}

func TestUnmarshalKeepsValueAndHidesBadInput(t *testing.T) {
	var req struct {
		Card sensitive.PAN `json:"card_number"`
	}
	if err := json.Unmarshal([]byte(`{"card_number":"`+testPAN+`"}`), &req); err != nil {
		t.Fatal(err)
	}
	if req.Card.Reveal() != testPAN {
		t.Fatalf("decoded %q", req.Card.Reveal())
	}
	err := json.Unmarshal([]byte(`{"card_number":6222021234567890128}`), &req)
	if err == nil || strings.Contains(err.Error(), "622202") {
		t.Fatalf("bad input error = %v", err)
	}
}
