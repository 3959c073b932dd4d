package bankadapters

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/quickpay/quickpay/internal/sensitive"
)

// Limit bounds the calls to one bank from this process: binding's and the
// charge workers' alike, so one slow or rate-capped bank queues only its
// own callers.
type Limit struct {
	// PerSecond is the steady call rate; 0 is unlimited.
	PerSecond float64
	// Burst is how many calls may go at once above the rate. Defaults to
	// PerSecond/10, at least 1.
	Burst int
	// Concurrent is how many calls may wait on the bank at once; 0 is
	// unlimited.
	Concurrent int
}

// ErrNotSent is a call that never left quickpay: its caller's context ended
// while it queued for a slot. The bank has not seen it, so a charge is not
// unknown and a code has not been texted. It classifies as
// OutcomeUnavailable.
var ErrNotSent = errors.New("bank call not sent: queued beyond the caller's deadline")

// ParseLimits reads QUICKPAY_BANK_LIMITS: CODE=RPS:CONCURRENT,… (either
// part 0 for unlimited), e.g. "ICBC=200:32,CCB=50:8".
func ParseLimits(s string) (map[string]Limit, error) {
	out := map[string]Limit{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		code, spec, ok := strings.Cut(item, "=")
		rps, conc, ok2 := strings.Cut(spec, ":")
		r, err1 := strconv.ParseFloat(rps, 64)
		n, err2 := strconv.Atoi(conc)
		if !ok || !ok2 || code == "" || err1 != nil || err2 != nil || !(r >= 0) || math.IsInf(r, 0) || n < 0 {
			return nil, fmt.Errorf("QUICKPAY_BANK_LIMITS %q: want CODE=RPS:CONCURRENT, e.g. ICBC=200:32", item)
		}
		code = strings.ToUpper(code)
		if _, twice := out[code]; twice {
			return nil, fmt.Errorf("QUICKPAY_BANK_LIMITS names %s twice", code)
		}
		out[code] = Limit{PerSecond: r, Concurrent: n}
	}
	return out, nil
}

// WithLimit returns bank behind l: every call to the bank (bind apply,
// resend and confirm, charge, query, refund, unbind, statement) first waits for a
// concurrency slot and then for the rate, as long as its context allows;
// one that cannot wait returns an *Error wrapping ErrNotSent. A callback is
// parsed without waiting: it is the bank calling. The result implements
// Statementer and CallbackParser exactly when bank does.
func WithLimit(bank Bank, l Limit) Bank {
	if l.PerSecond <= 0 && l.Concurrent <= 0 {
		return bank
	}
	g := &gate{}
	if l.PerSecond > 0 {
		burst := l.Burst
		if burst <= 0 {
			burst = max(1, int(l.PerSecond/10))
		}
		g.rate = rate.NewLimiter(rate.Limit(l.PerSecond), burst)
	}
	if l.Concurrent > 0 {
		g.slots = make(chan struct{}, l.Concurrent)
	}
	lb := &limited{Bank: bank, gate: g}
	st, isSt := bank.(Statementer)
	cp, isCp := bank.(CallbackParser)
	switch {
	case isSt && isCp:
		return &struct {
			*limited
			limitedStatements
			CallbackParser
		}{lb, limitedStatements{st, g, bank.Code()}, cp}
	case isSt:
		return &struct {
			*limited
			limitedStatements
		}{lb, limitedStatements{st, g, bank.Code()}}
	case isCp:
		return &struct {
			*limited
			CallbackParser
		}{lb, cp}
	default:
		return lb
	}
}

// gate is one bank's slots and rate.
type gate struct {
	slots chan struct{}
	rate  *rate.Limiter
}

// enter waits for a slot, then for the rate; release frees the slot.
func (g *gate) enter(ctx context.Context, code, op string) (release func(), err error) {
	if err := ctx.Err(); err != nil {
		// Ended already: not sent, even where a slot is free (select
		// would pick either case).
		return nil, notSent(code, op, err)
	}
	release = func() {}
	if g.slots != nil {
		select {
		case g.slots <- struct{}{}:
			release = func() { <-g.slots }
		case <-ctx.Done():
			return nil, notSent(code, op, ctx.Err())
		}
	}
	if g.rate != nil {
		if err := g.rate.Wait(ctx); err != nil {
			release()
			return nil, notSent(code, op, err)
		}
	}
	return release, nil
}

func notSent(code, op string, cause error) error {
	return &Error{Bank: code, Op: op, Outcome: OutcomeUnavailable, Err: fmt.Errorf("%w: %w", ErrNotSent, cause)}
}

// limited is a Bank whose calls pass its gate.
type limited struct {
	Bank
	gate *gate
}

func (b *limited) BindApply(ctx context.Context, req BindRequest) (BindSession, error) {
	release, err := b.gate.enter(ctx, b.Code(), "bind_apply")
	if err != nil {
		return BindSession{}, err
	}
	defer release()
	return b.Bank.BindApply(ctx, req)
}

func (b *limited) BindResend(ctx context.Context, bindRef string) error {
	release, err := b.gate.enter(ctx, b.Code(), "bind_resend")
	if err != nil {
		return err
	}
	defer release()
	return b.Bank.BindResend(ctx, bindRef)
}

func (b *limited) BindConfirm(ctx context.Context, bindRef string, otp sensitive.OTP) (string, error) {
	release, err := b.gate.enter(ctx, b.Code(), "bind_confirm")
	if err != nil {
		return "", err
	}
	defer release()
	return b.Bank.BindConfirm(ctx, bindRef, otp)
}

func (b *limited) Charge(ctx context.Context, req ChargeRequest) (ChargeResult, error) {
	release, err := b.gate.enter(ctx, b.Code(), "charge")
	if err != nil {
		return ChargeResult{}, err
	}
	defer release()
	return b.Bank.Charge(ctx, req)
}

func (b *limited) Query(ctx context.Context, orderNo string) (ChargeResult, error) {
	release, err := b.gate.enter(ctx, b.Code(), "query")
	if err != nil {
		return ChargeResult{}, err
	}
	defer release()
	return b.Bank.Query(ctx, orderNo)
}

func (b *limited) Refund(ctx context.Context, req RefundRequest) (RefundResult, error) {
	release, err := b.gate.enter(ctx, b.Code(), "refund")
	if err != nil {
		return RefundResult{}, err
	}
	defer release()
	return b.Bank.Refund(ctx, req)
}

func (b *limited) QueryRefund(ctx context.Context, refundNo string) (RefundResult, error) {
	release, err := b.gate.enter(ctx, b.Code(), "query")
	if err != nil {
		return RefundResult{}, err
	}
	defer release()
	return b.Bank.QueryRefund(ctx, refundNo)
}

func (b *limited) Unbind(ctx context.Context, agreementNo string) error {
	release, err := b.gate.enter(ctx, b.Code(), "unbind")
	if err != nil {
		return err
	}
	defer release()
	return b.Bank.Unbind(ctx, agreementNo)
}

// limitedStatements is a Statementer whose calls pass the bank's gate.
type limitedStatements struct {
	st   Statementer
	gate *gate
	code string
}

func (s limitedStatements) Statement(ctx context.Context, date time.Time) (Statement, error) {
	release, err := s.gate.enter(ctx, s.code, "statement")
	if err != nil {
		return Statement{}, err
	}
	defer release()
	return s.st.Statement(ctx, date)
}
