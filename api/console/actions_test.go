package console_test

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/quickpay/quickpay/internal/operators"
	"github.com/quickpay/quickpay/internal/opsview/opsviewtest"
)

// action is one console action: its confirmation page, its form and the
// role it needs.
type action struct {
	name    string
	verb    string // audit action console.<verb>
	subject string // the audit row's subject
	confirm string // GET path
	post    string // POST path
	form    url.Values
	role    operators.Role
}

// confirmForm reads the confirmation page's hidden fields.
var hiddenField = regexp.MustCompile(`<input type="hidden" name="([a-z]+)" value="([^"]*)">`)

func hidden(body string) url.Values {
	v := url.Values{}
	for _, m := range hiddenField.FindAllStringSubmatch(body, -1) {
		v.Set(m[1], m[2])
	}
	return v
}

func TestActions(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	seed, err := opsviewtest.Seed(ctx, e.Pool, opsviewtest.Options{Charges: 300, Day: seedDay})
	if err != nil {
		t.Fatal(err)
	}
	ch, _ := e.paidCharge(t, "CCB", 10_000)
	md := e.mandate(t, e.bind(t, "ICBC"))
	tm, _, err := e.merchants.Create(ctx, "console target "+randHex(t, 3), []string{"bind"})
	if err != nil {
		t.Fatal(err)
	}
	target := tm.ID

	actions := []action{
		{name: "refund", verb: "refund", subject: ch.ID, confirm: "/charges/" + ch.ID + "/refund?amount=1.00",
			post: "/charges/" + ch.ID + "/refund", role: operators.RoleOperator},
		// The charge succeeded: SettleByQuery refuses it (nothing unknown)
		// before any bank call, which the console audits as failed.
		{name: "settle by query", verb: "settle", subject: ch.ID, confirm: "/charges/" + ch.ID + "/settle",
			post: "/charges/" + ch.ID + "/settle", role: operators.RoleOperator},
		{name: "cancel a mandate", verb: "cancel", subject: md.ID, confirm: "/mandates/" + md.ID + "/cancel",
			post: "/mandates/" + md.ID + "/cancel", role: operators.RoleOperator},
		{name: "release an agreement", verb: "release", subject: seed.BindingID, confirm: "/bindings/" + seed.BindingID + "/release",
			post: "/bindings/" + seed.BindingID + "/release", role: operators.RoleOperator},
		{name: "redeliver a webhook", verb: "redeliver", subject: seed.EventID, confirm: "/events/" + seed.EventID + "/redeliver",
			post: "/events/" + seed.EventID + "/redeliver", role: operators.RoleOperator},
		{name: "disable a merchant", verb: "merchant_disable", subject: target, confirm: "/merchants/" + target + "/disable",
			post: "/merchants/" + target + "/disable", role: operators.RoleAdmin},
		{name: "enable a merchant", verb: "merchant_enable", subject: target, confirm: "/merchants/" + target + "/enable",
			post: "/merchants/" + target + "/enable", role: operators.RoleAdmin},
		{name: "rotate a merchant's secret", verb: "merchant_rotate_secret", subject: target,
			confirm: "/merchants/" + target + "/rotate-secret", post: "/merchants/" + target + "/rotate-secret", role: operators.RoleAdmin},
		{name: "create a merchant", verb: "merchant_create", subject: "", confirm: "/merchants/new", post: "/merchants/new",
			form: url.Values{"name": {"created in the console"}, "scope": {"bind", "withhold"}}, role: operators.RoleAdmin},
	}
	agents := map[operators.Role]*agent{}
	for _, r := range []operators.Role{operators.RoleViewer, operators.RoleOperator, operators.RoleAdmin} {
		agents[r] = e.as(t, r)
	}
	rows := func(a action) int {
		if a.subject == "" {
			return e.count(t, `SELECT count(*) FROM audit_log WHERE action = $1`, "console."+a.verb)
		}
		return e.auditRows(t, "console."+a.verb, a.subject)
	}

	t.Run("a forged or missing CSRF token is refused and nothing is done", func(t *testing.T) {
		a := agents[operators.RoleAdmin]
		for _, ac := range actions {
			p := a.get(t, ac.confirm)
			if p.status != http.StatusOK {
				t.Fatalf("%s: confirmation %d: %s", ac.name, p.status, text(p.body))
			}
			form := hidden(p.body)
			for k, v := range ac.form {
				form[k] = v
			}
			before := rows(ac)
			for name, token := range map[string]string{"missing": "", "wrong": a.csrf + "x"} {
				f := url.Values{}
				for k, v := range form {
					f[k] = v
				}
				f.Set("csrf", token)
				if p := a.do(t, http.MethodPost, ac.post, f); p.status != http.StatusForbidden {
					t.Errorf("%s with a %s token: %d", ac.name, name, p.status)
				}
			}
			if got := rows(ac); got != before {
				t.Errorf("%s: a refused post was audited as done (%d rows, were %d)", ac.name, got, before)
			}
		}
		if n := e.count(t, `SELECT count(*) FROM refunds WHERE charge_id = $1`, ch.ID); n != 0 {
			t.Errorf("%d refunds made by refused posts", n)
		}
		if n := e.count(t, `SELECT count(*) FROM mandates WHERE id = $1 AND status = 'cancelled'`, md.ID); n != 0 {
			t.Error("the mandate was cancelled by a refused post")
		}
		if n := e.count(t, `SELECT count(*) FROM merchants WHERE name = 'created in the console'`); n != 0 {
			t.Error("a merchant was created by a refused post")
		}
	})

	for _, ac := range actions {
		t.Run(ac.name+": role matrix", func(t *testing.T) {
			for _, r := range []operators.Role{operators.RoleViewer, operators.RoleOperator, operators.RoleAdmin} {
				a := agents[r]
				allowed := r.AtLeast(ac.role)
				p := a.get(t, ac.confirm)
				if allowed != (p.status == http.StatusOK) || (!allowed && p.status != http.StatusForbidden) {
					t.Errorf("%s: confirmation page: %d", r, p.status)
					continue
				}
				form := hidden(p.body)
				if !allowed {
					// A viewer's own page holds its CSRF token: post with it.
					a.get(t, "/")
					form = url.Values{"csrf": {a.csrf}}
				}
				for k, v := range ac.form {
					form[k] = v
				}
				before := rows(ac)
				p = a.post(t, ac.post, form)
				switch {
				case !allowed && p.status != http.StatusForbidden:
					t.Errorf("%s: post %d, want 403", r, p.status)
				case allowed && (p.status == http.StatusForbidden || p.status >= 500):
					t.Errorf("%s: post %d: %s", r, p.status, text(p.body))
				}
				after := rows(ac)
				if allowed != (after == before+1) {
					t.Errorf("%s: console.%s rows %d → %d", r, ac.verb, before, after)
				}
			}
		})
	}

	t.Run("the refund and the cancel were done", func(t *testing.T) {
		// The operator's and the admin's refund of ¥1.00 each.
		if n := e.count(t, `SELECT count(*) FROM refunds WHERE charge_id = $1 AND amount = 100`, ch.ID); n != 2 {
			t.Errorf("%d refunds of ¥1.00, want 2", n)
		}
		if n := e.count(t, `SELECT count(*) FROM mandates WHERE id = $1 AND status = 'cancelled'`, md.ID); n != 1 {
			t.Error("the mandate is not cancelled")
		}
		var actor, rid string
		if err := e.Pool.QueryRow(ctx, `SELECT actor, coalesce(request_id, '') FROM audit_log WHERE action = 'console.cancel'
			AND subject = $1 ORDER BY id LIMIT 1`, md.ID).Scan(&actor, &rid); err != nil {
			t.Fatal(err)
		}
		if actor != agents[operators.RoleOperator].op.Actor() || rid == "" {
			t.Errorf("console.cancel by %q with request %q", actor, rid)
		}
	})

	t.Run("a merchant's page shows it disabled, and offers what undoes it", func(t *testing.T) {
		a := agents[operators.RoleAdmin]
		a.get(t, "/")
		if p := a.post(t, "/merchants/"+target+"/disable", nil); p.status != http.StatusSeeOther {
			t.Fatalf("disable: %d", p.status)
		}
		p := a.get(t, "/merchants/"+target)
		if !strings.Contains(p.body, "disabled</span> since") || !strings.Contains(p.body, `id="enable"`) || strings.Contains(p.body, `id="disable"`) {
			t.Errorf("a disabled merchant's page: %s", text(p.body))
		}
		a.post(t, "/merchants/"+target+"/enable", nil)
		p = a.get(t, "/merchants/"+target)
		if strings.Contains(p.body, "disabled</span>") || !strings.Contains(p.body, `id="disable"`) {
			t.Errorf("an enabled merchant's page: %s", text(p.body))
		}
	})

	t.Run("a merchant's secret is shown once, at creation and rotation", func(t *testing.T) {
		a := agents[operators.RoleAdmin]
		a.get(t, "/merchants/new")
		p := a.post(t, "/merchants/new", url.Values{"name": {"shown once " + randHex(t, 2)}, "scope": {"bind"}})
		m := regexp.MustCompile(`id="client-secret">([A-Za-z0-9_-]{43})<`).FindStringSubmatch(p.body)
		if p.status != http.StatusCreated || m == nil {
			t.Fatalf("create: %d: %s", p.status, text(p.body))
		}
		id := regexp.MustCompile(`href="/merchants/(mch_[a-z0-9]+)"`).FindStringSubmatch(p.body)
		if id == nil {
			t.Fatal("no link to the merchant")
		}
		if page := a.get(t, "/merchants/"+id[1]); strings.Contains(page.body, m[1]) {
			t.Error("the merchant's page shows its secret")
		}
		if p.header.Get("Cache-Control") != "no-store" {
			t.Error("the secret's page may be cached")
		}
	})

	t.Run("a double submit of one refund form refunds once", func(t *testing.T) {
		a := agents[operators.RoleOperator]
		p := a.get(t, "/charges/"+ch.ID+"/refund?amount=2.50")
		form := hidden(p.body)
		if form.Get("amount") != "250" || form.Get("once") == "" {
			t.Fatalf("confirmation form %v", form)
		}
		first := a.post(t, "/charges/"+ch.ID+"/refund", form)
		second := a.post(t, "/charges/"+ch.ID+"/refund", form)
		if first.status != http.StatusSeeOther || !strings.HasPrefix(first.location, "/refunds/rfd_") {
			t.Fatalf("first submit: %d to %q: %s", first.status, first.location, text(first.body))
		}
		if second.status != http.StatusSeeOther || second.location != first.location {
			t.Errorf("second submit: %d to %q, want the first's refund %q", second.status, second.location, first.location)
		}
		if n := e.count(t, `SELECT count(*) FROM refunds WHERE charge_id = $1 AND amount = 250`, ch.ID); n != 1 {
			t.Errorf("%d refunds of ¥2.50, want 1", n)
		}
		// Another amount under the same key is refused.
		form.Set("amount", "300")
		if p := a.post(t, "/charges/"+ch.ID+"/refund", form); p.status != http.StatusConflict {
			t.Errorf("the key reused for another amount: %d", p.status)
		}
	})

	t.Run("the confirmation page shown again after its refund makes no second refund", func(t *testing.T) {
		a := agents[operators.RoleOperator]
		once := hidden(a.get(t, "/charges/"+ch.ID+"/refund").body).Get("once")
		if once == "" {
			t.Fatal("the amount page's form carries no one-time key")
		}
		// The amount page's GET form leads here.
		confirmation := "/charges/" + ch.ID + "/refund?amount=1.50&once=" + url.QueryEscape(once)
		first := a.post(t, "/charges/"+ch.ID+"/refund", hidden(a.get(t, confirmation).body))
		if first.status != http.StatusSeeOther || !strings.HasPrefix(first.location, "/refunds/rfd_") {
			t.Fatalf("submit: %d to %q: %s", first.status, first.location, text(first.body))
		}
		// Back: the page is not cached (no-store), so the browser asks for
		// it again, and submits it again.
		again := a.post(t, "/charges/"+ch.ID+"/refund", hidden(a.get(t, confirmation).body))
		if again.status != http.StatusSeeOther || again.location != first.location {
			t.Errorf("the page shown again: submit %d to %q, want the first refund %q", again.status, again.location, first.location)
		}
		if n := e.count(t, `SELECT count(*) FROM refunds WHERE charge_id = $1 AND amount = 150`, ch.ID); n != 1 {
			t.Errorf("%d refunds of ¥1.50, want 1", n)
		}
		// A new refund starts on the amount page, with a new key.
		if next := hidden(a.get(t, "/charges/"+ch.ID+"/refund").body).Get("once"); next == "" || next == once {
			t.Errorf("the amount page's key again: %q", next)
		}
	})

	t.Run("an amount over what is left is refused on the confirmation page", func(t *testing.T) {
		a := agents[operators.RoleOperator]
		for _, amount := range []string{"100.01", "0", "1.234", "abc", "-1"} {
			p := a.get(t, "/charges/"+ch.ID+"/refund?amount="+url.QueryEscape(amount))
			if p.status != http.StatusUnprocessableEntity || !strings.Contains(p.body, `id="error"`) || strings.Contains(p.body, `id="confirm-form"`) {
				t.Errorf("amount %q: %d", amount, p.status)
			}
		}
	})
}
