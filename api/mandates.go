package api

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/quickpay/quickpay/mandate"
)

// Mandates is the withholding area (scope "withhold"): mandates, their
// consent codes, charges and refunds (refunds.go) under /v1, and the
// banks' asynchronous charge results at POST /callbacks/banks/{code}, which
// is public (the bank's signature authenticates it) and outside idempotency
// (banks resend).
type Mandates struct {
	Service *mandate.Service
	// Banks finds the adapter that verifies a bank's callbacks.
	Banks mandate.Banks
}

var (
	_ Area                 = (*Mandates)(nil)
	_ PublicRouter         = (*Mandates)(nil)
	_ prometheus.Collector = (*Mandates)(nil)
)

// Describe implements prometheus.Collector: the mandate service's metrics
// (quickpay_charge_amount_mismatches_total), exported by the server.
func (a *Mandates) Describe(ch chan<- *prometheus.Desc) { a.Service.Describe(ch) }

// Collect implements prometheus.Collector.
func (a *Mandates) Collect(ch chan<- prometheus.Metric) { a.Service.Collect(ch) }

// CallbackPath is the route of the banks' asynchronous charge results.
const CallbackPath = "/callbacks/banks/:code"

// CallbackURL is where bankCode posts its charge results to the API served
// at baseURL (scheme://host[/prefix]): mandate.Config.NotifyURL's answer.
func CallbackURL(baseURL, bankCode string) string {
	return strings.TrimRight(baseURL, "/") + "/callbacks/banks/" + url.PathEscape(bankCode)
}

// Routes implements Area.
func (a *Mandates) Routes(v1 *echo.Group) {
	scope := RequireScope("withhold") // per route, as Bindings.Routes says
	v1.POST("/mandates", a.create, scope)
	v1.GET("/mandates", a.list, scope)
	v1.GET("/mandates/:id", a.get, scope)
	v1.POST("/mandates/:id/confirm", a.confirm, scope)
	v1.POST("/mandates/:id/resend", a.transition(a.Service.Resend), scope)
	v1.POST("/mandates/:id/pause", a.transition(a.Service.Pause), scope)
	v1.POST("/mandates/:id/resume", a.transition(a.Service.Resume), scope)
	v1.POST("/mandates/:id/cancel", a.transition(a.Service.Cancel), scope)
	v1.POST("/mandates/:id/charges", a.postCharge, scope)
	v1.GET("/mandates/:id/charges", a.listMandateCharges, scope)
	v1.GET("/charges", a.listCharges, scope)
	v1.GET("/charges/:id", a.getCharge, scope)
	a.refundRoutes(v1, scope)
}

// PublicRoutes implements PublicRouter: the bank callback route.
func (a *Mandates) PublicRoutes(e *echo.Echo) {
	e.POST(CallbackPath, a.callback, withAuditRequestID)
}

// ErrInvalidCallback answers a bank callback that does not verify or parse.
var ErrInvalidCallback = NewError(http.StatusBadRequest, "invalid_callback", "the callback does not verify")

// Errors implements Area: the mandate and refund rows of the error table.
func (a *Mandates) Errors() map[error]*Error {
	rows := map[error]*Error{
		mandate.ErrNotFound:            ErrNotFound,
		mandate.ErrInvalid:             NewError(http.StatusUnprocessableEntity, "validation_failed", "a field is invalid"),
		mandate.ErrCardNotActive:       NewError(http.StatusConflict, "card_not_active", "the card is not active"),
		mandate.ErrInvalidState:        NewError(http.StatusConflict, "invalid_state", "the mandate's status does not allow this"),
		mandate.ErrOTPIncorrect:        NewError(http.StatusUnprocessableEntity, "otp_incorrect", "the code is incorrect"),
		mandate.ErrOTPAttemptsExceeded: NewError(http.StatusUnprocessableEntity, "otp_attempts_exceeded", "too many wrong codes; the mandate has expired"),
		mandate.ErrConsentExpired:      NewError(http.StatusGone, "mandate_expired", "the consent code has expired; create a new mandate"),
		mandate.ErrResendTooSoon:       NewError(http.StatusTooManyRequests, "otp_resend_too_soon", "wait before asking for another code"),
		mandate.ErrResendLimit:         NewError(http.StatusTooManyRequests, "otp_resend_limit", "no more codes for this mandate"),
		mandate.ErrAmountOverMax:       NewError(http.StatusUnprocessableEntity, "amount_over_max", "the amount exceeds the mandate's max_amount"),
		mandate.ErrNotVariable:         NewError(http.StatusUnprocessableEntity, "mandate_not_variable", "only variable mandates take posted charges"),
		mandate.ErrPeriodCharged:       NewError(http.StatusConflict, "period_already_charged", "the period already has a charge"),
		mandate.ErrSMSUnavailable:      NewError(http.StatusServiceUnavailable, "sms_unavailable", "the code could not be sent; try again"),
	}
	maps.Copy(rows, refundErrors())
	return rows
}

