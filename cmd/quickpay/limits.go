package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/limits"
	"github.com/quickpay/quickpay/internal/merchants"
)

// limitsConfig holds the abuse limits (DESIGN.md "Abuse limits";
// docs/decisions.md "Abuse limits" lists the variables and defaults).
type limitsConfig struct {
	Binding        binding.Limits
	TokenFailures  limits.Rule
	SourceFailures limits.Rule
	TrustedProxies []netip.Prefix
}

// limitFlags registers the abuse limits' flags with their environment
// defaults; each rule is CAP/WINDOW, e.g. 10/24h.
func (c *config) limitFlags(fs *flag.FlagSet) {
	l := &c.Limits
	l.Binding, l.TokenFailures, l.SourceFailures = binding.DefaultLimits(), merchants.DefaultTokenFailures, merchants.DefaultSourceFailures
	for _, r := range []struct {
		p          *limits.Rule
		name, key  string
		usage, def string
	}{
		{&l.Binding.ApplyPerHour, "limit-apply-card-hourly", "QUICKPAY_LIMIT_APPLY_CARD_HOURLY", "bind applies that reach the bank per card", "5/1h"},
		{&l.Binding.ApplyPerDay, "limit-apply-card-daily", "QUICKPAY_LIMIT_APPLY_CARD_DAILY", "bind applies that reach the bank per card", "10/24h"},
		{&l.Binding.SMSPerDay, "limit-sms-phone", "QUICKPAY_LIMIT_SMS_PHONE", "texts to one phone (bank codes, resends, consent codes)", "10/24h"},
		{&l.Binding.MismatchPerDay, "limit-mismatch", "QUICKPAY_LIMIT_MISMATCH", "four-element mismatches per ID number and per card", "5/24h"},
		{&l.TokenFailures, "limit-token-failures", "QUICKPAY_LIMIT_TOKEN_FAILURES", "failed token requests per client id and source address", "10/15m"},
		{&l.SourceFailures, "limit-token-source-failures", "QUICKPAY_LIMIT_TOKEN_SOURCE_FAILURES", "failed token requests per source address across client ids", "100/15m"},
	} {
		c.envFlag(fs, ruleFlag{r.p}, r.name, r.key, r.usage+", CAP/WINDOW ("+r.key+"; default "+r.def+")")
	}
	c.envFlag(fs, prefixesFlag{&l.TrustedProxies}, "trusted-proxies", "QUICKPAY_TRUSTED_PROXIES",
		"networks of proxies whose X-Forwarded-For names a token request's source, comma-separated CIDRs (QUICKPAY_TRUSTED_PROXIES; default none: the socket's peer)")
}

// ruleFlag is a limit CAP/WINDOW: a whole number ≥ 1 and a Go duration of
// at least a second ("10/24h").
type ruleFlag struct{ p *limits.Rule }

func (f ruleFlag) String() string {
	if f.p == nil {
		return ""
	}
	return strconv.Itoa(f.p.Cap) + "/" + f.p.Window.String()
}

func (f ruleFlag) Set(s string) error {
	capS, winS, ok := strings.Cut(strings.TrimSpace(s), "/")
	n, err1 := strconv.Atoi(capS)
	d, err2 := time.ParseDuration(winS)
	r := limits.Rule{Cap: n, Window: d}
	if !ok || err1 != nil || err2 != nil || !r.Valid() {
		return errors.New("want CAP/WINDOW, a whole number ≥ 1 and a duration ≥ 1s, e.g. 10/24h")
	}
	*f.p = r
	return nil
}

// prefixesFlag is a comma-separated list of CIDR networks (a bare address
// is its own /32 or /128).
type prefixesFlag struct{ p *[]netip.Prefix }

func (f prefixesFlag) String() string {
	if f.p == nil {
		return ""
	}
	var out []string
	for _, p := range *f.p {
		out = append(out, p.String())
	}
	return strings.Join(out, ",")
}

func (f prefixesFlag) Set(s string) error {
	var out []netip.Prefix
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		p, err := netip.ParsePrefix(item)
		if err != nil {
			a, aerr := netip.ParseAddr(item)
			if aerr != nil {
				return errors.New("want comma-separated networks such as 10.0.0.0/8")
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		// Trusting all of the internet (0.0.0.0/0, ::/0) or a good part of
		// it lets any caller name its own source in X-Forwarded-For: a
		// fresh count per request, or the merchant's own address to lock.
		if min := map[bool]int{true: 8, false: 32}[p.Addr().Unmap().Is4()]; p.Bits() < min {
			return fmt.Errorf("%s is wider than a proxy network can be (at most /%d)", p, min)
		}
		out = append(out, p.Masked())
	}
	*f.p = out
	return nil
}
