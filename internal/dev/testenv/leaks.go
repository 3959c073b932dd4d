package testenv

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
)

// ScanPackage returns an after func for Main: once the package's tests
// have passed, it scans a pg_dump of the package's database, and the logs
// logs returns, for every card number, ID number, CVV2 and expiry of every
// account the banksims of the package's Stacks held and every code they
// texted (bank codes, and the codes quickpay sent through their carrier).
// It fails when it finds one, and, when every test ran (no -run), when a
// kind in want had no value to look for (the scan would prove nothing).
// It also looks for unkeyed digests (DigestScan) of those values and of
// every request body its test servers were sent (RecordBodies).
//
// A benchmark run (-bench set) is not scanned: its fixtures hold up to
// 100,000 accounts, and the scan's cost grows with accounts times dump
// size (hours). The tests' runs make the proof.
func ScanPackage(logs func() string, want ...string) func() error {
	return func() error {
		if f := flag.Lookup("test.bench"); f != nil && f.Value.String() != "" {
			fmt.Println("leak scan: skipped in a benchmark run")
			return nil
		}
		if f := flag.Lookup("test.run"); f != nil && f.Value.String() != "" {
			want = nil // some tests only: they need not use every kind
		}
		sims := Sims()
		if len(sims) == 0 && len(want) == 0 {
			return nil // the tests that ran used no Stack
		}
		values := map[string]string{}
		for _, s := range sims {
			maps.Copy(values, s.Sensitive())
		}
		dump, err := Dump()
		if err != nil {
			return fmt.Errorf("leak scan: %w", err)
		}
		hayLogs := logs()
		kinds := map[string]int{}
		for _, k := range values {
			kinds[k]++
		}
		var errs []error
		for _, k := range want {
			if kinds[k] == 0 {
				errs = append(errs, fmt.Errorf("leak scan: no %s to look for: it would prove nothing", k))
			}
		}
		for where, hay := range map[string]string{"pg_dump": dump, "logs": hayLogs} {
			lower := strings.ToLower(hay)
			for v, kind := range values {
				form, ok := "", false
				if kind == "OTP" {
					// Across a whole package a code standing alone is bound
					// to meet an equal amount or count: codes are searched
					// where a leak would put them, as CVV2 and expiry are.
					form, ok = shortLeak(lower, kind, v)
				} else {
					form, ok = Leak(hay, lower, kind, v)
				}
				if ok {
					errs = append(errs, fmt.Errorf("%s: %s (%s) found %s", where, kind, Describe(v), form))
				}
			}
		}
		bodies := Sent()
		digests := NewDigestScan(bodies, values)
		errs = append(errs, digests.Find("pg_dump", dump)...)
		errs = append(errs, digests.Find("logs", hayLogs)...)
		fmt.Printf("leak scan: %d KiB of pg_dump and %d KiB of logs for %v, and unkeyed digests of %d request bodies\n",
			len(dump)>>10, len(hayLogs)>>10, kinds, len(bodies))
		return errors.Join(errs...)
	}
}

// CaptureDefaultLog points slog.Default, at debug level, at a capture and
// returns what it has captured so far, for ScanPackage.
func CaptureDefaultLog() func() string {
	c := &LogCapture{}
	slog.SetDefault(slog.New(slog.NewJSONHandler(c, &slog.HandlerOptions{Level: slog.LevelDebug})))
	return c.String
}