// Answers.

type scheduleJSON struct {
	Interval   mandate.Interval `json:"interval"`
	DayOfMonth *int             `json:"day_of_month"`
	Weekday    *int             `json:"weekday"`
	StartDate  string           `json:"start_date"`
	EndDate    *string          `json:"end_date"`
	MaxCharges *int             `json:"max_charges"`
	Timezone   string           `json:"timezone"`
}

type mandateJSON struct {
	ID             string                `json:"id"`
	CardID         string                `json:"card_id"`
	MemberID       string                `json:"member_id"`
	Reference      string                `json:"reference"`
	Description    string                `json:"description"`
	AmountType     mandate.AmountType    `json:"amount_type"`
	Amount         *int64                `json:"amount"`
	MaxAmount      *int64                `json:"max_amount"`
	Currency       string                `json:"currency"`
	Schedule       scheduleJSON          `json:"schedule"`
	NoticeDays     int                   `json:"notice_days"`
	Status         mandate.MandateStatus `json:"status"`
	StatusReason   *string               `json:"status_reason"`
	NextChargeDate *string               `json:"next_charge_date"`
	ChargesCount   int                   `json:"charges_count"`
	// OTP is the consent code's state while pending_confirmation; null
	// otherwise (as a binding's).
	OTP       *otpJSON  `json:"otp"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

func optInt(n int) *int {
	if n == 0 {
		return nil
	}
	return &n
}

func optInt64(n int64) *int64 {
	if n == 0 {
		return nil
	}
	return &n
}

// optDate is a date as "YYYY-MM-DD", nil for the zero time.
func optDate(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := t.UTC().Format(time.DateOnly)
	return &s
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

func mandateOut(m mandate.Mandate) mandateJSON {
	sc := m.Schedule
	out := mandateJSON{
		ID: m.ID, CardID: m.CardID, MemberID: m.MemberID, Reference: m.Reference, Description: m.Description,
		AmountType: m.AmountType, Currency: m.Currency, NoticeDays: m.NoticeDays, Status: m.Status,
		StatusReason: opt(m.StatusReason), NextChargeDate: optDate(m.NextChargeDate), ChargesCount: m.ChargesCount,
		Schedule: scheduleJSON{Interval: sc.Interval, DayOfMonth: optInt(sc.DayOfMonth), Weekday: optInt(sc.Weekday),
			StartDate: sc.StartDate.UTC().Format(time.DateOnly), EndDate: optDate(sc.EndDate),
			MaxCharges: optInt(sc.MaxCharges), Timezone: sc.Timezone},
		CreatedAt: m.CreatedAt.UTC(), UpdatedAt: m.UpdatedAt.UTC(),
	}
	switch m.AmountType {
	case mandate.AmountFixed:
		out.Amount = optInt64(m.Amount)
	case mandate.AmountVariable:
		out.MaxAmount = optInt64(m.MaxAmount)
	default:
		// The mandates table's CHECK holds the set: a third type here
		// is a change half made.
		panic(fmt.Sprintf("api: mandate amount type %q not handled", m.AmountType))
	}
	if m.Status == mandate.StatusPendingConfirmation {
		out.OTP = &otpJSON{ExpiresAt: m.OTPExpiresAt.UTC(), AttemptsLeft: m.AttemptsLeft(), ResendAfter: m.ResendAfter().UTC()}
	}
	return out
}

type attemptJSON struct {
	OrderNo     string                `json:"order_no"`
	BankCode    string                `json:"bank_code"`
	Amount      int64                 `json:"amount"`
	Status      mandate.AttemptStatus `json:"status"`
	FailureCode *string               `json:"failure_code"`
	CreatedAt   time.Time             `json:"created_at"`
	FinishedAt  *time.Time            `json:"finished_at"`
}

type chargeJSON struct {
	ID            string               `json:"id"`
	MandateID     string               `json:"mandate_id"`
	Period        string               `json:"period"`
	ChargeDate    string               `json:"charge_date"`
	Amount        int64                `json:"amount"`
	Currency      string               `json:"currency"`
	Description   string               `json:"description"`
	Status        mandate.ChargeStatus `json:"status"`
	Attempts      []attemptJSON        `json:"attempts"`
	NextAttemptAt *time.Time           `json:"next_attempt_at"`
	NoticeSentAt  *time.Time           `json:"notice_sent_at"`
	Retries       int                  `json:"retries"`
	FailureCode   *string              `json:"failure_code"`
	BankReference *string              `json:"bank_reference"`
	// AmountRefunded is the fen of the charge's succeeded refunds.
	AmountRefunded int64     `json:"amount_refunded"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
}

