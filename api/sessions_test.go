package api_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/quickpay/quickpay/api/apitest"
	"github.com/quickpay/quickpay/bankadapters/conformance"
	"github.com/quickpay/quickpay/internal/clock"
)

// browser is a cardholder's browser without JavaScript: a cookie jar, no
// redirects followed, the CSRF token read from the last page.
type browser struct {
	hc   *http.Client
	lang string
	csrf string
}

type page struct {
	status int
	body   string
	header http.Header
}

func newBrowser(t testing.TB, lang string) *browser {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &browser{lang: lang, hc: &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

var csrfInput = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (b *browser) do(t testing.TB, method, u string, form url.Values) page {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if b.lang != "" {
		req.Header.Set("Accept-Language", b.lang)
	}
	res, err := b.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	p := page{status: res.StatusCode, body: string(raw), header: res.Header}
	if m := csrfInput.FindStringSubmatch(p.body); m != nil {
		b.csrf = m[1]
	}
	return p
}

func (b *browser) get(t testing.TB, u string) page { return b.do(t, http.MethodGet, u, nil) }

// post sends form to the page's step path with the page's CSRF token.
func (b *browser) post(t testing.TB, link, step string, form url.Values) page {
	t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if _, ok := form["csrf"]; !ok {
		form.Set("csrf", b.csrf)
	}
	return b.do(t, http.MethodPost, link+step, form)
}

func cardForm(a conformance.Account) url.Values {
	f := url.Values{"holder_name": {a.HolderName}, "id_number": {a.IDNumber}, "card_number": {a.CardNumber}, "phone": {a.Phone}}
	if a.CardType == "credit" {
		f.Set("expiry", a.Expiry)
		f.Set("cvv2", a.CVV2)
	}
	return f
}

type sessionCreated struct {
	ID        string    `json:"id"`
	URL       string    `json:"url"`
	Status    string    `json:"status"`
	ExpiresAt time.Time `json:"expires_at"`
}

type sessionAnswer struct {
	ID          string  `json:"id"`
	Status      string  `json:"status"`
	BindingID   *string `json:"binding_id"`
	CardID      *string `json:"card_id"`
	MemberID    *string `json:"member_id"`
	MandateID   *string `json:"mandate_id"`
	FailureCode *string `json:"failure_code"`
}

type sessionEnv struct {
	*testServer
	c                *apitest.Client
	gen              *conformance.Gen
	clientID, secret string
}

func newSessionEnv(t testing.TB, clk clock.Clock) *sessionEnv {
	t.Helper()
	srv := newTestServer(t, serverOptions{Clock: clk})
	id, secret := srv.credentials(t, "bind", "withhold")
	c := apitest.NewClient(t, srv.url)
	return &sessionEnv{testServer: srv, c: c.WithToken(c.Token(t, id, secret)), gen: conformance.NewGen(), clientID: id, secret: secret}
}

func (e *sessionEnv) create(t testing.TB, body map[string]any) sessionCreated {
	t.Helper()
	var s sessionCreated
	r := e.c.Post(t, "/v1/binding_sessions", body, apitest.IdempotencyKey(randomHex(t, 8)))
	if r.WantStatus(t, http.StatusCreated) {
		r.Decode(t, &s)
	}
	if !strings.HasPrefix(s.URL, e.url+"/bind/") {
		t.Fatalf("session url %q is not the server's page", s.URL)
	}
	return s
}

func (e *sessionEnv) session(t testing.TB, id string) sessionAnswer {
	t.Helper()
	var s sessionAnswer
	e.c.Get(t, "/v1/binding_sessions/"+id).Decode(t, &s)
	return s
}

const returnURL = "https://merchant.example/cards/done?x=1"

func wantIn(t testing.TB, p page, parts ...string) {
	t.Helper()
	for _, s := range parts {
		if !strings.Contains(p.body, s) {
			t.Errorf("page (%d) lacks %q", p.status, s)
		}
	}
}

// cardDataIn names the card data of a that the page markup h holds: the
// card number and ID number anywhere; the CVV2 (three digits, which most
// markup holds somewhere by chance: a nonce, a style) where a page would
// show it, as a field's value or a word of its text.
func cardDataIn(h string, a conformance.Account) []string {
	var found []string
	for what, v := range map[string]string{"card number": a.CardNumber, "ID number": a.IDNumber} {
		if strings.Contains(h, v) {
			found = append(found, what)
		}
	}
	if v := a.CVV2; v != "" && (strings.Contains(h, `value="`+v+`"`) ||
		regexp.MustCompile(`>[^<]*\b`+v+`\b[^<]*<`).MatchString(h)) {
		found = append(found, "CVV2")
	}
	return found
}

// TestCardDataIn: the page check finds card data where a page shows it,
// and passes over three digits that markup holds by chance.
func TestCardDataIn(t *testing.T) {
	a := conformance.Account{CardNumber: "4392250000000001", IDNumber: "11010119900307451X", CVV2: "208"}
	for h, want := range map[string]string{
		`<input name="card_number" value="4392250000000001">`: "[card number]",
		`<p>11010119900307451X</p>`:                           "[ID number]",
		`<input id="cvv2" name="cvv2" value="208">`:           "[CVV2]",
		`<p class="card">CVV2 208</p>`:                        "[CVV2]",
		`<script nonce="x208y"></script><p>尾号0001</p>`:        "[]",
		`<style>.a{width:208px}</style><p>ok</p>`:             "[]",
	} {
		if got := "[" + strings.Join(cardDataIn(h, a), " ") + "]"; got != want {
			t.Errorf("%s: %s, want %s", h, got, want)
		}
	}
}

func TestHostedBinding(t *testing.T) {
	t.Parallel()
	e := newSessionEnv(t, nil)

	t.Run("debit card: headers, fields, wrong code then right, link used after", func(t *testing.T) {
		a := e.account(t, e.gen, "ICBC", "debit")
		s := e.create(t, map[string]any{"external_user_id": "u-" + randomHex(t, 4), "return_url": returnURL})
		b := newBrowser(t, "")
		p := b.get(t, s.URL)
		if p.status != http.StatusOK {
			t.Fatalf("open link: %d", p.status)
		}
		for h, want := range map[string]string{"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'",
			"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"} {
			if got := p.header.Get(h); !strings.Contains(got, want) {
				t.Errorf("%s = %q, want %q", h, got, want)
			}
		}
		if csp := p.header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "form-action 'self'") {
			t.Errorf("CSP %q", csp)
		}
		if ck := p.header.Get("Set-Cookie"); !strings.Contains(ck, "HttpOnly") || !strings.Contains(ck, "SameSite=Strict") {
			t.Errorf("CSRF cookie %q", ck)
		}
		wantIn(t, p, `lang="zh-CN"`, "绑定银行卡", `id="merchant-name">openapi bind`,
			`<label for="holder_name">`, `name="holder_name" autocomplete="name"`,
			`<label for="id_number">`, `name="id_number"`,
			`<label for="card_number">`, `name="card_number" autocomplete="cc-number" inputmode="numeric"`,
			`<label for="phone">`, `name="phone" type="tel" autocomplete="tel" inputmode="numeric"`,
			`<label for="expiry">`, `name="expiry" autocomplete="cc-exp" inputmode="numeric"`,
			`<label for="cvv2">`, `name="cvv2" autocomplete="cc-csc" inputmode="numeric"`)
		if strings.Contains(p.body, "<script>") || strings.Contains(p.body, "style=") {
			t.Error("inline script or style on the page")
		}

		p = b.post(t, s.URL, "/card", cardForm(a))
		if p.status != http.StatusSeeOther || p.header.Get("Location") != "/bind/"+s.URL[strings.LastIndex(s.URL, "/")+1:] {
			t.Fatalf("card: %d to %q", p.status, p.header.Get("Location"))
		}
		p = b.get(t, s.URL)
		wantIn(t, p, `name="otp" autocomplete="one-time-code" inputmode="numeric"`, `<label for="otp">`, "剩余尝试次数：5", `data-resend-in="`)
		code := e.code(t, a.Phone)
		wrong := "000000"
		if code == wrong {
			wrong = "111111"
		}
		p = b.post(t, s.URL, "/otp", url.Values{"otp": {wrong}})
		if p.status != http.StatusUnprocessableEntity {
			t.Errorf("wrong code: %d", p.status)
		}
		wantIn(t, p, "验证码不正确，还可尝试 4 次。")
		p = b.post(t, s.URL, "/otp", url.Values{"otp": {code}})
		loc, _ := url.Parse(p.header.Get("Location"))
		if p.status != http.StatusSeeOther || loc == nil || loc.Host != "merchant.example" ||
			loc.Query().Get("binding_session") != s.ID || loc.Query().Get("x") != "1" {
			t.Fatalf("right code: %d to %q", p.status, p.header.Get("Location"))
		}
		got := e.session(t, s.ID)
		if got.Status != "completed" || got.CardID == nil || got.MemberID == nil || got.BindingID == nil {
			t.Errorf("session after the code: %+v", got)
		}
		var events int
		if err := e.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE type = 'binding_session.completed'
			AND data->>'id' = $1 AND data->>'card_id' = $2`, s.ID, *got.CardID).Scan(&events); err != nil || events != 1 {
			t.Errorf("binding_session.completed events: %d (%v)", events, err)
		}
		p = b.get(t, s.URL)
		if p.status != http.StatusGone || p.header.Get("Location") != "" {
			t.Errorf("a completed link opened again: %d to %q", p.status, p.header.Get("Location"))
		}
		wantIn(t, p, "此绑卡链接已使用")
	})

	t.Run("CSRF: a post without the cookie's token is refused and does nothing", func(t *testing.T) {
		a := e.account(t, e.gen, "CCB", "debit")
		s := e.create(t, map[string]any{"external_user_id": "u-" + randomHex(t, 4), "return_url": returnURL})
		b := newBrowser(t, "")
		b.get(t, s.URL)
		f := cardForm(a)
		f.Set("csrf", strings.Repeat("A", 43))
		if p := b.post(t, s.URL, "/card", f); p.status != http.StatusForbidden {
			t.Errorf("forged token: %d", p.status)
		}
		other := newBrowser(t, "") // no cookie at all
		if p := other.post(t, s.URL, "/card", cardForm(a)); p.status != http.StatusForbidden {
			t.Errorf("no cookie: %d", p.status)
		}
		if got := e.session(t, s.ID); got.BindingID != nil {
			t.Errorf("a refused post started binding %s", *got.BindingID)
		}
	})

	t.Run("elements mismatch names the element; name and phone kept, card data not", func(t *testing.T) {
		a := e.account(t, e.gen, "ICBC", "debit")
		s := e.create(t, map[string]any{"external_user_id": "u-" + randomHex(t, 4), "return_url": returnURL})
		b := newBrowser(t, "")
		b.get(t, s.URL)
		f := cardForm(a)
		f.Set("holder_name", "欧阳不符")
		p := b.post(t, s.URL, "/card", f)
		if p.status != http.StatusUnprocessableEntity {
			t.Fatalf("mismatch: %d", p.status)
		}
		wantIn(t, p, "银行核验未通过：持卡人姓名与银行预留信息不符。", `value="欧阳不符"`, `value="`+a.Phone+`"`)
		if found := cardDataIn(p.body, a); found != nil {
			t.Errorf("the page echoes the %v", found)
		}
	})

	t.Run("credit card needs expiry and CVV2, in English", func(t *testing.T) {
		a := e.account(t, e.gen, "CMB", "credit")
		s := e.create(t, map[string]any{"external_user_id": "u-" + randomHex(t, 4), "return_url": returnURL})
		b := newBrowser(t, "en-US,en;q=0.9,zh;q=0.5")
		wantIn(t, b.get(t, s.URL), `lang="en"`, "Link a bank card")
		f := cardForm(a)
		f.Del("expiry")
		f.Del("cvv2")
		p := b.post(t, s.URL, "/card", f)
		if p.status != http.StatusUnprocessableEntity {
			t.Fatalf("credit without expiry: %d", p.status)
		}
		wantIn(t, p, "Credit cards need a valid expiry.")
		if found := cardDataIn(p.body, a); found != nil {
			t.Errorf("the page echoes the %v", found)
		}
		if p = b.post(t, s.URL, "/card", cardForm(a)); p.status != http.StatusSeeOther {
			t.Fatalf("credit with expiry and CVV2: %d", p.status)
		}
		wantIn(t, b.get(t, s.URL), `name="otp"`, "招商银行", a.CardNumber[len(a.CardNumber)-4:])
	})

	t.Run("mandate consent ends active", func(t *testing.T) {
		a := e.account(t, e.gen, "CCB", "debit")
		terms := map[string]any{"reference": "water-42", "amount_type": "fixed", "amount": 12345, "notice_days": 2,
			"schedule": map[string]any{"interval": "month", "day_of_month": 5, "start_date": time.Now().AddDate(0, 1, 0).Format(time.DateOnly)}}
		s := e.create(t, map[string]any{"external_user_id": "u-" + randomHex(t, 4), "return_url": returnURL, "mandate": terms})
		b := newBrowser(t, "")
		b.get(t, s.URL)
		b.post(t, s.URL, "/card", cardForm(a))
		if p := b.post(t, s.URL, "/otp", url.Values{"otp": {e.code(t, a.Phone)}}); p.status != http.StatusSeeOther || p.header.Get("Location") == "" || strings.Contains(p.header.Get("Location"), "merchant.example") {
			t.Fatalf("bound with terms: %d to %q", p.status, p.header.Get("Location"))
		}
		p := b.get(t, s.URL)
		wantIn(t, p, "代扣授权", "¥123.45", "每月5日", "2 天", "如何取消", "openapi bind")
		if p = b.post(t, s.URL, "/consent", nil); p.status != http.StatusSeeOther {
			t.Fatalf("agree: %d", p.status)
		}
		wantIn(t, b.get(t, s.URL), `action="/bind/`, `/consent/confirm"`)
		p = b.post(t, s.URL, "/consent/confirm", url.Values{"otp": {e.code(t, a.Phone)}})
		if loc := p.header.Get("Location"); p.status != http.StatusSeeOther || !strings.Contains(loc, "binding_session="+s.ID) {
			t.Fatalf("consent: %d to %q", p.status, loc)
		}
		got := e.session(t, s.ID)
		if got.Status != "completed" || got.MandateID == nil {
			t.Fatalf("session: %+v", got)
		}
		var m mandateAnswer
		e.c.Get(t, "/v1/mandates/"+*got.MandateID).Decode(t, &m)
		if m.Status != "active" {
			t.Errorf("mandate %s", m.Status)
		}
	})

	t.Run("refusals at creation", func(t *testing.T) {
		for name, body := range map[string]map[string]any{
			"return_url http off loopback": {"external_user_id": "u1", "return_url": "http://merchant.example/x"},
			"return_url not absolute":      {"external_user_id": "u1", "return_url": "/x"},
		} {
			e.c.Post(t, "/v1/binding_sessions", body, apitest.IdempotencyKey(randomHex(t, 8))).
				WantError(t, http.StatusUnprocessableEntity, "validation_failed")
			_ = name
		}
		r := e.c.Post(t, "/v1/binding_sessions", map[string]any{"external_user_id": "u1", "return_url": returnURL,
			"mandate": map[string]any{"reference": "r", "amount_type": "fixed", "amount": 0,
				"schedule": map[string]any{"interval": "month", "day_of_month": 5, "start_date": "2030-01-01"}}},
			apitest.IdempotencyKey(randomHex(t, 8)))
		if r.WantError(t, http.StatusUnprocessableEntity, "validation_failed") {
			if f := r.APIError().Field; f != "mandate.amount" {
				t.Errorf("field %q", f)
			}
		}
		e.c.Post(t, "/v1/binding_sessions", map[string]any{"external_user_id": "u1", "return_url": "http://127.0.0.1:9/done"},
			apitest.IdempotencyKey(randomHex(t, 8))).WantStatus(t, http.StatusCreated)
	})
}

func TestHostedSessionExpires(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Now())
	e := newSessionEnv(t, clk)
	s := e.create(t, map[string]any{"external_user_id": "u-" + randomHex(t, 4), "return_url": returnURL})
	b := newBrowser(t, "")
	if p := b.get(t, s.URL); p.status != http.StatusOK {
		t.Fatalf("open: %d", p.status)
	}
	clk.Advance(31 * time.Minute)
	p := b.get(t, s.URL)
	if p.status != http.StatusGone || p.header.Get("Location") != "" || strings.Contains(p.body, "merchant.example") {
		t.Errorf("expired link: %d to %q", p.status, p.header.Get("Location"))
	}
	wantIn(t, p, "链接已过期")
	if p = b.post(t, s.URL, "/card", url.Values{}); p.status != http.StatusGone {
		t.Errorf("post to an expired link: %d", p.status)
	}
	e.c = e.c.WithToken(e.c.Token(t, e.clientID, e.secret)) // the first token is past its life too
	if got := e.session(t, s.ID); got.Status != "expired" {
		t.Errorf("session %s", got.Status)
	}
	if p := b.get(t, e.url+"/bind/"+strings.Repeat("A", 43)); p.status != http.StatusNotFound {
		t.Errorf("unknown token: %d", p.status)
	}
}

// TestSessionLinkSavedSealed: the answer of POST /v1/binding_sessions holds
// the link, whose token opens the page and which GET never shows. Its
// Idempotency-Key keeps it only encrypted, and a replay answers the same
// link.
func TestSessionLinkSavedSealed(t *testing.T) {
	e := newSessionEnv(t, nil)
	keyText := "sealed-" + randomHex(t, 8)
	key := apitest.IdempotencyKey(keyText)
	body := map[string]any{"external_user_id": "sealed-" + randomHex(t, 4), "return_url": returnURL}
	first := e.c.Post(t, "/v1/binding_sessions", body, key)
	var s sessionCreated
	if !first.WantStatus(t, http.StatusCreated) || !first.Decode(t, &s) {
		t.FailNow()
	}
	token := s.URL[strings.LastIndex(s.URL, "/")+1:]
	var saved []byte
	var sealed bool
	if err := e.Pool.QueryRow(context.Background(), `SELECT response_body, response_sealed FROM idempotency_keys
		WHERE key = $1 AND response_status = 201`, keyText).Scan(&saved, &sealed); err != nil {
		t.Fatal(err)
	}
	if !sealed || bytes.Contains(saved, []byte(token)) || bytes.Contains(saved, []byte(s.ID)) {
		t.Errorf("the saved answer (sealed %v) holds the session's token or id in clear", sealed)
	}
	again := e.c.Post(t, "/v1/binding_sessions", body, key)
	if again.WantStatus(t, http.StatusCreated) && (!bytes.Equal(again.Body, first.Body) || again.Header.Get("Idempotent-Replayed") != "true") {
		t.Errorf("replay = %s (replayed %q), want the first answer", again.Body, again.Header.Get("Idempotent-Replayed"))
	}
}