// LogCapture is a log sink safe for concurrent writers.
type LogCapture struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (c *LogCapture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

// String returns everything written so far.
func (c *LogCapture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// Describe names a value in a failure without repeating it.
func Describe(v string) string {
	if len(v) >= 13 {
		return v[:6] + "…" + v[len(v)-4:]
	}
	return fmt.Sprintf("%d characters", len(v))
}

// Leak reports whether hay (and lower, its lower case) holds v in clear,
// as hex of its bytes, or as base64.
//
// Values of 10 characters or more (card numbers, ID numbers and a card
// number's unmasked tail) are searched as plain substrings. Codes (6
// digits) must stand alone: not inside a longer run of letters and digits
// (ciphertext hex, ids) and not as a timestamp's fraction of a second.
// CVV2 and expiry (3 and 4 digits) are too short for that, since statuses,
// counts and durations are numbers too: they are searched where a leak
// would put them (shortLeak).
func Leak(hay, lower, kind, v string) (string, bool) {
	lv := strings.ToLower(v)
	hexes := []string{hex.EncodeToString([]byte(v)), hex.EncodeToString([]byte(strings.ToUpper(v))), hex.EncodeToString([]byte(lv))}
	switch {
	case len(v) >= 10:
		needles := []string{lv}
		if kind == "PAN" && len(v)-6 >= 10 {
			needles = append(needles, lv[6:]) // all but the 6 digits a masked PAN may show
		}
		for _, n := range needles {
			if strings.Contains(lower, n) {
				return "in clear", true
			}
			if strings.Contains(lower, hex.EncodeToString([]byte(n))) {
				return "as hex", true
			}
		}
		for _, h := range hexes {
			if strings.Contains(lower, h) {
				return "as hex", true
			}
		}
		if strings.Contains(hay, base64.StdEncoding.EncodeToString([]byte(v))) {
			return "as base64", true
		}
	case kind == "OTP":
		if standsAlone(lower, lv) {
			return "in clear", true
		}
		for _, h := range hexes {
			if strings.Contains(lower, h) {
				return "as hex", true
			}
		}
	default:
		return shortLeak(lower, kind, lv)
	}
	return "", false
}

// fieldWords name the fields a short value of each kind is looked for
// after (see shortLeak): quickpay's and the banks' names for it.
var fieldWords = map[string][]string{
	"CVV2":   {"cvv", "cvv2", "cvc", "cvc2", "cvn", "cvn2", "csc", "security"},
	"expiry": {"exp", "expiry"},
	"OTP":    {"otp", "code"},
}

// shortLeak finds a CVV2, an expiry or a code (kind) where a leak would
// put it: as a whole bytea value, as the value of a field named for its
// kind (JSON, a form or a log), or as a JSON string. Short numbers are
// everywhere (counts, sequence numbers, the banks' result codes, a card's
// last 4 digits), and random ids and secrets hold "exp" or "cvv" by
// chance, so a field name must be a whole key, just before the value.
func shortLeak(s, kind, v string) (string, bool) {
	if i := strings.Index(s, `\x`+hex.EncodeToString([]byte(v))); i >= 0 {
		end := i + 2 + 2*len(v)
		if end == len(s) || !isHex(s[end]) {
			return "as a whole bytea value", true
		}
	}
	for _, at := range aloneAt(s, v) {
		key, ok := keyBefore(s, at)
		end := at + len(v)
		switch {
		case ok && slices.ContainsFunc(fieldWords[kind], func(w string) bool { return slices.Contains(key, w) }):
			return "after its field name", true
		case at > 0 && s[at-1] == '"' && end < len(s) && s[end] == '"' && !slices.Contains(shownKeys, strings.Join(key, "_")):
			return "as a JSON string", true
		}
	}
	return "", false
}

// shownKeys hold short numbers that may equal a CVV2 or an expiry: a
// card's last 4 digits (shown by design) and a bank's result code.
var shownKeys = []string{"last4", "bank_code", "result_code", "failure_code", "ret_code", "error_code"}

// keyBefore returns the parts (split at "_" and "-") of the key just
// before at in s: an identifier, then only the quotes, backslashes,
// colon, equals sign, spaces, brackets or parentheses that end a key in
// JSON (escaped or not), a form (card[cvv2]=), a log line or a Postgres
// error's detail (Key (cvv2)=(…)). ok is false when s[:at] does not end
// that way.
func keyBefore(s string, at int) (parts []string, ok bool) {
	i := at
	for i > 0 && strings.IndexByte(`"'\:= ()[]`, s[i-1]) >= 0 {
		i--
	}
	if i == at {
		return nil, false
	}
	j := i
	for j > 0 && (s[j-1] >= 'a' && s[j-1] <= 'z' || s[j-1] >= '0' && s[j-1] <= '9' || s[j-1] == '_' || s[j-1] == '-') {
		j--
	}
	if j == i {
		return nil, false
	}
	return strings.FieldsFunc(s[j:i], func(r rune) bool { return r == '_' || r == '-' }), true
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' }

// standsAlone reports whether v occurs in s between characters that are
// neither letters nor digits, other than as the fraction of a timestamp's
// seconds ("05.123456").
func standsAlone(s, v string) bool { return len(aloneAt(s, v)) > 0 }

// aloneAt returns where v stands alone in s (see standsAlone).
func aloneAt(s, v string) []int {
	alnum := func(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' }
	var out []int
	for i := 0; ; {
		j := strings.Index(s[i:], v)
		if j < 0 {
			return out
		}
		at := i + j
		end := at + len(v)
		left := at == 0 || !alnum(s[at-1])
		right := end == len(s) || !alnum(s[end])
		fraction := at >= 2 && s[at-1] == '.' && s[at-2] >= '0' && s[at-2] <= '9'
		if left && right && !fraction {
			out = append(out, at)
		}
		i = at + 1
	}
}

// SentRequest is a request a test server was sent, as RecordBodies saw it.
type SentRequest struct {
	Method string
	Path   string // URL path, without the query
	Body   []byte
}

// RecordBodies returns h, recording for the package's leak scans the
// method, path and body of every request that carries a body: the tests
// know what they sent, so the scans can look for unkeyed digests of it.
// Wrap a test server's handler with it (httptest.NewServer(RecordBodies(e))).
func RecordBodies(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			body, err := io.ReadAll(r.Body)
			_ = r.Body.Close()
			if len(body) > 0 {
				sent.Lock()
				sent.all = append(sent.all, SentRequest{Method: r.Method, Path: r.URL.Path, Body: body})
				sent.Unlock()
			}
			// The handler reads what was read, then the read's error, if any.
			r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), errReader{err}))
		}
		h.ServeHTTP(w, r)
	})
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	return 0, io.EOF
}

