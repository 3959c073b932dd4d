package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/mandate"
)

// callback takes a bank's asynchronous charge result. The adapter verifies
// the bank's signature; only then is the result applied (idempotently: a
// bank resends until it gets a 2xx).
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
	if n.Kind != bankadapters.NoticeCharge {
		return fmt.Errorf("%w: %s: notice of kind %q", ErrInvalidCallback, code, n.Kind)
	}
	if err := a.Service.ApplyResult(c.Request().Context(), code, n.Charge); err != nil {
		if errors.Is(err, mandate.ErrNotFound) {
			return fmt.Errorf("%w: %s order: %v", ErrNotFound, code, err)
		}
		return fmt.Errorf("apply %s callback: %w", code, err)
	}
	return c.JSON(http.StatusOK, callbackAnswer{Received: true})
}

type callbackAnswer struct {
	Received bool `json:"received"`
}
