package main

import (
	"flag"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/limits"
	"github.com/quickpay/quickpay/internal/merchants"
)

func TestLimitSettings(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		var c config
		c.flags(flag.NewFlagSet("t", flag.ContinueOnError))
		if c.Limits.Binding != binding.DefaultLimits() || c.Limits.TokenFailures != merchants.DefaultTokenFailures ||
			len(c.Limits.TrustedProxies) != 0 || len(c.envErrs) != 0 {
			t.Fatalf("defaults = %+v, %v", c.Limits, c.envErrs)
		}
	})
	t.Run("set", func(t *testing.T) {
		t.Setenv("QUICKPAY_LIMIT_SMS_PHONE", "3/12h")
		t.Setenv("QUICKPAY_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.1")
		var c config
		c.flags(flag.NewFlagSet("t", flag.ContinueOnError))
		if c.Limits.Binding.SMSPerDay != (limits.Rule{Cap: 3, Window: 12 * time.Hour}) || len(c.envErrs) != 0 {
			t.Fatalf("sms limit = %+v, %v", c.Limits.Binding.SMSPerDay, c.envErrs)
		}
		want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.1/32")}
		if len(c.Limits.TrustedProxies) != 2 || c.Limits.TrustedProxies[0] != want[0] || c.Limits.TrustedProxies[1] != want[1] {
			t.Fatalf("trusted proxies = %v", c.Limits.TrustedProxies)
		}
	})
	for _, bad := range []string{"10", "0/24h", "10/24", "ten/1h", "5/1ms"} {
		t.Run("refuses "+bad, func(t *testing.T) {
			t.Setenv("QUICKPAY_LIMIT_APPLY_CARD_DAILY", bad)
			err := checkEnv()
			if err == nil || !strings.Contains(err.Error(), "QUICKPAY_LIMIT_APPLY_CARD_DAILY") {
				t.Fatalf("checkEnv = %v, want an error naming the variable", err)
			}
		})
	}
	t.Run("refuses a bad network", func(t *testing.T) {
		t.Setenv("QUICKPAY_TRUSTED_PROXIES", "10.0.0.0/33")
		if err := checkEnv(); err == nil || !strings.Contains(err.Error(), "QUICKPAY_TRUSTED_PROXIES") {
			t.Fatalf("checkEnv = %v", err)
		}
	})
}
