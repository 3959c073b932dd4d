package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/quickpay/quickpay/api/apitest"
	"github.com/quickpay/quickpay/api/hosted"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/mandate"
)

// The hosted page's steps: a post is served only at its step, a repeated
// last submit lands on the return_url, and the page's CSP and cookie
// follow the session and the configured public URL.

// pagePath is the page's own path of a session's link.
func pagePath(link string) string { return "/bind/" + link[strings.LastIndex(link, "/")+1:] }

// wantAgain checks p answers 303 to the session's page.
func wantAgain(t *testing.T, p page, link, what string) {
	t.Helper()
	if p.status != http.StatusSeeOther || p.header.Get("Location") != pagePath(link) {
		t.Errorf("%s: %d to %q, want 303 to the page", what, p.status, p.header.Get("Location"))
	}
}

// wantBack checks p answers 303 to the session's return_url.
func wantBack(t *testing.T, p page, id, what string) {
	t.Helper()
	loc, _ := url.Parse(p.header.Get("Location"))
	if p.status != http.StatusSeeOther || loc == nil || loc.Host != "merchant.example" || loc.Query().Get("binding_session") != id {
		t.Errorf("%s: %d to %q, want 303 to the return_url", what, p.status, p.header.Get("Location"))
	}
}

func monthlyTerms() map[string]any {
	return map[string]any{"reference": "gas-" + time.Now().Format("150405"), "amount_type": "fixed", "amount": 5000,
		"schedule": map[string]any{"interval": "month", "day_of_month": 5, "start_date": time.Now().AddDate(0, 1, 0).Format(time.DateOnly)}}
}

