package console

import (
	"github.com/labstack/echo/v4"

	"github.com/quickpay/quickpay/internal/audit"
)

// record writes one audit row of the console: the operator as actor
// ("operator:op_…"), the request id (from the request's context), what
// was done (action "console.<verb>") to what (subject, an object id), and
// details (ids and outcomes, never a sensitive value).
func (c *Console) record(ec echo.Context, merchantID, action, subject string, details map[string]any) error {
	s, _ := sessionOf(ec)
	return audit.Write(ec.Request().Context(), c.cfg.Audit, audit.Entry{MerchantID: merchantID, Actor: s.Operator.Actor(),
		Action: action, Subject: subject, Details: details})
}

// viewed records that the operator was shown member or card data
// (console.view): every such page writes it before it answers.
func (c *Console) viewed(ec echo.Context, merchantID, subject string) error {
	return c.record(ec, merchantID, "console.view", subject, map[string]any{"route": ec.Path()})
}
