package hosted

import (
	"bytes"
	"context"
	"crypto/subtle"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/quickpay/quickpay/api/pagekit"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/merchants"
	"github.com/quickpay/quickpay/internal/sensitive"
	"github.com/quickpay/quickpay/mandate"
)

// BasePath is where the page is served; a session's link is
// BasePath/{token}.
const BasePath = "/bind"

// Path is the path of the page a session's token opens.
func Path(token string) string { return BasePath + "/" + token }

// CSP is the page's Content-Security-Policy. A page of an open session
// also names its return_url's origin in form-action (cspFor): its last
// form's post answers 303 to the return_url, and browsers hold every
// redirect of a form's navigation to form-action.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// csrfCookie holds the session's CSRF secret; csrfField echoes it.
const (
	csrfCookie = "qp_bind_csrf"
	csrfField  = "csrf"
)

// maxForm bounds a form post's body.
const maxForm = 16 << 10

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

var pageTemplate = template.Must(template.New("page.html").ParseFS(templateFS, "templates/*.html"))

// Merchants names a session's merchant (*merchants.Store).
type Merchants interface {
	Get(ctx context.Context, id string) (merchants.Merchant, error)
}

// Config wires a Page.
type Config struct {
	Bindings  *binding.Service // Required.
	Mandates  *mandate.Service // Required.
	Merchants Merchants        // Required.
	// Terms makes the mandate a session's terms (the POST /v1/mandates
	// body without card_id, as stored) describe on cardID. Required.
	Terms func(raw []byte, cardID string) (mandate.CreateInput, error)
	// PublicURL is the scheme and host (and path prefix) session links
	// start with: an https one makes the CSRF cookie Secure. Empty takes
	// the request's host: Secure unless it is loopback.
	PublicURL string
	// Clock times resend countdowns. Defaults to the system clock.
	Clock clock.Clock
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Page serves the hosted binding page.
type Page struct {
	cfg Config
	log *slog.Logger
	// https: PublicURL's scheme is https (nil without a PublicURL).
	https *bool
}

// New returns the page.
func New(cfg Config) (*Page, error) {
	if cfg.Bindings == nil || cfg.Mandates == nil || cfg.Merchants == nil || cfg.Terms == nil {
		return nil, errors.New("hosted: Config needs Bindings, Mandates, Merchants and Terms")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	p := &Page{cfg: cfg, log: cfg.Logger}
	if cfg.PublicURL != "" {
		u, err := url.Parse(cfg.PublicURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, errors.New("hosted: Config.PublicURL must be an absolute http or https URL")
		}
		https := u.Scheme == "https"
		p.https = &https
	}
	return p, nil
}

// Routes mounts the page under BasePath.
func (p *Page) Routes(e *echo.Echo) {
	g := e.Group(BasePath, pagekit.Headers(CSP))
	g.GET("/assets/:file", pagekit.Assets(staticFS, "static"))
	g.GET("/:token", p.show)
	g.POST("/:token/card", p.form(stepCard, p.card))
	g.POST("/:token/card-type", p.form("", p.cardType))
	g.POST("/:token/resend", p.form(stepOTP, p.resend))
	g.POST("/:token/otp", p.form(stepOTP, p.otp))
	g.POST("/:token/consent", p.form(stepTerms, p.consentSend))
	g.POST("/:token/consent/resend", p.form(stepConsent, p.consentResend))
	g.POST("/:token/consent/confirm", p.form(stepConsent, p.consentConfirm))
}

// req is one request to the page: its session, language and CSRF secret.
type req struct {
	c     echo.Context
	ctx   context.Context
	lang  string
	token string
	csrf  string
	ss    binding.Session
	name  string // the merchant's
}

// open finds the request's session. A session that is not open answers
// its status page here, and ok is false; but a post with the CSRF token
// to a completed session (a repeated last submit whose twin completed it)
// answers 303 to the return_url, as its twin did.
func (p *Page) open(c echo.Context) (r *req, ok bool, err error) {
	r = &req{c: c, ctx: c.Request().Context(), lang: pickLang(c.Request().Header.Get("Accept-Language")), token: c.Param("token")}
	ss, err := p.cfg.Bindings.OpenSession(r.ctx, r.token)
	r.ss = ss
	switch {
	case err == nil:
	case errors.Is(err, binding.ErrNotFound):
		return r, false, p.status(r, http.StatusNotFound, "notFound", false)
	case errors.Is(err, binding.ErrSessionExpired):
		return r, false, p.status(r, http.StatusGone, "expired", false)
	case errors.Is(err, binding.ErrSessionClosed):
		if ss.Status == binding.SessionCompleted && c.Request().Method == http.MethodPost && p.checkCSRF(r) == 0 {
			return r, false, c.Redirect(http.StatusSeeOther, returnTo(ss))
		}
		return r, false, p.status(r, http.StatusGone, "used", false)
	default:
		return r, false, p.fault(r, err)
	}
	m, err := p.cfg.Merchants.Get(r.ctx, ss.MerchantID)
	if err != nil {
		return r, false, p.fault(r, err)
	}
	r.name = m.Name
	return r, true, nil
}

// show answers GET: the session's current step. A link opened for the
// first time sets the CSRF cookie.
func (p *Page) show(c echo.Context) error {
	r, ok, err := p.open(c)
	if !ok {
		return err
	}
	if ck, err := c.Cookie(csrfCookie); err == nil && pagekit.ValidSecret(ck.Value) {
		r.csrf = ck.Value
	} else {
		if r.csrf, err = pagekit.NewSecret(); err != nil {
			return p.fault(r, err)
		}
		c.SetCookie(&http.Cookie{Name: csrfCookie, Value: r.csrf, Path: Path(r.token), HttpOnly: true,
			SameSite: http.SameSiteStrictMode, Secure: p.secureCookie(c), MaxAge: int(binding.SessionValidity / time.Second)})
	}
	return p.step(r, view{})
}

// secureCookie is whether the CSRF cookie is Secure: the PublicURL is
// https; without one, the request's host is not loopback.
func (p *Page) secureCookie(c echo.Context) bool {
	if p.https != nil {
		return *p.https
	}
	return !loopback(c.Request().Host)
}

func loopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	return binding.IsLoopbackHost(host)
}

// form wraps a POST: the session open, the body bounded and parsed, and
// the CSRF token matching the cookie's secret (else 403 and nothing done).
// A step's post is served only at that step: at another it answers 303
// to the page, which shows the step the session is at (a repeated or
// stale submit does nothing), and once the session's work is done it
// completes the session. step "" serves at any step.
func (p *Page) form(step string, fn func(r *req, st state) error) echo.HandlerFunc {
	return func(c echo.Context) error {
		r, ok, err := p.open(c)
		if !ok {
			return err
		}
		switch p.checkCSRF(r) {
		case 0:
		case http.StatusBadRequest:
			return p.status(r, http.StatusBadRequest, "error", false)
		default:
			return p.status(r, http.StatusForbidden, "csrf", false)
		}
		if step == "" {
			return fn(r, state{})
		}
		st, err := p.where(r)
		switch {
		case err != nil:
			return p.fault(r, err)
		case st.step == stepDone:
			return p.finish(r, st)
		case st.step != step:
			return p.again(r)
		}
		return fn(r, st)
	}
}

// checkCSRF bounds and parses the post's body and checks its CSRF token
// against the cookie's secret (setting r.csrf): 0 when they match, 400
// for a body that does not parse, 403 otherwise.
func (p *Page) checkCSRF(r *req) int {
	c := r.c
	c.Request().Body = http.MaxBytesReader(c.Response(), c.Request().Body, maxForm)
	if err := c.Request().ParseForm(); err != nil {
		return http.StatusBadRequest
	}
	ck, err := c.Cookie(csrfCookie)
	sent := c.Request().PostForm.Get(csrfField)
	if err != nil || !pagekit.ValidSecret(ck.Value) || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(sent)) != 1 {
		return http.StatusForbidden
	}
	r.csrf = ck.Value
	return 0
}

