package mandate

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/audit"
	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/ids"
	"github.com/quickpay/quickpay/internal/sensitive"
	"github.com/quickpay/quickpay/internal/webhooks"
)

// Cards is what mandates need of bound cards.
type Cards interface {
	// CardPhone returns the card and the phone reserved at its bank, read
	// on q: the caller's transaction if it holds one (so no second
	// connection is needed), else the pool.
	CardPhone(ctx context.Context, q binding.Querier, merchantID, cardID string, who sensitive.Access) (binding.Card, string, error)
	// Agreements returns cards with their bank agreement numbers, each
	// decryption audited for (actor, reason).
	Agreements(ctx context.Context, refs []binding.CardRef, actor, reason string) (map[binding.CardRef]binding.CardAgreement, error)
	// Revoke marks a card whose agreement ended at the bank; its mandates
	// are cancelled in the same transaction (CardEnded).
	Revoke(ctx context.Context, merchantID, cardID, reason string) (binding.Card, error)
}

// Hasher makes keyed hashes in the HSM (the vault's fingerprints).
type Hasher interface {
	Fingerprint(ctx context.Context, domain string, value []byte) ([]byte, error)
	Fingerprints(ctx context.Context, domain string, value []byte) ([][]byte, error)
}

// Banks reaches a card's bank.
type Banks interface {
	Bank(code string) (bankadapters.Bank, bool)
}

// SMS sends quickpay's own texts through the carrier.
type SMS interface {
	Send(ctx context.Context, to, text string) error
}

// PhoneLimit counts a text to a phone against the abuse limits shared with
// the banks' codes (binding.Service.TakeSMS), before it is sent, on q: the
// caller's transaction if it holds one (the count then commits with it,
// and no second connection is needed), else the pool. It returns the
// error the API answers (429 rate_limited) when the phone's texts are used
// up.
type PhoneLimit interface {
	TakeSMS(ctx context.Context, q binding.Querier, phone string) error
}

// Jobs enqueues River jobs in the caller's transaction.
type Jobs interface {
	InsertTx(ctx context.Context, tx pgx.Tx, args river.JobArgs, opts *river.InsertOpts) (*rivertype.JobInsertResult, error)
	InsertManyFastTx(ctx context.Context, tx pgx.Tx, params []river.InsertManyParams) (int, error)
}

// EmitFunc writes events, in order, in the transaction of the change they
// report (webhooks.Service.EmitAll).
type EmitFunc func(ctx context.Context, tx pgx.Tx, events []webhooks.Pending) error

// Config wires a Service.
type Config struct {
	Pool   *pgxpool.Pool // Required.
	Cards  Cards         // Required.
	Hasher Hasher        // Required.
	// Banks are the channels; each bank's calls are bounded by the
	// bankadapters.WithLimit around it (channels.Open), shared with binding.
	Banks Banks // Required.
	SMS   SMS   // Required.
	Jobs  Jobs  // Required: enqueues charge and query jobs.

	// PhoneLimit meters consent codes per phone. Optional: without it
	// texts are not limited.
	PhoneLimit PhoneLimit

	// Emit writes mandate and charge events. Optional.
	Emit EmitFunc
	// Payees names the merchant in the consent SMS. Defaults to the
	// merchants table in Pool.
	Payees Payees
	// Clock defaults to the system clock.
	Clock clock.Clock
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// QueryBackoff are the waits before each status query of an attempt
	// whose outcome is unknown. Defaults to 1, 2, 4, 8, 16, 32 s, then 1,
	// 2, 5, 10, 30 and 60 min; after the last, the daily statement
	// (Reconcile) settles it.
	QueryBackoff []time.Duration
	// NotifyURL is where a bank posts a charge's result asynchronously
	// (the API's /callbacks/banks/{code}); given the bank code. Optional
	// for banks that answer synchronously.
	NotifyURL func(bankCode string) string
	// Queue is the River queue of charge and query jobs. Defaults to
	// "charges".
	Queue string
	// ClaimBatch is how many due charges one transaction claims. Defaults
	// to 500.
	ClaimBatch int
	// JobBatch is the most attempts one charge job sends (concurrently,
	// within the bank's limits) and settles in one transaction. Defaults
	// to 20.
	JobBatch int
}

// Queue is the default River queue of the charge workers.
const Queue = "charges"

// DefaultQueryBackoff is Config.QueryBackoff's default.
var DefaultQueryBackoff = []time.Duration{
	1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second,
	1 * time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 30 * time.Minute, 60 * time.Minute,
}

// Service is the mandate domain.
type Service struct {
	cfg     Config
	pool    *pgxpool.Pool
	log     *slog.Logger
	metrics *mismatchMetrics
}

