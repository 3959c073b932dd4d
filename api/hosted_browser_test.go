package api_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/quickpay/quickpay/bankadapters/conformance"
	chrome "github.com/quickpay/quickpay/internal/dev/browser"
)

// The hosted binding page driven in headless Chromium at a phone's
// viewport against the real stack (API, Postgres, SoftHSM2, Vault,
// banksim over HTTP): each flow with JavaScript on and off, each ending
// on the merchant's return_url, none reporting a CSP violation.
//
// QUICKPAY_SCREENSHOTS=1 writes a PNG of each step to docs/screenshots
// (tracked files: a plain run writes none). BenchmarkHostedBind
// times scripted binds for docs/hosted.md.

// merchantSite is the merchant's return_url: a loopback server of its own
// origin that records the session ids it is sent back with.
type merchantSite struct {
	*httptest.Server
	mu   sync.Mutex
	back []string // binding_session of each visit
}

func newMerchantSite(t testing.TB) *merchantSite {
	t.Helper()
	m := &merchantSite{}
	m.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		m.back = append(m.back, r.URL.Query().Get("binding_session"))
		m.mu.Unlock()
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<!doctype html><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>merchant</title><h1 id="merchant-done">商户页面：绑卡完成</h1>`)
	}))
	t.Cleanup(m.Close)
	return m
}

func (m *merchantSite) returnURL() string { return m.URL + "/cards/done?x=1" }

func (m *merchantSite) visited(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Contains(m.back, id)
}

// shotsDir is where screenshots go: docs/screenshots when
// QUICKPAY_SCREENSHOTS=1, else nowhere.
func shotsDir() string {
	if os.Getenv("QUICKPAY_SCREENSHOTS") != "1" {
		return ""
	}
	return filepath.Join("..", "docs", "screenshots")
}

// flow is one cardholder's visit in one tab.
type flow struct {
	t     testing.TB
	e     *sessionEnv
	tab   *chrome.Tab
	js    bool
	shots string // file name prefix; "" takes none
	n     int
}

func newFlow(t testing.TB, e *sessionEnv, br *chrome.Browser, js bool, lang, shot string) *flow {
	t.Helper()
	f := &flow{t: t, e: e, js: js, tab: br.NewTab(t, chrome.TabConfig{NoScript: !js, Language: lang})}
	if dir := shotsDir(); dir != "" && shot != "" {
		f.shots = filepath.Join(dir, shot)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, m := range f.tab.Messages() {
				t.Logf("console: %v", m)
			}
		}
		for _, m := range f.tab.Messages() {
			if m.Kind == "exception" {
				t.Errorf("uncaught exception: %v", m)
			}
		}
		if v := f.tab.CSPViolations(); len(v) != 0 {
			t.Errorf("CSP violations: %v", v)
		}
	})
	return f
}

// shot saves the page as step n of the flow's screenshots.
func (f *flow) shot(step string) {
	f.t.Helper()
	if f.shots == "" {
		return
	}
	f.n++
	if err := f.tab.Screenshot(fmt.Sprintf("%s-%d-%s.png", f.shots, f.n, step)); err != nil {
		f.t.Fatal(err)
	}
}

// open navigates to the session's link and waits for the card form.
func (f *flow) open(link string) {
	f.t.Helper()
	res, err := chrome.Run(f.tab, chromedp.NavigateResponse(link))
	if err != nil || res.Status != http.StatusOK {
		f.t.Fatalf("open the link: %v (%+v)", err, res)
	}
	f.wait("#card-form")
}

// wait waits for the element sel to be on the page.
func (f *flow) wait(sel string) {
	f.t.Helper()
	if err := f.tab.Do(chromedp.WaitReady(chromedp.CSS(sel))); err != nil {
		f.t.Fatalf("wait for %s: %v (at %s)", sel, err, f.location())
	}
}

func (f *flow) location() string {
	loc, err := chrome.Run(f.tab, chromedp.Location())
	if err != nil {
		return err.Error()
	}
	return loc
}

// typeIn types v into the field with id, as a person would (key events,
// which fire the script's input handlers).
func (f *flow) typeIn(id, v string) {
	f.t.Helper()
	if err := f.tab.Do(chromedp.Clear(chromedp.ID(id)), chromedp.SendKeys(chromedp.ID(id), v)); err != nil {
		f.t.Fatalf("type into #%s: %v", id, err)
	}
}

// submit presses the form's submit button and returns the status of the
// page the browser ends on (after 303s).
func (f *flow) submit(form string) int64 {
	f.t.Helper()
	res, err := chromedp.RunResponse(f.ctx(), chromedp.Click(chromedp.CSS(form+` button[type="submit"]`)))
	if err != nil {
		f.t.Fatalf("submit %s: %v", form, err)
	}
	return res.Status
}

func (f *flow) ctx() context.Context {
	ctx, cancel := context.WithTimeout(f.tab.Context(), 30*time.Second)
	f.t.Cleanup(cancel)
	return ctx
}

func (f *flow) text(sel string) string {
	f.t.Helper()
	s, err := chrome.Run(f.tab, chromedp.TextContent(chromedp.CSS(sel)))
	if err != nil {
		f.t.Fatalf("text of %s: %v", sel, err)
	}
	return strings.TrimSpace(s)
}

func (f *flow) value(id string) string {
	f.t.Helper()
	s, err := chrome.Run(f.tab, chromedp.Value(chromedp.ID(id)))
	if err != nil {
		f.t.Fatalf("value of #%s: %v", id, err)
	}
	return s
}

func (f *flow) html() string {
	f.t.Helper()
	s, err := chrome.Run(f.tab, chromedp.OuterHTML(chromedp.CSS("html")))
	if err != nil {
		f.t.Fatalf("page html: %v", err)
	}
	return s
}

// fillCard types the four elements (and expiry and CVV2 for a credit
// card). With script on, the card number's hint must name the bank and a
// credit card must reveal its fields.
func (f *flow) fillCard(a conformance.Account) {
	f.t.Helper()
	f.typeIn("holder_name", a.HolderName)
	f.typeIn("id_number", a.IDNumber)
	f.typeIn("card_number", a.CardNumber)
	f.typeIn("phone", a.Phone)
	if f.js {
		if _, err := chrome.Run(f.tab, chromedp.Poll[bool](`document.getElementById("card-hint").textContent !== ""`,
			chromedp.WithPollingTimeout(10*time.Second))); err != nil {
			f.t.Fatalf("no card-type hint: %v", err)
		}
		hidden, err := chrome.Run(f.tab, chromedp.Evaluate[bool](`document.getElementById("credit").classList.contains("hidden")`))
		if err != nil {
			f.t.Fatal(err)
		}
		if hidden != (a.CardType != "credit") {
			f.t.Errorf("a %s card: expiry and CVV2 hidden = %v", a.CardType, hidden)
		}
	}
	if a.CardType == "credit" {
		f.typeIn("expiry", a.Expiry)
		f.typeIn("cvv2", a.CVV2)
	}
}

// code types the phone's newest code into #otp and submits form.
func (f *flow) code(form, code string) int64 {
	f.t.Helper()
	f.typeIn("otp", code)
	return f.submit(form)
}

// landed checks the tab is on the merchant's return_url with the
// session's id, and the merchant was sent there.
func (f *flow) landed(m *merchantSite, id string) {
	f.t.Helper()
	f.wait("#merchant-done")
	loc, err := url.Parse(f.location())
	if err != nil || !strings.HasPrefix(loc.String(), m.URL+"/cards/done?") ||
		loc.Query().Get("binding_session") != id || loc.Query().Get("x") != "1" {
		f.t.Errorf("landed on %q, want %s with binding_session=%s", loc, m.returnURL(), id)
	}
	if !m.visited(id) {
		f.t.Errorf("the merchant's site was not sent back session %s", id)
	}
}

// noCardData: the page shows no card number, ID number or CVV2.
func (f *flow) noCardData(a conformance.Account) {
	f.t.Helper()
	if found := cardDataIn(f.html(), a); found != nil {
		f.t.Errorf("the page holds the %v", found)
	}
}

func TestHostedBrowser(t *testing.T) {
	t.Parallel()
	e := newSessionEnv(t, nil)
	site := newMerchantSite(t)
	br := chrome.Start(t, chrome.Config{})
	newSession := func(t testing.TB, terms map[string]any) sessionCreated {
		body := map[string]any{"external_user_id": "u-" + randomHex(t, 4), "return_url": site.returnURL()}
		if terms != nil {
			body["mandate"] = terms
		}
		return e.create(t, body)
	}

	for _, js := range []bool{true, false} {
		mode, shot := "script on", func(name string) string { return "hosted-" + name }
		if !js {
			// One flow's steps with script off: the credit fields shown.
			mode, shot = "script off", func(name string) string {
				if name == "credit" {
					return "hosted-noscript-credit"
				}
				return ""
			}
		}
		t.Run(mode, func(t *testing.T) {
			t.Run("debit card: wrong code then right", func(t *testing.T) {
				a := e.account(t, e.gen, "ICBC", "debit")
				s := newSession(t, nil)
				f := newFlow(t, e, br, js, "", shot("debit"))
				f.open(s.URL)
				if got := f.text("#merchant-name"); got != "openapi bind+withhold" {
					t.Errorf("merchant shown %q", got)
				}
				f.shot("card")
				f.fillCard(a)
				f.shot("card-filled")
				if st := f.submit("#card-form"); st != http.StatusOK {
					t.Fatalf("card: %d", st)
				}
				f.wait("#otp-form")
				if got := f.text("#attempts"); !strings.Contains(got, "5") {
					t.Errorf("tries left %q", got)
				}
				f.shot("code")
				code := e.code(t, a.Phone)
				wrong := "000000"
				if code == wrong {
					wrong = "111111"
				}
				if st := f.code("#otp-form", wrong); st != http.StatusUnprocessableEntity {
					t.Errorf("wrong code: %d", st)
				}
				if got := f.text("#error"); got != "验证码不正确，还可尝试 4 次。" {
					t.Errorf("wrong code says %q", got)
				}
				if f.value("otp") != "" {
					t.Error("the wrong code was written back")
				}
				f.shot("wrong-code")
				f.code("#otp-form", code)
				f.landed(site, s.ID)
				f.shot("done")
				if got := e.session(t, s.ID); got.Status != "completed" || got.CardID == nil || got.BindingID == nil {
					t.Errorf("session %+v", got)
				}
			})

			t.Run("credit card with expiry and CVV2", func(t *testing.T) {
				a := e.account(t, e.gen, "CMB", "credit")
				s := newSession(t, nil)
				f := newFlow(t, e, br, js, "", shot("credit"))
				f.open(s.URL)
				f.fillCard(a)
				f.shot("card-filled")
				if st := f.submit("#card-form"); st != http.StatusOK {
					t.Fatalf("card: %d (%s)", st, f.text("main"))
				}
				f.wait("#otp-form")
				if got := f.text(".card"); !strings.Contains(got, "招商银行") || !strings.Contains(got, a.CardNumber[len(a.CardNumber)-4:]) {
					t.Errorf("card shown as %q", got)
				}
				f.noCardData(a)
				f.code("#otp-form", e.code(t, a.Phone))
				f.landed(site, s.ID)
				if got := e.session(t, s.ID); got.Status != "completed" {
					t.Errorf("session %+v", got)
				}
			})

			t.Run("elements mismatch shown on the page", func(t *testing.T) {
				a := e.account(t, e.gen, "ICBC", "debit")
				s := newSession(t, nil)
				f := newFlow(t, e, br, js, "", shot("mismatch"))
				f.open(s.URL)
				wrong := a
				wrong.HolderName = "欧阳不符"
				f.fillCard(wrong)
				if st := f.submit("#card-form"); st != http.StatusUnprocessableEntity {
					t.Errorf("mismatch: %d", st)
				}
				if got := f.text("#error"); got != "银行核验未通过：持卡人姓名与银行预留信息不符。" {
					t.Errorf("mismatch says %q", got)
				}
				if f.value("holder_name") != "欧阳不符" || f.value("phone") != a.Phone {
					t.Error("the name and phone were not kept")
				}
				if f.value("card_number") != "" || f.value("id_number") != "" {
					t.Error("the card or ID number was written back")
				}
				f.noCardData(a)
				f.shot("error")
				if got := e.session(t, s.ID); got.Status != "open" || got.BindingID != nil {
					t.Errorf("session after a mismatch %+v", got)
				}
			})

			t.Run("mandate consent ends active", func(t *testing.T) {
				a := e.account(t, e.gen, "CCB", "debit")
				s := newSession(t, map[string]any{"reference": "water-" + randomHex(t, 3), "description": "水费",
					"amount_type": "fixed", "amount": 12345, "notice_days": 2,
					"schedule": map[string]any{"interval": "month", "day_of_month": 5,
						"start_date": time.Now().AddDate(0, 1, 0).Format(time.DateOnly)}})
				f := newFlow(t, e, br, js, "", shot("mandate"))
				f.open(s.URL)
				f.fillCard(a)
				f.submit("#card-form")
				f.wait("#otp-form")
				if st := f.code("#otp-form", e.code(t, a.Phone)); st != http.StatusOK {
					t.Fatalf("bound: %d", st)
				}
				f.wait("#terms-form")
				terms := f.text("#terms")
				for _, want := range []string{"openapi bind+withhold", "水费", "¥123.45", "每月5日", "2 天"} {
					if !strings.Contains(terms, want) {
						t.Errorf("terms lack %q: %q", want, terms)
					}
				}
				f.shot("terms")
				if st := f.submit("#terms-form"); st != http.StatusOK {
					t.Fatalf("agree: %d", st)
				}
				f.wait("#consent-form")
				f.shot("consent-code")
				f.code("#consent-form", e.code(t, a.Phone))
				f.landed(site, s.ID)
				got := e.session(t, s.ID)
				if got.Status != "completed" || got.MandateID == nil {
					t.Fatalf("session %+v", got)
				}
				var m mandateAnswer
				e.c.Get(t, "/v1/mandates/"+*got.MandateID).Decode(t, &m)
				if m.Status != "active" {
					t.Errorf("mandate %s", m.Status)
				}
			})
		})
	}

	t.Run("English by Accept-Language", func(t *testing.T) {
		s := newSession(t, nil)
		f := newFlow(t, e, br, true, "en-US,en", "hosted-en")
		f.open(s.URL)
		if got := f.text("h1"); got != "Link a bank card" {
			t.Errorf("title %q", got)
		}
		f.shot("card")
	})

	t.Run("transfer size", func(t *testing.T) {
		s := newSession(t, nil)
		f := newFlow(t, e, br, true, "", "")
		f.open(s.URL)
		var total int64
		var parts []string
		for _, tr := range f.tab.Transfers() {
			switch tr.Type {
			case "Document", "Stylesheet", "Script":
				total += tr.Bytes
				parts = append(parts, fmt.Sprintf("%s %d B", tr.Type, tr.Bytes))
			}
		}
		t.Logf("the card step took %d bytes on the wire (%s)", total, strings.Join(parts, ", "))
		if len(parts) != 3 || total <= 0 || total >= 50_000 {
			t.Errorf("page transfer: %d bytes in %v, want HTML, CSS and JS under 50 KB", total, parts)
		}
	})
}

// BenchmarkHostedBind binds b.N debit cards in the browser, scripted
// (typing by key events, the code read from banksim's inbox), and reports
// the median, fastest and slowest time from opening the link to landing on
// return_url (docs/hosted.md). Run with -benchtime 20x.
func BenchmarkHostedBind(b *testing.B) {
	e := newSessionEnv(b, nil)
	site := newMerchantSite(b)
	br := chrome.Start(b, chrome.Config{})
	times := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		a := e.account(b, e.gen, "ICBC", "debit")
		s := e.create(b, map[string]any{"external_user_id": "u-" + randomHex(b, 4), "return_url": site.returnURL()})
		f := newFlow(b, e, br, true, "", "")
		b.StartTimer()
		start := time.Now()
		f.open(s.URL)
		f.fillCard(a)
		f.submit("#card-form")
		f.wait("#otp-form")
		f.code("#otp-form", e.code(b, a.Phone))
		f.landed(site, s.ID)
		times = append(times, time.Since(start))
	}
	slices.Sort(times)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(times[len(times)/2]), "median-ms")
	b.ReportMetric(ms(times[0]), "fastest-ms")
	b.ReportMetric(ms(times[len(times)-1]), "slowest-ms")
}
