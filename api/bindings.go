package api

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/ids"
	"github.com/quickpay/quickpay/internal/sensitive"
)

// Bindings is the members, bindings and cards area (scope "bind").
type Bindings struct {
	Service *binding.Service
}

var _ Area = (*Bindings)(nil)

// Routes implements Area.
func (a *Bindings) Routes(v1 *echo.Group) {
	// The scope goes on each route, not on a group: echo answers a group's
	// unknown paths through its middleware, so a misspelt path would
	// answer 403 naming this scope instead of 404.
	scope := RequireScope("bind")
	v1.POST("/members", a.createMember, scope)
	v1.GET("/members", a.findMember, scope)
	v1.GET("/members/:id", a.getMember, scope)
	v1.GET("/members/:id/cards", a.listCards, scope)
	v1.POST("/bindings", a.createBinding, scope)
	v1.GET("/bindings/:id", a.getBinding, scope)
	v1.POST("/bindings/:id/resend", a.resend, scope)
	v1.POST("/bindings/:id/confirm", a.confirm, scope)
	v1.GET("/cards/:id", a.getCard, scope)
	v1.DELETE("/cards/:id", a.unbindCard, scope)
}

// Errors implements Area: the binding rows of the error table.
func (a *Bindings) Errors() map[error]*Error {
	return map[error]*Error{
		binding.ErrNotFound:            ErrNotFound,
		binding.ErrInvalid:             NewError(http.StatusUnprocessableEntity, "validation_failed", "a field is invalid"),
		binding.ErrMemberExists:        NewError(http.StatusConflict, "member_exists", "a member with this external_id exists"),
		binding.ErrCardUnsupported:     NewError(http.StatusUnprocessableEntity, "card_unsupported", "no connected bank issues this card"),
		binding.ErrElementsMismatch:    NewError(http.StatusUnprocessableEntity, "elements_mismatch", "the bank refused one of the four elements"),
		binding.ErrIdentityMismatch:    NewError(http.StatusUnprocessableEntity, "identity_mismatch", "the holder differs from the member's verified identity"),
		binding.ErrCardBoundElsewhere:  NewError(http.StatusConflict, "card_bound_elsewhere", "the card is bound to another member"),
		binding.ErrBankUnavailable:     NewError(http.StatusServiceUnavailable, "bank_unavailable", "the bank did not answer; try again"),
		binding.ErrOTPIncorrect:        NewError(http.StatusUnprocessableEntity, "otp_incorrect", "the code is incorrect"),
		binding.ErrOTPAttemptsExceeded: NewError(http.StatusUnprocessableEntity, "otp_attempts_exceeded", "too many wrong codes; the binding has failed"),
		binding.ErrBindingExpired:      NewError(http.StatusGone, "binding_expired", "the code has expired; start a new binding"),
		binding.ErrResendTooSoon:       NewError(http.StatusTooManyRequests, "otp_resend_too_soon", "wait before asking for another code"),
		binding.ErrResendLimit:         NewError(http.StatusTooManyRequests, "otp_resend_limit", "no more codes for this binding"),
		binding.ErrBindingNotPending:   NewError(http.StatusConflict, "binding_not_pending", "the binding is not waiting for a code"),
		binding.ErrCardDeclined:        NewError(http.StatusUnprocessableEntity, "card_declined", "the bank refused the card"),
		// Texts from mandates count here too (binding.Service.TakeSMS).
		binding.ErrRateLimited: ErrRateLimited,
	}
}

type memberJSON struct {
	ID         string    `json:"id"`
	ExternalID string    `json:"external_id"`
	Kind       string    `json:"kind"`
	CreatedAt  time.Time `json:"created_at"`
}

func memberOut(m binding.Member) memberJSON {
	return memberJSON{ID: m.ID, ExternalID: m.ExternalID, Kind: m.Kind, CreatedAt: m.CreatedAt.UTC()}
}

type cardInfoJSON struct {
	BankCode  string `json:"bank_code"`
	BankName  string `json:"bank_name"`
	CardType  string `json:"card_type"`
	MaskedPAN string `json:"masked_pan"`
	Last4     string `json:"last4"`
}

type otpJSON struct {
	ExpiresAt    time.Time `json:"expires_at"`
	AttemptsLeft int       `json:"attempts_left"`
	ResendAfter  time.Time `json:"resend_after"`
}

type bindingJSON struct {
	ID          string         `json:"id"`
	Status      binding.Status `json:"status"`
	MemberID    *string        `json:"member_id"`
	CardID      *string        `json:"card_id"`
	Card        cardInfoJSON   `json:"card"`
	OTP         *otpJSON       `json:"otp"`
	FailureCode *string        `json:"failure_code"`
	CreatedAt   time.Time      `json:"created_at"`
}