// New returns the service.
func New(cfg Config) (*Service, error) {
	if cfg.Pool == nil || cfg.Cards == nil || cfg.Hasher == nil || cfg.Banks == nil || cfg.SMS == nil || cfg.Jobs == nil {
		return nil, errors.New("mandate: Config needs Pool, Cards, Hasher, Banks, SMS and Jobs")
	}
	if cfg.Emit == nil {
		cfg.Emit = func(context.Context, pgx.Tx, []webhooks.Pending) error { return nil }
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System{}
	}
	if cfg.Payees == nil {
		cfg.Payees = merchantNames{cfg.Pool}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if len(cfg.QueryBackoff) == 0 {
		cfg.QueryBackoff = DefaultQueryBackoff
	}
	if cfg.NotifyURL == nil {
		cfg.NotifyURL = func(string) string { return "" }
	}
	if cfg.Queue == "" {
		cfg.Queue = Queue
	}
	if cfg.ClaimBatch <= 0 {
		cfg.ClaimBatch = 500
	}
	if cfg.JobBatch <= 0 {
		cfg.JobBatch = 20
	}
	return &Service{cfg: cfg, pool: cfg.Pool, log: cfg.Logger, metrics: newMismatchMetrics()}, nil
}

// now is the clock at Postgres' precision.
func (s *Service) now() time.Time { return s.cfg.Clock.Now().UTC().Truncate(time.Microsecond) }

func actor(merchantID string) string { return "api:" + merchantID }

// otpDomain is the fingerprint domain of consent codes: the code is hashed
// with its mandate id, so a hash says nothing outside its row.
const otpDomain = "mandate_otp"

// CreateInput is a new mandate.
type CreateInput struct {
	CardID      string
	Reference   string
	Description string
	AmountType  AmountType
	Amount      int64 // fixed
	MaxAmount   int64 // variable
	Currency    string
	Schedule    Schedule
	NoticeDays  int
}

func (in *CreateInput) validate() error {
	if in.Currency == "" {
		in.Currency = "CNY"
	}
	if !ids.Valid("card", in.CardID) {
		return &FieldError{Field: "card_id", Message: "must be a card id"}
	}
	// Both reach the consent SMS (text.go).
	if err := checkText("reference", in.Reference, 1, MaxReferenceLength); err != nil {
		return err
	}
	if err := checkText("description", in.Description, 0, MaxDescriptionLength); err != nil {
		return err
	}
	switch {
	case in.Currency != "CNY":
		return &FieldError{Field: "currency", Message: "must be CNY"}
	case in.NoticeDays < 0 || in.NoticeDays > MaxNoticeDays:
		return &FieldError{Field: "notice_days", Message: fmt.Sprintf("must be 0–%d", MaxNoticeDays)}
	}
	switch in.AmountType {
	case AmountFixed:
		if in.Amount <= 0 || in.Amount > MaxAmount {
			return &FieldError{Field: "amount", Message: fmt.Sprintf("fixed mandates need amount 1–%d fen", MaxAmount)}
		}
		if in.MaxAmount != 0 {
			return &FieldError{Field: "max_amount", Message: "is for variable mandates"}
		}
	case AmountVariable:
		if in.MaxAmount <= 0 || in.MaxAmount > MaxAmount {
			return &FieldError{Field: "max_amount", Message: fmt.Sprintf("variable mandates need max_amount 1–%d fen", MaxAmount)}
		}
		if in.Amount != 0 {
			return &FieldError{Field: "amount", Message: "is for fixed mandates"}
		}
	default:
		return &FieldError{Field: "amount_type", Message: "must be fixed or variable"}
	}
	if in.Schedule.Timezone == "" {
		in.Schedule.Timezone = DefaultTimezone
	}
	return in.Schedule.Validate()
}

// Create starts a mandate on an active card of the merchant's member and
// texts the member a consent code. The mandate is pending until Confirm.
//
// The mandate (with the code's hash) and the phone's count are written
// and committed first; the carrier is asked after, outside any
// transaction. A text the carrier refuses expires the mandate
// (consent_not_sent) and answers ErrSMSUnavailable: the merchant creates
// it again, and a late text cannot confirm a mandate the merchant was told
// failed. A crash between the commit and the text leaves it pending with
// no code sent: it can be resent, and it expires with its code.
//
// Errors: *FieldError, ErrNotFound (card), ErrCardNotActive, rate
// limited (PhoneLimit), ErrSMSUnavailable.
func (s *Service) Create(ctx context.Context, merchantID string, in CreateInput) (Mandate, error) {
	if err := in.validate(); err != nil {
		return Mandate{}, err
	}
	now := s.now()
	m := mandateRow{Mandate: Mandate{
		ID: ids.New("mdt"), MerchantID: merchantID, CardID: in.CardID, Reference: in.Reference,
		Description: in.Description, AmountType: in.AmountType, Amount: in.Amount, MaxAmount: in.MaxAmount,
		Currency: in.Currency, Schedule: in.Schedule, NoticeDays: in.NoticeDays, Status: StatusPendingConfirmation,
		OTPExpiresAt: now.Add(OTPValidity), OTPSends: 1, OTPLastSentAt: now, CreatedAt: now, UpdatedAt: now,
	}}
	card, phone, err := s.cfg.Cards.CardPhone(ctx, s.pool, merchantID, in.CardID, sensitive.Access{
		MerchantID: merchantID, Actor: actor(merchantID), Subject: in.CardID, Reason: "mandate consent sms"})
	if errors.Is(err, binding.ErrNotFound) {
		return Mandate{}, ErrNotFound
	} else if err != nil {
		return Mandate{}, err
	}
	if card.Status != binding.CardActive {
		return Mandate{}, ErrCardNotActive
	}
	m.MemberID = card.MemberID
	s.setNext(&m, m.Schedule.DateAt(now))
	if m.NextPeriod == "" {
		return Mandate{}, &FieldError{Field: "schedule.end_date", Message: "no charge date is left between today and end_date"}
	}
	payee, err := s.cfg.Payees.PayeeName(ctx, merchantID)
	if err != nil {
		return Mandate{}, err
	}
	hash, text, err := s.consentCode(ctx, m, card, payee)
	if err != nil {
		return Mandate{}, err
	}
	m.OTPHash = hash
	err = db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		if err := insertMandate(ctx, tx, m); err != nil {
			return fmt.Errorf("insert mandate: %w", err)
		}
		// Counted with the mandate, before the carrier is asked, and kept
		// if it fails.
		if err := s.takeSMS(ctx, tx, phone); err != nil {
			return err
		}
		return s.auditTx(ctx, tx, m.MerchantID, "mandate.create", m.ID, audit.OutcomeOK,
			map[string]any{"card": m.CardID, "otp_send": 1})
	})
	if err != nil {
		return Mandate{}, err
	}
	serr := s.cfg.SMS.Send(ctx, phone, text)
	if serr == nil {
		return m.Mandate, nil
	}
	// Recorded whatever the caller does now, bounded.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if err := db.InTx(rctx, s.pool, func(tx pgx.Tx) error {
		later := s.now()
		m.Status, m.StatusReason, m.OTPHash, m.NextPeriod, m.NextChargeDate, m.UpdatedAt =
			StatusExpired, "consent_not_sent", nil, "", time.Time{}, later
		if err := updateMandate(rctx, tx, m); err != nil {
			return err
		}
		return s.auditTx(rctx, tx, merchantID, "mandate.otp_send", m.ID, audit.OutcomeFailed, map[string]any{"send": 1})
	}); err != nil {
		return Mandate{}, errors.Join(fmt.Errorf("%w: %v", ErrSMSUnavailable, serr), err)
	}
	return Mandate{}, fmt.Errorf("%w: %v", ErrSMSUnavailable, serr)
}

