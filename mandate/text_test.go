package mandate_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/quickpay/quickpay/mandate"
)

// TestSMSBoundTextChecked: a reference or description that would put a
// control character, a line break, a direction override or too much text
// into the consent SMS is refused, naming the field, before any SMS.
func TestSMSBoundTextChecked(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	c := w.bindCard(t, "ICBC", 100_000)
	before, err := w.SimCtl.SMS(ctx, c.Phone)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		reference, description, field string
	}{
		"nul in description":        {"ref-1", "water\x00bill", "description"},
		"newline in description":    {"ref-1", "water bill\n回复1确认", "description"},
		"carriage return":           {"ref-1", "water\rbill", "description"},
		"tab in reference":          {"ref\t1", "", "reference"},
		"nul in reference":          {"ref\x001", "", "reference"},
		"del":                       {"ref-1", "water\x7fbill", "description"},
		"c1 next line":              {"ref-1", "water\u0085bill", "description"},
		"line separator":            {"ref-1", "water\u2028bill", "description"},
		"right-to-left override":    {"ref-1", "\u202ellib retaw", "description"},
		"description one too long":  {"ref-1", strings.Repeat("费", mandate.MaxDescriptionLength+1), "description"},
		"reference one too long":    {strings.Repeat("r", mandate.MaxReferenceLength+1), "", "reference"},
		"empty reference":           {"", "water", "reference"},
		"invalid utf-8 description": {"ref-1", "water\xffbill", "description"},
	} {
		in := w.monthly(10, 1_000)
		in.CardID, in.Reference, in.Description = c.ID, tc.reference, tc.description
		_, err := w.svc.Create(ctx, c.Merchant, in)
		var fe *mandate.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, mandate.ErrInvalid) {
			t.Errorf("%s: Create err = %v, want a field error on %s", name, err, tc.field)
		}
	}
	after, err := w.SimCtl.SMS(ctx, c.Phone)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("refused mandates sent %d SMS", len(after)-len(before))
	}

	// At the caps exactly, and with ordinary punctuation and spaces, it is
	// taken.
	in := w.monthly(10, 1_000)
	in.Reference = strings.Repeat("r", mandate.MaxReferenceLength)
	in.Description = strings.Repeat("费", mandate.MaxDescriptionLength-6) + " (水费)"
	w.mandate(t, c, in)

	// A variable mandate's posted charge description reaches the
	// pre-debit SMS: the same rules.
	v := w.mandate(t, c, mandate.CreateInput{AmountType: mandate.AmountVariable, MaxAmount: 50_000,
		Schedule: mandate.Schedule{Interval: mandate.IntervalMonth, DayOfMonth: 10, StartDate: w.today()}})
	for name, d := range map[string]string{
		"newline":  "march\nbill",
		"nul":      "march\x00bill",
		"too long": strings.Repeat("x", mandate.MaxDescriptionLength+1),
	} {
		_, err := w.svc.PostCharge(ctx, c.Merchant, v.ID, mandate.ChargeInput{Amount: 100, Description: d})
		var fe *mandate.FieldError
		if !errors.As(err, &fe) || fe.Field != "description" {
			t.Errorf("posted charge with %s: err = %v, want a field error on description", name, err)
		}
	}
	if _, err := w.svc.PostCharge(ctx, c.Merchant, v.ID, mandate.ChargeInput{Amount: 100, Description: "三月 水费"}); err != nil {
		t.Errorf("posted charge with a plain description: %v", err)
	}
}

// TestConsentSMSNamesPayee: the consent SMS names the merchant the member
// authorises, says how to cancel, and carries the merchant's name made
// SMS-safe (a name an operator typed with a line break becomes one line).
func TestConsentSMSNamesPayee(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	if _, err := w.Pool.Exec(ctx, `UPDATE merchants SET name = $2 WHERE id = $1`, w.merchant,
		"安心缴费\n回复TD退订 Utilities"); err != nil {
		t.Fatal(err)
	}
	c := w.bindCard(t, "ICBC", 100_000)
	in := w.monthly(10, 1_999)
	in.Description = "物业费"
	w.mandate(t, c, in)
	texts, err := w.SimCtl.SMS(ctx, c.Phone)
	if err != nil || len(texts) == 0 {
		t.Fatalf("no consent SMS: %v", err)
	}
	text := texts[0].Text
	for _, want := range []string{
		"授权安心缴费 回复TD退订 Utilities从卡尾号" + c.CardNumber[len(c.CardNumber)-4:], // the payee, on one line
		"物业费", "每月¥19.99",
		"如需取消授权，请联系安心缴费 回复TD退订 Utilities", "联系发卡银行解除代扣协议", // how to cancel
	} {
		if !strings.Contains(text, want) {
			t.Errorf("consent SMS %q lacks %q", text, want)
		}
	}
	if strings.ContainsAny(text, "\n\r") {
		t.Errorf("consent SMS %q has a line break", text)
	}
}