func (r *req) value(name string) string { return r.c.Request().PostForm.Get(name) }

// again answers a step that moved on: 303 to the session's page.
func (p *Page) again(r *req) error {
	return r.c.Redirect(http.StatusSeeOther, Path(r.token))
}

// card starts a binding with the four elements (expiry and CVV2 for a
// credit card). Each attempt is counted against the session first and
// given back unless the data was refused (refusedData); the refusal that
// reaches binding.MaxSessionRefusals fails the session.
func (p *Page) card(r *req, _ state) error {
	ss := r.ss
	in := binding.BindInput{MemberID: ss.MemberID, HolderName: r.value("holder_name"),
		IDNumber: sensitive.NewIDNumber(r.value("id_number")), CardNumber: sensitive.NewPAN(r.value("card_number")),
		Phone: r.value("phone"), Expiry: sensitive.NewExpiry(r.value("expiry")), CVV2: sensitive.NewCVV2(r.value("cvv2"))}
	if ss.ExternalUserID != "" && ss.MemberID == "" {
		in.ExternalUserID = ss.ExternalUserID
	}
	keep := view{Name: in.HolderName, Phone: in.Phone}
	n, err := p.cfg.Bindings.TakeSessionAttempt(r.ctx, ss)
	switch {
	case errors.Is(err, binding.ErrSessionAttempts):
		// Used up by attempts still in flight.
		return p.refused(r, stepCard, err, keep)
	case err != nil:
		return p.closed(r, err)
	}
	b, err := p.cfg.Bindings.StartBinding(r.ctx, ss.MerchantID, in)
	if err != nil && refusedData(err) {
		if n >= binding.MaxSessionRefusals {
			return p.fail(r, binding.ErrSessionAttempts)
		}
		return p.refused(r, stepCard, err, keep)
	}
	if gerr := p.cfg.Bindings.GiveBackSessionAttempt(r.ctx, ss); gerr != nil {
		return p.fault(r, gerr)
	}
	if err != nil {
		return p.refused(r, stepCard, err, keep)
	}
	if _, err := p.cfg.Bindings.SessionStep(r.ctx, ss, b.ID, ""); err != nil {
		return p.closed(r, err)
	}
	return p.again(r)
}

