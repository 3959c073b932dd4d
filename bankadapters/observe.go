package bankadapters

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/quickpay/quickpay/bankadapters/internal/wire"
	"github.com/quickpay/quickpay/internal/sensitive"
)

// Call classes: what became of a call to a bank, as metrics and spans
// count it. The bank's own codes and the domain's outcomes stay out of
// the metric's labels; these four are what an operator alerts on.
const (
	// CallOK: the bank answered and accepted (a debit succeeded or is
	// processing, a code was texted, an agreement ended).
	CallOK = "ok"
	// CallDeclined: the bank answered and refused (a decline, a wrong or
	// expired code, elements that do not match, a card bound already, an
	// order it does not know).
	CallDeclined = "declined"
	// CallUnknown: no usable answer (a timeout, a lost or unreadable
	// answer, a 5xx, a bad signature): the call may have taken effect.
	CallUnknown = "unknown"
	// CallError: the call was not sent (queued past its deadline at the
	// bank's limit) or could not be built.
	CallError = "error"
)

// callClasses are the classes, for pre-creating the series.
var callClasses = []string{CallOK, CallDeclined, CallUnknown, CallError}

// Operations as metrics and spans name them.
var callOps = []string{"bind_apply", "bind_resend", "bind_confirm", "charge", "query", "refund", "query_refund",
	"unbind", "statement"}

// Observer records the calls of the banks it observes:
//
//	quickpay_bank_calls_total{bank,op,outcome}           outcome is a call class
//	quickpay_bank_call_duration_seconds{bank,op}         from the caller's side, the
//	                                                     wait at the bank's limit included
//
// and, given a tracer provider, a span "bank <op>" around each call, whose
// children are its HTTP attempts. Neither holds a request's or an answer's
// content. A nil *Observer observes nothing.
type Observer struct {
	calls    *prometheus.CounterVec
	duration *prometheus.HistogramVec
	tracer   trace.Tracer
}

// NewObserver registers the metrics on reg. tp may be nil: no spans.
func NewObserver(reg prometheus.Registerer, tp trace.TracerProvider) (*Observer, error) {
	o := &Observer{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quickpay_bank_calls_total",
			Help: "Calls to banks by bank, operation and outcome class (ok, declined, unknown, error).",
		}, []string{"bank", "op", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "quickpay_bank_call_duration_seconds",
			Help: "Latency of calls to banks by bank and operation, retries and the wait at the bank's limit included.",
			// 5 ms to about 20 s: a call is bounded at 10 s an attempt.
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 13),
		}, []string{"bank", "op"}),
	}
	for _, c := range []prometheus.Collector{o.calls, o.duration} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	if tp != nil {
		o.tracer = tp.Tracer("github.com/quickpay/quickpay/bankadapters")
	}
	return o, nil
}

// DefaultHTTPClient is the client adapters use when CallOptions has none:
// keep-alive to a few bank hosts, deadlines from each call. A caller that
// wraps its transport (tracing) starts from it.
func DefaultHTTPClient() *http.Client { return wire.DefaultClient() }

// Observe returns bank with its calls recorded. The result implements
// Statementer and CallbackParser exactly when bank does; a callback is
// the bank calling, not a call, and is not recorded. A nil o returns bank.
func (o *Observer) Observe(bank Bank) Bank {
	if o == nil {
		return bank
	}
	code := bank.Code()
	for _, op := range callOps {
		o.duration.WithLabelValues(code, op)
		for _, c := range callClasses {
			o.calls.WithLabelValues(code, op, c)
		}
	}
	ob := &observed{Bank: bank, o: o, code: code}
	st, isSt := bank.(Statementer)
	cp, isCp := bank.(CallbackParser)
	switch {
	case isSt && isCp:
		return &struct {
			*observed
			observedStatements
			CallbackParser
		}{ob, observedStatements{st, ob}, cp}
	case isSt:
		return &struct {
			*observed
			observedStatements
		}{ob, observedStatements{st, ob}}
	case isCp:
		return &struct {
			*observed
			CallbackParser
		}{ob, cp}
	default:
		return ob
	}
}

// observed is a Bank whose calls are recorded.
type observed struct {
	Bank
	o    *Observer
	code string
}

