package console

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/quickpay/quickpay/api/idempotency"
	"github.com/quickpay/quickpay/api/pagekit"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/audit"
	"github.com/quickpay/quickpay/internal/errs"
	"github.com/quickpay/quickpay/internal/merchants"
	"github.com/quickpay/quickpay/internal/operators"
	"github.com/quickpay/quickpay/internal/opsview"
	"github.com/quickpay/quickpay/internal/webhooks"
	"github.com/quickpay/quickpay/mandate"
)

// Actions. Each is a GET confirmation page, then a POST of its form with
// the session's CSRF token (checked by session). The role is checked on
// both (require). The console audits each POST that reaches the action
// (action "console.<verb>", subject the object's id, the operator as
// actor, the request id) with its outcome; the domain services audit
// their own side as well.
func (c *Console) actions(g *echo.Group) {
	op, admin := operators.RoleOperator, operators.RoleAdmin
	g.GET("/charges/:id/refund", c.require(op, c.refundConfirm))
	g.POST("/charges/:id/refund", c.require(op, detach(c.refundDo)))
	g.GET("/charges/:id/settle", c.require(op, c.settleConfirm))
	g.POST("/charges/:id/settle", c.require(op, detach(c.settleDo)))
	g.GET("/mandates/:id/cancel", c.require(op, c.cancelConfirm))
	g.POST("/mandates/:id/cancel", c.require(op, detach(c.cancelDo)))
	g.GET("/bindings/:id/release", c.require(op, c.releaseConfirm))
	g.POST("/bindings/:id/release", c.require(op, detach(c.releaseDo)))
	g.GET("/events/:id/redeliver", c.require(op, c.redeliverConfirm))
	g.POST("/events/:id/redeliver", c.require(op, detach(c.redeliverDo)))

	g.GET("/merchants/new", c.require(admin, c.merchantNew))
	g.POST("/merchants/new", c.require(admin, detach(c.merchantCreate)))
	g.GET("/merchants/:id/disable", c.require(admin, c.merchantConfirm("disable")))
	g.POST("/merchants/:id/disable", c.require(admin, detach(c.merchantDisable)))
	g.GET("/merchants/:id/enable", c.require(admin, c.merchantConfirm("enable")))
	g.POST("/merchants/:id/enable", c.require(admin, detach(c.merchantEnable)))
	g.GET("/merchants/:id/rotate-secret", c.require(admin, c.merchantConfirm("rotate-secret")))
	g.POST("/merchants/:id/rotate-secret", c.require(admin, detach(c.merchantRotate)))
}

// operatorActor is the audit actor of the session's operator.
func operatorActor(ec echo.Context) string {
	s, _ := sessionOf(ec)
	return s.Operator.Actor()
}

// actionTimeout bounds an action's POST, which runs detached from its
// request.
const actionTimeout = time.Minute

// detach runs an action's POST to its end whatever the browser does: a
// double click aborts the first POST, whose change must still be recorded
// (a refund's one-time key saved, the audit row written), or a later
// submit of the same form could repeat it.
func detach(h echo.HandlerFunc) echo.HandlerFunc {
	return func(ec echo.Context) error {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ec.Request().Context()), actionTimeout)
		defer cancel()
		ec.SetRequest(ec.Request().WithContext(ctx))
		return h(ec)
	}
}

// confirmView is a confirmation page: the question, what the form posts
// and the fields it carries.
type confirmView struct {
	Question string
	Details  []string
	Action   string // the POST's path
	Button   string
	Danger   bool
	Back     string
	Hidden   map[string]string
	// Amount asks for an amount in yuan first (a GET form to the same
	// page), when AmountAsk is set.
	AmountAsk   bool
	Amount      string // the amount field's value
	MaxAmount   string
	AmountError string
	Reason      bool // the form carries a reason field
}

func (c *Console) confirm(ec echo.Context, title string, v confirmView) error {
	return c.render(ec, http.StatusOK, "confirm", title, v)
}

// done records the action's outcome and, when it succeeded, sends the
// operator to the object's page.
func (c *Console) done(ec echo.Context, merchantID, verb, subject string, err error, details map[string]any, to string) error {
	if details == nil {
		details = map[string]any{}
	}
	details["outcome"] = audit.OutcomeOK
	if err != nil {
		details["outcome"] = audit.OutcomeFailed
		details["error"] = errorCode(err)
	}
	if aerr := c.record(ec, merchantID, "console."+verb, subject, details); aerr != nil {
		return c.fault(ec, aerr)
	}
	if err != nil {
		return c.refused(ec, err, to)
	}
	return ec.Redirect(http.StatusSeeOther, to)
}

