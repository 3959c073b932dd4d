package api

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/quickpay/quickpay/internal/merchants"
	"github.com/quickpay/quickpay/internal/webhooks"
)

// WebhookService is what the Webhooks area needs; *webhooks.Service is one.
type WebhookService interface {
	SetEndpoint(ctx context.Context, merchantID, url string, events []string) (webhooks.Endpoint, error)
	ListFeed(ctx context.Context, merchantID string, f webhooks.Feed) ([]webhooks.Event, bool, error)
	GetEvent(ctx context.Context, merchantID, id string, visible []string) (webhooks.Event, error)
}

// MerchantRecords gives a merchant's record (its scopes); *merchants.Store
// is one. Error: merchants.ErrNotFound.
type MerchantRecords interface {
	Get(ctx context.Context, id string) (merchants.Merchant, error)
}

var (
	_ WebhookService  = (*webhooks.Service)(nil)
	_ MerchantRecords = (*merchants.Store)(nil)
)

// Webhooks is the area of the merchant's webhook endpoint and event feed:
//
//	PUT /v1/webhook_endpoint {url, events?}          → 200 {url, events, secret}
//	GET /v1/events?after=evt_…&type=T&type=U&limit=N → 200 {data: [{id, type, created_at, data}], has_more}
//	GET /v1/events/{id}                              → 200 {id, type, created_at, data}
//
// Scopes (DESIGN.md "Abuse limits"): the endpoint receives every event of
// the merchant, so setting it needs a token holding every scope the
// merchant holds (a token narrowed to bind must not redirect charge.*
// events); the feed and GET /v1/events/{id} show a token only the events
// of its scopes (see EventScope): another scope's event is 404 not_found by
// id, and a type= of another scope adds nothing to the feed, as for an
// event of another merchant. A type= that is no event type at all is 422
// validation_failed naming type.
type Webhooks struct {
	Service WebhookService
	// Merchants gives the scopes the merchant holds, all of which setting
	// the endpoint needs. Required.
	Merchants MerchantRecords
}

var _ Area = Webhooks{}

// Routes implements Area. It panics if Merchants is missing or if an event
// type has no scope (a build defect: see EventScope).
func (w Webhooks) Routes(v1 *echo.Group) {
	if w.Service == nil || w.Merchants == nil {
		panic("api: Webhooks needs Service and Merchants")
	}
	for _, t := range webhooks.EventTypes() {
		if _, err := EventScope(t); err != nil {
			panic("api: " + err.Error())
		}
	}
	v1.PUT("/webhook_endpoint", w.setEndpoint)
	v1.GET("/events", w.listEvents)
	v1.GET("/events/:id", w.getEvent)
}

// Errors implements Area.
func (w Webhooks) Errors() map[error]*Error {
	return map[error]*Error{webhooks.ErrNotFound: ErrNotFound}
}

// eventScopes maps the prefix of an event type (before its first dot) to
// the scope whose tokens see it in the feed (DESIGN.md "Abuse limits").
var eventScopes = map[string]string{
	"binding":         merchants.ScopeBind,
	"card":            merchants.ScopeBind,
	"binding_session": merchants.ScopeBind,
	"mandate":         merchants.ScopeWithhold,
	"charge":          merchants.ScopeWithhold,
	"refund":          merchants.ScopeWithhold,
}

// EventScope returns the scope whose tokens see events of eventType in GET
// /v1/events. The set is closed: a type whose prefix maps to no scope is an
// error, Routes refuses to serve with such a type among
// webhooks.EventTypes, and the feed's query shows such events to no token.
func EventScope(eventType string) (string, error) {
	prefix, _, _ := strings.Cut(eventType, ".")
	s, ok := eventScopes[prefix]
	if !ok {
		return "", fmt.Errorf("event type %q has no scope: add its prefix to eventScopes", eventType)
	}
	return s, nil
}

// visibleTypes returns the event types a token holding scopes sees, in
// webhooks.EventTypes order.
func visibleTypes(scopes []string) []string {
	out := []string{} // no scope: no events (never nil)
	for _, t := range webhooks.EventTypes() {
		if s, err := EventScope(t); err == nil && slices.Contains(scopes, s) {
			out = append(out, t)
		}
	}
	return out
}

// tokenScopes are the scopes of the request's token (SetPrincipal).
func tokenScopes(c echo.Context) []string {
	scopes, _ := c.Get(ctxScopes).([]string)
	return scopes
}

// errEndpointScope refuses to set the endpoint to a token lacking one of
// the merchant's scopes; required_scope names the first it lacks.
var errEndpointScope = NewError(http.StatusForbidden, "insufficient_scope",
	"setting the webhook endpoint needs a token holding every scope of the merchant")

type setEndpointRequest struct {
	URL    string   `json:"url"`
	Events []string `json:"events"` // omitted or null: every type
}

func (w Webhooks) setEndpoint(c echo.Context) error {
	ctx := c.Request().Context()
	m, err := w.Merchants.Get(ctx, MerchantID(c))
	if err != nil {
		return fmt.Errorf("set webhook endpoint: %w", err)
	}
	have := tokenScopes(c)
	for _, s := range m.Scopes {
		if !slices.Contains(have, s) {
			return errEndpointScope.With("required_scope", s)
		}
	}
	var req setEndpointRequest
	if err := Bind(c, &req); err != nil {
		return err
	}
	ep, err := w.Service.SetEndpoint(ctx, m.ID, req.URL, req.Events)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, ep)
}

type eventList struct {
	Data    []webhooks.Event `json:"data"`
	HasMore bool             `json:"has_more"`
}

func (w Webhooks) listEvents(c echo.Context) error {
	limit := 0
	if s := c.QueryParam("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > webhooks.MaxListLimit {
			return Validation(http.StatusUnprocessableEntity, "limit", "must be an integer from 1 to "+strconv.Itoa(webhooks.MaxListLimit))
		}
		limit = n
	}
	evs, more, err := w.Service.ListFeed(c.Request().Context(), MerchantID(c), webhooks.Feed{
		Visible: visibleTypes(tokenScopes(c)), Types: c.QueryParams()["type"],
		After: c.QueryParam("after"), Limit: limit,
	})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, eventList{Data: evs, HasMore: more})
}

func (w Webhooks) getEvent(c echo.Context) error {
	ev, err := w.Service.GetEvent(c.Request().Context(), MerchantID(c), c.Param("id"), visibleTypes(tokenScopes(c)))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, ev)
}
