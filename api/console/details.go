package console

import (
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/quickpay/quickpay/internal/opsview"
)

// The detail pages: one object by its id, whichever merchant it belongs
// to, with links to what it names and the actions the operator's role
// allows. Pages that show member or card data (member, card, binding)
// audit the view (console.view) before they answer.

// detail reads the object of the route's :id with get and renders it on
// page name; an unknown id answers 404. audited pages record console.view
// first, under the object's merchant.
func detail[T any](c *Console, ec echo.Context, name, title string, get func(id string) (T, error),
	merchantOf func(T) string, audited bool) error {
	id := ec.Param("id")
	v, err := get(id)
	switch {
	case errors.Is(err, opsview.ErrNotFound):
		return c.status(ec, http.StatusNotFound, "Not found", "There is no "+title+" "+id+".")
	case err != nil:
		return c.fault(ec, err)
	}
	if audited {
		if err := c.viewed(ec, merchantOf(v), id); err != nil {
			return c.fault(ec, err)
		}
	}
	return c.render(ec, http.StatusOK, name, title+" "+id, v)
}

func (c *Console) merchant(ec echo.Context) error {
	ctx := ec.Request().Context()
	return detail(c, ec, "merchant", "merchant", func(id string) (opsview.Merchant, error) { return c.cfg.Views.Merchant(ctx, id) },
		func(m opsview.Merchant) string { return m.ID }, false)
}

// memberView is a member with the first page of its cards and mandates.
type memberView struct {
	opsview.Member
	Cards    []opsview.Card
	Mandates []opsview.Mandate
	More     bool // either list has more than a page
}

func (c *Console) member(ec echo.Context) error {
	ctx := ec.Request().Context()
	return detail(c, ec, "member", "member", func(id string) (memberView, error) {
		m, err := c.cfg.Views.Member(ctx, id)
		if err != nil {
			return memberView{}, err
		}
		p := opsview.Page{Limit: c.cfg.PageSize}
		cards, next1, err := c.cfg.Views.Cards(ctx, opsview.CardFilter{MerchantID: m.MerchantID, MemberID: m.ID}, p)
		if err != nil {
			return memberView{}, err
		}
		mandates, next2, err := c.cfg.Views.Mandates(ctx, opsview.MandateFilter{MerchantID: m.MerchantID, MemberID: m.ID}, p)
		if err != nil {
			return memberView{}, err
		}
		return memberView{Member: m, Cards: cards, Mandates: mandates, More: next1 != "" || next2 != ""}, nil
	}, func(m memberView) string { return m.MerchantID }, true)
}

// cardView is a card with the first page of its mandates.
type cardView struct {
	opsview.Card
	Mandates []opsview.Mandate
	More     bool
}

func (c *Console) card(ec echo.Context) error {
	ctx := ec.Request().Context()
	return detail(c, ec, "card", "card", func(id string) (cardView, error) {
		k, err := c.cfg.Views.Card(ctx, id)
		if err != nil {
			return cardView{}, err
		}
		mandates, next, err := c.cfg.Views.Mandates(ctx, opsview.MandateFilter{MerchantID: k.MerchantID, CardID: k.ID},
			opsview.Page{Limit: c.cfg.PageSize})
		if err != nil {
			return cardView{}, err
		}
		return cardView{Card: k, Mandates: mandates, More: next != ""}, nil
	}, func(v cardView) string { return v.MerchantID }, true)
}

func (c *Console) binding(ec echo.Context) error {
	ctx := ec.Request().Context()
	return detail(c, ec, "binding", "binding", func(id string) (opsview.Binding, error) { return c.cfg.Views.Binding(ctx, id) },
		func(v opsview.Binding) string { return v.MerchantID }, true)
}

func (c *Console) mandate(ec echo.Context) error {
	ctx := ec.Request().Context()
	return detail(c, ec, "mandate", "mandate", func(id string) (opsview.Mandate, error) { return c.cfg.Views.Mandate(ctx, id) },
		func(v opsview.Mandate) string { return v.MerchantID }, false)
}

func (c *Console) charge(ec echo.Context) error {
	ctx := ec.Request().Context()
	return detail(c, ec, "charge", "charge", func(id string) (opsview.ChargeDetail, error) { return c.cfg.Views.Charge(ctx, id) },
		func(v opsview.ChargeDetail) string { return v.MerchantID }, false)
}

func (c *Console) refund(ec echo.Context) error {
	ctx := ec.Request().Context()
	return detail(c, ec, "refund", "refund", func(id string) (opsview.Refund, error) { return c.cfg.Views.Refund(ctx, id) },
		func(v opsview.Refund) string { return v.MerchantID }, false)
}

func (c *Console) event(ec echo.Context) error {
	ctx := ec.Request().Context()
	return detail(c, ec, "event", "event", func(id string) (opsview.EventDetail, error) { return c.cfg.Views.Event(ctx, id) },
		func(v opsview.EventDetail) string { return v.MerchantID }, true) // its payload may show a masked card
}