// refusals maps the domain errors an action can meet to its answer: the
// status, a stable code (recorded in the audit row) and what the
// operator reads.
var refusals = []struct {
	err    error
	status int
	code   string
	text   string
}{
	{mandate.ErrNotFound, http.StatusNotFound, "not_found", "There is no such object."},
	{binding.ErrNotFound, http.StatusNotFound, "not_found", "There is no such object."},
	{webhooks.ErrNotFound, http.StatusNotFound, "not_found", "There is no such object."},
	{merchants.ErrNotFound, http.StatusNotFound, "not_found", "There is no such merchant."},
	{mandate.ErrChargeNotRefundable, http.StatusConflict, "charge_not_refundable",
		"The charge cannot be refunded: it has not succeeded, or it is older than 180 days."},
	{mandate.ErrRefundExceedsCharge, http.StatusConflict, "refund_exceeds_charge",
		"The amount is more than what is left to refund on this charge."},
	{mandate.ErrNothingUnknown, http.StatusConflict, "nothing_unknown",
		"The charge's latest attempt is not waiting on the bank: there is nothing to settle."},
	{mandate.ErrBankHasNoOrder, http.StatusConflict, "bank_has_no_order",
		"The bank does not know this order (yet). Nothing was sent: the scheduled queries and the day's statement settle it."},
	{mandate.ErrInvalidState, http.StatusConflict, "invalid_state", "The mandate's state does not allow this."},
	{binding.ErrNoAgreement, http.StatusConflict, "no_agreement", "The binding holds no bank agreement to release."},
	{binding.ErrAlreadyReleased, http.StatusConflict, "already_released", "The bank agreement was released before."},
	{binding.ErrBankUnavailable, http.StatusBadGateway, "bank_unavailable",
		"The bank did not accept the request; nothing changed. Try again later."},
	{webhooks.ErrNoEndpoint, http.StatusConflict, "no_endpoint", "The merchant has no webhook endpoint."},
	{merchants.ErrInvalidName, http.StatusUnprocessableEntity, "invalid_name", merchants.ErrInvalidName.Error() + "."},
	{merchants.ErrInvalidScopes, http.StatusUnprocessableEntity, "invalid_scopes", merchants.ErrInvalidScopes.Error() + "."},
}

// errorCode is err's code for the audit row ("internal" for an error the
// table does not know).
func errorCode(err error) string {
	var fe *errs.FieldError
	if errors.As(err, &fe) {
		return "invalid_" + fe.Field
	}
	for _, r := range refusals {
		if errors.Is(err, r.err) {
			return r.code
		}
	}
	return "internal"
}

// refused answers an action the domain refused, with a link back.
func (c *Console) refused(ec echo.Context, err error, back string) error {
	var fe *errs.FieldError
	if errors.As(err, &fe) {
		return c.render(ec, http.StatusUnprocessableEntity, "status", "Refused",
			statusView{Status: http.StatusUnprocessableEntity, Heading: "Refused", Text: fe.Field + ": " + fe.Message, Back: back})
	}
	for _, r := range refusals {
		if errors.Is(err, r.err) {
			return c.render(ec, r.status, "status", "Refused",
				statusView{Status: r.status, Heading: "Refused", Text: r.text, Back: back})
		}
	}
	return c.fault(ec, err)
}

// --- Refund ---

// refundOncePath is the path refund forms' one-time keys are claimed
// under in the idempotency store (never an API path).
func refundOncePath(chargeID string) string { return "/console/charges/" + chargeID + "/refunds" }

// onceKeyPrefix marks the console's keys apart from merchants' own
// Idempotency-Keys in the same store.
const onceKeyPrefix = "console-refund-"

