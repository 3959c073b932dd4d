package webhooks

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// Where a merchant's endpoint may point. Unless private networks are
// allowed (dev stacks and tests), an endpoint URL must use https and must
// not reach a non-public address. Both are checked twice: when the URL is
// set (SetEndpoint: the scheme, an address literal, and the addresses its
// name resolves to then) and when a delivery connects (the default
// client: the scheme of every request, and the address actually dialled,
// after DNS, so a name that later resolves to an internal host — DNS
// rebinding — is refused too).

// nonPublic lists the ranges publicAddr refuses besides those netip
// classifies (loopback, RFC 1918 and fc00::/7, link-local, multicast,
// unspecified). netip.Prefix.Contains never matches across families, so
// publicAddr unmaps ::ffff:a.b.c.d before looking here; the IPv6 ranges
// that embed an IPv4 address (NAT64, 6to4, IPv4-compatible) are refused
// whole, whatever address they embed, as a relay or translator may take
// them to it.
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network" (RFC 791); 0.x.y.z reaches the local host on Linux
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT (RFC 6598)
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments (RFC 6890)
	netip.MustParsePrefix("192.0.2.0/24"),    // TEST-NET-1
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking (RFC 2544), used inside data centres
	netip.MustParsePrefix("198.51.100.0/24"), // TEST-NET-2
	netip.MustParsePrefix("203.0.113.0/24"),  // TEST-NET-3
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, and 255.255.255.255
	netip.MustParsePrefix("::/96"),           // IPv4-compatible (deprecated, RFC 4291), and :: and ::1
	netip.MustParsePrefix("::ffff:0:0:0/96"), // IPv4-translated (SIIT, RFC 2765): not unmapped by Unmap
	netip.MustParsePrefix("64:ff9b::/96"),    // NAT64 well-known prefix (RFC 6052)
	netip.MustParsePrefix("64:ff9b:1::/48"),  // NAT64 local use (RFC 8215)
	netip.MustParsePrefix("100::/64"),        // discard-only (RFC 6666)
	netip.MustParsePrefix("2001::/32"),       // Teredo (RFC 4380)
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("2002::/16"),       // 6to4 (RFC 3056)
	netip.MustParsePrefix("fec0::/10"),       // site-local (deprecated, RFC 3879)
}

// publicAddr reports whether a is an address a webhook may be delivered
// to.
func publicAddr(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	if !a.IsValid() || !a.IsGlobalUnicast() || a.IsPrivate() || a.IsLoopback() || a.IsLinkLocalUnicast() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

// Resolver looks up the addresses of a host name (net.DefaultResolver
// does).
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// lookupTimeout bounds SetEndpoint's lookup of the URL's host name.
const lookupTimeout = 2 * time.Second

// checkTarget refuses a URL (already parsed by validURL) that is not https
// or that points at a non-public address, unless allowPrivate. A host name
// that does not resolve now is accepted: the dial-time check still applies
// when it does.
func checkTarget(ctx context.Context, r Resolver, u *url.URL, allowPrivate bool) error {
	if allowPrivate {
		return nil
	}
	fe := func(msg string) error { return &FieldError{Field: "url", Message: msg} }
	if u.Scheme != "https" {
		return fe("url must use https")
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if a, err := netip.ParseAddr(host); err == nil {
		if !publicAddr(a) {
			return fe("url must not point at a loopback, private or reserved address")
		}
		return nil
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return fe("url must not point at a loopback, private or reserved address")
	}
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	addrs, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil // not resolvable now: checked again at dial time
	}
	for _, a := range addrs {
		if !publicAddr(a) {
			return fe("url's host resolves to a loopback, private or reserved address")
		}
	}
	return nil
}

// errNotHTTPS is the default client's error for a plain-http endpoint
// (one stored before https was required, or set on a dev stack).
var errNotHTTPS = errors.New("webhook endpoint must use https")

// httpsOnly refuses any request but https before it reaches the network,
// so an event is never sent in clear.
type httpsOnly struct{ next http.RoundTripper }

func (h httpsOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, errNotHTTPS
	}
	return h.next.RoundTrip(req)
}

var _ Resolver = (*net.Resolver)(nil)
