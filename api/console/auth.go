package console

import (
	"crypto/subtle"
	"errors"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/quickpay/quickpay/api/pagekit"
	"github.com/quickpay/quickpay/internal/operators"
)

// Cookies and form fields.
const (
	// sessionCookie holds the session's token (operators.Store.Login).
	sessionCookie = "qp_console"
	// loginCookie holds the login form's pre-session CSRF secret, which
	// the form echoes: a page elsewhere cannot log the browser in as
	// someone else (login CSRF).
	loginCookie = "qp_console_login"
	csrfField   = "csrf"
)

// cookieNames are the console's cookie names. A Secure console prefixes
// them: __Host- (Secure, Path=/, no Domain) for the session, so that no
// sibling host or plain-http page can set or shadow it; __Secure- for the
// login cookie, whose path is /login.
type cookieNames struct{ session, login string }

func newCookieNames(secure bool) cookieNames {
	if secure {
		return cookieNames{session: "__Host-" + sessionCookie, login: "__Secure-" + loginCookie}
	}
	return cookieNames{session: sessionCookie, login: loginCookie}
}

// maxForm bounds a form post's body.
const maxForm = 16 << 10

const ctxSession = "console.session"

// sessionOf is the request's operator session, set by Console.session.
func sessionOf(ec echo.Context) (operators.Session, bool) {
	s, ok := ec.Get(ctxSession).(operators.Session)
	return s, ok
}

// session requires a live operator session: without one a GET is sent to
// the login page (and back afterwards), anything else too, with nothing
// done. A POST must carry the session's CSRF token (else 403 and nothing
// done).
func (c *Console) session(next echo.HandlerFunc) echo.HandlerFunc { return c.withSession(true, next) }

// jobsSession is session for River's UI, whose script posts JSON without
// the console's CSRF token: jobsGuard checks its posts instead.
func (c *Console) jobsSession(next echo.HandlerFunc) echo.HandlerFunc {
	return c.withSession(false, next)
}

func (c *Console) withSession(csrf bool, next echo.HandlerFunc) echo.HandlerFunc {
	return func(ec echo.Context) error {
		r := ec.Request()
		ck, err := r.Cookie(c.cookies.session)
		if err != nil || ck.Value == "" {
			return c.toLogin(ec, "")
		}
		find := c.cfg.Operators.Session
		if !csrf && r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, JobsPath+"/api/") {
			// River's UI refreshes its lists every few seconds: no sign
			// of a person at work, so it does not keep the session alive.
			find = c.cfg.Operators.PeekSession
		}
		s, err := find(r.Context(), ck.Value)
		switch {
		case errors.Is(err, operators.ErrNoSession):
			c.clearCookie(ec, c.cookies.session, "/")
			return c.toLogin(ec, "ended")
		case err != nil:
			return c.fault(ec, err)
		}
		ec.Set(ctxSession, s)
		if csrf && r.Method == http.MethodPost {
			if !c.parseForm(ec) {
				return c.status(ec, http.StatusBadRequest, "Bad request", "The form could not be read.")
			}
			if !s.CheckCSRF(r.PostForm.Get(csrfField)) {
				return c.status(ec, http.StatusForbidden, "Forbidden",
					"The form's security token is missing or wrong. Nothing was done. Open the page again and retry.")
			}
		}
		return next(ec)
	}
}

// toLogin answers a request without a session: 303 to the login page,
// which a GET of a console page comes back to after logging in.
func (c *Console) toLogin(ec echo.Context, why string) error {
	q := url.Values{}
	r := ec.Request()
	if r.Method == http.MethodGet && r.URL.Path != "/" {
		q.Set("next", r.URL.RequestURI())
	}
	if why != "" {
		q.Set("why", why)
	}
	to := "/login"
	if len(q) > 0 {
		to += "?" + q.Encode()
	}
	return ec.Redirect(http.StatusSeeOther, to)
}

// safeNext is where a login goes on to: a path of this console only.
func safeNext(next string) string {
	if next == "" || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") {
		return "/"
	}
	// Browsers drop tabs and newlines from a URL and read \ as /, so
	// "/\t/evil.example" would leave the console: no control byte, no \.
	for i := 0; i < len(next); i++ {
		if b := next[i]; b < 0x20 || b == 0x7f || b == '\\' {
			return "/"
		}
	}
	return next
}

// parseForm bounds and parses a post's body.
func (c *Console) parseForm(ec echo.Context) bool {
	r := ec.Request()
	r.Body = http.MaxBytesReader(ec.Response(), r.Body, maxForm)
	return r.ParseForm() == nil
}

type loginView struct {
	Next    string
	Name    string
	Error   string
	Notice  string
	LoginID string // the pre-session CSRF secret
}