// consentCode makes a fresh consent code for m: its keyed hash, to store,
// and the text that carries it to the member (payee: PayeeName's).
func (s *Service) consentCode(ctx context.Context, m mandateRow, card binding.Card, payee string) (hash []byte, text string, err error) {
	n, err := rand.Int(rand.Reader, big.NewInt(1_000_000))
	if err != nil {
		return nil, "", err
	}
	code := fmt.Sprintf("%06d", n.Int64())
	if hash, err = s.cfg.Hasher.Fingerprint(ctx, otpDomain, []byte(m.ID+"|"+code)); err != nil {
		return nil, "", err
	}
	payee = smsText(payee, maxPayeeLength)
	// The code comes first (carriers and phones pick the first digits);
	// then whom the member pays, for what, how much, from which card, and
	// how to end the authority later: through the payee (which cancels
	// the mandate) or at the issuing bank (which ends the agreement, and
	// quickpay then cancels the card's mandates).
	text = fmt.Sprintf("【quickpay】验证码%s，5分钟内有效。您正在授权%s从卡尾号%s的银行卡代扣：%s，%s。"+
		"如需取消授权，请联系%s，或联系发卡银行解除代扣协议。验证码请勿告诉他人。", code,
		payee, card.Last4, smsLabel(m.Description, m.Reference), amountText(m.Mandate), payee)
	return hash, text, nil
}

// takeSMS counts a text to phone against its abuse limit, on q (a
// transaction the caller holds, or the pool).
func (s *Service) takeSMS(ctx context.Context, q binding.Querier, phone string) error {
	if s.cfg.PhoneLimit == nil {
		return nil
	}
	return s.cfg.PhoneLimit.TakeSMS(ctx, q, phone)
}

// smsLabel names a mandate to its member: its description, else its
// reference, made SMS-safe (rows may predate checkText).
func smsLabel(description, reference string) string {
	if description != "" {
		return smsText(description, MaxDescriptionLength)
	}
	return smsText(reference, MaxReferenceLength)
}

func amountText(m Mandate) string {
	var per string
	switch m.Schedule.Interval {
	case IntervalMonth:
		per = "每月"
	case IntervalWeek:
		per = "每周"
	default:
		panic(fmt.Sprintf("mandate: amount text of interval %q", m.Schedule.Interval))
	}
	switch m.AmountType {
	case AmountFixed:
		return per + yuan(m.Amount)
	case AmountVariable:
		return per + "不超过" + yuan(m.MaxAmount)
	default:
		panic(fmt.Sprintf("mandate: amount text of amount type %q", m.AmountType))
	}
}