// start begins recording a call of op; the returned func ends it with its
// class.
func (b *observed) start(ctx context.Context, op string) (context.Context, func(class string)) {
	t0 := time.Now()
	var span trace.Span
	if b.o.tracer != nil {
		ctx, span = b.o.tracer.Start(ctx, "bank "+op, trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attribute.String("bank", b.code), attribute.String("bank.op", op)))
	}
	return ctx, func(class string) {
		b.o.calls.WithLabelValues(b.code, op, class).Inc()
		b.o.duration.WithLabelValues(b.code, op).Observe(time.Since(t0).Seconds())
		if span != nil {
			span.SetAttributes(attribute.String("bank.outcome", class))
			if class == CallUnknown || class == CallError {
				span.SetStatus(codes.Error, class)
			}
			span.End()
		}
	}
}

func (b *observed) BindApply(ctx context.Context, req BindRequest) (BindSession, error) {
	ctx, end := b.start(ctx, "bind_apply")
	s, err := b.Bank.BindApply(ctx, req)
	end(ErrorClass(err))
	return s, err
}

func (b *observed) BindResend(ctx context.Context, bindRef string) error {
	ctx, end := b.start(ctx, "bind_resend")
	err := b.Bank.BindResend(ctx, bindRef)
	end(ErrorClass(err))
	return err
}

func (b *observed) BindConfirm(ctx context.Context, bindRef string, otp sensitive.OTP) (string, error) {
	ctx, end := b.start(ctx, "bind_confirm")
	agreement, err := b.Bank.BindConfirm(ctx, bindRef, otp)
	end(ErrorClass(err))
	return agreement, err
}

func (b *observed) Charge(ctx context.Context, req ChargeRequest) (ChargeResult, error) {
	ctx, end := b.start(ctx, "charge")
	r, err := b.Bank.Charge(ctx, req)
	end(resultClass(r.Status, err))
	return r, err
}

func (b *observed) Query(ctx context.Context, orderNo string) (ChargeResult, error) {
	ctx, end := b.start(ctx, "query")
	r, err := b.Bank.Query(ctx, orderNo)
	end(resultClass(r.Status, err))
	return r, err
}

func (b *observed) Refund(ctx context.Context, req RefundRequest) (RefundResult, error) {
	ctx, end := b.start(ctx, "refund")
	r, err := b.Bank.Refund(ctx, req)
	end(resultClass(r.Status, err))
	return r, err
}

func (b *observed) QueryRefund(ctx context.Context, refundNo string) (RefundResult, error) {
	ctx, end := b.start(ctx, "query_refund")
	r, err := b.Bank.QueryRefund(ctx, refundNo)
	end(resultClass(r.Status, err))
	return r, err
}

func (b *observed) Unbind(ctx context.Context, agreementNo string) error {
	ctx, end := b.start(ctx, "unbind")
	err := b.Bank.Unbind(ctx, agreementNo)
	end(ErrorClass(err))
	return err
}

// observedStatements is a Statementer whose calls are recorded.
type observedStatements struct {
	st Statementer
	b  *observed
}

func (s observedStatements) Statement(ctx context.Context, date time.Time) (Statement, error) {
	ctx, end := s.b.start(ctx, "statement")
	st, err := s.st.Statement(ctx, date)
	end(ErrorClass(err))
	return st, err
}

// ErrorClass is the call class of a bank call's error: ok for nil,
// declined for a refusal or ErrOrderNotFound, unknown for no usable
// answer, error for a call not sent or not built.
func ErrorClass(err error) string {
	if err == nil {
		return CallOK
	}
	if errors.Is(err, ErrOrderNotFound) {
		return CallDeclined
	}
	if errors.Is(err, ErrNotSent) {
		return CallError
	}
	var be *Error
	if !errors.As(err, &be) {
		// Not the bank's answer: a request the adapter refused to build.
		return CallError
	}
	switch be.Outcome {
	case OutcomeUnavailable, OutcomeProcessing:
		return CallUnknown
	case OutcomeRetryableDecline, OutcomeHardDecline, OutcomeOTPWrong, OutcomeOTPExpired,
		OutcomeOTPAttemptsExceeded, OutcomeElementsMismatch, OutcomeAlreadyBound:
		return CallDeclined
	case OutcomeSuccess:
		// An *Error never carries success (Error's contract): count it
		// where it will be looked at.
		return CallError
	default:
		// An outcome added without a class here shows as errors.
		return CallError
	}
}

// resultClass is the call class of a debit's or refund's answer.
func resultClass(status ChargeStatus, err error) string {
	if err != nil {
		return ErrorClass(err)
	}
	switch status {
	case ChargeSucceeded, ChargeProcessing:
		return CallOK
	case ChargeFailed:
		return CallDeclined
	case ChargeUnknown:
		return CallUnknown
	default:
		// A status added without a class here shows as errors.
		return CallError
	}
}
