package binding

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/quickpay/quickpay/internal/limits"
	"github.com/quickpay/quickpay/internal/sensitive"
)

// Abuse limits (DESIGN.md "Abuse limits"). A bind apply makes the bank text
// the phone and, with a wrong element, say which one; a consent code is a
// text too. Each is metered across merchants by keyed fingerprint, before
// the bank or carrier is asked: the count is committed before the call, so
// a caller who hangs up has been counted.
//
//   - bind applies that reach the bank, per card (PAN fingerprint): Limits.ApplyPerHour
//     and ApplyPerDay;
//   - texts to one phone (bank codes at apply and resend, quickpay's consent
//     codes): Limits.SMSPerDay;
//   - four-element mismatches the bank answered, per ID number and per card:
//     Limits.MismatchPerDay; at the cap, applies with that ID number or
//     that card are refused before the bank.
//
// The take's first statement rides in the round trip that reads the
// member and the card (Limiter.Queue). An apply quickpay then answers
// itself (a card already bound here, an unknown member, an identity
// mismatch, a card bound elsewhere) reaches no bank: it gives back what
// that statement counted, and is answered even where a limit would refuse.
// Only an apply for the bank finishes the take (and may get its 429). An
// apply the bank refused without texting (mismatch, decline, already
// bound) gives its text back; one it answered "already bound" gives its
// apply back too. Idempotent replays never reach the service.
//
// Keys are fingerprints under the current fp key: after a rotation a card's
// or phone's count starts again (at most one more allowance per rotation).

// Limiter is what binding needs of the abuse limits (internal/limits).
// Queue puts an apply's take in the batch that reads the member and the
// card; TakeIn takes in a transaction the caller holds (a resend's
// reservation), so the take needs no second connection.
type Limiter interface {
	Queue(b *pgx.Batch, now time.Time, checks ...limits.Check) (*limits.Pending, error)
	TakeIn(ctx context.Context, q limits.Querier, now time.Time, checks ...limits.Check) error
	Record(ctx context.Context, now time.Time, window time.Duration, kind limits.Kind, keys ...[]byte) error
	Release(ctx context.Context, at time.Time, keys ...limits.Key) error
}

var _ Limiter = (*limits.Limiter)(nil)

// Limits are the abuse limits' rules.
type Limits struct {
	ApplyPerHour   limits.Rule // per card; default 5 an hour
	ApplyPerDay    limits.Rule // per card; default 10 a day
	SMSPerDay      limits.Rule // per phone; default 10 a day
	MismatchPerDay limits.Rule // per ID number and per card; default 5 a day
}

// Day is the window of the daily limits.
const Day = 24 * time.Hour

// DefaultLimits are DESIGN.md's.
func DefaultLimits() Limits {
	return Limits{
		ApplyPerHour:   limits.Rule{Cap: 5, Window: time.Hour},
		ApplyPerDay:    limits.Rule{Cap: 10, Window: Day},
		SMSPerDay:      limits.Rule{Cap: 10, Window: Day},
		MismatchPerDay: limits.Rule{Cap: 5, Window: Day},
	}
}

// Validate refuses a rule that cannot be enforced.
func (l Limits) Validate() error {
	for name, r := range map[string]limits.Rule{"apply per hour": l.ApplyPerHour, "apply per day": l.ApplyPerDay,
		"sms per day": l.SMSPerDay, "mismatch per day": l.MismatchPerDay} {
		if !r.Valid() {
			return fmt.Errorf("binding: limit %s: want a cap ≥ 1 and a window ≥ 1s, got %d in %s", name, r.Cap, r.Window)
		}
	}
	return nil
}

// What is metered.
const (
	KindApplyCard     limits.Kind = "bind_apply_card"
	KindSMSPhone      limits.Kind = "sms_phone"
	KindMismatchID    limits.Kind = "mismatch_id_number"
	KindMismatchCard  limits.Kind = "mismatch_card"
	DomainPhone                   = "phone" // fingerprint domain of phone numbers
	errLimitedMessage             = "too many attempts for this card, phone or ID number"
)

// ErrRateLimited is what every *RateLimitedError matches.
var ErrRateLimited = errors.New(errLimitedMessage)

// RateLimitedError: an abuse limit refused the request before any bank or
// carrier call. RetryAfter is when it would pass.
type RateLimitedError struct{ RetryAfter time.Duration }

func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("%s; retry after %s", errLimitedMessage, e.RetryAfter)
}

// Is lets errors.Is(err, ErrRateLimited) match.
func (e *RateLimitedError) Is(target error) bool { return target == ErrRateLimited }