func TestHostedSteps(t *testing.T) {
	t.Parallel()
	e := newSessionEnv(t, nil)

	t.Run("posts out of step answer 303 to the page and do nothing", func(t *testing.T) {
		s := e.create(t, map[string]any{"external_user_id": "u-" + randomHex(t, 4), "return_url": returnURL, "mandate": monthlyTerms()})
		b := newBrowser(t, "")
		b.get(t, s.URL)
		for _, step := range []string{"/otp", "/resend", "/consent", "/consent/resend", "/consent/confirm"} {
			wantAgain(t, b.post(t, s.URL, step, url.Values{"otp": {"123456"}}), s.URL, step+" before a card")
		}
		if got := e.session(t, s.ID); got.Status != "open" || got.BindingID != nil || got.MandateID != nil {
			t.Errorf("session: %+v", got)
		}
		wantIn(t, b.get(t, s.URL), `id="card-form"`)
	})

	t.Run("a card post once the card is bound, and a second agree, change nothing", func(t *testing.T) {
		a := e.account(t, e.gen, "ICBC", "debit")
		other := e.account(t, e.gen, "CCB", "debit")
		s := e.create(t, map[string]any{"external_user_id": "u-" + randomHex(t, 4), "return_url": returnURL, "mandate": monthlyTerms()})
		b := newBrowser(t, "")
		b.get(t, s.URL)
		wantAgain(t, b.post(t, s.URL, "/card", cardForm(a)), s.URL, "card")
		// The card form again while the code is pending: a double submit.
		wantAgain(t, b.post(t, s.URL, "/card", cardForm(other)), s.URL, "card while the code is pending")
		wantAgain(t, b.post(t, s.URL, "/otp", url.Values{"otp": {e.code(t, a.Phone)}}), s.URL, "otp")
		bound := e.session(t, s.ID)
		if bound.BindingID == nil {
			t.Fatalf("session after the code: %+v", bound)
		}
		wantAgain(t, b.post(t, s.URL, "/card", cardForm(other)), s.URL, "card after bound")
		wantAgain(t, b.post(t, s.URL, "/consent", nil), s.URL, "agree")
		agreed := e.session(t, s.ID)
		wantAgain(t, b.post(t, s.URL, "/consent", nil), s.URL, "agree again")
		got := e.session(t, s.ID)
		if got.BindingID == nil || *got.BindingID != *bound.BindingID {
			t.Errorf("binding_id %v, want %s", got.BindingID, *bound.BindingID)
		}
		if got.MandateID == nil || agreed.MandateID == nil || *got.MandateID != *agreed.MandateID {
			t.Errorf("mandate_id %v, want %v", got.MandateID, agreed.MandateID)
		}
		if texts, err := e.SimCtl.SMS(context.Background(), other.Phone); err != nil || len(texts) != 0 {
			t.Errorf("the other card was sent %d codes (%v)", len(texts), err)
		}
		var mandates int
		if err := e.Pool.QueryRow(context.Background(), `SELECT count(*) FROM mandates m JOIN bindings b ON b.card_id = m.card_id
			WHERE b.id = $1`, *bound.BindingID).Scan(&mandates); err != nil || mandates != 1 {
			t.Errorf("mandates on the card: %d (%v)", mandates, err)
		}
		wantIn(t, b.get(t, s.URL), `id="consent-form"`)
	})

	t.Run("a repeated last code goes back to the merchant", func(t *testing.T) {
		a := e.account(t, e.gen, "ICBC", "debit")
		s := e.create(t, map[string]any{"external_user_id": "u-" + randomHex(t, 4), "return_url": returnURL})
		b := newBrowser(t, "")
		b.get(t, s.URL)
		b.post(t, s.URL, "/card", cardForm(a))
		code := e.code(t, a.Phone)
		var wg sync.WaitGroup
		answers := make([]page, 3)
		for i := range answers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				answers[i] = b.post(t, s.URL, "/otp", url.Values{"otp": {code}})
			}()
		}
		wg.Wait()
		for i, p := range answers {
			wantBack(t, p, s.ID, "concurrent code "+string(rune('1'+i)))
		}
		wantBack(t, b.post(t, s.URL, "/otp", url.Values{"otp": {code}}), s.ID, "the code once more")
		if got := e.session(t, s.ID); got.Status != "completed" {
			t.Errorf("session %s", got.Status)
		}
		// Without the page's CSRF token a post gets the used page, as a GET does.
		other := newBrowser(t, "")
		if p := other.post(t, s.URL, "/otp", url.Values{"otp": {code}, "csrf": {strings.Repeat("A", 43)}}); p.status != http.StatusGone {
			t.Errorf("a post without the cookie to a completed session: %d to %q", p.status, p.header.Get("Location"))
		}
		if p := b.get(t, s.URL); p.status != http.StatusGone {
			t.Errorf("GET of a completed session: %d", p.status)
		}
	})

	t.Run("return_url hosts a CSP would read as wildcards are refused", func(t *testing.T) {
		for _, u := range []string{"https://*/done", "https://*.evil.example/done", "https://a_b.example/done"} {
			r := e.c.Post(t, "/v1/binding_sessions", map[string]any{"external_user_id": "u1", "return_url": u},
				apitest.IdempotencyKey(randomHex(t, 8)))
			if r.WantError(t, http.StatusUnprocessableEntity, "validation_failed") && r.APIError().Field != "return_url" {
				t.Errorf("%s: field %q", u, r.APIError().Field)
			}
		}
	})
}

// TestHostedStatusPagesKeepFormActionSelf: form-action names the
// return_url's origin only on an open session's pages.
func TestHostedStatusPagesKeepFormActionSelf(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Now())
	e := newSessionEnv(t, clk)
	s := e.create(t, map[string]any{"external_user_id": "u-" + randomHex(t, 4), "return_url": returnURL})
	b := newBrowser(t, "")
	if csp := b.get(t, s.URL).header.Get("Content-Security-Policy"); !strings.Contains(csp, "form-action 'self' https://merchant.example;") {
		t.Errorf("open session's CSP %q", csp)
	}
	clk.Advance(binding.SessionValidity + time.Second)
	p := b.get(t, s.URL)
	if csp := p.header.Get("Content-Security-Policy"); p.status != http.StatusGone || csp != hosted.CSP {
		t.Errorf("expired session's page: %d, CSP %q", p.status, csp)
	}
}

