package core_test

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/bankadapters/internal/core"
)

func TestFresh(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	stamp := func(d time.Duration) string { return strconv.FormatInt(now.Add(d).Unix(), 10) }
	for _, c := range []struct {
		ts    string
		fresh bool
	}{
		{stamp(0), true}, {stamp(-300 * time.Second), true}, {stamp(300 * time.Second), true},
		{stamp(-301 * time.Second), false}, {stamp(301 * time.Second), false},
		{stamp(-24 * time.Hour), false}, {"", false}, {"17x", false}, {"-9223372036854775808", false},
		{"99999999999999999999", false},
	} {
		err := core.Fresh(c.ts, now)
		if (err == nil) != c.fresh {
			t.Errorf("Fresh(%q) = %v, want fresh %v", c.ts, err, c.fresh)
		}
		if err != nil && !errors.Is(err, core.ErrCallbackStale) {
			t.Errorf("Fresh(%q) = %v, want ErrCallbackStale", c.ts, err)
		}
	}
}

func TestNotice(t *testing.T) {
	t.Parallel()
	a := &core.Adapter{Code: "X", Codes: map[string]bankadapters.CodeClass{"OK": {Outcome: bankadapters.OutcomeSuccess}}}
	at := "2026-11-30T16:00:00+08:00"
	for _, c := range []struct {
		name   string
		fields map[string]string
		kind   bankadapters.NoticeKind
		err    error
	}{
		{"charge without a type", map[string]string{"order_no": "CO1", "result_code": "OK", "status": "SUCCESS"}, bankadapters.NoticeCharge, nil},
		{"charge of type debit", map[string]string{"type": "debit", "order_no": "CO1", "result_code": "OK", "status": "SUCCESS"}, bankadapters.NoticeCharge, nil},
		{"charge without an order", map[string]string{"type": "debit", "result_code": "OK"}, "", core.ErrCallbackCharge},
		{"refund", map[string]string{"type": "refund", "order_no": "RF1", "refund_of": "CO1", "result_code": "OK", "status": "SUCCESS", "amount": "300"}, bankadapters.NoticeRefund, nil},
		{"refund without its number", map[string]string{"type": "refund", "refund_of": "CO1"}, "", core.ErrCallbackRefund},
		{"agreement ended", map[string]string{"type": "agreement_terminated", "agreement_no": "AG1", "at": at}, bankadapters.NoticeAgreementTerminated, nil},
		{"agreement ended without a time", map[string]string{"type": "agreement_terminated", "agreement_no": "AG1"}, "", core.ErrCallbackAgreement},
		{"agreement ended without its number", map[string]string{"type": "agreement_terminated", "at": at}, "", core.ErrCallbackAgreement},
		{"unknown type", map[string]string{"type": "chargeback", "order_no": "CO1"}, "", core.ErrCallbackType},
	} {
		n, err := a.Notice(c.fields)
		if !errors.Is(err, c.err) || (err == nil && n.Kind != c.kind) {
			t.Errorf("%s: %q, %v; want %q, %v", c.name, n.Kind, err, c.kind, c.err)
			continue
		}
		switch n.Kind {
		case bankadapters.NoticeCharge:
			if n.Charge.OrderNo != "CO1" || n.Charge.Status != bankadapters.ChargeSucceeded {
				t.Errorf("%s: charge %+v", c.name, n.Charge)
			}
		case bankadapters.NoticeRefund:
			if n.Refund.RefundNo != "RF1" || n.Refund.OrderNo != "CO1" || n.Refund.Amount != 300 || n.Refund.Status != bankadapters.ChargeSucceeded {
				t.Errorf("%s: refund %+v", c.name, n.Refund)
			}
		case bankadapters.NoticeAgreementTerminated:
			if n.AgreementNo != "AG1" || !n.At.Equal(time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)) {
				t.Errorf("%s: agreement %q at %v", c.name, n.AgreementNo, n.At)
			}
		}
	}
}