func chargeOut(c mandate.Charge) chargeJSON {
	out := chargeJSON{
		ID: c.ID, MandateID: c.MandateID, Period: c.Period, ChargeDate: c.ChargeDate.UTC().Format(time.DateOnly),
		Amount: c.Amount, Currency: c.Currency, Description: c.Description, Status: c.Status,
		Attempts: make([]attemptJSON, 0, len(c.Attempts)), NextAttemptAt: optTime(c.NextAttemptAt),
		NoticeSentAt: optTime(c.NoticeSentAt), Retries: c.Retries, FailureCode: opt(c.FailureCode),
		BankReference: opt(c.BankReference), AmountRefunded: c.AmountRefunded,
		CreatedAt: c.CreatedAt.UTC(), UpdatedAt: c.UpdatedAt.UTC(),
	}
	for _, a := range c.Attempts {
		out.Attempts = append(out.Attempts, attemptJSON{OrderNo: a.OrderNo, BankCode: a.BankCode, Amount: a.Amount,
			Status: a.Status, FailureCode: opt(a.FailureCode), CreatedAt: a.CreatedAt.UTC(), FinishedAt: optTime(a.FinishedAt)})
	}
	return out
}

// listJSON is a page of a resource list (DESIGN.md "Lists").
type listJSON[J any] struct {
	Data    []J  `json:"data"`
	HasMore bool `json:"has_more"`
}

func listOut[T, J any](rows []T, more bool, out func(T) J) listJSON[J] {
	l := listJSON[J]{Data: make([]J, 0, len(rows)), HasMore: more}
	for _, r := range rows {
		l.Data = append(l.Data, out(r))
	}
	return l
}

// Requests.

// listPage reads a resource list's limit and starting_after; the domain
// checks the limit's range and the cursor.
func listPage(c echo.Context) (mandate.Page, error) {
	p := mandate.Page{StartingAfter: c.QueryParam("starting_after")}
	if s := c.QueryParam("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return p, Validation(http.StatusUnprocessableEntity, "limit", "must be an integer from 1 to "+strconv.Itoa(mandate.MaxListLimit))
		}
		if n == 0 {
			n = -1 // 0 is out of range, not the default
		}
		p.Limit = n
	}
	return p, nil
}

// queryTime reads an optional RFC 3339 time from the query.
func queryTime(c echo.Context, name string) (time.Time, error) {
	s := c.QueryParam(name)
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, Validation(http.StatusUnprocessableEntity, name, "must be an RFC 3339 time")
	}
	return t, nil
}

type scheduleRequest struct {
	Interval   string `json:"interval"`
	DayOfMonth int    `json:"day_of_month"`
	Weekday    int    `json:"weekday"`
	StartDate  string `json:"start_date"`
	EndDate    string `json:"end_date"`
	MaxCharges int    `json:"max_charges"`
	Timezone   string `json:"timezone"`
}

type createMandateRequest struct {
	CardID      string          `json:"card_id"`
	Reference   string          `json:"reference"`
	Description string          `json:"description"`
	AmountType  string          `json:"amount_type"`
	Amount      int64           `json:"amount"`
	MaxAmount   int64           `json:"max_amount"`
	Currency    string          `json:"currency"`
	Schedule    scheduleRequest `json:"schedule"`
	NoticeDays  int             `json:"notice_days"`
}

// schedule parses the request's dates: a date that is not YYYY-MM-DD is
// 400, like a value of the wrong type; the rest is the domain's to check.
func (r scheduleRequest) schedule() (mandate.Schedule, error) {
	s := mandate.Schedule{Interval: mandate.Interval(r.Interval), DayOfMonth: r.DayOfMonth, Weekday: r.Weekday,
		MaxCharges: r.MaxCharges, Timezone: r.Timezone}
	for _, d := range []struct {
		field, value string
		into         *time.Time
	}{{"schedule.start_date", r.StartDate, &s.StartDate}, {"schedule.end_date", r.EndDate, &s.EndDate}} {
		if d.value == "" {
			continue // start_date: the domain says it is required
		}
		t, err := mandate.ParseDate(d.value)
		if err != nil {
			return mandate.Schedule{}, Validation(http.StatusBadRequest, d.field, "must be a date YYYY-MM-DD")
		}
		*d.into = t
	}
	return s, nil
}