// refusedData reports whether StartBinding's err refused the data given
// (what a prober learns from), which counts against the session.
func refusedData(err error) bool {
	var fe *binding.FieldError
	var mismatch *binding.ElementsMismatchError
	var identity *binding.IdentityMismatchError
	return errors.As(err, &fe) || errors.As(err, &mismatch) || errors.As(err, &identity) ||
		errors.Is(err, binding.ErrCardBoundElsewhere) || errors.Is(err, binding.ErrCardDeclined) ||
		errors.Is(err, binding.ErrCardUnsupported)
}

// cardTypeJSON is the card-type hint's answer.
type cardTypeJSON struct {
	Known    bool   `json:"known"`
	BankName string `json:"bank_name,omitempty"`
	CardType string `json:"card_type,omitempty"`
	Label    string `json:"label,omitempty"`
}

// cardType answers the script's hint: where the card number routes.
func (p *Page) cardType(r *req, _ state) error {
	info, err := p.cfg.Bindings.CardRoute(sensitive.NewPAN(r.value("card_number")))
	if err != nil {
		return r.c.JSON(http.StatusOK, cardTypeJSON{})
	}
	return r.c.JSON(http.StatusOK, cardTypeJSON{Known: true, BankName: info.BankName, CardType: string(info.CardType),
		Label: info.BankName + " " + texts[r.lang][string(info.CardType)]})
}

func (p *Page) resend(r *req, st state) error {
	if _, err := p.cfg.Bindings.Resend(r.ctx, r.ss.MerchantID, st.b.ID); err != nil {
		return p.refused(r, "", err, view{})
	}
	return p.again(r)
}