// TestHostedCookieSecureFromPublicURL: the CSRF cookie is Secure when the
// configured public URL is https, whatever Host the request names.
func TestHostedCookieSecureFromPublicURL(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, serverOptions{})
	m, _, err := srv.merchants.Create(context.Background(), "secure cookie", []string{"bind"})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := binding.New(binding.Config{Pool: srv.Pool, Vault: srv.Vault, Banks: srv.Banks, Emit: srv.hooks.Queue})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		publicURL string
		secure    bool
	}{{"https://pay.example", true}, {"http://127.0.0.1:8080", false}, {"", false}} {
		pg, err := hosted.New(hosted.Config{Bindings: svc, Mandates: srv.mandates, Merchants: srv.merchants,
			Terms: func([]byte, string) (mandate.CreateInput, error) { return mandate.CreateInput{}, nil }, PublicURL: tc.publicURL})
		if err != nil {
			t.Fatal(err)
		}
		ec := echo.New()
		pg.Routes(ec)
		web := httptest.NewServer(ec) // loopback: the Host header names 127.0.0.1
		t.Cleanup(web.Close)
		_, token, err := svc.CreateSession(context.Background(), m.ID, binding.SessionInput{ExternalUserID: "u-secure", ReturnURL: returnURL})
		if err != nil {
			t.Fatal(err)
		}
		p := newBrowser(t, "").get(t, web.URL+hosted.Path(token))
		ck := p.header.Get("Set-Cookie")
		if p.status != http.StatusOK || !strings.HasPrefix(ck, "qp_bind_csrf=") || strings.Contains(ck, "; Secure") != tc.secure {
			t.Errorf("public URL %q: %d, cookie %q, want Secure %v", tc.publicURL, p.status, ck, tc.secure)
		}
	}
	if _, err := hosted.New(hosted.Config{Bindings: svc, Mandates: srv.mandates, Merchants: srv.merchants,
		Terms: func([]byte, string) (mandate.CreateInput, error) { return mandate.CreateInput{}, nil }, PublicURL: "pay.example"}); err == nil {
		t.Error("a public URL without a scheme was taken")
	}
}

// TestHostedTooManyRefusals: the card form's refused attempts are counted
// per session, and the fifth fails it.
func TestHostedTooManyRefusals(t *testing.T) {
	t.Parallel()
	e := newSessionEnv(t, nil)
	a := e.account(t, e.gen, "ICBC", "debit")
	// Fresh forms each post: post adds the browser's CSRF token to its form.
	mismatch := func() url.Values { f := cardForm(a); f.Set("holder_name", "欧阳不符"); return f }
	invalid := func() url.Values { f := cardForm(a); f.Set("id_number", "123"); return f }

	t.Run("four refusals leave the session open for the right card", func(t *testing.T) {
		s := e.create(t, map[string]any{"external_user_id": "u-" + randomHex(t, 4), "return_url": returnURL})
		b := newBrowser(t, "")
		b.get(t, s.URL)
		for i := 0; i < binding.MaxSessionRefusals-1; i++ {
			if p := b.post(t, s.URL, "/card", mismatch()); p.status != http.StatusUnprocessableEntity {
				t.Fatalf("refusal %d: %d", i+1, p.status)
			}
		}
		wantAgain(t, b.post(t, s.URL, "/card", cardForm(a)), s.URL, "the right card")
		if got := e.session(t, s.ID); got.Status != "open" || got.BindingID == nil {
			t.Errorf("session: %+v", got)
		}
	})

	t.Run("the fifth refusal fails the session", func(t *testing.T) {
		s := e.create(t, map[string]any{"external_user_id": "u-" + randomHex(t, 4), "return_url": returnURL})
		b := newBrowser(t, "en")
		b.get(t, s.URL)
		for i := 0; i < binding.MaxSessionRefusals-1; i++ {
			f := mismatch
			if i%2 == 1 {
				f = invalid
			}
			if p := b.post(t, s.URL, "/card", f()); p.status != http.StatusUnprocessableEntity || strings.Contains(p.body, "Too many attempts") {
				t.Fatalf("refusal %d: %d", i+1, p.status)
			}
		}
		p := b.post(t, s.URL, "/card", mismatch())
		if p.status != http.StatusUnprocessableEntity {
			t.Errorf("fifth refusal: %d", p.status)
		}
		wantIn(t, p, "Too many attempts")
		got := e.session(t, s.ID)
		if got.Status != "failed" || got.FailureCode == nil || *got.FailureCode != "too_many_attempts" {
			t.Errorf("session: %+v", got)
		}
		if p := b.post(t, s.URL, "/card", cardForm(a)); p.status != http.StatusGone {
			t.Errorf("the right card after: %d", p.status)
		}
	})
}
