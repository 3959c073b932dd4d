package console_test

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/quickpay/quickpay/internal/dev/browser"
	"github.com/quickpay/quickpay/internal/operators"
	"github.com/quickpay/quickpay/internal/opsview/opsviewtest"
	"github.com/quickpay/quickpay/mandate"
)

// The console driven in headless Chromium at a desktop's viewport against
// the real stack: an operator logs in with a TOTP code computed from its
// enrolment's URI, finds a card by its number, refunds part of a charge
// from the charge's page (banksim credits it once); a viewer is refused
// the refund; a forged CSRF token is refused; River's UI opens only
// after login. No page reports a CSP violation.
//
// QUICKPAY_SCREENSHOTS=1 writes a PNG of each step to
// docs/screenshots/console-*.png (tracked files: a plain run writes none).

// desktop is an operator's screen.
var desktop = browser.Viewport{Width: 1280, Height: 860, Scale: 1}

type tab struct {
	t   testing.TB
	tab *browser.Tab
	url string
	// allowed reports a CSP violation the page is known to cause and
	// survive (River's UI's eval probe).
	allowed func(browser.Message) bool
}

// newTab opens a tab in a browser of its own (its own cookies: one
// operator per browser).
func newTab(t testing.TB, base string) *tab {
	t.Helper()
	br := browser.Start(t, browser.Config{})
	tb := &tab{t: t, tab: br.NewTab(t, browser.TabConfig{Language: "en", Viewport: desktop}), url: base,
		allowed: func(browser.Message) bool { return false }}
	t.Cleanup(func() {
		if t.Failed() {
			for _, m := range tb.tab.Messages() {
				t.Logf("console: %v", m)
			}
		}
		for _, v := range tb.tab.CSPViolations() {
			if !tb.allowed(v) {
				t.Errorf("CSP violation: %v", v)
			}
		}
		for _, m := range tb.tab.Messages() {
			if m.Kind == "exception" {
				t.Errorf("uncaught exception: %v", m)
			}
		}
	})
	return tb
}

// open navigates to path and returns the status of the page it ends on.
func (b *tab) open(path string) int64 {
	b.t.Helper()
	res, err := browser.Run(b.tab, chromedp.NavigateResponse(b.url+path))
	if err != nil {
		b.t.Fatalf("open %s: %v", path, err)
	}
	return res.Status
}

func (b *tab) wait(sel string) {
	b.t.Helper()
	if err := b.tab.Do(chromedp.WaitReady(chromedp.CSS(sel))); err != nil {
		b.t.Fatalf("wait for %s: %v (at %s)", sel, err, b.location())
	}
}

func (b *tab) location() string {
	loc, err := browser.Run(b.tab, chromedp.Location())
	if err != nil {
		return err.Error()
	}
	return loc
}

func (b *tab) typeIn(id, v string) {
	b.t.Helper()
	if err := b.tab.Do(chromedp.Clear(chromedp.ID(id)), chromedp.SendKeys(chromedp.ID(id), v)); err != nil {
		b.t.Fatalf("type into #%s: %v", id, err)
	}
}

// submit presses form's submit button and returns the status of the page
// the browser ends on (after 303s).
func (b *tab) submit(form string) int64 {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.tab.Context(), 30*time.Second)
	defer cancel()
	res, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(form+` button[type="submit"]`)))
	if err != nil {
		b.t.Fatalf("submit %s: %v", form, err)
	}
	return res.Status
}

// click follows the link sel and returns the status of the page.
func (b *tab) click(sel string) int64 {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.tab.Context(), 30*time.Second)
	defer cancel()
	res, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("click %s: %v", sel, err)
	}
	return res.Status
}

