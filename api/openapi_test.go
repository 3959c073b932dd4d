package api_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/labstack/echo/v4"

	"github.com/quickpay/quickpay/api"
	"github.com/quickpay/quickpay/api/apitest"
	"github.com/quickpay/quickpay/bankadapters/conformance"
	"github.com/quickpay/quickpay/internal/webhooks"
)

func TestOpenAPIDocumentLoadsAndValidates(t *testing.T) {
	t.Parallel()
	doc, err := api.OpenAPIDocument()
	if err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.0.3" {
		t.Errorf("openapi = %q, want 3.0.3", doc.OpenAPI)
	}
	if again, _ := api.OpenAPIDocument(); again != doc {
		t.Error("OpenAPIDocument loaded the document twice")
	}
	for _, name := range []string{"Member", "Binding", "CardInfo", "Card", "Error", "Token", "JWKS", "Event", "WebhookEndpoint",
		"Mandate", "MandateSchedule", "Charge", "ChargeAttempt"} {
		if doc.Components.Schemas[name] == nil {
			t.Errorf("components.schemas has no %s", name)
		}
	}

	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			name := method + " " + path
			if op.Responses.Default() != nil {
				t.Errorf("%s has a default answer: an undocumented status would pass validation", name)
			}
			if !strings.HasPrefix(path, "/v1/") {
				continue
			}
			for _, status := range []int{http.StatusUnauthorized, http.StatusInternalServerError} {
				if op.Responses.Status(status) == nil {
					t.Errorf("%s does not document %d", name, status)
				}
			}
			if method == http.MethodPost || method == http.MethodPut {
				if op.Parameters.GetByInAndName(openapi3.ParameterInHeader, "Idempotency-Key") == nil {
					t.Errorf("%s takes no Idempotency-Key", name)
				}
				if op.RequestBody != nil && op.Responses.Status(http.StatusRequestEntityTooLarge) == nil {
					t.Errorf("%s takes a body but does not document 413", name)
				}
			}
			// Every JSON object an answer can carry refuses undocumented members.
			for status, ref := range op.Responses.Map() {
				for ct, mt := range ref.Value.Content {
					if ct == "application/json" && path != "/openapi.json" {
						checkClosed(t, fmt.Sprintf("%s → %s", name, status), mt.Schema.Value, map[*openapi3.Schema]bool{})
					}
				}
			}
		}
	}
}

// checkClosed fails for an object schema, reachable from s, that allows
// members it does not name. Event.data is the one open object: its shape is
// the event type's.
func checkClosed(t *testing.T, where string, s *openapi3.Schema, seen map[*openapi3.Schema]bool) {
	t.Helper()
	if s == nil || seen[s] {
		return
	}
	seen[s] = true
	if s.Type.Is(openapi3.TypeObject) && len(s.Properties) > 0 {
		if s.AdditionalProperties.Has == nil || *s.AdditionalProperties.Has {
			t.Errorf("%s: an object with members %v allows undocumented members", where, slices.Sorted(maps.Keys(s.Properties)))
		}
	}
	for name, p := range s.Properties {
		if name == "data" && p.Value.Type.Is(openapi3.TypeObject) && len(p.Value.Properties) == 0 {
			continue
		}
		checkClosed(t, where, p.Value, seen)
	}
	if s.Items != nil {
		checkClosed(t, where, s.Items.Value, seen)
	}
}

func TestOpenAPIServedAsJSON(t *testing.T) {
	t.Parallel()
	e := echo.New()
	if err := api.RegisterOpenAPI(e); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)

	res := apitest.NewClient(t, srv.URL).Get(t, api.OpenAPIPath)
	if !res.WantStatus(t, http.StatusOK) {
		return
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	served, err := openapi3.NewLoader().LoadFromData(res.Body)
	if err != nil {
		t.Fatalf("the served document does not load: %v", err)
	}
	if err := served.Validate(context.Background()); err != nil {
		t.Fatalf("the served document does not validate: %v", err)
	}
	doc, _ := api.OpenAPIDocument()
	want, _ := json.Marshal(doc)
	got, _ := json.Marshal(served)
	if !bytes.Equal(got, want) {
		t.Errorf("the served document differs from api/openapi.yaml (%d bytes, want %d)", len(got), len(want))
	}
	if served.Paths.Find("/v1/bindings/{id}/confirm") == nil {
		t.Error("the served document lacks /v1/bindings/{id}/confirm")
	}
}