// refundConfirm asks the amount (a GET form carrying a one-time key),
// then shows the question "Refund ¥12.34 of chg_… to card ****1234?" with
// a POST form carrying the amount and that key.
func (c *Console) refundConfirm(ec echo.Context) error {
	ctx := ec.Request().Context()
	ch, err := c.cfg.Views.Charge(ctx, ec.Param("id"))
	if err != nil {
		return c.missing(ec, err, "charge")
	}
	card, err := c.cfg.Views.Card(ctx, ch.CardID)
	if err != nil {
		return c.fault(ec, err)
	}
	// The page names the card by its masked number: a view of card data.
	if err := c.viewed(ec, ch.MerchantID, card.ID); err != nil {
		return c.fault(ec, err)
	}
	// The one-time key is made on the amount page and carried by its GET
	// form, so the confirmation page's URL holds it: reloaded, or shown
	// again with Back after the refund, the page posts the same key, and
	// its submit finds the refund made instead of making another.
	once := ec.QueryParam("once")
	if !pagekit.ValidSecret(once) {
		if once, err = pagekit.NewSecret(); err != nil {
			return c.fault(ec, err)
		}
	}
	left := ch.Amount - ch.AmountRefundHeld
	v := confirmView{Back: "/charges/" + ch.ID, Action: "/charges/" + ch.ID + "/refund", Button: "Refund", Danger: true,
		MaxAmount: yuan(left), Reason: true, Hidden: map[string]string{"once": once}}
	typed := ec.QueryParam("amount")
	if typed == "" {
		v.AmountAsk, v.Amount = true, yuan(left)
		v.Question = "Refund charge " + ch.ID + " to card " + card.MaskedPAN + "?"
		v.Details = []string{"Charged " + money(ch.Amount, ch.Currency) + "; " + money(left, ch.Currency) + " can still be refunded."}
		return c.confirm(ec, "Refund "+ch.ID, v)
	}
	fen, err := parseYuan(typed)
	if err == nil && fen > left {
		err = errors.New("amount is more than the " + money(left, ch.Currency) + " left to refund")
	}
	if err != nil {
		v.AmountAsk, v.Amount, v.AmountError = true, typed, err.Error()
		v.Question = "Refund charge " + ch.ID + " to card " + card.MaskedPAN + "?"
		return c.render(ec, http.StatusUnprocessableEntity, "confirm", "Refund "+ch.ID, v)
	}
	v.Question = "Refund " + money(fen, ch.Currency) + " of " + ch.ID + " to card ****" + card.Last4 + "?"
	v.Details = []string{"Bank " + card.BankName + ", card " + card.MaskedPAN + ".", "Merchant " + ch.MerchantID + "."}
	v.Hidden = map[string]string{"amount": strconv.FormatInt(fen, 10), "once": once}
	return c.confirm(ec, "Refund "+ch.ID, v)
}