func (a *Mandates) create(c echo.Context) error {
	var req createMandateRequest
	if err := Bind(c, &req); err != nil {
		return err
	}
	sc, err := req.Schedule.schedule()
	if err != nil {
		return err
	}
	m, err := a.Service.Create(c.Request().Context(), MerchantID(c), mandate.CreateInput{
		CardID: req.CardID, Reference: req.Reference, Description: req.Description, AmountType: mandate.AmountType(req.AmountType),
		Amount: req.Amount, MaxAmount: req.MaxAmount, Currency: req.Currency, Schedule: sc, NoticeDays: req.NoticeDays,
	})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, mandateOut(m))
}

func (a *Mandates) get(c echo.Context) error {
	id, err := pathID(c, "mdt")
	if err != nil {
		return err
	}
	m, err := a.Service.Get(c.Request().Context(), MerchantID(c), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, mandateOut(m))
}

func (a *Mandates) list(c echo.Context) error {
	p, err := listPage(c)
	if err != nil {
		return err
	}
	ms, more, err := a.Service.List(c.Request().Context(), MerchantID(c), mandate.MandateFilter{
		Status: mandate.MandateStatus(c.QueryParam("status")), CardID: c.QueryParam("card_id"),
		MemberID: c.QueryParam("member_id")}, p)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, listOut(ms, more, mandateOut))
}

func (a *Mandates) confirm(c echo.Context) error {
	id, err := pathID(c, "mdt")
	if err != nil {
		return err
	}
	var req otpRequest
	if err := Bind(c, &req); err != nil {
		return err
	}
	m, err := a.Service.Confirm(c.Request().Context(), MerchantID(c), id, req.OTP)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, mandateOut(m))
}

// transition serves the body-less POSTs that change a mandate and answer it.
func (a *Mandates) transition(fn func(ctx context.Context, merchantID, id string) (mandate.Mandate, error)) echo.HandlerFunc {
	return func(c echo.Context) error {
		id, err := pathID(c, "mdt")
		if err != nil {
			return err
		}
		if err := BindEmpty(c); err != nil {
			return err
		}
		m, err := fn(c.Request().Context(), MerchantID(c), id)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, mandateOut(m))
	}
}

// postChargeRequest is POST /v1/mandates/{id}/charges' body.
type postChargeRequest struct {
	Amount      int64  `json:"amount"`
	Period      string `json:"period"`
	Description string `json:"description"`
}

func (a *Mandates) postCharge(c echo.Context) error {
	id, err := pathID(c, "mdt")
	if err != nil {
		return err
	}
	var req postChargeRequest
	if err := Bind(c, &req); err != nil {
		return err
	}
	ch, err := a.Service.PostCharge(c.Request().Context(), MerchantID(c), id, mandate.ChargeInput{
		Amount: req.Amount, Period: req.Period, Description: req.Description})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, chargeOut(ch))
}

func (a *Mandates) listMandateCharges(c echo.Context) error {
	id, err := pathID(c, "mdt")
	if err != nil {
		return err
	}
	p, err := listPage(c)
	if err != nil {
		return err
	}
	cs, more, err := a.Service.MandateCharges(c.Request().Context(), MerchantID(c), id, p)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, listOut(cs, more, chargeOut))
}

func (a *Mandates) listCharges(c echo.Context) error {
	p, err := listPage(c)
	if err != nil {
		return err
	}
	f := mandate.ChargeFilter{Status: mandate.ChargeStatus(c.QueryParam("status")), MandateID: c.QueryParam("mandate_id"),
		MemberID: c.QueryParam("member_id"), CardID: c.QueryParam("card_id")}
	if f.CreatedGTE, err = queryTime(c, "created_gte"); err != nil {
		return err
	}
	if f.CreatedLT, err = queryTime(c, "created_lt"); err != nil {
		return err
	}
	cs, more, err := a.Service.Charges(c.Request().Context(), MerchantID(c), f, p)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, listOut(cs, more, chargeOut))
}

func (a *Mandates) getCharge(c echo.Context) error {
	id, err := pathID(c, "chg")
	if err != nil {
		return err
	}
	ch, err := a.Service.GetCharge(c.Request().Context(), MerchantID(c), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, chargeOut(ch))
}
