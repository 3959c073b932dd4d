package main

import (
	"strings"
	"testing"

	"github.com/quickpay/quickpay/mandate"
)

func TestParseBankLimits(t *testing.T) {
	t.Parallel()
	got, err := parseBankLimits(" icbc=200:32, CCB=0:4 ,")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]mandate.Limit{
		"ICBC": {PerSecond: 200, Burst: 20, Concurrent: 32},
		"CCB":  {PerSecond: 0, Burst: 1, Concurrent: 4},
	}
	if len(got) != len(want) || got["ICBC"] != want["ICBC"] || got["CCB"] != want["CCB"] {
		t.Fatalf("limits = %+v, want %+v", got, want)
	}
	for _, bad := range []string{"ICBC", "ICBC=200", "ICBC=x:1", "ICBC=1:y", "=1:1", "ICBC=-1:1", "ICBC=1:-1",
		"ICBC=NaN:1", "ICBC=Inf:1"} {
		if _, err := parseBankLimits(bad); err == nil || !strings.Contains(err.Error(), "QUICKPAY_BANK_LIMITS") {
			t.Errorf("%q: %v, want an error naming QUICKPAY_BANK_LIMITS", bad, err)
		}
	}
	if got, err := parseBankLimits(""); err != nil || len(got) != 0 {
		t.Errorf("empty: %v, %v; want no limits", got, err)
	}
}