// refundDo makes the refund once per form: the form's one-time key is
// claimed in the idempotency store under the charge's merchant before
// the refund is made and keeps the refund's id after, so a second submit
// of the same form (a double click, a reload) finds it and makes none.
func (c *Console) refundDo(ec echo.Context) error {
	ctx := ec.Request().Context()
	r := ec.Request()
	ch, err := c.cfg.Views.Charge(ctx, ec.Param("id"))
	if err != nil {
		return c.missing(ec, err, "charge")
	}
	back := "/charges/" + ch.ID
	fen, err := strconv.ParseInt(r.PostForm.Get("amount"), 10, 64)
	once := r.PostForm.Get("once")
	if err != nil || fen <= 0 || !pagekit.ValidSecret(once) {
		return c.render(ec, http.StatusBadRequest, "status", "Bad request", statusView{Status: http.StatusBadRequest,
			Heading: "Bad request", Text: "The refund form is incomplete. Open the charge and start again.", Back: back})
	}
	reason := strings.TrimSpace(r.PostForm.Get("reason"))
	body := "amount=" + strconv.FormatInt(fen, 10) + "&reason=" + reason
	req, err := c.cfg.OnceKeys.NewRequest(ctx, ch.MerchantID, onceKeyPrefix+once, http.MethodPost, refundOncePath(ch.ID), []byte(body))
	if err != nil {
		return c.fault(ec, err)
	}
	claim, err := c.cfg.OnceKeys.Claim(ctx, req)
	if err != nil {
		return c.fault(ec, err)
	}
	switch {
	case claim.Owned:
	case claim.Reused:
		return c.render(ec, http.StatusConflict, "status", "Refused", statusView{Status: http.StatusConflict, Heading: "Refused",
			Text: "This form was already used for another refund. Open the charge and start again.", Back: back})
	case claim.State == idempotency.StateDone && claim.Response != nil && claim.Response.Status == http.StatusCreated:
		// The twin submit made the refund: show it.
		return ec.Redirect(http.StatusSeeOther, "/refunds/"+string(claim.Response.Body))
	default:
		return c.render(ec, http.StatusConflict, "status", "In progress", statusView{Status: http.StatusConflict,
			Heading: "In progress", Text: "This refund is being made. Open the charge to see it.", Back: back})
	}
	rf, err := c.cfg.Mandates.CreateRefund(mandate.WithActor(ctx, operatorActor(ec)), ch.MerchantID, ch.ID,
		mandate.RefundInput{Amount: fen, Reason: reason})
	if err != nil {
		// Nothing was refunded: the key may be used again.
		if rerr := c.cfg.OnceKeys.Release(ctx, req, claim); rerr != nil {
			c.log.ErrorContext(ctx, "console: release refund key", "request_id", requestID(ec), "err", rerr)
		}
		return c.done(ec, ch.MerchantID, "refund", ch.ID, err, map[string]any{"amount": fen}, back)
	}
	if _, err := c.cfg.OnceKeys.Save(ctx, req, claim, idempotency.Response{Status: http.StatusCreated,
		ContentType: "text/plain", Body: []byte(rf.ID)}); err != nil {
		// The refund stands; the key stays in flight until it is stale, so
		// a twin submit meanwhile is told it is in progress.
		c.log.ErrorContext(ctx, "console: save refund key", "request_id", requestID(ec), "err", err)
	}
	return c.done(ec, ch.MerchantID, "refund", ch.ID, nil, map[string]any{"amount": fen, "refund_id": rf.ID}, "/refunds/"+rf.ID)
}

// yuan is fen as the amount field shows it: "12.34".
func yuan(fen int64) string {
	return strings.TrimPrefix(money(fen), "¥")
}

// missing answers a confirmation or action whose object could not be read.
func (c *Console) missing(ec echo.Context, err error, what string) error {
	if errors.Is(err, opsview.ErrNotFound) {
		return c.status(ec, http.StatusNotFound, "Not found", "There is no "+what+" "+ec.Param("id")+".")
	}
	return c.fault(ec, err)
}

// --- Settle an unknown attempt by query ---

func (c *Console) settleConfirm(ec echo.Context) error {
	ch, err := c.cfg.Views.Charge(ec.Request().Context(), ec.Param("id"))
	if err != nil {
		return c.missing(ec, err, "charge")
	}
	v := confirmView{Back: "/charges/" + ch.ID, Action: "/charges/" + ch.ID + "/settle", Button: "Ask the bank",
		Question: "Ask the bank now for the outcome of " + ch.ID + "'s latest attempt?",
		Details: []string{"Its order number is queried; nothing is debited anew. " +
			"If the bank still says processing, the charge stays as it is."}}
	if len(ch.Attempts) > 0 {
		a := ch.Attempts[len(ch.Attempts)-1]
		v.Details = append(v.Details, "Order "+a.OrderNo+" at "+a.BankCode+", "+money(a.Amount)+", now "+a.Status+".")
	}
	return c.confirm(ec, "Settle "+ch.ID, v)
}

func (c *Console) settleDo(ec echo.Context) error {
	ctx := ec.Request().Context()
	ch, err := c.cfg.Views.Charge(ctx, ec.Param("id"))
	if err != nil {
		return c.missing(ec, err, "charge")
	}
	s, _ := sessionOf(ec)
	got, err := c.cfg.Mandates.SettleByQuery(ctx, ch.MerchantID, ch.ID, s.Operator.Actor())
	details := map[string]any{}
	if err == nil {
		details["status"] = string(got.Status)
	}
	return c.done(ec, ch.MerchantID, "settle", ch.ID, err, details, "/charges/"+ch.ID)
}

// --- Cancel a mandate ---

