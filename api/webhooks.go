package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/quickpay/quickpay/internal/webhooks"
)

// WebhookService is what the Webhooks area needs; *webhooks.Service is one.
type WebhookService interface {
	SetEndpoint(ctx context.Context, merchantID, url string, events []string) (webhooks.Endpoint, error)
	ListEvents(ctx context.Context, merchantID, after string, limit int) ([]webhooks.Event, bool, error)
}

var _ WebhookService = (*webhooks.Service)(nil)

// Webhooks is the area of the merchant's webhook endpoint and event feed:
//
//	PUT /v1/webhook_endpoint {url, events?} → 200 {url, events, secret}
//	GET /v1/events?after=evt_…&limit=N    → 200 {data: [{id, type, created_at, data}], has_more}
type Webhooks struct {
	Service WebhookService
}

var _ Area = Webhooks{}

// Routes implements Area.
func (w Webhooks) Routes(v1 *echo.Group) {
	v1.PUT("/webhook_endpoint", w.setEndpoint)
	v1.GET("/events", w.listEvents)
}

// Errors implements Area.
func (w Webhooks) Errors() map[error]*Error {
	return map[error]*Error{webhooks.ErrNotFound: ErrNotFound}
}

type setEndpointRequest struct {
	URL    string   `json:"url"`
	Events []string `json:"events"` // omitted or null: every type
}

func (w Webhooks) setEndpoint(c echo.Context) error {
	var req setEndpointRequest
	if err := Bind(c, &req); err != nil {
		return err
	}
	ep, err := w.Service.SetEndpoint(c.Request().Context(), MerchantID(c), req.URL, req.Events)
	var fe *webhooks.FieldError
	if errors.As(err, &fe) {
		return &FieldError{Field: fe.Field, Message: fe.Message}
	}
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
			return Validation(http.StatusBadRequest, "limit", "limit must be an integer from 1 to "+strconv.Itoa(webhooks.MaxListLimit))
		}
		limit = n
	}
	evs, more, err := w.Service.ListEvents(c.Request().Context(), MerchantID(c), c.QueryParam("after"), limit)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, eventList{Data: evs, HasMore: more})
}