func opt(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func bindingOut(b binding.Binding) bindingJSON {
	out := bindingJSON{
		ID: b.ID, Status: b.Status, MemberID: opt(b.MemberID), CardID: opt(b.CardID), FailureCode: opt(b.FailureCode),
		Card: cardInfoJSON{BankCode: b.Card.BankCode, BankName: b.Card.BankName, CardType: b.Card.CardType,
			MaskedPAN: b.Card.MaskedPAN, Last4: b.Card.Last4},
		CreatedAt: b.CreatedAt.UTC(),
	}
	if b.Status == binding.StatusOTPSent {
		out.OTP = &otpJSON{ExpiresAt: b.OTPExpiresAt.UTC(), AttemptsLeft: b.AttemptsLeft(), ResendAfter: b.ResendAfter().UTC()}
	}
	return out
}

type cardJSON struct {
	ID       string             `json:"id"`
	MemberID string             `json:"member_id"`
	Status   binding.CardStatus `json:"status"`
	cardInfoJSON
	CreatedAt time.Time `json:"created_at"`
}

func cardOut(c binding.Card) cardJSON {
	return cardJSON{ID: c.ID, MemberID: c.MemberID, Status: c.Status, CreatedAt: c.CreatedAt.UTC(),
		cardInfoJSON: cardInfoJSON{BankCode: c.BankCode, BankName: c.BankName, CardType: c.CardType,
			MaskedPAN: c.MaskedPAN, Last4: c.Last4}}
}

// createMemberRequest is POST /v1/members' body.
type createMemberRequest struct {
	ExternalID string             `json:"external_id"`
	Name       string             `json:"name"`
	IDNumber   sensitive.IDNumber `json:"id_number"`
	Phone      string             `json:"phone"`
}

func (a *Bindings) createMember(c echo.Context) error {
	var req createMemberRequest
	if err := Bind(c, &req); err != nil {
		return err
	}
	m, err := a.Service.CreateMember(c.Request().Context(), MerchantID(c), binding.MemberInput{
		ExternalID: req.ExternalID, Name: req.Name, IDNumber: req.IDNumber, Phone: req.Phone})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, memberOut(m))
}

func (a *Bindings) findMember(c echo.Context) error {
	ext := c.QueryParam("external_id")
	if ext == "" {
		return Validation(http.StatusBadRequest, "external_id", "external_id query parameter is required")
	}
	m, err := a.Service.FindMember(c.Request().Context(), MerchantID(c), ext)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, memberOut(m))
}

// pathID returns the :id parameter if it has the prefix's shape; anything
// else is 404 without a query.
func pathID(c echo.Context, prefix string) (string, error) {
	id := c.Param("id")
	if !ids.Valid(prefix, id) {
		return "", ErrNotFound
	}
	return id, nil
}

func (a *Bindings) getMember(c echo.Context) error {
	id, err := pathID(c, "mem")
	if err != nil {
		return err
	}
	m, err := a.Service.GetMember(c.Request().Context(), MerchantID(c), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, memberOut(m))
}

func (a *Bindings) listCards(c echo.Context) error {
	id, err := pathID(c, "mem")
	if err != nil {
		return err
	}
	cards, err := a.Service.ListCards(c.Request().Context(), MerchantID(c), id)
	if err != nil {
		return err
	}
	out := make([]cardJSON, 0, len(cards))
	for _, card := range cards {
		out = append(out, cardOut(card))
	}
	return c.JSON(http.StatusOK, map[string]any{"data": out})
}

// createBindingRequest is POST /v1/bindings' body.
type createBindingRequest struct {
	MemberID       string             `json:"member_id"`
	ExternalUserID string             `json:"external_user_id"`
	HolderName     string             `json:"holder_name"`
	IDNumber       sensitive.IDNumber `json:"id_number"`
	CardNumber     sensitive.PAN      `json:"card_number"`
	Phone          string             `json:"phone"`
	Expiry         sensitive.Expiry   `json:"expiry"`
	CVV2           sensitive.CVV2     `json:"cvv2"`
}

func (a *Bindings) createBinding(c echo.Context) error {
	var req createBindingRequest
	if err := Bind(c, &req); err != nil {
		return err
	}
	if req.MemberID != "" && !ids.Valid("mem", req.MemberID) {
		return ErrNotFound
	}
	b, err := a.Service.StartBinding(c.Request().Context(), MerchantID(c), binding.BindInput{
		MemberID: req.MemberID, ExternalUserID: req.ExternalUserID, HolderName: req.HolderName,
		IDNumber: req.IDNumber, CardNumber: req.CardNumber, Phone: req.Phone, Expiry: req.Expiry, CVV2: req.CVV2,
	})
	if err != nil {
		return err
	}
	status := http.StatusCreated
	if b.Existing {
		status = http.StatusOK
	}
	return c.JSON(status, bindingOut(b))
}

func (a *Bindings) getBinding(c echo.Context) error {
	id, err := pathID(c, "bnd")
	if err != nil {
		return err
	}
	b, err := a.Service.GetBinding(c.Request().Context(), MerchantID(c), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, bindingOut(b))
}

func (a *Bindings) resend(c echo.Context) error {
	id, err := pathID(c, "bnd")
	if err != nil {
		return err
	}
	if err := BindEmpty(c); err != nil {
		return err
	}
	b, err := a.Service.Resend(c.Request().Context(), MerchantID(c), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, bindingOut(b))
}

// otpRequest is the body of the confirm routes (bindings and mandates).
type otpRequest struct {
	OTP sensitive.OTP `json:"otp"`
}

func (a *Bindings) confirm(c echo.Context) error {
	id, err := pathID(c, "bnd")
	if err != nil {
		return err
	}
	var req otpRequest
	if err := Bind(c, &req); err != nil {
		return err
	}
	b, err := a.Service.Confirm(c.Request().Context(), MerchantID(c), id, req.OTP)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, bindingOut(b))
}

func (a *Bindings) getCard(c echo.Context) error {
	id, err := pathID(c, "card")
	if err != nil {
		return err
	}
	card, err := a.Service.GetCard(c.Request().Context(), MerchantID(c), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, cardOut(card))
}

func (a *Bindings) unbindCard(c echo.Context) error {
	id, err := pathID(c, "card")
	if err != nil {
		return err
	}
	card, err := a.Service.Unbind(c.Request().Context(), MerchantID(c), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, cardOut(card))
}