func (c *Console) cancelConfirm(ec echo.Context) error {
	m, err := c.cfg.Views.Mandate(ec.Request().Context(), ec.Param("id"))
	if err != nil {
		return c.missing(ec, err, "mandate")
	}
	return c.confirm(ec, "Cancel "+m.ID, confirmView{Back: "/mandates/" + m.ID, Action: "/mandates/" + m.ID + "/cancel",
		Button: "Cancel the mandate", Danger: true,
		Question: "Cancel mandate " + m.ID + " (" + m.Reference + ") of merchant " + m.MerchantID + " for good?",
		Details:  []string{"Charges not yet sent to the bank fail with mandate_cancelled. This cannot be undone."}})
}

func (c *Console) cancelDo(ec echo.Context) error {
	ctx := ec.Request().Context()
	m, err := c.cfg.Views.Mandate(ctx, ec.Param("id"))
	if err != nil {
		return c.missing(ec, err, "mandate")
	}
	_, err = c.cfg.Mandates.Cancel(mandate.WithActor(ctx, operatorActor(ec)), m.MerchantID, m.ID)
	return c.done(ec, m.MerchantID, "cancel", m.ID, err, nil, "/mandates/"+m.ID)
}

// --- Release a bank agreement ---

func (c *Console) releaseConfirm(ec echo.Context) error {
	b, err := c.cfg.Views.Binding(ec.Request().Context(), ec.Param("id"))
	if err != nil {
		return c.missing(ec, err, "binding")
	}
	if err := c.viewed(ec, b.MerchantID, b.ID); err != nil {
		return c.fault(ec, err)
	}
	return c.confirm(ec, "Release "+b.ID, confirmView{Back: "/bindings/" + b.ID, Action: "/bindings/" + b.ID + "/release",
		Button: "Release the agreement", Danger: true,
		Question: "Ask " + b.BankName + " to end the agreement of binding " + b.ID + " (card " + b.MaskedPAN + ")?",
		Details:  []string{"For a binding quickpay refused after the bank confirmed it, whose earlier release the bank did not accept."}})
}

func (c *Console) releaseDo(ec echo.Context) error {
	ctx := ec.Request().Context()
	b, err := c.cfg.Views.Binding(ctx, ec.Param("id"))
	if err != nil {
		return c.missing(ec, err, "binding")
	}
	s, _ := sessionOf(ec)
	_, err = c.cfg.Bindings.ReleaseAgreement(ctx, b.MerchantID, b.ID, s.Operator.Actor())
	return c.done(ec, b.MerchantID, "release", b.ID, err, nil, "/bindings/"+b.ID)
}

// --- Redeliver a webhook ---

func (c *Console) redeliverConfirm(ec echo.Context) error {
	e, err := c.cfg.Views.Event(ec.Request().Context(), ec.Param("id"))
	if err != nil {
		return c.missing(ec, err, "event")
	}
	return c.confirm(ec, "Redeliver "+e.ID, confirmView{Back: "/events/" + e.ID, Action: "/events/" + e.ID + "/redeliver",
		Button: "Redeliver", Question: "Deliver event " + e.ID + " (" + e.Type + ") to merchant " + e.MerchantID + "'s endpoint again?",
		Details: []string{"A new delivery job is queued; its attempts show on the event's page."}})
}

func (c *Console) redeliverDo(ec echo.Context) error {
	ctx := ec.Request().Context()
	e, err := c.cfg.Views.Event(ctx, ec.Param("id"))
	if err != nil {
		return c.missing(ec, err, "event")
	}
	s, _ := sessionOf(ec)
	err = c.cfg.Webhooks.Redeliver(ctx, e.MerchantID, e.ID, s.Operator.Actor())
	return c.done(ec, e.MerchantID, "redeliver", e.ID, err, nil, "/events/"+e.ID)
}

// --- Merchants (admin) ---

// secretView shows a merchant's client secret, once.
type secretView struct {
	Heading    string
	MerchantID string
	ClientID   string
	Secret     string
}

func (c *Console) merchantNew(ec echo.Context) error {
	return c.render(ec, http.StatusOK, "merchant_new", "New merchant", merchantForm{Scopes: merchants.AllScopes})
}

type merchantForm struct {
	Name   string
	Scopes []string
	Error  string
}

