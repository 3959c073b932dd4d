package console_test

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/quickpay/quickpay/internal/operators"
	"github.com/quickpay/quickpay/internal/opsview/opsviewtest"
)

func TestPages(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	seed, err := opsviewtest.Seed(ctx, e.Pool, opsviewtest.Options{Charges: 300, Day: seedDay})
	if err != nil {
		t.Fatal(err)
	}
	v := e.as(t, operators.RoleViewer)

	t.Run("search finds each kind of id and number", func(t *testing.T) {
		for q, want := range map[string]string{
			seed.Merchants[0]:          "/merchants/" + seed.Merchants[0],
			seed.MemberID:              "/members/" + seed.MemberID,
			seed.BindingID:             "/bindings/" + seed.BindingID,
			seed.CardID:                "/cards/" + seed.CardID,
			seed.MandateID:             "/mandates/" + seed.MandateID,
			seed.ChargeID:              "/charges/" + seed.ChargeID,
			seed.RefundID:              "/refunds/" + seed.RefundID,
			seed.EventID:               "/events/" + seed.EventID,
			seed.OrderNo:               "/charges/" + seed.ChargeID,
			seed.BankTxnNo:             "/charges/" + seed.ChargeID,
			seed.RefundNo:              "/refunds/" + seed.RefundID,
			seed.RefundBankRef:         "/refunds/" + seed.RefundID,
			"  " + seed.ChargeID + " ": "/charges/" + seed.ChargeID,
		} {
			p := v.post(t, "/search", url.Values{"q": {q}})
			if p.status != http.StatusSeeOther || p.location != want {
				t.Errorf("search %q: %d to %q, want %s", q, p.status, p.location, want)
			}
		}
		p := v.post(t, "/search", url.Values{"q": {"chg_nothing" + randHex(t, 4)}})
		if p.status != http.StatusOK || !strings.Contains(p.body, `id="no-hits"`) {
			t.Errorf("search for nothing: %d", p.status)
		}
	})

	t.Run("a card number typed into the search box is not searched or shown", func(t *testing.T) {
		pan := "6222020000" + "123456789"
		p := v.post(t, "/search", url.Values{"q": {pan}})
		if p.status != http.StatusOK || !strings.Contains(p.body, `id="search-notice"`) || strings.Contains(p.body, pan) {
			t.Errorf("card number in the search box: %d", p.status)
		}
	})

	t.Run("every page and list answers, linking onward", func(t *testing.T) {
		for _, path := range []string{"/", "/merchants", "/charges", "/charges?status=failed&bank=ICBC", "/refunds",
			"/refunds?status=succeeded", "/events", "/events?type=charge.succeeded", "/unknown", "/mismatches",
			"/mismatches?open=1", "/backlog", "/audit", "/audit?actor=" + url.QueryEscape(seed.AuditActor),
			"/audit?from=2020-01-01T00:00&to=2050-01-01T00:00", "/cards/find", "/cards?status=active",
			"/cards?merchant=" + seed.Merchants[0] + "&member=" + seed.MemberID, "/mandates?status=active",
			"/mandates?merchant=" + seed.Merchants[0] + "&card=" + seed.CardID,
			"/merchants/" + seed.Merchants[0], "/members/" + seed.MemberID, "/cards/" + seed.CardID,
			"/bindings/" + seed.BindingID, "/mandates/" + seed.MandateID, "/charges/" + seed.ChargeID,
			"/charges/" + seed.UnknownCharge, "/refunds/" + seed.RefundID, "/events/" + seed.EventID} {
			p := v.get(t, path)
			if p.status != http.StatusOK {
				t.Errorf("GET %s: %d: %s", path, p.status, text(p.body))
				continue
			}
			if !strings.Contains(p.body, `href="/charges"`) || !strings.Contains(p.body, `id="search-form"`) {
				t.Errorf("GET %s: no navigation or search box", path)
			}
		}
		for _, path := range []string{"/charges/chg_nothing", "/members/mem_nothing", "/nowhere"} {
			if p := v.get(t, path); p.status != http.StatusNotFound {
				t.Errorf("GET %s: %d", path, p.status)
			}
		}
		for _, path := range []string{"/charges?after=forged", "/audit?from=yesterday", "/charges?day=someday"} {
			if p := v.get(t, path); p.status != http.StatusBadRequest {
				t.Errorf("GET %s: %d", path, p.status)
			}
		}
	})

	t.Run("the overview links each figure to its list", func(t *testing.T) {
		p := v.get(t, "/")
		for _, link := range []string{`href="/unknown"`, `href="/mismatches?open=1"`, `href="/backlog"`} {
			if !strings.Contains(p.body, link) {
				t.Errorf("the overview lacks %s", link)
			}
		}
		for _, label := range []string{"qp-data-v1", "qp-fp-v1", "qp-jwt-v1"} {
			if !strings.Contains(p.body, label) {
				t.Errorf("the overview does not show key %s", label)
			}
		}
	})

	t.Run("lists are walked page by page with next links", func(t *testing.T) {
		cfg := e.cfg
		cfg.PageSize = 7
		a := newAgent(t, e.serve(t, cfg))
		a.login(t, e.operator(t, e.ops, operators.RoleViewer), time.Now())
		want := e.count(t, `SELECT count(*) FROM charges WHERE merchant_id = $1 AND status = 'succeeded'`, seed.Merchants[1])
		if want <= 7 {
			t.Fatalf("only %d charges to page through", want)
		}
		row := regexp.MustCompile(`<tr><td><a href="/charges/(chg_[a-z0-9]+)">`)
		next := regexp.MustCompile(`id="next-page" href="([^"]+)"|href="([^"]+)" id="next-page"`)
		seen := map[string]bool{}
		path, pages := "/charges?status=succeeded&merchant="+seed.Merchants[1], 0
		for path != "" {
			pages++
			if pages > 200 {
				t.Fatal("more than 200 pages")
			}
			p := a.get(t, path)
			if p.status != http.StatusOK {
				t.Fatalf("GET %s: %d", path, p.status)
			}
			rows := row.FindAllStringSubmatch(p.body, -1)
			if len(rows) > 7 || len(rows) == 0 {
				t.Fatalf("a page of %d rows", len(rows))
			}
			for _, r := range rows {
				if seen[r[1]] {
					t.Errorf("%s on two pages", r[1])
				}
				seen[r[1]] = true
			}
			path = ""
			if m := next.FindStringSubmatch(p.body); m != nil {
				path = strings.ReplaceAll(m[1]+m[2], "&amp;", "&")
			} else if !strings.Contains(p.body, `id="last-page"`) {
				t.Fatal("a page with neither a next link nor the end")
			}
		}
		if len(seen) != want {
			t.Errorf("walked %d charges in %d pages, want %d", len(seen), pages, want)
		}
	})

	t.Run("pages of member or card data are audited with the operator and request", func(t *testing.T) {
		for path, subject := range map[string]string{"/members/" + seed.MemberID: seed.MemberID, "/cards/" + seed.CardID: seed.CardID,
			"/bindings/" + seed.BindingID: seed.BindingID, "/cards?member=" + seed.MemberID: seed.MemberID} {
			p := v.get(t, path)
			var n int
			if err := e.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE action = 'console.view' AND subject = $1
				AND actor = $2 AND request_id = $3`, subject, v.op.Actor(), p.header.Get("X-Request-Id")).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 1 {
				t.Errorf("GET %s: %d console.view rows for this request", path, n)
			}
		}
		// A charge shows no member or card data: not audited as a view.
		p := v.get(t, "/charges/"+seed.ChargeID)
		if n := e.count(t, `SELECT count(*) FROM audit_log WHERE request_id = $1`, p.header.Get("X-Request-Id")); n != 0 {
			t.Errorf("a charge page wrote %d audit rows", n)
		}
	})

	t.Run("the audit trail is searched by actor, action, object and time", func(t *testing.T) {
		p := v.get(t, "/audit?action=console.view&subject="+seed.MemberID+"&actor="+url.QueryEscape(v.op.Actor()))
		rows := strings.Count(p.body, "<td>console.view</td>")
		if p.status != http.StatusOK || rows == 0 {
			t.Errorf("audit search: %d with %d rows", p.status, rows)
		}
		if strings.Contains(p.body, "<td>operator.login</td>") {
			t.Error("the action filter let other actions through")
		}
		p = v.get(t, "/audit?action=console.view&to=2000-01-01T00:00")
		if strings.Contains(p.body, "<td>console.view</td>") {
			t.Error("the time filter let later rows through")
		}
	})
}
