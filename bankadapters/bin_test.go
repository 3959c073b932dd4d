package bankadapters_test

import (
	"errors"
	"testing"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/internal/sensitive"
)

func TestRoute(t *testing.T) {
	r := bankadapters.NewRouter(append(bankadapters.DefaultBINs(),
		bankadapters.BIN{Prefix: "6222", Length: 19, BankCode: "OTHER", BankName: "x", CardType: bankadapters.Debit}))
	for _, tc := range []struct {
		name, pan string
		bank      string
		typ       bankadapters.CardType
	}{
		{"ICBC debit", "6222021234567890128", "ICBC", bankadapters.Debit},
		{"longest prefix wins", "6222031234567890128", "OTHER", bankadapters.Debit},
		{"CCB debit", "6217001234567890126", "CCB", bankadapters.Debit},
		{"CMB debit", "6225881234567894", "CMB", bankadapters.Debit},
		{"CMB credit", "4392251234567893", "CMB", bankadapters.Credit},
		{"right BIN, wrong length", "622588123456789", "", ""},
		{"unknown BIN", "4111111111111111", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := r.Route(sensitive.NewPAN(tc.pan))
			if tc.bank == "" {
				if !errors.Is(err, bankadapters.ErrCardUnsupported) {
					t.Fatalf("Route = %+v, %v; want unsupported", got, err)
				}
				return
			}
			if err != nil || got.BankCode != tc.bank || got.CardType != tc.typ || got.BankName == "" {
				t.Fatalf("Route = %+v, %v; want %s %s", got, err, tc.bank, tc.typ)
			}
		})
	}
}