func yuan(fen int64) string { return fmt.Sprintf("¥%d.%02d", fen/100, fen%100) }

// setNext points m at its first period on or after from, or marks it
// unable to charge more.
func (s *Service) setNext(m *mandateRow, from time.Time) {
	p, ok := m.Schedule.FirstOnOrAfter(from)
	if !ok || (m.Schedule.MaxCharges > 0 && m.ChargesCount >= m.Schedule.MaxCharges) {
		m.NextPeriod, m.NextChargeDate = "", time.Time{}
		return
	}
	m.NextPeriod, m.NextChargeDate = p.Key, p.Date
}

// Get returns one of the merchant's mandates. Errors: ErrNotFound.
func (s *Service) Get(ctx context.Context, merchantID, id string) (Mandate, error) {
	if !ids.Valid("mdt", id) {
		return Mandate{}, ErrNotFound
	}
	m, err := getMandate(ctx, s.pool, merchantID, id, false)
	return s.view(m.Mandate), err
}

// view shows a pending mandate whose consent code ran out as expired, as
// the next write will record it.
func (s *Service) view(m Mandate) Mandate {
	if m.Status == StatusPendingConfirmation && s.now().After(m.OTPExpiresAt) {
		m.Status, m.StatusReason, m.NextPeriod, m.NextChargeDate = StatusExpired, "consent_expired", "", time.Time{}
	}
	if m.Status == StatusPaused {
		// Nothing is charged while paused, and resume picks the next date
		// afresh: the stored one (kept for resume) may have passed.
		m.NextPeriod, m.NextChargeDate = "", time.Time{}
	}
	return m
}

// List returns the merchant's mandates on a card or of a member (one of
// them is required), oldest first. Errors: *FieldError.
func (s *Service) List(ctx context.Context, merchantID, cardID, memberID string) ([]Mandate, error) {
	if (cardID == "") == (memberID == "") {
		return nil, &FieldError{Field: "card_id", Message: "give card_id or member_id"}
	}
	ms, err := listMandates(ctx, s.pool, merchantID, cardID, memberID)
	for i := range ms {
		ms[i] = s.view(ms[i])
	}
	return ms, err
}

// Confirm checks the member's consent code and activates the mandate.
// Confirming an active mandate again returns it.
//
// Errors: ErrNotFound, *FieldError, *OTPIncorrectError,
// ErrOTPAttemptsExceeded, ErrConsentExpired, ErrInvalidState.
func (s *Service) Confirm(ctx context.Context, merchantID, id string, otp sensitive.OTP) (Mandate, error) {
	code := otp.Reveal()
	if len(code) != 6 || strings.Trim(code, "0123456789") != "" {
		return Mandate{}, &FieldError{Field: "otp", Message: "must be 6 digits"}
	}
	var out Mandate
	var final error
	err := s.pending(ctx, merchantID, id, &final, func(tx pgx.Tx, m *mandateRow, now time.Time) error {
		if m.Status == StatusActive {
			out = m.Mandate
			return nil
		}
		fps, err := s.cfg.Hasher.Fingerprints(ctx, otpDomain, []byte(m.ID+"|"+code))
		if err != nil {
			return err
		}
		match := 0
		for _, fp := range fps {
			match |= subtle.ConstantTimeCompare(fp, m.OTPHash)
		}
		if match != 1 {
			m.OTPAttempts++
			if m.OTPAttempts >= OTPMaxAttempts {
				m.Status, m.StatusReason, m.OTPHash, m.NextPeriod, m.NextChargeDate =
					StatusExpired, "otp_attempts_exceeded", nil, "", time.Time{}
				final = ErrOTPAttemptsExceeded
			} else {
				final = &OTPIncorrectError{AttemptsLeft: m.AttemptsLeft()}
			}
			m.UpdatedAt = now
			if err := updateMandate(ctx, tx, *m); err != nil {
				return err
			}
			return s.auditTx(ctx, tx, merchantID, "mandate.otp_verify", m.ID, audit.OutcomeFailed,
				map[string]any{"attempt": m.OTPAttempts})
		}
		m.Status, m.StatusReason, m.OTPHash, m.UpdatedAt = StatusActive, "", nil, now
		s.setNext(m, m.Schedule.DateAt(now))
		if m.NextPeriod == "" {
			m.Status, m.StatusReason = StatusCompleted, "end_date"
		}
		if err := updateMandate(ctx, tx, *m); err != nil {
			return err
		}
		if err := s.auditTx(ctx, tx, merchantID, "mandate.activate", m.ID, audit.OutcomeOK, nil); err != nil {
			return err
		}
		out = m.Mandate
		if err := s.emit(ctx, tx, merchantID, "mandate.activated", mandateEvent(m.Mandate)); err != nil {
			return err
		}
		if m.Status == StatusCompleted {
			// Consented after its last charge date: it ends at once.
			if err := s.auditTx(ctx, tx, merchantID, "mandate.complete", m.ID, audit.OutcomeOK,
				map[string]any{"status": m.Status, "reason": m.StatusReason}); err != nil {
				return err
			}
			return s.emit(ctx, tx, merchantID, "mandate.completed", mandateEvent(m.Mandate))
		}
		return nil
	})
	if err != nil {
		return Mandate{}, err
	}
	if final != nil {
		return Mandate{}, final
	}
	return out, nil
}

