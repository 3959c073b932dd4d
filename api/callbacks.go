package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/mandate"
)

// callback takes what a bank posts on its own: an asynchronous charge or
// refund result, or a notice that a cardholder ended an agreement at the
// bank. The adapter verifies the bank's signature and timestamp; only then
// is the notice applied, idempotently (a bank resends until it gets a
// 2xx). A forged or stale notice answers 400 and changes nothing; a notice
// for an agreement no card holds is recorded and answered 200, so that the
// bank stops sending it.
func (a *Mandates) callback(c echo.Context) error {
	code := c.Param("code")
	if a.Banks == nil {
		return ErrNotFound
	}
	bank, ok := a.Banks.Bank(code)
	if !ok {
		return ErrNotFound
	}
	parser, ok := bank.(bankadapters.CallbackParser)
	if !ok {
		return ErrNotFound
	}
	body, err := readBody(c)
	if err != nil {
		return err
	}
	n, err := parser.ParseCallback(c.Request().Header, body)
	if err != nil {
		// The access log records why; the parse errors name no values.
		return fmt.Errorf("%w: %s: %v", ErrInvalidCallback, code, err)
	}
	if err := a.applyNotice(c.Request().Context(), code, n); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, callbackAnswer{Received: true})
}

// applyNotice hands a verified notice to the domain call of its kind.
func (a *Mandates) applyNotice(ctx context.Context, code string, n bankadapters.Notice) error {
	var err error
	switch n.Kind {
	case bankadapters.NoticeCharge:
		err = a.Service.ApplyResult(ctx, code, n.Charge)
	case bankadapters.NoticeRefund:
		err = a.Service.ApplyRefundResult(ctx, code, n.Refund)
	case bankadapters.NoticeAgreementTerminated:
		_, err = a.Service.EndAgreement(ctx, code, n)
	default:
		return fmt.Errorf("%w: %s: notice of kind %q", ErrInvalidCallback, code, n.Kind)
	}
	if errors.Is(err, mandate.ErrNotFound) {
		// A result about an order or refund quickpay never sent there.
		return fmt.Errorf("%w: %s %s notice: %v", ErrNotFound, code, n.Kind, err)
	}
	if err != nil {
		return fmt.Errorf("apply %s %s notice: %w", code, n.Kind, err)
	}
	return nil
}

type callbackAnswer struct {
	Received bool `json:"received"`
}
