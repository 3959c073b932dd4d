package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/quickpay/quickpay/internal/errs"
	"io"
	"net/http"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/labstack/echo/v4"
)

// Error is an API error answer:
//
//	{"error":{"code":"otp_incorrect","message":"…","attempts_left":2},"request_id":"…"}
//
// Handlers return one directly for HTTP-level problems (bad JSON, auth,
// idempotency); domain errors are mapped by the table in mapError.
type Error struct {
	Status  int
	Code    string
	Message string
	// Fields are extra members of the error object: "field", "attempts_left".
	Fields map[string]any
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message) }

// NewError returns an API error.
func NewError(status int, code, message string) *Error {
	return &Error{Status: status, Code: code, Message: message}
}

// With returns a copy of e with an extra member in the error object.
func (e *Error) With(key string, value any) *Error {
	c := *e
	c.Fields = make(map[string]any, len(e.Fields)+1)
	for k, v := range e.Fields {
		c.Fields[k] = v
	}
	c.Fields[key] = value
	return &c
}

// Errors every area uses.
var (
	ErrNotFound         = NewError(http.StatusNotFound, "not_found", "no such resource")
	ErrUnauthorized     = NewError(http.StatusUnauthorized, "unauthorized", "a valid bearer token is required")
	ErrForbiddenScope   = NewError(http.StatusForbidden, "insufficient_scope", "the token's scope does not allow this")
	ErrBodyTooLarge     = NewError(http.StatusRequestEntityTooLarge, "body_too_large", "request body exceeds 64 KiB")
	ErrMalformedJSON    = NewError(http.StatusBadRequest, "malformed_json", "request body is not valid JSON")
	ErrBodyNotObject    = NewError(http.StatusBadRequest, "malformed_json", "request body must be a JSON object")
	ErrInternal         = NewError(http.StatusInternalServerError, "internal", "internal error")
	ErrMethodNotAllowed = NewError(http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed")
	// ErrRateLimited is an abuse limit's refusal; RateLimited adds the wait.
	ErrRateLimited = NewError(http.StatusTooManyRequests, "rate_limited", "too many requests; retry after retry_after seconds")
)

// RateLimited is ErrRateLimited with retry_after, in whole seconds (at
// least 1); the error handler also sends it as Retry-After.
func RateLimited(seconds int) *Error { return ErrRateLimited.With("retry_after", max(1, seconds)) }

// Validation returns a validation_failed error naming the field.
func Validation(status int, field, message string) *Error {
	return NewError(status, "validation_failed", message).With("field", field)
}

// domainErrors is the one table from domain errors to answers. Areas
// register their sentinels with RegisterErrors at init of the server (not
// in package init), keyed by the sentinel; errors.Is finds wrapped ones.
type domainTable struct {
	mu   sync.RWMutex
	rows []domainRow
}

type domainRow struct {
	err error
	ans *Error
}

// register adds rows; a sentinel registered twice keeps its first answer.
func (t *domainTable) register(rows map[error]*Error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for err, ans := range rows {
		t.rows = append(t.rows, domainRow{err, ans})
	}
}

func (t *domainTable) lookup(err error) (*Error, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, r := range t.rows {
		if errors.Is(err, r.err) {
			return r.ans, true
		}
	}
	return nil, false
}

// errorBody is the JSON shape of an error answer.
func errorBody(e *Error, requestID string) map[string]any {
	obj := map[string]any{"code": e.Code, "message": e.Message}
	for k, v := range e.Fields {
		obj[k] = v
	}
	return map[string]any{"error": obj, "request_id": requestID}
}

// errorHandler writes every error as the documented JSON. Unknown errors
// answer 500 internal and are logged with the request id; the log carries
// the error text, which by the security rules never holds a sensitive value.
func (s *server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	rid := c.Response().Header().Get(echo.HeaderXRequestID)
	var ans *Error
	var he *echo.HTTPError
	var fe *errs.FieldError
	switch {
	case errors.As(err, &ans):
	case errors.As(err, &fe):
		// A refused field (every domain's, internal/errs) names itself.
		ans = Validation(http.StatusUnprocessableEntity, fe.Field, fe.Message)
	case errors.As(err, &he):
		switch he.Code {
		case http.StatusNotFound:
			ans = ErrNotFound
		case http.StatusMethodNotAllowed:
			ans = ErrMethodNotAllowed
		case http.StatusRequestEntityTooLarge:
			ans = ErrBodyTooLarge
		case http.StatusUnauthorized:
			ans = ErrUnauthorized
		default:
			ans = NewError(he.Code, strings.ToLower(strings.ReplaceAll(http.StatusText(he.Code), " ", "_")), http.StatusText(he.Code))
		}
	default:
		if mapped, ok := s.errors.lookup(err); ok {
			ans = mapped
			// Domain errors may carry details the answer should show.
			var d interface{ ErrorFields() map[string]any }
			if errors.As(err, &d) {
				for k, v := range d.ErrorFields() {
					ans = ans.With(k, v)
				}
			}
		} else {
			s.log.Error("internal error", "request_id", rid, "method", c.Request().Method, "route", c.Path(), "err", err)
			ans = ErrInternal
		}
	}
	if secs, ok := ans.Fields["retry_after"].(int); ok && ans.Status == http.StatusTooManyRequests {
		// The error object says it for clients that read JSON; the
		// header for those that do not (RFC 9110 §10.2.3).
		c.Response().Header().Set("Retry-After", strconv.Itoa(secs))
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(ans.Status)
		return
	}
	_ = c.JSON(ans.Status, errorBody(ans, rid))
}

// MaxBody is the largest request body the API reads.
const MaxBody = 64 << 10

// Bind decodes the JSON body into v: 413 beyond MaxBody, 400 for malformed
// JSON, and 400 validation_failed naming an unknown field or a string field
// holding a NUL (nulField). Values are never
// echoed back: a body may hold a card number.
func Bind(c echo.Context, v any) error {
	body, err := readBody(c)
	if err != nil {
		return err
	}
	if bytes.Equal(bytes.TrimSpace(body), []byte("null")) {
		return ErrBodyNotObject // decodes to nothing, without an error
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return Validation(http.StatusBadRequest, unknownField(strings.TrimPrefix(err.Error(), "json: unknown field ")), "unknown field")
		case errors.As(err, &typ) && typ.Field == "":
			return ErrBodyNotObject // an array, string or number: no field to name
		case errors.As(err, &typ):
			return Validation(http.StatusBadRequest, typ.Field, "wrong type")
		case errors.As(err, &syn), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
			return ErrMalformedJSON
		default:
			return ErrMalformedJSON
		}
	}
	// One value and nothing after it: More is false before a '}' or ']',
	// so only reading to the end tells "{}" from "{}}" or "{}]{…}".
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return ErrMalformedJSON
	}
	if field := nulField(v); field != "" {
		return Validation(http.StatusBadRequest, field, "must not contain a NUL character")
	}
	return nil
}