// otp confirms the binding with the bank's code; without mandate terms
// that completes the session.
func (p *Page) otp(r *req, st state) error {
	b, err := p.cfg.Bindings.Confirm(r.ctx, r.ss.MerchantID, st.b.ID, sensitive.NewOTP(r.value("otp")))
	switch {
	case errors.Is(err, binding.ErrOTPAttemptsExceeded):
		return p.fail(r, err)
	case err != nil:
		return p.refused(r, "", err, view{})
	}
	if r.ss.Mandate == nil {
		return p.complete(r, b.MemberID, b.CardID, "")
	}
	return p.again(r)
}

// consentSend creates the mandate on the bound card, which texts the
// consent code.
func (p *Page) consentSend(r *req, st state) error {
	in, err := p.cfg.Terms(r.ss.Mandate, st.b.CardID)
	if err != nil {
		return p.fault(r, err)
	}
	m, err := p.cfg.Mandates.Create(r.ctx, r.ss.MerchantID, in)
	switch {
	case errors.Is(err, mandate.ErrInvalid), errors.Is(err, mandate.ErrCardNotActive):
		// Terms the day made invalid, or a card ended meanwhile: the user
		// cannot mend either.
		return p.fail(r, err)
	case err != nil:
		return p.refused(r, "", err, view{})
	}
	if _, err := p.cfg.Bindings.SessionStep(r.ctx, r.ss, "", m.ID); err != nil {
		return p.closed(r, err)
	}
	return p.again(r)
}

func (p *Page) consentResend(r *req, st state) error {
	if _, err := p.cfg.Mandates.Resend(r.ctx, r.ss.MerchantID, st.m.ID); err != nil {
		return p.refused(r, "", err, view{})
	}
	return p.again(r)
}

// consentConfirm confirms the mandate with the consent code, which
// completes the session.
func (p *Page) consentConfirm(r *req, st state) error {
	m, err := p.cfg.Mandates.Confirm(r.ctx, r.ss.MerchantID, st.m.ID, sensitive.NewOTP(r.value("otp")))
	switch {
	case errors.Is(err, mandate.ErrOTPAttemptsExceeded):
		return p.fail(r, err)
	case err != nil:
		return p.refused(r, "", err, view{})
	}
	return p.complete(r, m.MemberID, m.CardID, m.ID)
}

// complete ends the session completed and sends the user back to the
// merchant's return_url. A session its twin request completed meanwhile
// (a repeated last submit) sends the user back too.
func (p *Page) complete(r *req, memberID, cardID, mandateID string) error {
	ss, err := p.cfg.Bindings.CompleteSession(r.ctx, r.ss, memberID, cardID, mandateID)
	if errors.Is(err, binding.ErrSessionClosed) {
		cur, gerr := p.cfg.Bindings.GetSession(r.ctx, r.ss.MerchantID, r.ss.ID)
		if gerr != nil {
			return p.fault(r, gerr)
		}
		if cur.Status == binding.SessionCompleted {
			return r.c.Redirect(http.StatusSeeOther, returnTo(cur))
		}
	}
	if err != nil {
		return p.closed(r, err)
	}
	return r.c.Redirect(http.StatusSeeOther, returnTo(ss))
}

// finish completes a session whose step is done.
func (p *Page) finish(r *req, st state) error {
	mandateID := ""
	if r.ss.Mandate != nil {
		mandateID = st.m.ID
	}
	return p.complete(r, st.b.MemberID, st.b.CardID, mandateID)
}

// cspFor is the CSP of a page of ss: with form-action allowing its
// return_url's origin while ss is open (its last form's 303 goes there),
// else CSP itself (the zero session outside one, and the status pages of
// closed or expired sessions, whose forms are gone). ValidReturnURL
// admits only hosts a CSP source names literally, never a wildcard; an
// IPv6 literal, which no CSP source can name, is left out.
func cspFor(ss binding.Session) string {
	if ss.Status != binding.SessionOpen || !binding.ValidReturnURL(ss.ReturnURL) {
		return CSP
	}
	u, err := url.Parse(ss.ReturnURL)
	if err != nil || strings.Contains(u.Hostname(), ":") {
		return CSP
	}
	return strings.Replace(CSP, "form-action 'self'", "form-action 'self' "+u.Scheme+"://"+u.Host, 1)
}

