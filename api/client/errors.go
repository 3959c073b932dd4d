package client

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// Error is an answer of quickpay's that is not 2xx, after the retries the
// Client makes. Match it with errors.As and switch on Code (stable,
// documented per route in api/openapi.yaml); Message is for people.
type Error struct {
	// Status is the HTTP status.
	Status int
	// Code is the error's stable code, e.g. otp_incorrect. Empty when the
	// body was not quickpay's error object (a proxy's answer).
	Code    string
	Message string
	// Field is the request field or header concerned, if any
	// (validation_failed, elements_mismatch…).
	Field string
	// AttemptsLeft is the wrong codes the binding or mandate still takes
	// (otp_incorrect); nil when the answer carried none.
	AttemptsLeft *int
	// RetryAfter is how long to wait before the request would be allowed
	// (rate_limited, otp_resend_too_soon); 0 when the answer named none.
	RetryAfter time.Duration
	// RequestID is the answer's request id; quote it to support.
	RequestID string
}

func (e *Error) Error() string {
	code := e.Code
	if code == "" {
		code = http.StatusText(e.Status)
	}
	s := fmt.Sprintf("quickpay: %d %s", e.Status, code)
	if e.Field != "" {
		s += " (" + e.Field + ")"
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.RequestID != "" {
		s += " [request " + e.RequestID + "]"
	}
	return s
}

// parseError reads quickpay's error object from a failed answer's body.
func parseError(status int, body []byte) *Error {
	e := &Error{Status: status}
	var doc ErrorBody
	if json.Unmarshal(body, &doc) != nil || doc.Error.Code == "" {
		return e
	}
	e.Code, e.Message, e.RequestID = doc.Error.Code, doc.Error.Message, doc.RequestId
	if doc.Error.Field != nil {
		e.Field = *doc.Error.Field
	}
	e.AttemptsLeft = doc.Error.AttemptsLeft
	if doc.Error.RetryAfter != nil {
		e.RetryAfter = time.Duration(*doc.Error.RetryAfter) * time.Second
	}
	return e
}