// pending runs fn on a mandate locked in a transaction, after checking it
// waits for its consent code (or is active, which fn may accept). A code
// that has run out expires the mandate and sets *final.
func (s *Service) pending(ctx context.Context, merchantID, id string, final *error,
	fn func(tx pgx.Tx, m *mandateRow, now time.Time) error) error {
	if !ids.Valid("mdt", id) {
		return ErrNotFound
	}
	return db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		m, err := getMandate(ctx, tx, merchantID, id, true)
		if err != nil {
			return err
		}
		now := s.now()
		switch {
		case m.Status == StatusActive:
			return fn(tx, &m, now)
		case m.Status == StatusExpired && m.StatusReason == "otp_attempts_exceeded":
			return ErrOTPAttemptsExceeded
		case m.Status == StatusExpired:
			return ErrConsentExpired
		case m.Status != StatusPendingConfirmation:
			return ErrInvalidState
		case now.After(m.OTPExpiresAt):
			m.Status, m.StatusReason, m.OTPHash, m.NextPeriod, m.NextChargeDate, m.UpdatedAt =
				StatusExpired, "consent_expired", nil, "", time.Time{}, now
			*final = ErrConsentExpired
			if err := updateMandate(ctx, tx, m); err != nil {
				return err
			}
			return s.auditTx(ctx, tx, merchantID, "mandate.expire", m.ID, audit.OutcomeOK, nil)
		}
		return fn(tx, &m, now)
	})
}

// Resend texts a fresh consent code: at least 60 s after the last, at
// most 5 sends, within the phone's daily texts. As binding's resend, the
// send is reserved and committed first, in one short transaction (the
// mandate's count and times, the new code's hash, the phone's count),
// then the carrier is asked, outside any transaction, then the outcome is
// audited: a caller who hangs up once the carrier has been asked has used
// the send, and the code texted is the one stored. A send the carrier
// refused is used too (it may have gone out). Errors: ErrNotFound,
// ErrConsentExpired, ErrInvalidState, *ResendTooSoonError,
// ErrResendLimit, rate limited (PhoneLimit), ErrSMSUnavailable.
func (s *Service) Resend(ctx context.Context, merchantID, id string) (Mandate, error) {
	var out Mandate
	var final error
	var phone, text string
	// Read before the transaction: Payees may read on the pool.
	payee, err := s.cfg.Payees.PayeeName(ctx, merchantID)
	if err != nil {
		return Mandate{}, err
	}
	err = s.pending(ctx, merchantID, id, &final, func(tx pgx.Tx, m *mandateRow, now time.Time) error {
		if m.Status != StatusPendingConfirmation {
			return ErrInvalidState
		}
		if m.OTPSends >= OTPMaxSends {
			return ErrResendLimit
		}
		if wait := m.ResendAfter().Sub(now); wait > 0 {
			return &ResendTooSoonError{RetryAfter: wait}
		}
		// The card, the limit and the audit of the phone's decryption
		// all run in this transaction: it holds a connection and the
		// mandate's lock, so it must not wait for a second connection.
		card, p, err := s.cfg.Cards.CardPhone(audit.WithExecer(ctx, tx), tx, merchantID, m.CardID, sensitive.Access{
			MerchantID: merchantID, Actor: actor(merchantID), Subject: m.CardID, Reason: "mandate consent sms"})
		if err != nil {
			return err
		}
		hash, t, err := s.consentCode(ctx, *m, card, payee)
		if err != nil {
			return err
		}
		if err := s.takeSMS(ctx, tx, p); err != nil {
			return err
		}
		m.OTPHash = hash
		m.OTPSends++
		m.OTPLastSentAt, m.OTPExpiresAt, m.UpdatedAt = now, now.Add(OTPValidity), now
		if err := updateMandate(ctx, tx, *m); err != nil {
			return err
		}
		out, phone, text = m.Mandate, p, t
		return nil
	})
	if err != nil {
		return Mandate{}, err
	}
	if final != nil {
		return Mandate{}, final
	}
	serr := s.cfg.SMS.Send(ctx, phone, text)
	// The outcome is recorded whatever the caller does now, bounded.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	outcome, details := audit.OutcomeOK, map[string]any{"send": out.OTPSends}
	if serr != nil {
		outcome = audit.OutcomeFailed
	}
	if err := db.InTx(rctx, s.pool, func(tx pgx.Tx) error {
		return s.auditTx(rctx, tx, merchantID, "mandate.otp_send", id, outcome, details)
	}); err != nil {
		return Mandate{}, err
	}
	if serr != nil {
		return Mandate{}, fmt.Errorf("%w: %v", ErrSMSUnavailable, serr)
	}
	return out, nil
}