// returnTo is the session's return_url with binding_session=its id.
func returnTo(ss binding.Session) string {
	u, err := url.Parse(ss.ReturnURL)
	if err != nil {
		// Checked by ValidReturnURL when the session was made.
		panic(fmt.Sprintf("hosted: session %s return_url does not parse", ss.ID))
	}
	q := u.Query()
	q.Set("binding_session", ss.ID)
	u.RawQuery = q.Encode()
	return u.String()
}

// fail ends the session failed by err and shows the failure.
func (p *Page) fail(r *req, err error) error {
	ss, ferr := p.cfg.Bindings.FailSession(r.ctx, r.ss, failureCode(err))
	if ferr != nil {
		return p.closed(r, ferr)
	}
	r.ss = ss
	msg, _ := sentence(r.lang, err)
	return p.render(r, http.StatusUnprocessableEntity, view{Step: "status", Status: "failed", Error: msg,
		Back: returnTo(ss)})
}

// closed answers a session that stopped being open during the request,
// or whose step another request moved on (303 to the page).
func (p *Page) closed(r *req, err error) error {
	switch {
	case errors.Is(err, binding.ErrSessionMoved):
		return p.again(r)
	case errors.Is(err, binding.ErrSessionExpired):
		return p.status(r, http.StatusGone, "expired", false)
	case errors.Is(err, binding.ErrSessionClosed):
		return p.status(r, http.StatusGone, "used", false)
	default:
		return p.fault(r, err)
	}
}

// refused shows the current step again with err's sentence, keeping what
// keep holds (the name and phone, never card data or codes).
func (p *Page) refused(r *req, step string, err error, keep view) error {
	msg, ok := sentence(r.lang, err)
	if !ok {
		return p.fault(r, err)
	}
	keep.Error = msg
	return p.stepStatus(r, http.StatusUnprocessableEntity, step, keep)
}

// fault logs an unexpected error with the request id and shows the
// generic error page.
func (p *Page) fault(r *req, err error) error {
	p.log.Error("hosted page", "err", err, "session", r.ss.ID,
		"request_id", r.c.Response().Header().Get(echo.HeaderXRequestID))
	return p.status(r, http.StatusInternalServerError, "error", false)
}

// status shows a page of title key k without a form.
func (p *Page) status(r *req, code int, k string, back bool) error {
	v := view{Step: "status", Status: k}
	if back {
		v.Back = returnTo(r.ss)
	}
	return p.render(r, code, v)
}

// step shows the session's current step (200).
func (p *Page) step(r *req, v view) error { return p.stepStatus(r, http.StatusOK, "", v) }

// The steps of a session's page, in order; done is a session whose work
// is done, to complete.
const (
	stepCard    = "card"
	stepOTP     = "otp"
	stepTerms   = "terms"
	stepConsent = "consent"
	stepDone    = "done"
)

// state is where a session stands: its step, and the binding and mandate
// the step stands on.
type state struct {
	step string
	b    binding.Binding // the session's binding, if it names one
	m    mandate.Mandate // the session's mandate, if it names one
	// ended is the expiry of the binding's code (step card) or the
	// mandate's (step terms), for the page to say.
	ended error
}

