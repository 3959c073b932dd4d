package console_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/operators"
)

func TestLogin(t *testing.T) {
	e := newEnv(t)

	t.Run("every page without a session goes to the login page", func(t *testing.T) {
		a := newAgent(t, e.url)
		for _, path := range []string{"/", "/charges", "/audit", "/jobs/"} {
			p := a.get(t, path)
			if p.status != http.StatusSeeOther || !strings.HasPrefix(p.location, "/login") {
				t.Errorf("GET %s without a session: %d to %q", path, p.status, p.location)
			}
		}
		if p := a.get(t, "/charges?status=failed"); p.location != "/login?next="+url.QueryEscape("/charges?status=failed") {
			t.Errorf("the login page is not told where to go back: %q", p.location)
		}
		p := a.do(t, http.MethodPost, "/cards/find", url.Values{"card_number": {"6222020000000000000"}})
		if p.status != http.StatusSeeOther || !strings.HasPrefix(p.location, "/login") {
			t.Errorf("POST without a session: %d to %q", p.status, p.location)
		}
	})

	t.Run("name, password and code; cookie HttpOnly, SameSite=Strict, not Secure on loopback", func(t *testing.T) {
		en := e.operator(t, e.ops, operators.RoleViewer)
		a := newAgent(t, e.url)
		a.get(t, "/login?next=%2Fcharges")
		cookie := setCookie(a.postLogin(t, en, "/charges"), "qp_console")
		for _, want := range []string{"HttpOnly", "SameSite=Strict", "Path=/"} {
			if !strings.Contains(cookie, want) {
				t.Errorf("session cookie %q lacks %s", strings.SplitN(cookie, ";", 2)[1:], want)
			}
		}
		if strings.Contains(cookie, "Secure") {
			t.Error("the cookie is Secure on a loopback console: the browser would not send it back over http")
		}
		if p := a.get(t, "/charges"); p.status != http.StatusOK || !strings.Contains(p.body, en.Operator.Name) {
			t.Errorf("after login: %d", p.status)
		}
	})

	t.Run("a Secure console's cookies are Secure and prefixed, and a login works over https", func(t *testing.T) {
		cfg := e.cfg
		cfg.Secure = true
		srv := e.serveTLS(t, cfg)
		a := newAgent(t, srv.URL)
		a.c.Transport = srv.Client().Transport
		p := a.get(t, "/login")
		if c := p.header.Get("Set-Cookie"); !strings.HasPrefix(c, "__Secure-qp_console_login=") ||
			!strings.Contains(c, "; Secure") || !strings.Contains(c, "Path=/login") {
			t.Errorf("login cookie of a Secure console: %q", strings.SplitN(c, "=", 2)[0])
		}
		en := e.operator(t, e.ops, operators.RoleViewer)
		// The __Host- rules: Secure, Path=/ and no Domain.
		session := setCookie(a.postLogin(t, en, "/charges"), "__Host-qp_console")
		if !strings.Contains(session, "; Secure") || !strings.Contains(session, "Path=/;") || strings.Contains(session, "Domain") {
			t.Errorf("session cookie %q", strings.SplitN(session, ";", 2)[1:])
		}
		if p := a.get(t, "/charges"); p.status != http.StatusOK || !strings.Contains(p.body, en.Operator.Name) {
			t.Errorf("after login over https: %d", p.status)
		}
		// The login cookie (Path=/login) is cleared: the jar holds the
		// session's cookie only, on every path.
		for path, want := range map[string][]string{"/": {"__Host-qp_console"}, "/login": {"__Host-qp_console"}} {
			u, err := url.Parse(srv.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, ck := range a.c.Jar.Cookies(u) {
				names = append(names, ck.Name)
			}
			if !slices.Equal(names, want) {
				t.Errorf("cookies for %s after login: %v, want %v", path, names, want)
			}
		}
	})

	t.Run("a wrong password or code is refused, saying neither", func(t *testing.T) {
		en := e.operator(t, e.ops, operators.RoleViewer)
		for name, form := range map[string]url.Values{
			"wrong password": {"name": {en.Operator.Name}, "password": {en.Password + "x"}, "code": {code(t, en, time.Now())}},
			"wrong code":     {"name": {en.Operator.Name}, "password": {en.Password}, "code": {"000000"}},
			"unknown name":   {"name": {"nobody-" + randHex(t, 3)}, "password": {en.Password}, "code": {"123456"}},
		} {
			a := newAgent(t, e.url)
			a.get(t, "/login")
			if name == "wrong code" && form.Get("code") == code(t, en, time.Now()) {
				form.Set("code", "111111")
			}
			p := a.post(t, "/login", form)
			if p.status != http.StatusUnauthorized || !strings.Contains(p.body, "The name, password or code is wrong.") {
				t.Errorf("%s: %d: %s", name, p.status, text(p.body))
			}
			if p := a.get(t, "/"); p.status != http.StatusSeeOther {
				t.Errorf("%s: a session was made", name)
			}
		}
	})

	t.Run("the login form needs its pre-session token", func(t *testing.T) {
		en := e.operator(t, e.ops, operators.RoleViewer)
		a := newAgent(t, e.url)
		a.get(t, "/login")
		form := url.Values{"name": {en.Operator.Name}, "password": {en.Password}, "code": {code(t, en, time.Now())}}
		for name, token := range map[string]string{"missing": "", "wrong": strings.Repeat("A", 43)} {
			f := url.Values{}
			for k, v := range form {
				f[k] = v
			}
			f.Set("csrf", token)
			if p := a.post(t, "/login", f); p.status != http.StatusForbidden {
				t.Errorf("%s token: %d", name, p.status)
			}
		}
		// A fresh browser posting without the cookie (a page elsewhere).
		f := url.Values{"name": {en.Operator.Name}, "password": {en.Password}, "code": {code(t, en, time.Now())},
			"csrf": {a.csrf}}
		if p := newAgent(t, e.url).do(t, http.MethodPost, "/login", f); p.status != http.StatusForbidden {
			t.Errorf("no cookie: %d", p.status)
		}
		if n := e.count(t, `SELECT count(*) FROM operator_sessions WHERE operator_id = $1`, en.Operator.ID); n != 0 {
			t.Errorf("%d sessions made by forged logins", n)
		}
	})

	t.Run("ten failures lock the operator, and the page says so", func(t *testing.T) {
		en := e.operator(t, e.ops, operators.RoleViewer)
		a := newAgent(t, e.url)
		a.get(t, "/login")
		for range 10 {
			a.post(t, "/login", url.Values{"name": {en.Operator.Name}, "password": {"wrong"}, "code": {"000000"}})
		}
		p := a.post(t, "/login", url.Values{"name": {en.Operator.Name}, "password": {en.Password}, "code": {code(t, en, time.Now())}})
		if p.status != http.StatusForbidden || !strings.Contains(p.body, "locked") || !strings.Contains(p.body, "Try again after ") {
			t.Errorf("locked login: %d: %s; want the time to try again after", p.status, text(p.body))
		}
	})

	t.Run("logout ends the session; it needs the CSRF token", func(t *testing.T) {
		a := e.as(t, operators.RoleViewer)
		if p := a.post(t, "/logout", url.Values{"csrf": {"nope"}}); p.status != http.StatusForbidden {
			t.Errorf("logout with a wrong token: %d", p.status)
		}
		if p := a.get(t, "/"); p.status != http.StatusOK {
			t.Fatalf("the session ended without its token: %d", p.status)
		}
		if p := a.post(t, "/logout", nil); p.status != http.StatusSeeOther || !strings.HasPrefix(p.location, "/login") {
			t.Errorf("logout: %d to %q", p.status, p.location)
		}
		if p := a.get(t, "/"); p.status != http.StatusSeeOther {
			t.Errorf("after logout: %d", p.status)
		}
	})

	t.Run("an idle session expires and the next page asks to log in again", func(t *testing.T) {
		clk := clock.NewFake(time.Now())
		ops, err := operators.NewStore(operators.Config{Pool: e.Pool, Sealer: e.Vault, Clock: clk})
		if err != nil {
			t.Fatal(err)
		}
		cfg := e.cfg
		cfg.Operators = ops
		a := newAgent(t, e.serve(t, cfg))
		a.login(t, e.operator(t, ops, operators.RoleViewer), clk.Now())
		clk.Advance(operators.DefaultIdleTimeout + time.Second)
		p := a.get(t, "/charges")
		if p.status != http.StatusSeeOther || !strings.Contains(p.location, "why=ended") {
			t.Fatalf("after the idle timeout: %d to %q", p.status, p.location)
		}
		if p := a.get(t, p.location); !strings.Contains(p.body, "Your session ended") {
			t.Errorf("the login page does not say the session ended: %s", text(p.body))
		}
	})
}

func TestSecurityHeaders(t *testing.T) {
	e := newEnv(t)
	a := e.as(t, operators.RoleViewer)
	for _, path := range []string{"/login", "/", "/charges", "/nowhere", "/assets/console.css"} {
		p := a.get(t, path)
		h := p.header
		if got := h.Get("Content-Security-Policy"); got != "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'" {
			t.Errorf("%s: CSP %q", path, got)
		}
		for k, want := range map[string]string{"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
			"Cache-Control": "no-store"} {
			if h.Get(k) != want {
				t.Errorf("%s: %s = %q", path, k, h.Get(k))
			}
		}
		if h.Get("X-Request-Id") == "" {
			t.Errorf("%s: no request id", path)
		}
		if strings.Contains(p.body, "<script") {
			t.Errorf("%s: a page with a script", path)
		}
	}
	// River's UI: its own, looser policy, same origin only.
	p := a.get(t, "/jobs/")
	if p.status != http.StatusOK || !strings.Contains(p.body, "River") {
		t.Fatalf("/jobs/: %d", p.status)
	}
	if got := p.header.Get("Content-Security-Policy"); !strings.Contains(got, "script-src 'self';") ||
		strings.Contains(got, "unsafe-eval") || strings.Contains(got, "http") || !strings.Contains(got, "connect-src 'self';") {
		t.Errorf("/jobs/ CSP %q", got)
	}
}

func TestJobs(t *testing.T) {
	e := newEnv(t)
	// A job scheduled for tomorrow, which only a change through River's UI
	// can cancel.
	var jobID int64
	if err := e.Pool.QueryRow(context.Background(), `INSERT INTO river_job (args, kind, max_attempts, priority, queue, state, scheduled_at)
		VALUES ('{}', 'console_test', 1, 1, 'console_test', 'scheduled', now() + interval '1 day') RETURNING id`).Scan(&jobID); err != nil {
		t.Fatal(err)
	}
	jobState := func() string {
		var st string
		if err := e.Pool.QueryRow(context.Background(), `SELECT state FROM river_job WHERE id = $1`, jobID).Scan(&st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	cancel := func(a *agent, origin, site string) page {
		t.Helper()
		body := fmt.Sprintf(`{"ids":["%d"]}`, jobID)
		req, err := http.NewRequest(http.MethodPost, e.url+"/jobs/api/jobs/cancel", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		if site != "" {
			req.Header.Set("Sec-Fetch-Site", site)
		}
		res, err := a.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return page{status: res.StatusCode, location: res.Header.Get("Location")}
	}
	jobsRows := func() int {
		return e.count(t, `SELECT count(*) FROM audit_log WHERE action = 'console.jobs'`)
	}

	t.Run("every role reads River's UI and its API", func(t *testing.T) {
		v := e.as(t, operators.RoleViewer)
		for _, path := range []string{"/jobs/", "/jobs/jobs?state=completed", "/jobs/api/jobs?state=completed"} {
			if p := v.get(t, path); p.status != http.StatusOK {
				t.Errorf("viewer GET %s: %d", path, p.status)
			}
		}
	})

	t.Run("changes need admin, the console's origin and JSON; each is audited", func(t *testing.T) {
		before := jobsRows()
		if p := cancel(e.as(t, operators.RoleOperator), e.url, "same-origin"); p.status != http.StatusForbidden {
			t.Errorf("operator's cancel: %d", p.status)
		}
		admin := e.as(t, operators.RoleAdmin)
		for name, h := range map[string][2]string{"no origin": {"", ""}, "another origin": {"http://evil.example", "cross-site"},
			"same site, other origin": {e.url, "same-site"}} {
			if p := cancel(admin, h[0], h[1]); p.status != http.StatusForbidden {
				t.Errorf("%s: %d", name, p.status)
			}
		}
		if got := jobsRows(); got != before {
			t.Errorf("refused changes audited: %d rows, were %d", got, before)
		}
		if st := jobState(); st != "scheduled" {
			t.Fatalf("after refused cancels the job is %s, want scheduled", st)
		}
		if p := cancel(admin, e.url, "same-origin"); p.status == http.StatusForbidden || p.status >= 500 {
			t.Errorf("admin's cancel from the console: %d", p.status)
		}
		if st := jobState(); st != "cancelled" {
			t.Errorf("after the admin's cancel the job is %s, want cancelled", st)
		}
		if got := jobsRows(); got != before+1 {
			t.Errorf("the admin's change was not audited: %d rows, were %d", got, before)
		}
	})

	t.Run("without a session the API is not served", func(t *testing.T) {
		a := newAgent(t, e.url)
		if p := a.get(t, "/jobs/api/jobs?state=completed"); p.status != http.StatusSeeOther {
			t.Errorf("GET without a session: %d", p.status)
		}
		if p := cancel(a, e.url, "same-origin"); p.status != http.StatusSeeOther || !strings.HasPrefix(p.location, "/login") {
			t.Errorf("cancel without a session: %d to %q", p.status, p.location)
		}
	})
}