// ErrorFields implements the API's detail hook.
func (e *RateLimitedError) ErrorFields() map[string]any {
	return map[string]any{"retry_after": (&limits.LimitedError{RetryAfter: e.RetryAfter}).Seconds()}
}

// limited turns the limiter's refusal into the domain's.
func limited(err error) error {
	var le *limits.LimitedError
	if errors.As(err, &le) {
		return &RateLimitedError{RetryAfter: le.RetryAfter}
	}
	return err
}

// applyKeys are an apply's keyed fingerprints, which its limits meter by:
// the card's and the ID number's under the current fp key (the binding
// stores them too), and the phone's (made only with a limiter).
type applyKeys struct {
	card, phone, id []byte
}

// queueApply queues in b the take of an apply of the card and its text to
// the phone, if the card's and the ID number's mismatches leave room. Nil
// without a limiter; else, once b has been sent, Finish it or Cancel it.
func (s *Service) queueApply(b *pgx.Batch, now time.Time, k applyKeys) (*limits.Pending, error) {
	if s.limiter == nil {
		return nil, nil
	}
	l := s.limits
	return s.limiter.Queue(b, now,
		limits.Check{Kind: KindApplyCard, Key: k.card, Rule: l.ApplyPerHour, Take: true},
		limits.Check{Kind: KindApplyCard, Key: k.card, Rule: l.ApplyPerDay, Take: true},
		limits.Check{Kind: KindSMSPhone, Key: k.phone, Rule: l.SMSPerDay, Take: true},
		limits.Check{Kind: KindMismatchID, Key: k.id, Rule: l.MismatchPerDay},
		limits.Check{Kind: KindMismatchCard, Key: k.card, Rule: l.MismatchPerDay})
}

// settleApply adjusts the counts taken at `at` by the answer: a mismatch
// is counted, a text not sent is given back, and so is an apply that does
// not count (answered by quickpay, answered "already bound", or never
// sent: its call queued at the bank's gate past its time). Failures are
// logged: the apply has been answered, and a count missed errs on the
// caller's side once.
func (s *Service) settleApply(ctx context.Context, at time.Time, k applyKeys, mismatch, noSMS, uncounted bool) {
	if s.limiter == nil {
		return
	}
	ctx = context.WithoutCancel(ctx)
	var errs []error
	if mismatch {
		errs = append(errs, s.limiter.Record(ctx, at, s.limits.MismatchPerDay.Window, KindMismatchID, k.id))
		errs = append(errs, s.limiter.Record(ctx, at, s.limits.MismatchPerDay.Window, KindMismatchCard, k.card))
	}
	var back []limits.Key
	if noSMS {
		back = append(back, limits.Key{Kind: KindSMSPhone, Key: k.phone})
	}
	if uncounted {
		back = append(back, limits.Key{Kind: KindApplyCard, Key: k.card})
	}
	if len(back) > 0 {
		errs = append(errs, s.limiter.Release(ctx, at, back...))
	}
	if err := errors.Join(errs...); err != nil {
		s.log.Error("abuse limits: settling an apply", "err", err)
	}
}

// Querier is what a take runs on: the pool, or the transaction the caller
// holds (pgx.Tx), in which the count commits or rolls back.
type Querier = limits.Querier

// TakeSMS counts a text quickpay itself sends to phone (a mandate's consent
// code), before it is sent, on q: a caller that holds a transaction passes
// it, so the take needs no second connection. Errors: *RateLimitedError,
// or the vault's or database's.
func (s *Service) TakeSMS(ctx context.Context, q Querier, phone string) error {
	if s.limiter == nil {
		return nil
	}
	fp, err := s.vault.Fingerprint(ctx, DomainPhone, []byte(phone))
	if err != nil {
		return err
	}
	return s.takeSMS(ctx, q, s.now(), fp)
}

func (s *Service) takeSMS(ctx context.Context, q Querier, now time.Time, phoneFP []byte) error {
	return limited(s.limiter.TakeIn(ctx, q, now, limits.Check{Kind: KindSMSPhone, Key: phoneFP, Rule: s.limits.SMSPerDay, Take: true}))
}

// phoneFP fingerprints a binding's phone for its resends, decrypting it in
// the HSM (audited under ctx).
func (s *Service) phoneFP(ctx context.Context, b bindingRow) ([]byte, error) {
	phone, err := s.vault.Decrypt(ctx, b.PhoneCT, BindingAAD(b.MerchantID, b.ID, "phone"), sensitive.Access{
		MerchantID: b.MerchantID, Actor: actor(b.MerchantID), Subject: b.ID, Reason: "sms limit of a resend"})
	if err != nil {
		return nil, err
	}
	return s.vault.Fingerprint(ctx, DomainPhone, phone)
}