// where works out the session's step from its binding and mandate.
func (p *Page) where(r *req) (state, error) {
	ss := r.ss
	var st state
	if ss.BindingID == "" {
		st.step = stepCard
		return st, nil
	}
	b, err := p.cfg.Bindings.GetBinding(r.ctx, ss.MerchantID, ss.BindingID)
	if err != nil {
		return st, err
	}
	st.b = b
	switch b.Status {
	case binding.StatusOTPSent:
		st.step = stepOTP
		return st, nil
	case binding.StatusFailed, binding.StatusExpired:
		st.step = stepCard
		if b.Status == binding.StatusExpired {
			st.ended = binding.ErrBindingExpired
		}
		return st, nil
	case binding.StatusBound:
	default:
		return st, b.Status.Check()
	}
	if ss.Mandate == nil {
		st.step = stepDone
		return st, nil
	}
	st.step = stepTerms
	if ss.MandateID == "" {
		return st, nil
	}
	if st.m, err = p.cfg.Mandates.Get(r.ctx, ss.MerchantID, ss.MandateID); err != nil {
		return st, err
	}
	switch st.m.Status {
	case mandate.StatusPendingConfirmation:
		st.step = stepConsent
	case mandate.StatusActive:
		st.step = stepDone
	case mandate.StatusExpired:
		// Its code ran out: consent again with a new code.
		st.ended = mandate.ErrConsentExpired
	}
	return st, nil
}

// stepStatus shows the session's step with code; force names the step
// for a refusal of the card form (which has no binding to show yet). A
// session whose work is done (bound, and with terms consented, but not
// completed: a request that stopped between the two) completes here.
func (p *Page) stepStatus(r *req, code int, force string, v view) error {
	if force == stepCard {
		v.Step = stepCard
		return p.render(r, code, v)
	}
	st, err := p.where(r)
	if err != nil {
		return p.fault(r, err)
	}
	now := p.cfg.Clock.Now()
	if v.Error == "" && st.ended != nil {
		v.Error, _ = sentence(r.lang, st.ended)
	}
	v.Step = st.step
	switch st.step {
	case stepDone:
		return p.finish(r, st)
	case stepCard:
	case stepOTP:
		v.Card, v.AttemptsLeft = st.b.Card, st.b.AttemptsLeft()
		v.ResendIn = max(0, int(st.b.ResendAfter().Sub(now).Round(time.Second)/time.Second))
	case stepConsent:
		v.Card, v.Terms, v.AttemptsLeft = st.b.Card, p.mandateTerms(r, st.m), st.m.AttemptsLeft()
		v.ResendIn = max(0, int(st.m.ResendAfter().Sub(now).Round(time.Second)/time.Second))
	case stepTerms:
		in, err := p.cfg.Terms(r.ss.Mandate, st.b.CardID)
		if err != nil {
			return p.fault(r, err)
		}
		v.Card, v.Terms = st.b.Card, p.inputTerms(r, in, now)
	default:
		return p.fault(r, fmt.Errorf("hosted: unknown step %q", st.step))
	}
	return p.render(r, code, v)
}

// view is what a template shows.
type view struct {
	Step   string // card, otp, terms, consent, status
	Status string // status pages: notFound, expired, used, failed, csrf, error
	Error  string
	// Name and Phone are written back into the card form after a refusal.
	Name, Phone  string
	Card         binding.CardInfo
	AttemptsLeft int
	ResendIn     int
	Terms        termsView
	Back         string

	// Set by render.
	T        map[string]string
	Lang     string
	Merchant string
	Action   string
	CSRF     string
	Title    string
	Text     string
}

func (p *Page) render(r *req, code int, v view) error {
	r.c.Response().Header().Set("Content-Security-Policy", cspFor(r.ss))
	v.T, v.Lang, v.Merchant, v.Action, v.CSRF = texts[r.lang], texts[r.lang]["lang"], r.name, Path(r.token), r.csrf
	if v.Step == "status" {
		v.Title, v.Text = v.T[v.Status+"Title"], v.T[v.Status+"Text"]
	}
	var buf bytes.Buffer
	if err := pageTemplate.ExecuteTemplate(&buf, "page.html", v); err != nil {
		p.log.Error("hosted page template", "err", err, "step", v.Step)
		return r.c.String(http.StatusInternalServerError, "internal error")
	}
	return r.c.HTMLBlob(code, buf.Bytes())
}