// merchantCreate creates a merchant and shows its client secret once
// (the answer is never cached: every page is no-store).
func (c *Console) merchantCreate(ec echo.Context) error {
	r := ec.Request()
	s, _ := sessionOf(ec)
	name, scopes := strings.TrimSpace(r.PostForm.Get("name")), r.PostForm["scope"]
	ctx := merchants.WithActor(r.Context(), s.Operator.Actor())
	m, secret, err := c.cfg.Merchants.Create(ctx, name, scopes)
	if err != nil {
		code := errorCode(err)
		if code == "internal" {
			return c.fault(ec, err)
		}
		if aerr := c.record(ec, "", "console.merchant_create", "", map[string]any{"outcome": audit.OutcomeFailed, "error": code}); aerr != nil {
			return c.fault(ec, aerr)
		}
		return c.render(ec, http.StatusUnprocessableEntity, "merchant_new", "New merchant",
			merchantForm{Name: name, Scopes: merchants.AllScopes, Error: refusalText(err)})
	}
	if err := c.record(ec, m.ID, "console.merchant_create", m.ID, map[string]any{"outcome": audit.OutcomeOK}); err != nil {
		return c.fault(ec, err)
	}
	return c.render(ec, http.StatusCreated, "secret", "Merchant created", secretView{Heading: "Merchant " + m.Name + " created",
		MerchantID: m.ID, ClientID: m.ClientID, Secret: secret})
}

func refusalText(err error) string {
	for _, r := range refusals {
		if errors.Is(err, r.err) {
			return r.text
		}
	}
	return "The request was refused."
}

// merchantConfirm is the confirmation of a merchant action (disable,
// enable, rotate-secret).
func (c *Console) merchantConfirm(verb string) echo.HandlerFunc {
	return func(ec echo.Context) error {
		m, err := c.cfg.Views.Merchant(ec.Request().Context(), ec.Param("id"))
		if err != nil {
			return c.missing(ec, err, "merchant")
		}
		v := confirmView{Back: "/merchants/" + m.ID, Action: "/merchants/" + m.ID + "/" + verb}
		switch verb {
		case "disable":
			v.Question, v.Button, v.Danger = "Disable merchant "+m.Name+" ("+m.ID+")?", "Disable", true
			v.Details = []string{"It gets no more API tokens, and its live tokens stop working within seconds."}
		case "enable":
			v.Question, v.Button = "Enable merchant "+m.Name+" ("+m.ID+") again?", "Enable"
		case "rotate-secret":
			v.Question, v.Button, v.Danger = "Give merchant "+m.Name+" ("+m.ID+") a new client secret?", "Rotate the secret", true
			v.Details = []string{"The old secret stops working at once; tokens issued with it live until they expire (at most 15 minutes). " +
				"The new secret is shown once."}
		default:
			return c.fault(ec, errors.New("console: merchant action "+verb+" unknown"))
		}
		return c.confirm(ec, v.Button+" "+m.ID, v)
	}
}

func (c *Console) merchantDisable(ec echo.Context) error {
	id := ec.Param("id")
	s, _ := sessionOf(ec)
	err := c.cfg.Merchants.Disable(ec.Request().Context(), id, s.Operator.Actor())
	return c.done(ec, id, "merchant_disable", id, err, nil, "/merchants/"+id)
}

func (c *Console) merchantEnable(ec echo.Context) error {
	id := ec.Param("id")
	s, _ := sessionOf(ec)
	err := c.cfg.Merchants.Enable(ec.Request().Context(), id, s.Operator.Actor())
	return c.done(ec, id, "merchant_enable", id, err, nil, "/merchants/"+id)
}

func (c *Console) merchantRotate(ec echo.Context) error {
	id := ec.Param("id")
	s, _ := sessionOf(ec)
	m, err := c.cfg.Views.Merchant(ec.Request().Context(), id)
	if err != nil {
		return c.missing(ec, err, "merchant")
	}
	secret, err := c.cfg.Merchants.RotateSecret(ec.Request().Context(), id, s.Operator.Actor())
	outcome := map[string]any{"outcome": audit.OutcomeOK}
	if err != nil {
		outcome = map[string]any{"outcome": audit.OutcomeFailed, "error": errorCode(err)}
	}
	if aerr := c.record(ec, id, "console.merchant_rotate_secret", id, outcome); aerr != nil {
		return c.fault(ec, aerr)
	}
	if err != nil {
		return c.refused(ec, err, "/merchants/"+id)
	}
	return c.render(ec, http.StatusOK, "secret", "New secret", secretView{Heading: "New client secret of " + m.Name,
		MerchantID: m.ID, ClientID: m.ClientID, Secret: secret})
}