// unknownField is the name an unknown-field answer gives for the decoder's
// Go-quoted key: the key itself when it looks like a field name, else "?"
// (a key is client input like any value, and may be a card number typed in
// the wrong place; answers and saved answers never repeat such input).
func unknownField(quoted string) string {
	key, err := strconv.Unquote(quoted)
	if err != nil || !fieldNameRE.MatchString(key) {
		return "?"
	}
	return key
}

// fieldNameRE is what a field name looks like: letters first, at most one
// run of digits short of anything card- or phone-like.
var fieldNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z_]*[0-9]{0,3}[A-Za-z_]*$`)

// nulField names the first string field of v (a pointer to a decoded
// request) that holds a NUL, or "" if none does. JSON's "\u0000" decodes to
// a NUL; Postgres text refuses it (a 500) and no field quickpay takes has a
// use for one, so Bind answers it 400 before any handler runs, the way it
// answers malformed JSON.
func nulField(v any) string {
	return nulIn(reflect.ValueOf(v), "")
}

func nulIn(v reflect.Value, name string) string {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return ""
		}
		return nulIn(v.Elem(), name)
	case reflect.String:
		if strings.IndexByte(v.String(), 0) >= 0 {
			return name
		}
	case reflect.Struct:
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue // sensitive types keep their value unexported and check it themselves
			}
			field := jsonName(f)
			if field == "-" {
				continue
			}
			if name != "" && !f.Anonymous {
				field = name + "." + field
			} else if f.Anonymous {
				field = name
			}
			if got := nulIn(v.Field(i), field); got != "" {
				return got
			}
		}
	case reflect.Slice, reflect.Array:
		for i := 0; i < v.Len(); i++ {
			if got := nulIn(v.Index(i), name); got != "" {
				return got
			}
		}
	case reflect.Map:
		iter := v.MapRange()
		for iter.Next() {
			if got := nulIn(iter.Key(), name); got != "" {
				return got
			}
			if got := nulIn(iter.Value(), name); got != "" {
				return got
			}
		}
	}
	return ""
}

// jsonName is the name f has in a request body.
func jsonName(f reflect.StructField) string {
	tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	if tag == "" {
		return f.Name
	}
	return tag
}

// BindEmpty checks the body of a route that takes none: it may be empty or
// an object without fields ({}); otherwise Bind's answers (413, 400
// malformed, 400 naming the unknown field).
func BindEmpty(c echo.Context) error {
	body, err := readBody(c)
	if err != nil || len(bytes.TrimSpace(body)) == 0 {
		return err
	}
	var none struct{}
	return Bind(c, &none)
}

// readBody reads at most MaxBody bytes, remembering the body so the
// idempotency layer and the handler can both see it.
func readBody(c echo.Context) ([]byte, error) {
	if b, ok := c.Get(ctxBody).([]byte); ok {
		return b, nil
	}
	r := c.Request()
	if r.ContentLength > MaxBody {
		return nil, ErrBodyTooLarge
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
	if err != nil {
		return nil, ErrMalformedJSON
	}
	if len(b) > MaxBody {
		return nil, ErrBodyTooLarge
	}
	c.Set(ctxBody, b)
	return b, nil
}

// Body returns the request body (read once, at most MaxBody bytes).
func Body(c echo.Context) ([]byte, error) { return readBody(c) }

const ctxBody = "qp.body"
