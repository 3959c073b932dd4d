package api

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/quickpay/quickpay/api/hosted"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/mandate"
)

// Sessions is the hosted binding area: POST and GET /v1/binding_sessions
// (scope "bind"; "withhold" too for a session with mandate terms), and,
// as its public routes, the page the session's url opens (api/hosted),
// served on the API's own origin (docs/hosted.md says why).
type Sessions struct {
	Bindings  *binding.Service // Required.
	Mandates  *mandate.Service // Required.
	Merchants hosted.Merchants // Required: the page names the merchant.
	// PublicURL is the scheme and host (and path prefix) session links
	// start with. Defaults to the request's own scheme and host.
	PublicURL string
	// Clock times the page's resend countdowns. Defaults to the system clock.
	Clock clock.Clock
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

var (
	_ Area         = (*Sessions)(nil)
	_ PublicRouter = (*Sessions)(nil)
)

// Routes implements Area.
func (a *Sessions) Routes(v1 *echo.Group) {
	scope := RequireScope("bind") // per route, as Bindings.Routes says
	v1.POST("/binding_sessions", a.create, scope)
	v1.GET("/binding_sessions/:id", a.get, scope)
}

// PublicRoutes implements PublicRouter: the hosted page.
func (a *Sessions) PublicRoutes(e *echo.Echo) {
	page, err := hosted.New(hosted.Config{Bindings: a.Bindings, Mandates: a.Mandates, Merchants: a.Merchants,
		Terms: termsInput, PublicURL: a.PublicURL, Clock: a.Clock, Logger: a.Logger})
	if err != nil {
		// Only a missing service: a wiring defect.
		panic("api: hosted page: " + err.Error())
	}
	page.Routes(e)
}

// Errors implements Area: the session rows of the error table (the
// others are the bindings area's).
func (a *Sessions) Errors() map[error]*Error {
	return map[error]*Error{
		binding.ErrSessionExpired: NewError(http.StatusGone, "session_expired", "the binding session has expired"),
		binding.ErrSessionClosed:  NewError(http.StatusConflict, "session_closed", "the binding session has ended"),
	}
}

// mandateTerms are the mandate terms of a session: POST /v1/mandates'
// body without card_id (createMandateRequest's other fields).
type mandateTerms struct {
	Reference   string          `json:"reference"`
	Description string          `json:"description"`
	AmountType  string          `json:"amount_type"`
	Amount      int64           `json:"amount"`
	MaxAmount   int64           `json:"max_amount"`
	Currency    string          `json:"currency"`
	Schedule    scheduleRequest `json:"schedule"`
	NoticeDays  int             `json:"notice_days"`
}

// input is the mandate the terms make on cardID.
func (t mandateTerms) input(cardID string) (mandate.CreateInput, error) {
	sc, err := t.Schedule.schedule()
	if err != nil {
		return mandate.CreateInput{}, err
	}
	return mandate.CreateInput{CardID: cardID, Reference: t.Reference, Description: t.Description,
		AmountType: mandate.AmountType(t.AmountType), Amount: t.Amount, MaxAmount: t.MaxAmount, Currency: t.Currency,
		Schedule: sc, NoticeDays: t.NoticeDays}, nil
}

// termsInput is hosted.Config.Terms: a session's stored terms as the
// mandate to create on the bound card.
func termsInput(raw []byte, cardID string) (mandate.CreateInput, error) {
	var t mandateTerms
	if err := json.Unmarshal(raw, &t); err != nil {
		return mandate.CreateInput{}, err
	}
	return t.input(cardID)
}

// createSessionRequest is POST /v1/binding_sessions' body.
type createSessionRequest struct {
	MemberID       string        `json:"member_id"`
	ExternalUserID string        `json:"external_user_id"`
	ReturnURL      string        `json:"return_url"`
	Mandate        *mandateTerms `json:"mandate"`
}

type sessionCreatedJSON struct {
	ID        string                `json:"id"`
	URL       string                `json:"url"`
	Status    binding.SessionStatus `json:"status"`
	ExpiresAt time.Time             `json:"expires_at"`
}

func (a *Sessions) create(c echo.Context) error {
	var req createSessionRequest
	if err := Bind(c, &req); err != nil {
		return err
	}
	ctx := c.Request().Context()
	in := binding.SessionInput{MemberID: req.MemberID, ExternalUserID: req.ExternalUserID, ReturnURL: req.ReturnURL}
	if req.Mandate != nil {
		if !hasScope(c, "withhold") {
			return ErrForbiddenScope.With("required_scope", "withhold")
		}
		if err := a.checkTerms(*req.Mandate); err != nil {
			return err
		}
		raw, err := json.Marshal(req.Mandate)
		if err != nil {
			return err
		}
		in.Mandate = raw
	}
	ss, token, err := a.Bindings.CreateSession(ctx, MerchantID(c), in)
	if err != nil {
		return err
	}
	base := a.PublicURL
	if base == "" {
		base = c.Scheme() + "://" + c.Request().Host
	}
	// The link's token opens the page: the idempotency store keeps this
	// answer only encrypted.
	SealAnswer(c)
	return c.JSON(http.StatusCreated, sessionCreatedJSON{ID: ss.ID, URL: strings.TrimRight(base, "/") + hosted.Path(token),
		Status: ss.Status, ExpiresAt: ss.ExpiresAt.UTC()})
}

// checkTerms validates the terms as POST /v1/mandates does
// (mandate.Service.CheckTerms); a refusal names the field under
// "mandate.".
func (a *Sessions) checkTerms(t mandateTerms) error {
	in, err := t.input("")
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			return Validation(e.Status, "mandate."+fieldOf(e), e.Message)
		}
		return err
	}
	var fe *mandate.FieldError
	if err := a.Mandates.CheckTerms(in); errors.As(err, &fe) {
		return &mandate.FieldError{Field: "mandate." + fe.Field, Message: fe.Message}
	} else if err != nil {
		return err
	}
	return nil
}

// fieldOf is the field a validation answer names.
func fieldOf(e *Error) string {
	f, _ := e.Fields["field"].(string)
	return f
}

func hasScope(c echo.Context, scope string) bool {
	scopes, _ := c.Get(ctxScopes).([]string)
	return slices.Contains(scopes, scope)
}

func (a *Sessions) get(c echo.Context) error {
	id, err := pathID(c, "bss")
	if err != nil {
		return err
	}
	ss, err := a.Bindings.GetSession(c.Request().Context(), MerchantID(c), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, binding.SessionData(ss))
}