// recordingTB stands in for a test so that the failures apitest reports
// can be inspected instead of failing this test.
type recordingTB struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recordingTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recordingTB) Error(args ...any) { r.Errorf("%s", fmt.Sprint(args...)) }

func (r *recordingTB) failures() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.errs)
}

const (
	driftMember = "mem_aaaaaaaaaaaaaaaaaaaaaaaa"
	driftCard   = "card_aaaaaaaaaaaaaaaaaaaaaaaa"
	driftBnd    = "bnd_aaaaaaaaaaaaaaaaaaaaaaaa"
	// Markers that must never appear in a report.
	requestSecret = "6222020000000000000"
	answerSecret  = "answer-value-4111"
)

// driftServer answers documented routes with answers that break the
// document in one way each, and /healthz correctly.
func driftServer(t *testing.T) string {
	member := func(kind any) map[string]any {
		m := map[string]any{"id": driftMember, "external_id": "u-1", "created_at": "2025-01-02T03:04:05Z"}
		if kind != nil {
			m["kind"] = kind
		}
		return m
	}
	write := func(w http.ResponseWriter, status int, ct string, v any) {
		w.Header().Set("Content-Type", ct)
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method + " " + r.URL.Path {
		case "GET /healthz":
			write(w, http.StatusOK, "application/json", map[string]string{"status": "ok"})
		case "GET /v1/members/" + driftMember:
			write(w, http.StatusOK, "application/json", member(nil))
		case "GET /v1/members/" + driftMember + "/cards":
			write(w, http.StatusOK, "application/json", map[string]any{"data": []any{}})
		case "POST /v1/members":
			write(w, http.StatusCreated, "application/json", member(answerSecret))
		case "GET /v1/members":
			write(w, http.StatusOK, "text/html", member("explicit"))
		case "GET /v1/cards/" + driftCard:
			write(w, http.StatusTeapot, "application/json", map[string]any{
				"error": map[string]string{"code": "teapot", "message": "short and stout"}, "request_id": "r1"})
		case "GET /v1/bindings/" + driftBnd:
			write(w, http.StatusOK, "application/json", map[string]any{
				"id": driftBnd, "status": "otp_sent", "member_id": nil, "card_id": nil, "failure_code": nil,
				"created_at": "2025-01-02T03:04:05Z",
				"card": map[string]any{"bank_code": "ICBC", "bank_name": "ICBC", "card_type": "debit",
					"masked_pan": "622202*********1234", "last4": "1234", "pan": answerSecret},
				"otp": map[string]any{"expires_at": "2025-01-02T03:09:05Z", "attempts_left": 5, "resend_after": "2025-01-02T03:05:05Z"},
			})
		default:
			write(w, http.StatusNotFound, "application/json", map[string]any{
				"error": map[string]string{"code": "not_found", "message": "no such resource"}, "request_id": "r2"})
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestOpenAPIValidationCatchesDrift(t *testing.T) {
	t.Parallel()
	c := apitest.NewClient(t, driftServer(t)).WithToken("not-a-real-token")

	tests := []struct {
		name   string
		do     func(tb testing.TB) *apitest.Response
		status int
		want   []string // in the one report, besides method, path and status
	}{
		{"member without kind", func(tb testing.TB) *apitest.Response {
			return c.Get(tb, "/v1/members/"+driftMember)
		}, 200, []string{`"kind"`, "missing"}},
		{"undocumented status", func(tb testing.TB) *apitest.Response {
			return c.Get(tb, "/v1/cards/"+driftCard)
		}, 418, []string{"status is not supported"}},
		{"undocumented member in a nested object", func(tb testing.TB) *apitest.Response {
			return c.Get(tb, "/v1/bindings/"+driftBnd)
		}, 200, []string{"card", "pan"}},
		{"kind outside its enum, after a request holding a card number", func(tb testing.TB) *apitest.Response {
			return c.Post(tb, "/v1/members", map[string]string{"external_id": "u-1", "card_number": requestSecret},
				apitest.IdempotencyKey("k-1"))
		}, 201, []string{"kind", "allowed values"}},
		{"undocumented content type", func(tb testing.TB) *apitest.Response {
			return c.Get(tb, "/v1/members?external_id=u-1")
		}, 200, []string{"text/html"}},
		{"route not in the document", func(tb testing.TB) *apitest.Response {
			return c.Get(tb, "/v1/nowhere")
		}, 404, []string{"not in the document"}},
		{"method not in the document", func(tb testing.TB) *apitest.Response {
			return c.Delete(tb, "/v1/members/"+driftMember)
		}, 404, []string{"no DELETE operation"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := &recordingTB{TB: t}
			res := tt.do(rec)
			errs := rec.failures()
			if len(errs) != 1 {
				t.Fatalf("apitest reported %d failures, want 1: %q", len(errs), errs)
			}
			msg := errs[0]
			head := fmt.Sprintf("%s %s → %d", res.Method, res.Path, tt.status)
			if !strings.Contains(msg, head) {
				t.Errorf("report %q does not name %q", msg, head)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("report %q does not mention %q", msg, w)
				}
			}
			for _, secret := range []string{requestSecret, answerSecret} {
				if strings.Contains(msg, secret) {
					t.Errorf("report %q carries a value it must not", msg)
				}
			}
		})
	}

	t.Run("conforming answers are not reported", func(t *testing.T) {
		t.Parallel()
		rec := &recordingTB{TB: t}
		c.Get(rec, "/healthz").WantStatus(rec, http.StatusOK)
		c.Get(rec, "/v1/members/"+driftMember+"/cards").WantStatus(rec, http.StatusOK)
		c.Get(rec, "/v1/members/mem_bbbbbbbbbbbbbbbbbbbbbbbb").WantError(rec, http.StatusNotFound, "not_found")
		if errs := rec.failures(); len(errs) != 0 {
			t.Errorf("apitest reported conforming answers: %q", errs)
		}
	})
}

// TestOpenAPIRealServerConforms drives the real API through every served
// route and many of its error answers; apitest validates each answer.
func TestOpenAPIRealServerConforms(t *testing.T) {
	t.Parallel()
	s := newConformanceServer(t)
	gen := conformance.NewGen()
	c := apitest.NewClient(t, s.url)

	t.Run("every served route is documented and every documented route served", func(t *testing.T) {
		doc, _ := api.OpenAPIDocument()
		served := map[string]bool{}
		for _, r := range s.echo.Routes() {
			if strings.Contains(r.Path, "*") || r.Method == echo.RouteNotFound {
				continue // echo's own catch-alls for group middleware
			}
			path := r.Path
			for _, seg := range strings.Split(path, "/") {
				if strings.HasPrefix(seg, ":") {
					path = strings.Replace(path, seg, "{"+seg[1:]+"}", 1)
				}
			}
			served[r.Method+" "+path] = true
			if item := doc.Paths.Value(path); item == nil || item.GetOperation(r.Method) == nil {
				t.Errorf("%s %s is served but not documented", r.Method, path)
			}
		}
		for path, item := range doc.Paths.Map() {
			for method := range item.Operations() {
				if op := method + " " + path; !served[op] {
					t.Errorf("%s is documented but not served", op)
				}
			}
		}
	})

	t.Run("operations and auth", func(t *testing.T) {
		c.Get(t, "/healthz").WantStatus(t, http.StatusOK)
		c.Get(t, "/readyz").WantStatus(t, http.StatusOK)
		c.Get(t, api.OpenAPIPath).WantStatus(t, http.StatusOK)
		c.Get(t, api.JWKSPath).WantStatus(t, http.StatusOK)

		id, secret := s.credentials(t, "bind")
		if tok := c.Token(t, id, secret); tok == "" {
			t.Error("empty token")
		}
		c.Post(t, api.TokenPath, url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}}).
			WantStatus(t, http.StatusOK)
		basic := base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id) + ":" + url.QueryEscape(secret)))
		c.Post(t, api.TokenPath, url.Values{"grant_type": {"client_credentials"}}, apitest.Header("Authorization", "Basic "+basic)).
			WantStatus(t, http.StatusOK)
		c.Post(t, api.TokenPath, map[string]string{"grant_type": "password"}).WantError(t, http.StatusBadRequest, "unsupported_grant_type")
		c.Post(t, api.TokenPath, map[string]string{"client_id": id}).WantError(t, http.StatusBadRequest, "invalid_request")
		c.Post(t, api.TokenPath, map[string]string{"grant_type": "client_credentials", "client_id": id, "client_secret": "wrong"}).
			WantError(t, http.StatusUnauthorized, "invalid_client")
		c.Post(t, api.TokenPath, map[string]string{"grant_type": "client_credentials", "client_id": id, "client_secret": secret, "scope": "withhold"}).
			WantError(t, http.StatusBadRequest, "invalid_scope")

		c.Get(t, "/v1/members/"+driftMember).WantError(t, http.StatusUnauthorized, "unauthorized")
		c.Get(t, "/v1/members/"+driftMember, apitest.Bearer("a.b.c")).WantError(t, http.StatusUnauthorized, "invalid_token")
		wid, wsecret := s.credentials(t, "withhold")
		res := c.Get(t, "/v1/members/"+driftMember, apitest.Bearer(c.Token(t, wid, wsecret)))
		if res.WantError(t, http.StatusForbidden, "insufficient_scope") && res.APIError().RequiredScope != "bind" {
			t.Errorf("required_scope = %q, want bind", res.APIError().RequiredScope)
		}
	})

	id, secret := s.credentials(t, "bind", "withhold")
	bc := c.WithToken(c.Token(t, id, secret))

	t.Run("members", func(t *testing.T) {
		res := bc.Post(t, "/v1/members", map[string]string{"external_id": "m-1"}, apitest.IdempotencyKey("member-1"))
		res.WantStatus(t, http.StatusCreated)
		var m struct{ ID, Kind string }
		res.Decode(t, &m)
		again := bc.Post(t, "/v1/members", map[string]string{"external_id": "m-1"}, apitest.IdempotencyKey("member-1"))
		if again.WantStatus(t, http.StatusCreated) && again.Header.Get("Idempotent-Replayed") != "true" {
			t.Error("a replay lacks Idempotent-Replayed: true")
		}
		bc.Post(t, "/v1/members", map[string]string{"external_id": "m-2"}, apitest.IdempotencyKey("member-1")).
			WantError(t, http.StatusUnprocessableEntity, "idempotency_key_reused")
		bc.Post(t, "/v1/members", map[string]string{"external_id": "m-1"}, apitest.IdempotencyKey(strings.Repeat("k", 256))).
			WantError(t, http.StatusBadRequest, "validation_failed")
		bc.Post(t, "/v1/members", map[string]string{"external_id": "m-1"}).WantError(t, http.StatusConflict, "member_exists")
		bc.Post(t, "/v1/members", map[string]string{"external_id": "m-3", "phone": "123"}).WantError(t, http.StatusUnprocessableEntity, "validation_failed")
		bc.Post(t, "/v1/members", map[string]string{"external_id": "m-3", "nickname": "x"}).WantError(t, http.StatusBadRequest, "validation_failed")
		bc.Post(t, "/v1/members", []byte(`{"external_id":`)).WantError(t, http.StatusBadRequest, "malformed_json")
		bc.Post(t, "/v1/members", []byte(`{"external_id":"`+strings.Repeat("x", api.MaxBody)+`"}`)).
			WantError(t, http.StatusRequestEntityTooLarge, "body_too_large")

		bc.Get(t, "/v1/members/"+m.ID).WantStatus(t, http.StatusOK)
		bc.Get(t, "/v1/members?external_id=m-1").WantStatus(t, http.StatusOK)
		bc.Get(t, "/v1/members").WantError(t, http.StatusBadRequest, "validation_failed")
		bc.Get(t, "/v1/members?external_id=nobody").WantError(t, http.StatusNotFound, "not_found")
		bc.Get(t, "/v1/members/not-an-id").WantError(t, http.StatusNotFound, "not_found")
		bc.Get(t, "/v1/members/"+m.ID+"/cards").WantStatus(t, http.StatusOK)
	})

	t.Run("bindings and cards", func(t *testing.T) {
		res := bc.Post(t, "/v1/members", map[string]string{"external_id": "b-1"})
		var m struct{ ID string }
		res.Decode(t, &m)

		debit := s.account(t, gen, "ICBC", "debit")
		req := bindRequest(debit)
		req["member_id"] = m.ID
		res = bc.Post(t, "/v1/bindings", req, apitest.IdempotencyKey("bind-1"))
		var b bindingAnswer
		if !res.WantStatus(t, http.StatusCreated) || !res.Decode(t, &b) {
			t.FailNow()
		}
		bc.Get(t, "/v1/bindings/"+b.ID).WantStatus(t, http.StatusOK)
		res = bc.Post(t, "/v1/bindings/"+b.ID+"/resend", nil)
		if res.WantError(t, http.StatusTooManyRequests, "otp_resend_too_soon") && res.APIError().RetryAfter == nil {
			t.Error("otp_resend_too_soon lacks retry_after")
		}
		wrong := "000000"
		if s.code(t, debit.Phone) == wrong {
			wrong = "111111"
		}
		res = bc.Post(t, "/v1/bindings/"+b.ID+"/confirm", map[string]string{"otp": wrong})
		if res.WantError(t, http.StatusUnprocessableEntity, "otp_incorrect") && res.APIError().AttemptsLeft == nil {
			t.Error("otp_incorrect lacks attempts_left")
		}
		bc.Post(t, "/v1/bindings/"+b.ID+"/confirm", map[string]string{"otp": "12"}).WantError(t, http.StatusUnprocessableEntity, "validation_failed")
		res = bc.Post(t, "/v1/bindings/"+b.ID+"/confirm", map[string]string{"otp": s.code(t, debit.Phone)}, apitest.IdempotencyKey("confirm-1"))
		var bound bindingAnswer
		if !res.WantStatus(t, http.StatusOK) || !res.Decode(t, &bound) || bound.Status != "bound" || bound.CardID == nil || bound.OTP != nil {
			t.Fatalf("confirmed binding = %+v", bound)
		}
		bc.Post(t, "/v1/bindings/"+b.ID+"/resend", nil).WantError(t, http.StatusConflict, "binding_not_pending")
		bc.Get(t, "/v1/bindings/"+b.ID).WantStatus(t, http.StatusOK)
		bc.Get(t, "/v1/cards/"+*bound.CardID).WantStatus(t, http.StatusOK)
		bc.Get(t, "/v1/members/"+m.ID+"/cards").WantStatus(t, http.StatusOK)

		// The same card for the same member: bound at once, 200.
		bc.Post(t, "/v1/bindings", req).WantStatus(t, http.StatusOK)
		// ... and for another member: refused.
		other := bindRequest(debit)
		other["external_user_id"] = "b-2"
		bc.Post(t, "/v1/bindings", other).WantError(t, http.StatusConflict, "card_bound_elsewhere")

		// Implicit member, credit card.
		credit := s.account(t, gen, "CMB", "credit")
		req = bindRequest(credit)
		req["external_user_id"] = "b-3"
		res = bc.Post(t, "/v1/bindings", req)
		var ib bindingAnswer
		if !res.WantStatus(t, http.StatusCreated) || !res.Decode(t, &ib) || ib.MemberID != nil {
			t.Fatalf("implicit binding = %+v", ib)
		}
		res = bc.Post(t, "/v1/bindings/"+ib.ID+"/confirm", map[string]string{"otp": s.code(t, credit.Phone)})
		if res.WantStatus(t, http.StatusOK) && res.Decode(t, &ib) && ib.MemberID == nil {
			t.Error("a confirmed implicit binding has no member_id")
		}

		unrouted := bindRequest(debit)
		unrouted["member_id"] = m.ID
		unrouted["card_number"] = gen.CardNumber("999999", 16)
		bc.Post(t, "/v1/bindings", unrouted).WantError(t, http.StatusUnprocessableEntity, "card_unsupported")
		unrouted["card_number"] = "1234"
		bc.Post(t, "/v1/bindings", unrouted).WantError(t, http.StatusUnprocessableEntity, "validation_failed")
		unrouted["member_id"] = "mem_bbbbbbbbbbbbbbbbbbbbbbbb"
		unrouted["card_number"] = debit.CardNumber
		bc.Post(t, "/v1/bindings", unrouted).WantError(t, http.StatusNotFound, "not_found")

		res = bc.Delete(t, "/v1/cards/"+*bound.CardID)
		var card struct{ Status string }
		if res.WantStatus(t, http.StatusOK) && res.Decode(t, &card) && card.Status != "unbound" {
			t.Errorf("unbound card status = %q", card.Status)
		}
		bc.Delete(t, "/v1/cards/"+*bound.CardID).WantStatus(t, http.StatusOK)
		bc.Get(t, "/v1/cards/"+driftCard).WantError(t, http.StatusNotFound, "not_found")
	})

	t.Run("webhook endpoint and events", func(t *testing.T) {
		res := bc.Put(t, "/v1/webhook_endpoint", map[string]any{"url": "https://merchant.example/hooks"})
		var ep struct{ Events []string }
		if res.WantStatus(t, http.StatusOK) && res.Decode(t, &ep) && len(ep.Events) != len(webhooks.EventTypes()) {
			t.Errorf("an endpoint without events subscribes to %v, want every type", ep.Events)
		}
		bc.Put(t, "/v1/webhook_endpoint", map[string]any{"url": "https://merchant.example/hooks", "events": []string{"card.unbound"}},
			apitest.IdempotencyKey("hooks-1")).WantStatus(t, http.StatusOK)
		bc.Put(t, "/v1/webhook_endpoint", map[string]any{"url": "ftp://merchant.example/"}).WantError(t, http.StatusUnprocessableEntity, "validation_failed")
		bc.Put(t, "/v1/webhook_endpoint", map[string]any{"url": "https://merchant.example/", "events": []string{"card.lost"}}).
			WantError(t, http.StatusUnprocessableEntity, "validation_failed")
		bc.Put(t, "/v1/webhook_endpoint", map[string]any{"url": "https://merchant.example/", "secret": "x"}).
			WantError(t, http.StatusBadRequest, "validation_failed")

		// The bindings above emitted binding.bound (twice) and card.unbound.
		res = bc.Get(t, "/v1/events?limit=1")
		var page struct {
			Data    []struct{ ID, Type string }
			HasMore bool `json:"has_more"`
		}
		if !res.WantStatus(t, http.StatusOK) || !res.Decode(t, &page) || len(page.Data) != 1 || !page.HasMore {
			t.Fatalf("first page = %+v", page)
		}
		res = bc.Get(t, "/v1/events?after="+page.Data[0].ID)
		if res.WantStatus(t, http.StatusOK) && res.Decode(t, &page) && (len(page.Data) < 2 || page.HasMore) {
			t.Errorf("second page = %+v, want the remaining events", page)
		}
		bc.Get(t, "/v1/events?limit=0").WantError(t, http.StatusUnprocessableEntity, "validation_failed")
		bc.Get(t, "/v1/events?after=evt_aaaaaaaaaaaaaaaaaaaaaaaa").WantError(t, http.StatusNotFound, "not_found")
	})
}
