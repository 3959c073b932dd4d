package bankadapters_test

import (
	"strings"
	"testing"

	"github.com/quickpay/quickpay/bankadapters"
)

func TestValidateRefund(t *testing.T) {
	t.Parallel()
	ok := bankadapters.RefundRequest{RefundNo: "RF-1", OrderNo: "CO-1", Amount: 1, Currency: "CNY"}
	if err := bankadapters.ValidateRefund(ok); err != nil {
		t.Fatalf("a valid refund refused: %v", err)
	}
	for name, edit := range map[string]func(*bankadapters.RefundRequest){
		"no refund number":         func(r *bankadapters.RefundRequest) { r.RefundNo = "" },
		"refund number of 65":      func(r *bankadapters.RefundRequest) { r.RefundNo = strings.Repeat("R", 65) },
		"refund number with space": func(r *bankadapters.RefundRequest) { r.RefundNo = "RF 1" },
		"refund number not ASCII":  func(r *bankadapters.RefundRequest) { r.RefundNo = "退款1" },
		"no order number":          func(r *bankadapters.RefundRequest) { r.OrderNo = "" },
		"zero amount":              func(r *bankadapters.RefundRequest) { r.Amount = 0 },
		"negative amount":          func(r *bankadapters.RefundRequest) { r.Amount = -5 },
		"other currency":           func(r *bankadapters.RefundRequest) { r.Currency = "USD" },
	} {
		r := ok
		edit(&r)
		if err := bankadapters.ValidateRefund(r); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	long := ok
	long.RefundNo = strings.Repeat("R", 64)
	if err := bankadapters.ValidateRefund(long); err != nil {
		t.Errorf("a refund number of 64 refused: %v", err)
	}
}

func TestClassifyRefund(t *testing.T) {
	t.Parallel()
	table := map[string]bankadapters.CodeClass{
		"OK":   {Outcome: bankadapters.OutcomeSuccess},
		"WAIT": {Outcome: bankadapters.OutcomeProcessing},
		"SYS":  {Outcome: bankadapters.OutcomeUnavailable},
		"AMT":  {Outcome: bankadapters.OutcomeHardDecline, Reason: bankadapters.ReasonRefundExceeds},
		"BAD":  {Outcome: bankadapters.OutcomeHardDecline},
	}
	for _, c := range []struct {
		code, status string
		want         bankadapters.ChargeStatus
		outcome      bankadapters.Outcome
		reason       string
	}{
		{"OK", "SUCCESS", bankadapters.ChargeSucceeded, bankadapters.OutcomeSuccess, ""},
		{"OK", "", bankadapters.ChargeUnknown, bankadapters.OutcomeProcessing, ""}, // success without its status word
		{"OK", "PROCESSING", bankadapters.ChargeProcessing, bankadapters.OutcomeProcessing, ""},
		{"WAIT", "", bankadapters.ChargeProcessing, bankadapters.OutcomeProcessing, ""},
		{"SYS", "", bankadapters.ChargeUnknown, bankadapters.OutcomeProcessing, ""},
		{"AMT", "", bankadapters.ChargeFailed, bankadapters.OutcomeHardDecline, bankadapters.ReasonRefundExceeds},
		{"AMT", "SUCCESS", bankadapters.ChargeUnknown, bankadapters.OutcomeProcessing, ""}, // a decline that says success
		{"BAD", "FAILED", bankadapters.ChargeFailed, bankadapters.OutcomeHardDecline, "declined"},
		{"NEW", "SUCCESS", bankadapters.ChargeUnknown, bankadapters.OutcomeProcessing, ""},
	} {
		in := bankadapters.RefundResult{RefundNo: "RF1", OrderNo: "CO1", Amount: 300, BankTxnNo: "T1"}
		r := bankadapters.ClassifyRefund(in, table, c.code, c.status)
		if r.Status != c.want || r.Outcome != c.outcome || r.Reason != c.reason || r.Code != c.code {
			t.Errorf("%s/%s: %s/%s reason %q code %q; want %s/%s reason %q", c.code, c.status, r.Status, r.Outcome,
				r.Reason, r.Code, c.want, c.outcome, c.reason)
		}
		if (r.Status == bankadapters.ChargeUnknown) != (r.Cause != nil) {
			t.Errorf("%s/%s: status %s with cause %v", c.code, c.status, r.Status, r.Cause)
		}
		if r.RefundNo != in.RefundNo || r.OrderNo != in.OrderNo || r.Amount != in.Amount || r.BankTxnNo != in.BankTxnNo {
			t.Errorf("%s/%s: the numbers changed: %+v", c.code, c.status, r)
		}
	}
}