func (b *tab) text(sel string) string {
	b.t.Helper()
	s, err := browser.Run(b.tab, chromedp.TextContent(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("text of %s: %v (at %s)", sel, err, b.location())
	}
	return strings.Join(strings.Fields(s), " ")
}

func (b *tab) html() string {
	b.t.Helper()
	s, err := browser.Run(b.tab, chromedp.OuterHTML(chromedp.CSS("html")))
	if err != nil {
		b.t.Fatalf("page html: %v", err)
	}
	return s
}

// shot saves the page as docs/screenshots/console-<name>.png when
// QUICKPAY_SCREENSHOTS=1.
func (b *tab) shot(name string) {
	b.t.Helper()
	if os.Getenv("QUICKPAY_SCREENSHOTS") != "1" {
		return
	}
	if err := b.tab.Screenshot(filepath.Join("..", "..", "docs", "screenshots", "console-"+name+".png")); err != nil {
		b.t.Fatal(err)
	}
}

// login fills the login form for en, its current TOTP code last; shot
// (if not "") is taken before the code is typed.
func (b *tab) login(en operators.Enrolment, shot string) {
	b.t.Helper()
	b.wait("#login-form")
	b.typeIn("name", en.Operator.Name)
	b.typeIn("password", en.Password)
	if shot != "" {
		b.shot(shot)
	}
	b.typeIn("code", code(b.t, en, time.Now()))
}

func TestConsoleBrowser(t *testing.T) {
	e := newEnv(t)
	ch, card := e.paidCharge(t, "ICBC", 5000)
	// Other merchants' rows dated today, for the overview to show (after
	// the charge: no RunDue runs past this point to claim them).
	if _, err := opsviewtest.Seed(context.Background(), e.Pool, opsviewtest.Options{Charges: 3000}); err != nil {
		t.Fatal(err)
	}
	last4 := card.CardNumber[len(card.CardNumber)-4:]
	operator := e.operator(t, e.ops, operators.RoleOperator)
	op := newTab(t, e.url)

	t.Run("log in with a TOTP code", func(t *testing.T) {
		op.t = t
		if st := op.open("/"); st != http.StatusOK || !strings.Contains(op.location(), "/login") {
			t.Fatalf("the overview without a session: %d at %s", st, op.location())
		}
		op.login(operator, "1-login")
		if st := op.submit("#login-form"); st != http.StatusOK {
			t.Fatalf("login: %d", st)
		}
		op.wait("#figures")
		if got := op.text("#operator"); !strings.Contains(got, operator.Operator.Name) || !strings.Contains(got, "operator") {
			t.Errorf("logged in as %q", got)
		}
		op.shot("2-overview")
	})

	t.Run("find a card by its number: masked only", func(t *testing.T) {
		op.t = t
		op.click("#find-card-link")
		op.typeIn("card_number", card.CardNumber)
		if st := op.submit("#find-card-form"); st != http.StatusOK {
			t.Fatalf("find: %d", st)
		}
		op.wait("#found-cards")
		got := op.text("#found-cards tbody")
		if !strings.Contains(got, card.ID) || !strings.Contains(got, last4) {
			t.Errorf("the card is not found: %q", got)
		}
		if h := op.html(); strings.Contains(h, card.CardNumber) || strings.Contains(h, card.IDNumber) {
			t.Error("the page holds the card or ID number")
		}
		if e.auditRows(t, "console.view", card.ID) == 0 {
			t.Error("the card search was not audited")
		}
		op.shot("3-find-card")
	})

	t.Run("refund from the charge page: credited once", func(t *testing.T) {
		op.t = t
		if st := op.open("/charges/" + ch.ID); st != http.StatusOK {
			t.Fatalf("charge page: %d", st)
		}
		if got := op.text("#charge-amount"); got != "¥50.00" {
			t.Errorf("charge amount shown %q", got)
		}
		op.shot("4-charge")
		op.click("#refund")
		op.wait("#amount-form")
		op.typeIn("amount", "12.34")
		op.submit("#amount-form")
		op.wait("#confirm-form")
		if got, want := op.text("#question"), "Refund ¥12.34 of "+ch.ID+" to card ****"+last4+"?"; got != want {
			t.Errorf("question %q, want %q", got, want)
		}
		op.typeIn("reason", "customer complaint")
		op.shot("5-refund-confirm")
		if st := op.submit("#confirm-form"); st != http.StatusOK {
			t.Fatalf("refund: %d: %s", st, op.text("main"))
		}
		op.wait("#refund-status")
		if !strings.Contains(op.location(), "/refunds/rfd_") {
			t.Fatalf("after the refund: at %s", op.location())
		}
		eventually(t, 30*time.Second, "the refund to succeed", func() bool {
			op.open(strings.TrimPrefix(op.location(), e.url))
			return op.text("#refund-status") == string(mandate.RefundSucceeded)
		})
		if got := op.text("#refund-amount"); got != "¥12.34" {
			t.Errorf("refund amount %q", got)
		}
		op.shot("6-refund")
		if n, sum := e.refundsAtBank(t, card); n != 1 || sum != 1234 {
			t.Errorf("banksim credited %d refunds of %d fen in all, want one of 1234", n, sum)
		}
		if e.auditRows(t, "console.refund", ch.ID) != 1 {
			t.Error("the refund was not audited once by the console")
		}
	})

	t.Run("a forged CSRF token is refused; nothing is refunded", func(t *testing.T) {
		op.t = t
		op.open("/charges/" + ch.ID + "/refund?amount=1.00")
		op.wait("#confirm-form")
		if err := op.tab.Do(chromedp.SetValue(chromedp.CSS(`#confirm-form input[name="csrf"]`), "forged-token")); err != nil {
			t.Fatal(err)
		}
		if st := op.submit("#confirm-form"); st != http.StatusForbidden {
			t.Errorf("forged token: %d", st)
		}
		if got := op.text("#status-heading"); got != "Forbidden" {
			t.Errorf("page says %q", got)
		}
		op.shot("7-csrf-refused")
		if n := e.count(t, `SELECT count(*) FROM refunds WHERE charge_id = $1`, ch.ID); n != 1 {
			t.Errorf("%d refunds of the charge, want the one", n)
		}
	})

	t.Run("a viewer is refused the refund", func(t *testing.T) {
		v := newTab(t, e.url)
		v.open("/login")
		v.login(e.operator(t, e.ops, operators.RoleViewer), "")
		v.submit("#login-form")
		v.wait("#figures")
		v.open("/charges/" + ch.ID)
		if strings.Contains(v.html(), `id="refund"`) {
			t.Error("a viewer is offered the refund")
		}
		if st := v.open("/charges/" + ch.ID + "/refund"); st != http.StatusForbidden {
			t.Errorf("viewer's refund page: %d", st)
		}
		if got := v.text("#status-text"); !strings.Contains(got, "operator role") {
			t.Errorf("the refusal says %q", got)
		}
		v.shot("8-viewer-refused")
	})

	t.Run("River's UI only after login", func(t *testing.T) {
		j := newTab(t, e.url)
		// The one violation River's UI causes and survives: its schema
		// library probes for eval (Function("")) and falls back.
		j.allowed = func(m browser.Message) bool {
			return m.Kind == "csp" && strings.HasPrefix(m.Text, "script-src blocked eval")
		}
		j.open("/jobs/")
		loc, err := url.Parse(j.location())
		if err != nil || loc.Path != "/login" || loc.Query().Get("next") != "/jobs/" {
			t.Fatalf("/jobs/ without a session is at %s", j.location())
		}
		j.login(e.operator(t, e.ops, operators.RoleViewer), "")
		j.submit("#login-form")
		if !strings.HasSuffix(j.location(), "/jobs/") {
			t.Fatalf("after login at %s, want /jobs/", j.location())
		}
		// The completed jobs: the charge and refund sent above.
		j.open("/jobs/jobs?state=completed")
		if _, err := browser.Run(j.tab, chromedp.Poll[bool](`document.body.innerText.includes("mandate_refund")`,
			chromedp.WithPollingTimeout(20*time.Second))); err != nil {
			t.Fatalf("River's UI does not list the refund's job: %v", err)
		}
		j.shot("9-jobs")
	})
}