// recordTimeout bounds the writes that record what the outside world was
// asked, which the caller cannot cancel.
const recordTimeout = 15 * time.Second

// transition changes a mandate's status in a transaction: fn checks and
// edits it; the change is audited and its event emitted.
func (s *Service) transition(ctx context.Context, merchantID, id, action string,
	fn func(tx pgx.Tx, m *mandateRow, now time.Time) (event string, err error)) (Mandate, error) {
	if !ids.Valid("mdt", id) {
		return Mandate{}, ErrNotFound
	}
	var out Mandate
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		m, err := getMandate(ctx, tx, merchantID, id, true)
		if err != nil {
			return err
		}
		now := s.now()
		before := m.Status
		event, err := fn(tx, &m, now)
		if err != nil {
			return err
		}
		if m.Status != before {
			m.UpdatedAt = now
		}
		out = s.view(m.Mandate)
		if m.Status == before {
			return nil // already there: idempotent
		}
		return s.record(ctx, tx, m, action, event, now)
	})
	return out, err
}

// record writes a mandate's new state, fails its charges that have not
// reached a bank if it stopped charging (paused, cancelled, expired),
// audits and emits. A completed mandate has no period left, but the
// charges of its last periods still go ahead (and are retried).
func (s *Service) record(ctx context.Context, tx pgx.Tx, m mandateRow, action, event string, now time.Time) error {
	if err := updateMandate(ctx, tx, m); err != nil {
		return err
	}
	if m.Status != StatusActive && m.Status != StatusCompleted {
		failed, err := failPendingCharges(ctx, tx, m.MerchantID, m.ID, "mandate_"+string(m.Status), now)
		if err != nil {
			return err
		}
		for _, c := range failed {
			if err := s.emit(ctx, tx, m.MerchantID, "charge.failed", chargeEvent(c)); err != nil {
				return err
			}
		}
	}
	if err := s.auditTx(ctx, tx, m.MerchantID, action, m.ID, audit.OutcomeOK,
		map[string]any{"status": m.Status, "reason": m.StatusReason}); err != nil {
		return err
	}
	if event == "" {
		return nil
	}
	return s.emit(ctx, tx, m.MerchantID, event, mandateEvent(m.Mandate))
}

// Pause stops an active mandate charging: periods that fall due while it
// is paused are skipped, and charges not yet sent to the bank fail with
// mandate_paused. Pausing a paused mandate returns it. Errors: ErrNotFound,
// ErrInvalidState.
func (s *Service) Pause(ctx context.Context, merchantID, id string) (Mandate, error) {
	return s.transition(ctx, merchantID, id, "mandate.pause", func(_ pgx.Tx, m *mandateRow, _ time.Time) (string, error) {
		switch m.Status {
		case StatusPaused:
			return "", nil
		case StatusActive:
			m.Status, m.StatusReason = StatusPaused, "merchant"
			return "mandate.paused", nil
		}
		return "", ErrInvalidState
	})
}

// Resume makes a paused mandate charge again from its next period on or
// after today; the periods it skipped are not charged. Resuming an active
// mandate returns it. Errors: ErrNotFound, ErrInvalidState.
func (s *Service) Resume(ctx context.Context, merchantID, id string) (Mandate, error) {
	return s.transition(ctx, merchantID, id, "mandate.resume", func(_ pgx.Tx, m *mandateRow, now time.Time) (string, error) {
		switch m.Status {
		case StatusActive:
			return "", nil
		case StatusPaused:
			m.Status, m.StatusReason = StatusActive, ""
			// A period already charged stays charged: start after it.
			from := m.Schedule.DateAt(now)
			if !m.NextChargeDate.IsZero() && m.NextChargeDate.After(from) {
				from = m.NextChargeDate
			}
			s.setNext(m, from)
			if m.NextPeriod == "" {
				m.Status, m.StatusReason = StatusCompleted, completionReason(*m)
				return "mandate.completed", nil
			}
			return "mandate.resumed", nil
		}
		return "", ErrInvalidState
	})
}

// Cancel ends a mandate for good; charges not yet sent to the bank fail
// with mandate_cancelled. Cancelling a cancelled mandate returns it.
// A completed mandate whose last charge has not gone to the bank yet can
// be cancelled too. Errors: ErrNotFound, ErrInvalidState (expired, or
// completed with nothing left to charge).
func (s *Service) Cancel(ctx context.Context, merchantID, id string) (Mandate, error) {
	return s.transition(ctx, merchantID, id, "mandate.cancel", func(tx pgx.Tx, m *mandateRow, _ time.Time) (string, error) {
		switch m.Status {
		case StatusCancelled:
			return "", nil
		case StatusCompleted:
			// Completed once its last charge was made, which may wait for
			// its date (and its retries) for days yet: that charge can
			// still be stopped.
			pending, err := hasPendingCharges(ctx, tx, m.MerchantID, m.ID)
			if err != nil {
				return "", err
			}
			if !pending {
				return "", ErrInvalidState
			}
			fallthrough
		case StatusActive, StatusPaused, StatusPendingConfirmation:
			m.Status, m.StatusReason, m.OTPHash, m.NextPeriod, m.NextChargeDate = StatusCancelled, "merchant", nil, "", time.Time{}
			return "mandate.cancelled", nil
		}
		return "", ErrInvalidState
	})
}