// Sent returns every request RecordBodies recorded in this package.
func Sent() []SentRequest {
	sent.Lock()
	defer sent.Unlock()
	return append([]SentRequest(nil), sent.all...)
}

// sent is what RecordBodies recorded: like pkgEnv, one per test process,
// which is one per package.
var sent struct {
	sync.Mutex
	all []SentRequest
}

// DigestScan finds unkeyed digests of what the tests sent: SHA-256 of
// method ‖ 0 ‖ path ‖ 0 ‖ body (the request fingerprint the idempotency
// layer once stored), of each body alone, and of each sensitive value, as
// hex (a bytea in a pg_dump, or text), base64, or the raw 32 bytes. Such a
// digest is as good as the value for whoever can guess it: a CVV2, an
// expiry or a code has 10³ to 10⁶ possible values.
type DigestScan struct {
	// By the first 8 bytes of a needle: lowercase hex needles are matched
	// against the lowercased text, the others against the text as is.
	hex, other map[uint64][]digestNeedle
	count      int
}

type digestNeedle struct {
	form string // the needle as it would appear
	what string // what it is a digest of, without the value
}

// NewDigestScan prepares a scan for the digests of sent and values (value
// → kind, as Sim.Sensitive gives them).
func NewDigestScan(sent []SentRequest, values map[string]string) *DigestScan {
	d := &DigestScan{hex: map[uint64][]digestNeedle{}, other: map[uint64][]digestNeedle{}}
	add := func(sum [sha256.Size]byte, what string) {
		d.count++
		d.put(d.hex, hex.EncodeToString(sum[:]), "SHA-256 of "+what+" as hex")
		d.put(d.other, base64.StdEncoding.EncodeToString(sum[:]), "SHA-256 of "+what+" as base64")
		d.put(d.other, base64.RawURLEncoding.EncodeToString(sum[:]), "SHA-256 of "+what+" as base64url")
		d.put(d.other, string(sum[:]), "SHA-256 of "+what+" as raw bytes")
	}
	for _, r := range sent {
		what := fmt.Sprintf("%s %s's %d-byte body", r.Method, r.Path, len(r.Body))
		add(sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%s", r.Method, r.Path, r.Body)), "method, path and "+what)
		add(sha256.Sum256(r.Body), what)
	}
	for v, kind := range values {
		add(sha256.Sum256([]byte(v)), "a "+kind+" ("+Describe(v)+")")
	}
	return d
}

func (d *DigestScan) put(m map[uint64][]digestNeedle, form, what string) {
	k := binary.LittleEndian.Uint64([]byte(form[:8]))
	m[k] = append(m[k], digestNeedle{form: form, what: what})
}

// Len is the number of digests the scan looks for.
func (d *DigestScan) Len() int { return d.count }

// Find returns an error for each digest found in hay (named where).
func (d *DigestScan) Find(where, hay string) []error {
	found := map[string]bool{}
	scan := func(s string, m map[uint64][]digestNeedle) {
		for i := 0; i+8 <= len(s); i++ {
			ns, ok := m[binary.LittleEndian.Uint64([]byte(s[i:i+8]))]
			if !ok {
				continue
			}
			for _, n := range ns {
				if strings.HasPrefix(s[i:], n.form) {
					found[n.what] = true
				}
			}
		}
	}
	scan(strings.ToLower(hay), d.hex)
	scan(hay, d.other)
	var errs []error
	for what := range found {
		errs = append(errs, fmt.Errorf("%s: an unkeyed digest: %s", where, what))
	}
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return errs
}
