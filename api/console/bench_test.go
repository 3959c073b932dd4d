package console_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quickpay/quickpay/api/console"
	"github.com/quickpay/quickpay/internal/operators"
	"github.com/quickpay/quickpay/internal/opsview/opsviewtest"
)

// BenchmarkConsolePages times each console page's server side (the
// handler in process: session lookup, reads, template) over 1,000,000
// seeded charges, seeded once per run, and reports its p50 and p99 in
// milliseconds. The goal is p99 < 50 ms for every page (docs/console.md):
//
//	go test -run '^$' -bench BenchmarkConsolePages -benchtime 200x ./api/console/
func BenchmarkConsolePages(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	start := time.Now()
	// Dated today, as production's rows are: the overview's day and 24
	// hours hold what a busy day holds. (No RunDue runs here.)
	seed, err := opsviewtest.Seed(ctx, e.Pool, opsviewtest.Options{Charges: 1_000_000})
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("seeded %d charges, %d refunds, %d events, %d audit rows in %s", seed.Charges, seed.Refunds, seed.Events,
		seed.Audit, time.Since(start).Round(time.Second))
	c, err := console.New(e.cfg)
	if err != nil {
		b.Fatal(err)
	}
	// The overview read on every view, as the first view of a day (or
	// after start) is; later views show kept figures while a background
	// read renews them.
	coldCfg := e.cfg
	coldCfg.OverviewTTL = -1
	cold, err := console.New(coldCfg)
	if err != nil {
		b.Fatal(err)
	}
	en := e.operator(b, e.ops, operators.RoleAdmin)
	s, token, err := e.ops.Login(ctx, en.Operator.Name, en.Password, code(b, en, time.Now()), "127.0.0.1")
	if err != nil {
		b.Fatal(err)
	}
	// The first page of the charges list gives the cursor of the second.
	after := ""
	{
		rec := serve(c, token, http.MethodGet, "/charges", nil)
		if m := nextHref.FindStringSubmatch(rec.Body.String()); m != nil {
			u, _ := url.Parse(strings.ReplaceAll(m[1], "&amp;", "&"))
			after = u.Query().Get("after")
		}
		if after == "" {
			b.Fatal("the charges list has no second page")
		}
	}
	big := seed.Merchants[0]
	pages := []struct {
		name, method, path string
		form               url.Values
		console            http.Handler // nil: c
	}{
		{"overview", http.MethodGet, "/", nil, nil},
		{"overview_uncached", http.MethodGet, "/", nil, cold},
		{"charges", http.MethodGet, "/charges", nil, nil},
		{"charges_page2", http.MethodGet, "/charges?after=" + after, nil, nil},
		{"charges_filtered", http.MethodGet, "/charges?status=failed&bank=CCB&merchant=" + big, nil, nil},
		{"charges_of_day", http.MethodGet, "/charges?day=" + seed.Day.Format("2006-01-02"), nil, nil},
		{"refunds", http.MethodGet, "/refunds?merchant=" + big, nil, nil},
		{"events", http.MethodGet, "/events?merchant=" + big, nil, nil},
		{"unknown", http.MethodGet, "/unknown", nil, nil},
		{"mismatches", http.MethodGet, "/mismatches?open=1", nil, nil},
		{"backlog", http.MethodGet, "/backlog", nil, nil},
		{"merchants", http.MethodGet, "/merchants", nil, nil},
		{"audit", http.MethodGet, "/audit", nil, nil},
		{"audit_by_actor", http.MethodGet, "/audit?actor=" + url.QueryEscape(seed.AuditActor), nil, nil},
		{"merchant", http.MethodGet, "/merchants/" + big, nil, nil},
		{"member", http.MethodGet, "/members/" + seed.MemberID, nil, nil},
		{"card", http.MethodGet, "/cards/" + seed.CardID, nil, nil},
		{"binding", http.MethodGet, "/bindings/" + seed.BindingID, nil, nil},
		{"mandate", http.MethodGet, "/mandates/" + seed.MandateID, nil, nil},
		{"charge", http.MethodGet, "/charges/" + seed.ChargeID, nil, nil},
		{"refund", http.MethodGet, "/refunds/" + seed.RefundID, nil, nil},
		{"event", http.MethodGet, "/events/" + seed.EventID, nil, nil},
		{"search_id", http.MethodPost, "/search", url.Values{"q": {seed.ChargeID}}, nil},
		{"search_order_no", http.MethodPost, "/search", url.Values{"q": {seed.OrderNo}}, nil},
		{"search_bank_ref", http.MethodPost, "/search", url.Values{"q": {seed.BankTxnNo}}, nil},
		{"find_card", http.MethodPost, "/cards/find", url.Values{"card_number": {"6222020000000000000"}}, nil},
		{"refund_confirm", http.MethodGet, "/charges/" + seed.ChargeID + "/refund?amount=0.01", nil, nil},
	}
	for _, pg := range pages {
		b.Run(pg.name, func(b *testing.B) {
			var took []time.Duration
			for b.Loop() {
				form := pg.form
				if form != nil {
					form = url.Values{"csrf": {s.CSRFToken}}
					for k, v := range pg.form {
						form[k] = v
					}
				}
				h := http.Handler(c)
				if pg.console != nil {
					h = pg.console
				}
				t0 := time.Now()
				rec := serve(h, token, pg.method, pg.path, form)
				took = append(took, time.Since(t0))
				if rec.Code >= 400 {
					b.Fatalf("%s %s: %d", pg.method, pg.path, rec.Code)
				}
			}
			slices.Sort(took)
			b.ReportMetric(ms(took[len(took)/2]), "p50-ms")
			b.ReportMetric(ms(took[(len(took)*99)/100]), "p99-ms")
		})
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// serve runs one request through the console in process, with the
// session cookie.
func serve(c http.Handler, token, method, path string, form url.Values) *httptest.ResponseRecorder {
	var req *http.Request
	if form != nil {
		req = httptest.NewRequest(method, path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		req = httptest.NewRequest(method, path, nil)
	}
	req.AddCookie(&http.Cookie{Name: "qp_console", Value: token})
	rec := httptest.NewRecorder()
	c.ServeHTTP(rec, req)
	return rec
}

var nextHref = regexp.MustCompile(`href="([^"]+)" id="next-page"`)
