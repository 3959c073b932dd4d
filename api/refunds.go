package api

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/quickpay/quickpay/mandate"
)

// Refunds (DESIGN.md "Refunds") are served by the Mandates area under its
// scope, withhold: a refund is created on its charge and settled by the
// mandate service's workers; these routes create, read and list them.

// refundRoutes adds the refund routes to v1, each behind scope.
func (a *Mandates) refundRoutes(v1 *echo.Group, scope echo.MiddlewareFunc) {
	v1.POST("/charges/:id/refunds", a.postRefund, scope)
	v1.GET("/charges/:id/refunds", a.listChargeRefunds, scope)
	v1.GET("/refunds", a.listRefunds, scope)
	v1.GET("/refunds/:id", a.getRefund, scope)
}

// refundErrors are the refund rows of the area's error table.
func refundErrors() map[error]*Error {
	return map[error]*Error{
		mandate.ErrChargeNotRefundable: NewError(http.StatusUnprocessableEntity, "charge_not_refundable",
			"only a succeeded charge of the last 180 days can be refunded"),
		mandate.ErrRefundExceedsCharge: NewError(http.StatusUnprocessableEntity, "refund_exceeds_charge",
			"the amount exceeds what is left of the charge to refund"),
	}
}

type refundJSON struct {
	ID            string               `json:"id"`
	ChargeID      string               `json:"charge_id"`
	MandateID     string               `json:"mandate_id"`
	Amount        int64                `json:"amount"`
	Currency      string               `json:"currency"`
	Reason        *string              `json:"reason"`
	Status        mandate.RefundStatus `json:"status"`
	FailureCode   *string              `json:"failure_code"`
	BankReference *string              `json:"bank_reference"`
	CreatedAt     time.Time            `json:"created_at"`
	FinishedAt    *time.Time           `json:"finished_at"`
}

func refundOut(r mandate.Refund) refundJSON {
	return refundJSON{
		ID: r.ID, ChargeID: r.ChargeID, MandateID: r.MandateID, Amount: r.Amount, Currency: r.Currency,
		Reason: opt(r.Reason), Status: r.Status, FailureCode: opt(r.FailureCode), BankReference: opt(r.BankReference),
		CreatedAt: r.CreatedAt.UTC(), FinishedAt: optTime(r.FinishedAt),
	}
}

// postRefundRequest is POST /v1/charges/{id}/refunds' body.
type postRefundRequest struct {
	Amount int64  `json:"amount"`
	Reason string `json:"reason"`
}

// ErrIdempotencyKeyRequired answers a refund posted without an
// Idempotency-Key: nothing else makes a retried refund request safe.
var ErrIdempotencyKeyRequired = NewError(http.StatusBadRequest, "idempotency_key_required",
	"a refund needs an Idempotency-Key header, reused on every retry of the same refund")

func (a *Mandates) postRefund(c echo.Context) error {
	// The idempotency middleware has checked a key that is present.
	if c.Request().Header.Get("Idempotency-Key") == "" {
		return ErrIdempotencyKeyRequired
	}
	id, err := pathID(c, "chg")
	if err != nil {
		return err
	}
	var req postRefundRequest
	if err := Bind(c, &req); err != nil {
		return err
	}
	r, err := a.Service.CreateRefund(c.Request().Context(), MerchantID(c), id, mandate.RefundInput{Amount: req.Amount, Reason: req.Reason})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, refundOut(r))
}

func (a *Mandates) getRefund(c echo.Context) error {
	id, err := pathID(c, "rfd")
	if err != nil {
		return err
	}
	r, err := a.Service.GetRefund(c.Request().Context(), MerchantID(c), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, refundOut(r))
}

func (a *Mandates) listChargeRefunds(c echo.Context) error {
	id, err := pathID(c, "chg")
	if err != nil {
		return err
	}
	p, err := listPage(c)
	if err != nil {
		return err
	}
	rs, more, err := a.Service.ChargeRefunds(c.Request().Context(), MerchantID(c), id, p)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, listOut(rs, more, refundOut))
}

func (a *Mandates) listRefunds(c echo.Context) error {
	p, err := listPage(c)
	if err != nil {
		return err
	}
	f := mandate.RefundFilter{Status: mandate.RefundStatus(c.QueryParam("status")), ChargeID: c.QueryParam("charge_id")}
	if f.CreatedGTE, err = queryTime(c, "created_gte"); err != nil {
		return err
	}
	if f.CreatedLT, err = queryTime(c, "created_lt"); err != nil {
		return err
	}
	rs, more, err := a.Service.Refunds(c.Request().Context(), MerchantID(c), f, p)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, listOut(rs, more, refundOut))
}