// CancelForCard cancels, in the card's transaction, every mandate on a card
// that was unbound or revoked (status is the card's new status).
func (s *Service) CancelForCard(ctx context.Context, tx pgx.Tx, merchantID, cardID, status string) error {
	rows, err := tx.Query(ctx, `SELECT `+mandateCols+` FROM mandates WHERE merchant_id = $1 AND card_id = $2
		AND (status IN ('pending_confirmation', 'active', 'paused') OR (status = 'completed' AND EXISTS (
			SELECT 1 FROM charges c WHERE c.merchant_id = mandates.merchant_id AND c.mandate_id = mandates.id
			AND c.status IN ('scheduled', 'retry_scheduled'))))
		ORDER BY id FOR UPDATE`, merchantID, cardID)
	if err != nil {
		return err
	}
	ms, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (mandateRow, error) { return scanMandate(r) })
	if err != nil {
		return err
	}
	now := s.now()
	for _, m := range ms {
		m.Status, m.StatusReason, m.OTPHash, m.NextPeriod, m.NextChargeDate, m.UpdatedAt =
			StatusCancelled, "card_"+status, nil, "", time.Time{}, now
		if err := s.record(ctx, tx, m, "mandate.cancel", "mandate.cancelled", now); err != nil {
			return err
		}
	}
	return nil
}

func completionReason(m mandateRow) string {
	if m.Schedule.MaxCharges > 0 && m.ChargesCount >= m.Schedule.MaxCharges {
		return "max_charges"
	}
	return "end_date"
}

// ChargeInput is a variable mandate's amount for a period.
type ChargeInput struct {
	Amount      int64
	Period      string // defaults to the mandate's next period
	Description string
}

// PostCharge sets a variable mandate's amount for a period (by default its
// next one). It is charged on the period's date, after its notice.
//
// Errors: ErrNotFound, *FieldError, ErrNotVariable, ErrInvalidState (not
// active), ErrAmountOverMax, ErrPeriodCharged.
func (s *Service) PostCharge(ctx context.Context, merchantID, mandateID string, in ChargeInput) (Charge, error) {
	if in.Amount <= 0 {
		return Charge{}, &FieldError{Field: "amount", Message: "must be positive fen"}
	}
	// It reaches the pre-debit SMS (text.go).
	if err := checkText("description", in.Description, 0, MaxDescriptionLength); err != nil {
		return Charge{}, err
	}
	if !ids.Valid("mdt", mandateID) {
		return Charge{}, ErrNotFound
	}
	var c Charge
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		// Locked: a pause or cancel cannot slip in between the check and
		// the insert and leave a charge on a mandate that no longer charges.
		row, err := getMandate(ctx, tx, merchantID, mandateID, true)
		if err != nil {
			return err
		}
		m := s.view(row.Mandate)
		switch {
		case m.AmountType != AmountVariable:
			return ErrNotVariable
		case m.Status != StatusActive:
			return ErrInvalidState
		case in.Amount > m.MaxAmount:
			return ErrAmountOverMax
		}
		if in.Period == "" {
			in.Period = m.NextPeriod
		}
		p, err := m.Schedule.Period(in.Period)
		if err != nil {
			return err
		}
		if m.NextChargeDate.IsZero() || p.Date.Before(m.NextChargeDate) {
			return &FieldError{Field: "period", Message: "is past: the mandate's next period is " + m.NextPeriod}
		}
		if err := postedWithinMax(ctx, tx, row, p); err != nil {
			return err
		}
		if in.Description == "" {
			in.Description = m.Description
		}
		var noticeAt time.Time
		c, noticeAt = s.newCharge(m, p, in.Amount, in.Description, s.now())
		if err := insertCharge(ctx, tx, c, m.CardID, noticeAt); err != nil {
			return err
		}
		return s.auditTx(ctx, tx, merchantID, "charge.post", c.ID, audit.OutcomeOK,
			map[string]any{"mandate": m.ID, "period": p.Key, "amount": in.Amount})
	})
	if err != nil {
		return Charge{}, err
	}
	return c, nil
}

// postedWithinMax refuses an amount for period p of a variable mandate
// with max_charges when the amounts already posted for its coming periods
// would use up the charges left. Each posted amount becomes a charge on
// its date and counts then; the mandate completes at its max_charges-th,
// so a period posted beyond it would be debited after the member's
// consent ended.
func postedWithinMax(ctx context.Context, q querier, m mandateRow, p Period) error {
	if m.Schedule.MaxCharges == 0 {
		return nil
	}
	var ahead int
	if err := q.QueryRow(ctx, `SELECT count(*) FROM charges WHERE mandate_id = $1 AND charge_date >= $2
		AND period <> $3 AND status <> 'failed'`, m.ID, m.NextChargeDate, p.Key).Scan(&ahead); err != nil {
		return err
	}
	if left := m.Schedule.MaxCharges - m.ChargesCount; ahead >= left {
		return &FieldError{Field: "period", Message: fmt.Sprintf("is beyond max_charges: %d charges left, %d of them posted already", left, ahead)}
	}
	return nil
}