// loginPage shows the login form and sets its pre-session CSRF cookie.
func (c *Console) loginPage(ec echo.Context) error {
	v := loginView{Next: safeNext(ec.QueryParam("next"))}
	if ec.QueryParam("why") == "ended" {
		v.Notice = "Your session ended. Log in again."
	}
	if ec.QueryParam("why") == "out" {
		v.Notice = "You are logged out."
	}
	secret, err := c.loginSecret(ec)
	if err != nil {
		return c.fault(ec, err)
	}
	v.LoginID = secret
	return c.render(ec, http.StatusOK, "login", "Log in", v)
}

// loginSecret returns the browser's login CSRF secret, setting a new one
// when it has none.
func (c *Console) loginSecret(ec echo.Context) (string, error) {
	if ck, err := ec.Request().Cookie(c.cookies.login); err == nil && pagekit.ValidSecret(ck.Value) {
		return ck.Value, nil
	}
	s, err := pagekit.NewSecret()
	if err != nil {
		return "", err
	}
	ec.SetCookie(&http.Cookie{Name: c.cookies.login, Value: s, Path: "/login", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: c.cfg.Secure, MaxAge: 3600})
	return s, nil
}

// login checks the form's pre-session token, then the name, password and
// TOTP code (operators.Store.Login, which locks and audits), and sets the
// session cookie.
func (c *Console) login(ec echo.Context) error {
	r := ec.Request()
	if !c.parseForm(ec) {
		return c.status(ec, http.StatusBadRequest, "Bad request", "The form could not be read.")
	}
	ck, err := r.Cookie(c.cookies.login)
	if err != nil || !pagekit.ValidSecret(ck.Value) ||
		subtle.ConstantTimeCompare([]byte(ck.Value), []byte(r.PostForm.Get(csrfField))) != 1 {
		return c.status(ec, http.StatusForbidden, "Forbidden",
			"The login form's security token is missing or wrong. Open the login page again.")
	}
	v := loginView{Next: safeNext(r.PostForm.Get("next")), Name: r.PostForm.Get("name"), LoginID: ck.Value}
	s, token, err := c.cfg.Operators.Login(r.Context(), v.Name, r.PostForm.Get("password"), r.PostForm.Get("code"),
		sourceIP(r))
	switch {
	case err == nil:
	case errors.Is(err, operators.ErrLocked):
		v.Error = "Too many failed logins: this operator is locked. Try again later."
		if until := s.Operator.LockedUntil; !until.IsZero() {
			v.Error = "Too many failed logins: this operator is locked. Try again after " +
				until.In(c.cfg.Location).Format("15:04") + "."
		}
		return c.render(ec, http.StatusForbidden, "login", "Log in", v)
	case errors.Is(err, operators.ErrBadLogin):
		v.Error = "The name, password or code is wrong."
		return c.render(ec, http.StatusUnauthorized, "login", "Log in", v)
	default:
		return c.fault(ec, err)
	}
	ec.SetCookie(&http.Cookie{Name: c.cookies.session, Value: token, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: c.cfg.Secure})
	c.clearCookie(ec, c.cookies.login, "/login")
	ec.Set(ctxSession, s)
	return ec.Redirect(http.StatusSeeOther, v.Next)
}

// sourceIP is the client's address: the console sits behind no proxy, so
// no forwarded header is believed.
func sourceIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// logout ends the session (the POST's CSRF token checked by session).
func (c *Console) logout(ec echo.Context) error {
	ck, err := ec.Request().Cookie(c.cookies.session)
	if err == nil {
		if err := c.cfg.Operators.Logout(ec.Request().Context(), ck.Value); err != nil && !errors.Is(err, operators.ErrNoSession) {
			return c.fault(ec, err)
		}
	}
	c.clearCookie(ec, c.cookies.session, "/")
	return ec.Redirect(http.StatusSeeOther, "/login?why=out")
}

func (c *Console) clearCookie(ec echo.Context, name, path string) {
	ec.SetCookie(&http.Cookie{Name: name, Value: "", Path: path, HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: c.cfg.Secure, MaxAge: -1})
}

// require refuses an operator below role: 403 and nothing done, on the
// confirmation page's GET as on its POST.
func (c *Console) require(role operators.Role, next echo.HandlerFunc) echo.HandlerFunc {
	return func(ec echo.Context) error {
		s, ok := sessionOf(ec)
		if !ok || !s.Operator.Role.AtLeast(role) {
			return c.render(ec, http.StatusForbidden, "status", "Forbidden", statusView{Status: http.StatusForbidden,
				Heading: "Forbidden", Text: "This needs the " + string(role) + " role; you are " + string(s.Operator.Role) +
					". Nothing was done.", Back: path.Dir(ec.Request().URL.Path)})
		}
		return next(ec)
	}
}