// newCharge is a scheduled charge of m for period p, and its notice time
// (zero when the mandate gives no notice).
func (s *Service) newCharge(m Mandate, p Period, amount int64, description string, now time.Time) (Charge, time.Time) {
	c := Charge{
		ID: ids.New("chg"), MerchantID: m.MerchantID, MandateID: m.ID, Period: p.Key, ChargeDate: p.Date,
		Amount: amount, Currency: m.Currency, Description: description, Status: ChargeScheduled,
		NextAttemptAt: m.Schedule.DueAt(p.Date), CreatedAt: now, UpdatedAt: now,
	}
	var noticeAt time.Time
	if m.NoticeDays > 0 {
		noticeAt = m.Schedule.DueAt(p.Date.AddDate(0, 0, -m.NoticeDays))
	}
	return c, noticeAt
}

// GetCharge returns one of the merchant's charges with its attempts.
// Errors: ErrNotFound.
func (s *Service) GetCharge(ctx context.Context, merchantID, id string) (Charge, error) {
	if !ids.Valid("chg", id) {
		return Charge{}, ErrNotFound
	}
	return getCharge(ctx, s.pool, merchantID, id)
}

// ListCharges returns a mandate's charges by date. Errors: ErrNotFound.
func (s *Service) ListCharges(ctx context.Context, merchantID, mandateID string) ([]Charge, error) {
	if _, err := s.Get(ctx, merchantID, mandateID); err != nil {
		return nil, err
	}
	return listCharges(ctx, s.pool, merchantID, mandateID)
}

func (s *Service) auditTx(ctx context.Context, q audit.Execer, merchantID, action, subject, outcome string, details map[string]any) error {
	d := map[string]any{"outcome": outcome}
	for k, v := range details {
		d[k] = v
	}
	who := actor(merchantID)
	if strings.HasPrefix(action, "charge.") || strings.HasPrefix(action, "scheduler.") {
		who = "worker:charges"
	}
	return audit.Write(ctx, q, audit.Entry{MerchantID: merchantID, Actor: who, Action: action, Subject: subject, Details: d})
}

// MandateEvent is the data of a mandate.* event: the mandate as the API
// shows it, in brief (api/openapi.yaml, Event.data).
type MandateEvent struct {
	MandateID      string        `json:"mandate_id"`
	CardID         string        `json:"card_id"`
	MemberID       string        `json:"member_id"`
	Reference      string        `json:"reference"`
	Status         MandateStatus `json:"status"`
	StatusReason   *string       `json:"status_reason"`
	NextChargeDate *string       `json:"next_charge_date"` // YYYY-MM-DD
}

// ChargeEvent is the data of a charge.* event: the charge as the API
// shows it, without its attempts (api/openapi.yaml, Event.data).
type ChargeEvent struct {
	ChargeID      string  `json:"charge_id"`
	MandateID     string  `json:"mandate_id"`
	Period        string  `json:"period"`
	ChargeDate    string  `json:"charge_date"` // YYYY-MM-DD
	Amount        int64   `json:"amount"`
	Currency      string  `json:"currency"`
	Status        string  `json:"status"`
	FailureCode   *string `json:"failure_code"`
	NextAttemptAt *string `json:"next_attempt_at"` // RFC 3339
	BankReference *string `json:"bank_reference"`
}

func mandateEvent(m Mandate) MandateEvent {
	if m.Status == StatusPaused {
		m.NextChargeDate = time.Time{} // as Get shows it (view)
	}
	return MandateEvent{MandateID: m.ID, CardID: m.CardID, MemberID: m.MemberID, Reference: m.Reference,
		Status: m.Status, StatusReason: nullable(m.StatusReason), NextChargeDate: nullable(dateString(m.NextChargeDate))}
}

func chargeEvent(c Charge) ChargeEvent {
	return ChargeEvent{ChargeID: c.ID, MandateID: c.MandateID, Period: c.Period, ChargeDate: dateString(c.ChargeDate),
		Amount: c.Amount, Currency: c.Currency, Status: c.Status, FailureCode: nullable(c.FailureCode),
		NextAttemptAt: nullableTime(c.NextAttemptAt), BankReference: nullable(c.BankReference)}
}

func dateString(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Format(time.DateOnly)
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func nullableTime(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	return nullable(t.UTC().Format(time.RFC3339))
}

// emit writes one event in tx.
func (s *Service) emit(ctx context.Context, tx pgx.Tx, merchantID, eventType string, data any) error {
	return s.cfg.Emit(ctx, tx, []webhooks.Pending{{MerchantID: merchantID, Type: eventType, Data: data}})
}
