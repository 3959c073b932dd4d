package binding

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/internal/audit"
	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/ids"
	"github.com/quickpay/quickpay/internal/sensitive"
	"github.com/quickpay/quickpay/internal/webhooks"
)

// Vault is what binding needs of the token vault.
type Vault interface {
	Encrypt(ctx context.Context, plaintext, aad []byte) ([]byte, error)
	Decrypt(ctx context.Context, ct, aad []byte, who sensitive.Access) ([]byte, error)
	Fingerprint(ctx context.Context, domain string, value []byte) ([]byte, error)
	Fingerprints(ctx context.Context, domain string, value []byte) ([][]byte, error)
}

// Banks routes cards and reaches their banks.
type Banks interface {
	Route(pan sensitive.PAN) (bankadapters.CardInfo, error)
	Bank(code string) (bankadapters.Bank, bool)
}

// EmitFunc queues the statements that write events on b, which the
// service sends in its transaction with the change the events report, in
// one round trip; after that it runs deliver in the same transaction
// (webhooks.Service.Queue).
type EmitFunc func(b *pgx.Batch, events []webhooks.Pending) (deliver func(context.Context, pgx.Tx) error, err error)

// CardEndedFunc is told, in the card's transaction, that a card is no
// longer active.
type CardEndedFunc func(ctx context.Context, tx pgx.Tx, merchantID, cardID, status string) error

// Config wires a Service.
type Config struct {
	Pool  *pgxpool.Pool // Required.
	Vault Vault         // Required.
	Banks Banks         // Required.
	// Emit writes binding.bound, binding.failed and card.unbound. Optional.
	Emit EmitFunc
	// CardEnded runs in the transaction that unbinds or revokes a card,
	// with the card's new status: mandates on it are cancelled with it.
	// Optional.
	CardEnded CardEndedFunc
	// Clock defaults to the system clock.
	Clock clock.Clock
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Limiter meters binding's abuse limits across serve instances
	// (limits.go). Optional: without it nothing is limited.
	Limiter Limiter
	// Limits are the limits' rules. Defaults to DefaultLimits().
	Limits Limits
	// BankCallsInTx bounds the requests that wait on a bank while holding
	// a database connection and the binding's or card's row lock (Confirm,
	// Unbind). Further ones queue before taking a connection, so a
	// slow bank cannot take the whole pool from the rest of the API.
	// Defaults to half the pool's connections.
	BankCallsInTx int
}

// Service is the binding domain.
type Service struct {
	pool      *pgxpool.Pool
	vault     Vault
	banks     Banks
	emit      EmitFunc
	ended     CardEndedFunc
	clock     clock.Clock
	log       *slog.Logger
	bankSlots chan struct{} // Config.BankCallsInTx
	limiter   Limiter
	limits    Limits
}

// now is the clock at Postgres' precision, so answers show the times later
// reads return and comparisons with stored times are exact.
func (s *Service) now() time.Time { return s.clock.Now().UTC().Truncate(time.Microsecond) }

// New returns the service.
func New(cfg Config) (*Service, error) {
	if cfg.Pool == nil || cfg.Vault == nil || cfg.Banks == nil {
		return nil, errors.New("binding: Config needs Pool, Vault and Banks")
	}
	if cfg.Emit == nil {
		cfg.Emit = func(*pgx.Batch, []webhooks.Pending) (func(context.Context, pgx.Tx) error, error) {
			return func(context.Context, pgx.Tx) error { return nil }, nil
		}
	}
	if cfg.CardEnded == nil {
		cfg.CardEnded = func(context.Context, pgx.Tx, string, string, string) error { return nil }
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Limits == (Limits{}) {
		cfg.Limits = DefaultLimits()
	}
	if err := cfg.Limits.Validate(); err != nil {
		return nil, err
	}
	if cfg.BankCallsInTx <= 0 {
		cfg.BankCallsInTx = max(1, int(cfg.Pool.Config().MaxConns)/2)
	}
	return &Service{pool: cfg.Pool, vault: cfg.Vault, banks: cfg.Banks, emit: cfg.Emit, ended: cfg.CardEnded,
		clock: cfg.Clock, log: cfg.Logger, bankSlots: make(chan struct{}, cfg.BankCallsInTx),
		limiter: cfg.Limiter, limits: cfg.Limits}, nil
}

// bankSlot takes one of the Config.BankCallsInTx slots for a transaction
// that waits on a bank; the caller releases it when the transaction ends.
// A caller that ctx ends first gets ErrBankUnavailable, having held no
// connection.
func (s *Service) bankSlot(ctx context.Context) (release func(), err error) {
	select {
	case s.bankSlots <- struct{}{}:
		return func() { <-s.bankSlots }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: waiting for other calls to the banks: %w", ErrBankUnavailable, ctx.Err())
	}
}

// AAD builders: each ciphertext is bound to its table, merchant, row and
// field, so a ciphertext moved to another row does not decrypt.

// BindingAAD is the AAD of a binding's field (pan, holder_name, id_number, phone).
func BindingAAD(merchantID, bindingID, field string) []byte {
	return []byte("binding|" + merchantID + "|" + bindingID + "|" + field)
}

// MemberAAD is the AAD of a member's field (name, id_number, phone).
func MemberAAD(merchantID, memberID, field string) []byte {
	return []byte("member|" + merchantID + "|" + memberID + "|" + field)
}

// CardAgreementAAD is the AAD of a card's agreement number.
func CardAgreementAAD(merchantID, cardID string) []byte {
	return []byte("card|" + merchantID + "|" + cardID + "|agreement")
}

// Fingerprint domains of identity fields.
const (
	DomainPAN      = "pan"
	DomainName     = "name"
	DomainIDNumber = "id_number"
)

func normName(s string) string       { return strings.Join(strings.Fields(s), " ") }
func normID(s string) string         { return strings.ToUpper(s) }
func actor(merchantID string) string { return "api:" + merchantID }

// MemberInput creates an explicit member.
type MemberInput struct {
	ExternalID string
	Name       string
	IDNumber   sensitive.IDNumber
	Phone      string
}

// CreateMember registers an explicit member. Errors: *FieldError,
// ErrMemberExists.
func (s *Service) CreateMember(ctx context.Context, merchantID string, in MemberInput) (Member, error) {
	now := s.now()
	switch {
	case !ValidExternalID(in.ExternalID):
		return Member{}, &FieldError{Field: "external_id", Message: "must be 1–128 printable characters"}
	case in.Name != "" && !ValidName(in.Name):
		return Member{}, &FieldError{Field: "name", Message: "must be 2–30 letters"}
	case !in.IDNumber.IsZero() && !ValidResidentID(in.IDNumber.Reveal(), now):
		return Member{}, &FieldError{Field: "id_number", Message: "is not a valid resident ID number"}
	case in.Phone != "" && !ValidMobile(in.Phone):
		return Member{}, &FieldError{Field: "phone", Message: "is not a mainland mobile number"}
	}
	m := Member{ID: ids.New("mem"), MerchantID: merchantID, ExternalID: in.ExternalID, Kind: KindExplicit, CreatedAt: now}
	id, err := s.sealIdentity(ctx, func(field string) []byte { return MemberAAD(merchantID, m.ID, field) },
		in.Name, in.IDNumber, in.Phone)
	if err != nil {
		return Member{}, err
	}
	if err := insertMember(ctx, s.pool, m, id); err != nil {
		return Member{}, fmt.Errorf("create member: %w", err)
	}
	return m, nil
}

// sealIdentity encrypts and fingerprints the identity fields given.
func (s *Service) sealIdentity(ctx context.Context, aad func(field string) []byte, name string, idNo sensitive.IDNumber, phone string) (identity, error) {
	var id identity
	var err error
	// Stored normalized, so that a fingerprint recomputed from the plaintext
	// (after an fp key rotation) equals the one made here.
	name = normName(name)
	if name != "" {
		if id.NameCT, err = s.vault.Encrypt(ctx, []byte(name), aad("name")); err != nil {
			return id, err
		}
		if id.NameFP, err = s.vault.Fingerprint(ctx, DomainName, []byte(normName(name))); err != nil {
			return id, err
		}
	}
	if !idNo.IsZero() {
		if id.IDNumberCT, err = s.vault.Encrypt(ctx, []byte(normID(idNo.Reveal())), aad("id_number")); err != nil {
			return id, err
		}
		if id.IDNumberFP, err = s.vault.Fingerprint(ctx, DomainIDNumber, []byte(normID(idNo.Reveal()))); err != nil {
			return id, err
		}
	}
	if phone != "" {
		if id.PhoneCT, err = s.vault.Encrypt(ctx, []byte(phone), aad("phone")); err != nil {
			return id, err
		}
	}
	return id, nil
}

// GetMember returns one of the merchant's members. Errors: ErrNotFound.
func (s *Service) GetMember(ctx context.Context, merchantID, id string) (Member, error) {
	m, err := getMember(ctx, s.pool, merchantID, id)
	return m.Member, err
}

// FindMember returns the merchant's member with externalID. Errors: ErrNotFound.
func (s *Service) FindMember(ctx context.Context, merchantID, externalID string) (Member, error) {
	m, err := getMemberByExternalID(ctx, s.pool, merchantID, externalID)
	return m.Member, err
}

// BindInput starts a binding: MemberID or ExternalUserID (implicit), and
// the four elements; Expiry and CVV2 for credit cards.
type BindInput struct {
	MemberID       string
	ExternalUserID string
	HolderName     string
	IDNumber       sensitive.IDNumber
	CardNumber     sensitive.PAN
	Phone          string
	Expiry         sensitive.Expiry
	CVV2           sensitive.CVV2
}

// StartBinding validates, routes and tokenizes the card, checks it against
// the member's identity and the merchant's cards, and asks the bank to send
// its code. A card already bound to the same member returns that card
// (Binding.Existing) without a bank call.
//
// Errors: *FieldError, ErrNotFound (member), ErrCardUnsupported,
// *IdentityMismatchError, ErrCardBoundElsewhere, *ElementsMismatchError,
// ErrCardDeclined, ErrBankUnavailable.
func (s *Service) StartBinding(ctx context.Context, merchantID string, in BindInput) (Binding, error) {
	now := s.now()
	switch {
	case (in.MemberID == "") == (in.ExternalUserID == ""):
		return Binding{}, &FieldError{Field: "member_id", Message: "give member_id or external_user_id, not both"}
	case in.ExternalUserID != "" && !ValidExternalID(in.ExternalUserID):
		return Binding{}, &FieldError{Field: "external_user_id", Message: "must be 1–128 printable characters"}
	case !ValidName(in.HolderName):
		return Binding{}, &FieldError{Field: "holder_name", Message: "must be 2–30 letters (· allowed)"}
	case !ValidResidentID(in.IDNumber.Reveal(), now):
		return Binding{}, &FieldError{Field: "id_number", Message: "is not a valid 18-character resident ID number"}
	case !ValidPAN(in.CardNumber.Reveal()):
		return Binding{}, &FieldError{Field: "card_number", Message: "must be 13–19 digits passing the Luhn check"}
	case !ValidMobile(in.Phone):
		return Binding{}, &FieldError{Field: "phone", Message: "must be a mainland mobile number"}
	}
	route, err := s.banks.Route(in.CardNumber)
	if err != nil {
		return Binding{}, ErrCardUnsupported
	}
	bank, ok := s.banks.Bank(route.BankCode)
	if !ok {
		return Binding{}, ErrCardUnsupported
	}
	if route.CardType == bankadapters.Credit {
		switch {
		case !ValidExpiry(in.Expiry.Reveal(), now):
			return Binding{}, &FieldError{Field: "expiry", Message: "credit cards need expiry as MMYY, not in the past"}
		case !ValidCVV2(in.CVV2.Reveal()):
			return Binding{}, &FieldError{Field: "cvv2", Message: "credit cards need a 3-digit cvv2"}
		}
	} else if !in.Expiry.IsZero() || !in.CVV2.IsZero() {
		// Debit cards take neither; drop them rather than send them.
		in.Expiry, in.CVV2 = sensitive.Expiry{}, sensitive.CVV2{}
	}

	// The member, if it exists already, and the card, if it is active
	// here already.
	fps, err := s.vault.Fingerprints(ctx, DomainPAN, []byte(in.CardNumber.Reveal()))
	if err != nil {
		return Binding{}, err
	}
	member, card, err := findMemberAndCard(ctx, s.pool, merchantID, in.MemberID, in.ExternalUserID, fps)
	if err != nil {
		return Binding{}, err
	}
	if member == nil && in.MemberID != "" {
		return Binding{}, ErrNotFound
	}
	if member != nil {
		if err := s.checkIdentity(ctx, *member, in.HolderName, in.IDNumber); err != nil {
			return Binding{}, err
		}
	}
	if card != nil {
		if member == nil || card.MemberID != member.ID {
			return Binding{}, ErrCardBoundElsewhere
		}
		return s.existingCardBinding(ctx, merchantID, *member, *card, route, in, fps[0])
	}

	b := bindingRow{Binding: Binding{
		ID: ids.New("bnd"), MerchantID: merchantID, ExternalUserID: in.ExternalUserID, Status: StatusOTPSent,
		Card: CardInfo{BankCode: route.BankCode, BankName: route.BankName, CardType: string(route.CardType),
			MaskedPAN: in.CardNumber.Masked(), Last4: in.CardNumber.Last4()},
		OTPExpiresAt: now.Add(OTPValidity), OTPSends: 1, OTPLastSentAt: now, CreatedAt: now,
	}}
	if member != nil {
		b.MemberID, b.ExternalUserID = member.ID, ""
	}
	if err := s.sealBinding(ctx, &b, in, fps[0]); err != nil {
		return Binding{}, err
	}
	// The abuse limits, counted before the bank is asked.
	keys := applyKeys{card: b.PANFP, id: b.IDNumberFP}
	if s.limiter != nil {
		if keys.phone, err = s.vault.Fingerprint(ctx, DomainPhone, []byte(in.Phone)); err != nil {
			return Binding{}, err
		}
		// A refusal writes nothing: a flood of them must cost little.
		if err := s.takeApply(ctx, now, keys); err != nil {
			return Binding{}, err
		}
	}

	sess, err := bank.BindApply(ctx, bankadapters.BindRequest{
		RequestNo: b.ID, CardNumber: in.CardNumber, HolderName: in.HolderName, IDNumber: in.IDNumber,
		Phone: in.Phone, Expiry: in.Expiry, CVV2: in.CVV2,
	})
	if err != nil {
		s.audit(ctx, merchantID, "bind.apply", b.ID, audit.OutcomeFailed, map[string]any{
			"bank": route.BankCode, "class": bankadapters.OutcomeOf(err), "bank_code": bankCode(err)})
		switch bankadapters.OutcomeOf(err) {
		case bankadapters.OutcomeElementsMismatch:
			s.settleApply(ctx, now, keys, true, true, false)
		case bankadapters.OutcomeAlreadyBound:
			s.settleApply(ctx, now, keys, false, true, true)
		case bankadapters.OutcomeHardDecline, bankadapters.OutcomeRetryableDecline:
			s.settleApply(ctx, now, keys, false, true, false)
		}
		return Binding{}, s.bankError(err)
	}
	b.BankBindRef = sess.BindRef
	actx, rows := audit.WithCollector(ctx)
	s.auditRow(actx, merchantID, "bind.apply", b.ID, audit.OutcomeOK, map[string]any{"bank": route.BankCode})
	s.auditRow(actx, merchantID, "otp.send", b.ID, audit.OutcomeOK, map[string]any{"send": 1, "by": "bank"})
	if err := s.save(ctx, b, rows); err != nil {
		return Binding{}, err
	}
	return b.Binding, nil
}

// save inserts a new binding with its audit rows: one round trip, one
// implicit transaction (a batch sent outside a transaction runs as one).
func (s *Service) save(ctx context.Context, b bindingRow, rows *audit.Collector) error {
	var batch pgx.Batch
	queueInsertBinding(&batch, b)
	rows.Queue(&batch)
	if err := s.pool.SendBatch(ctx, &batch).Close(); err != nil {
		return fmt.Errorf("save binding: %w", err)
	}
	return nil
}

// sealBinding encrypts and fingerprints the binding's card and identity.
func (s *Service) sealBinding(ctx context.Context, b *bindingRow, in BindInput, panFP []byte) error {
	aad := func(field string) []byte { return BindingAAD(b.MerchantID, b.ID, field) }
	var err error
	if b.PANCT, err = s.vault.Encrypt(ctx, []byte(in.CardNumber.Reveal()), aad("pan")); err != nil {
		return err
	}
	b.PANFP = panFP
	id, err := s.sealIdentity(ctx, func(field string) []byte {
		if field == "name" {
			field = "holder_name"
		}
		return aad(field)
	}, in.HolderName, in.IDNumber, in.Phone)
	if err != nil {
		return err
	}
	b.identity = id
	return nil
}

// checkIdentity refuses a holder or ID number other than the member's.
func (s *Service) checkIdentity(ctx context.Context, m memberRow, name string, idNo sensitive.IDNumber) error {
	if ok, err := s.fpMatches(ctx, m.IDNumberFP, DomainIDNumber, []byte(normID(idNo.Reveal()))); err != nil || !ok {
		if err != nil {
			return err
		}
		return &IdentityMismatchError{Field: "id_number"}
	}
	if ok, err := s.fpMatches(ctx, m.NameFP, DomainName, []byte(normName(name))); err != nil || !ok {
		if err != nil {
			return err
		}
		return &IdentityMismatchError{Field: "holder_name"}
	}
	return nil
}

// fpMatches reports whether value's fingerprint under any fp key version
// still accepted is stored (true when nothing is stored).
func (s *Service) fpMatches(ctx context.Context, stored []byte, domain string, value []byte) (bool, error) {
	if stored == nil {
		return true, nil
	}
	fps, err := s.vault.Fingerprints(ctx, domain, value)
	if err != nil {
		return false, err
	}
	for _, fp := range fps {
		if string(fp) == string(stored) {
			return true, nil
		}
	}
	return false, nil
}

// existingCardBinding records a binding that found the card already bound
// to this member: it is bound at once, to the existing card.
func (s *Service) existingCardBinding(ctx context.Context, merchantID string, m memberRow, card Card,
	route bankadapters.CardInfo, in BindInput, panFP []byte) (Binding, error) {
	now := s.now()
	b := bindingRow{Binding: Binding{
		ID: ids.New("bnd"), MerchantID: merchantID, MemberID: m.ID, Status: StatusBound, CardID: card.ID,
		Card: card.CardInfo, OTPExpiresAt: now, OTPLastSentAt: now, OTPSends: 0, CreatedAt: now, Existing: true,
	}}
	if err := s.sealBinding(ctx, &b, in, panFP); err != nil {
		return Binding{}, err
	}
	actx, rows := audit.WithCollector(ctx)
	s.auditRow(actx, merchantID, "bind.apply", b.ID, audit.OutcomeOK,
		map[string]any{"bank": route.BankCode, "existing_card": card.ID})
	if err := s.save(ctx, b, rows); err != nil {
		return Binding{}, err
	}
	return b.Binding, nil
}

// GetBinding returns one of the merchant's bindings, expiring it first if
// its code has run out. Errors: ErrNotFound.
func (s *Service) GetBinding(ctx context.Context, merchantID, id string) (Binding, error) {
	b, err := getBinding(ctx, s.pool, merchantID, id, false)
	if err != nil {
		return Binding{}, err
	}
	if b.Status == StatusOTPSent && s.now().After(b.OTPExpiresAt) {
		b.Status, b.FailureCode = StatusExpired, "binding_expired"
	}
	return b.Binding, nil
}

// Resend asks the bank for a fresh code: at least 60 s after the last one,
// at most 5 sends, within the phone's daily texts. The send is reserved and
// committed first, in one transaction (the binding's count, the new code's
// expiry, and the phone's count), then the bank is asked, then its answer
// is written: a caller who hangs up once the bank has been asked has used
// the send. Errors: ErrNotFound, ErrBindingExpired,
// ErrBindingNotPending, *ResendTooSoonError, ErrResendLimit,
// *RateLimitedError, ErrBankUnavailable (the binding stays);
// ErrCardDeclined, *ElementsMismatchError, ErrOTPAttemptsExceeded,
// ErrCardBoundElsewhere (the bank refused: the binding has failed). A card
// bound to the same member meanwhile returns the binding bound to it.
func (s *Service) Resend(ctx context.Context, merchantID, id string) (Binding, error) {
	var b bindingRow
	var final error
	now := s.now()
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		if b, err = s.pending(ctx, tx, merchantID, id); err != nil {
			return err
		}
		if expired, err := s.expireIfDue(ctx, tx, &b, now); expired || err != nil {
			final = ErrBindingExpired
			return err
		}
		if b.OTPSends >= OTPMaxSends {
			return ErrResendLimit
		}
		if wait := b.ResendAfter().Sub(now); wait > 0 {
			return &ResendTooSoonError{RetryAfter: wait}
		}
		if _, ok := s.banks.Bank(b.Card.BankCode); !ok {
			return ErrBankUnavailable
		}
		if s.limiter != nil {
			fp, err := s.phoneFP(audit.WithExecer(ctx, tx), b)
			if err != nil {
				return err
			}
			// In this transaction: its connection and the binding's lock
			// are held, so a take on the pool could wait on a connection
			// that every other resend holds too.
			if err := s.takeSMS(ctx, tx, now, fp); err != nil {
				return err
			}
		}
		// The new code's validity starts with its send: a confirm or read
		// during the bank's call must not expire the binding at the old
		// code's expiry, nor must a crash before the answer is written.
		b.OTPSends++
		b.OTPLastSentAt, b.OTPExpiresAt = now, now.Add(OTPValidity)
		return updateBinding(ctx, tx, b, "", now)
	})
	if err != nil || final != nil {
		return Binding{}, errors.Join(err, final)
	}
	bank, _ := s.banks.Bank(b.Card.BankCode)
	berr := bank.BindResend(ctx, b.BankBindRef)
	// The answer is written whatever the caller does now, bounded.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), confirmTimeout)
	defer cancel()
	var out Binding
	err = db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		b, err := getBinding(ctx, tx, merchantID, id, true)
		if err != nil {
			return err
		}
		if berr == nil {
			// The code's expiry was set with the reservation.
			out = b.Binding
			return s.auditTx(ctx, tx, merchantID, "otp.send", b.ID, audit.OutcomeOK, map[string]any{"send": b.OTPSends, "by": "bank"})
		}
		// The failed send is audited and committed either way.
		if err := s.auditTx(ctx, tx, merchantID, "otp.send", b.ID, audit.OutcomeFailed, map[string]any{
			"send": b.OTPSends, "class": bankadapters.OutcomeOf(berr)}); err != nil {
			return err
		}
		if b.Status != StatusOTPSent {
			// Settled meanwhile (confirmed, failed): the bank's answer
			// to this resend changes nothing.
			final = waiting(b)
			return nil
		}
		var events []webhooks.Pending
		switch bankadapters.OutcomeOf(berr) {
		case bankadapters.OutcomeOTPExpired:
			// The bank has forgotten the session.
			b.Status, b.FailureCode, final = StatusExpired, "binding_expired", ErrBindingExpired
		case bankadapters.OutcomeOTPAttemptsExceeded:
			b.OTPAttempts = OTPMaxAttempts
			b.Status, b.FailureCode, final = StatusFailed, "otp_attempts_exceeded", ErrOTPAttemptsExceeded
		case bankadapters.OutcomeHardDecline, bankadapters.OutcomeRetryableDecline:
			// The bank refuses the card now (frozen, closed since
			// apply): no code will come, so the binding ends.
			b.Status, b.FailureCode, final = StatusFailed, "card_declined", ErrCardDeclined
		case bankadapters.OutcomeElementsMismatch:
			b.Status, b.FailureCode, final = StatusFailed, "elements_mismatch", s.bankError(berr)
		case bankadapters.OutcomeAlreadyBound:
			// Another binding of the card was confirmed meanwhile.
			actx, rows := audit.WithCollector(ctx)
			var aerr error
			if out, final, aerr = s.alreadyBound(actx, tx, b, berr, ""); aerr != nil {
				return aerr
			}
			return rows.Flush(ctx, tx)
		default:
			// Not reached, or no answer: the binding stays, retryable
			// once the gap has passed (the send is used, and the expiry
			// it set stays: a code may have gone out).
			final = fmt.Errorf("%w: %v", ErrBankUnavailable, berr)
			return nil
		}
		if b.Status == StatusFailed {
			events = append(events, bindingEvent(b, "binding.failed"))
		}
		var batch pgx.Batch
		queueUpdateBinding(&batch, b, bankCode(berr), s.now())
		return s.send(ctx, tx, &batch, events...)
	})
	if err != nil {
		return Binding{}, err
	}
	return out, final
}

// expireIfDue marks a binding whose code has run out as expired (in tx).
func (s *Service) expireIfDue(ctx context.Context, tx pgx.Tx, b *bindingRow, now time.Time) (bool, error) {
	if !now.After(b.OTPExpiresAt) {
		return false, nil
	}
	b.Status, b.FailureCode = StatusExpired, "binding_expired"
	if err := updateBinding(ctx, tx, *b, "", now); err != nil {
		return true, err
	}
	return true, s.auditTx(ctx, tx, b.MerchantID, "otp.verify", b.ID, audit.OutcomeFailed, map[string]any{"reason": "expired"})
}

// pending loads a binding for update and checks its status still waits for
// a code. Callers then check the time with expireIfDue.
func (s *Service) pending(ctx context.Context, tx pgx.Tx, merchantID, id string) (bindingRow, error) {
	b, err := getBinding(ctx, tx, merchantID, id, true)
	if err != nil {
		return b, err
	}
	return b, waiting(b)
}

// waiting checks a binding's status still waits for a code.
func waiting(b bindingRow) error {
	switch b.Status {
	case StatusOTPSent:
		return nil
	case StatusExpired:
		return ErrBindingExpired
	case StatusFailed:
		if b.FailureCode == "otp_attempts_exceeded" {
			return ErrOTPAttemptsExceeded
		}
	}
	return ErrBindingNotPending
}

// confirmTimeout bounds a confirm, which its caller cannot cancel: the
// bank's call (its adapter has its own, shorter, timeout) and the writes.
const confirmTimeout = 45 * time.Second

// Confirm checks the user's code. On success the card is created (and,
// for an implicit binding, the member), binding.bound is emitted, and the
// binding is bound. Confirming a bound binding again returns it.
//
// Errors: ErrNotFound, *FieldError, *OTPIncorrectError (with attempts
// left), ErrOTPAttemptsExceeded, ErrBindingExpired, ErrCardBoundElsewhere,
// ErrCardDeclined, ErrBankUnavailable.
func (s *Service) Confirm(ctx context.Context, merchantID, id string, otp sensitive.OTP) (Binding, error) {
	if !ValidOTP(otp.Reveal()) {
		return Binding{}, &FieldError{Field: "otp", Message: "must be 6 digits"}
	}
	release, err := s.bankSlot(ctx)
	if err != nil {
		return Binding{}, err
	}
	defer release()
	// Once the bank confirms, its agreement exists whatever the caller
	// does: a client that hangs up must not roll back the card and leave
	// an agreement quickpay does not know. The confirm runs to its end,
	// bounded.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), confirmTimeout)
	defer cancel()
	var out Binding
	var final error // an error to return after committing the state change
	err = db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		// The transaction's audit rows (a decryption's too) are held and
		// sent with its closing statements (send), or at the end.
		ctx, rows := audit.WithCollector(ctx)
		var err error
		if out, final, err = s.confirm(ctx, tx, merchantID, id, otp); err != nil {
			return err
		}
		return rows.Flush(ctx, tx)
	})
	if err != nil {
		return Binding{}, err
	}
	return out, final
}

// confirm is Confirm in tx; it returns the binding, the error to return
// after committing, and an error that must roll back.
func (s *Service) confirm(ctx context.Context, tx pgx.Tx, merchantID, id string, otp sensitive.OTP) (Binding, error, error) {
	b, err := getBinding(ctx, tx, merchantID, id, true)
	if err != nil {
		return Binding{}, nil, err
	}
	if b.Status == StatusBound {
		return b.Binding, nil, nil
	}
	if err := waiting(b); err != nil {
		return Binding{}, nil, err
	}
	if expired, err := s.expireIfDue(ctx, tx, &b, s.now()); expired || err != nil {
		return Binding{}, ErrBindingExpired, err
	}
	bank, ok := s.banks.Bank(b.Card.BankCode)
	if !ok {
		return Binding{}, nil, ErrBankUnavailable
	}
	agreementNo, berr := bank.BindConfirm(ctx, b.BankBindRef, otp)
	if berr != nil {
		return s.refused(ctx, tx, b, berr)
	}
	s.auditRow(ctx, merchantID, "otp.verify", b.ID, audit.OutcomeOK, nil)
	return s.bind(ctx, tx, b, agreementNo)
}

// refused records the bank's refusal of a code or a binding.
func (s *Service) refused(ctx context.Context, tx pgx.Tx, b bindingRow, berr error) (Binding, error, error) {
	now := s.now()
	outcome := bankadapters.OutcomeOf(berr)
	details := map[string]any{"class": outcome, "bank_code": bankCode(berr)}
	var final error
	switch outcome {
	case bankadapters.OutcomeOTPWrong:
		b.OTPAttempts++
		if b.OTPAttempts >= OTPMaxAttempts {
			b.Status, b.FailureCode, final = StatusFailed, "otp_attempts_exceeded", ErrOTPAttemptsExceeded
		} else {
			final = &OTPIncorrectError{AttemptsLeft: b.AttemptsLeft()}
		}
	case bankadapters.OutcomeOTPAttemptsExceeded:
		b.OTPAttempts = OTPMaxAttempts
		b.Status, b.FailureCode, final = StatusFailed, "otp_attempts_exceeded", ErrOTPAttemptsExceeded
	case bankadapters.OutcomeOTPExpired:
		b.Status, b.FailureCode, final = StatusExpired, "binding_expired", ErrBindingExpired
	case bankadapters.OutcomeAlreadyBound:
		return s.alreadyBound(ctx, tx, b, berr, "otp.verify")
	case bankadapters.OutcomeUnavailable, bankadapters.OutcomeProcessing:
		// The binding stays as it was: the user may try the code again.
		s.auditRow(ctx, b.MerchantID, "otp.verify", b.ID, audit.OutcomeFailed, details)
		return Binding{}, ErrBankUnavailable, nil
	default:
		b.Status, b.FailureCode, final = StatusFailed, "card_declined", ErrCardDeclined
	}
	var batch pgx.Batch
	queueUpdateBinding(&batch, b, bankCode(berr), now)
	s.auditRow(ctx, b.MerchantID, "otp.verify", b.ID, audit.OutcomeFailed, details)
	var events []webhooks.Pending
	if b.Status == StatusFailed {
		events = append(events, bindingEvent(b, "binding.failed"))
	}
	if err := s.send(ctx, tx, &batch, events...); err != nil {
		return Binding{}, nil, err
	}
	return b.Binding, final, nil
}

// alreadyBound settles a binding whose confirm the bank refused as
// "already bound": another binding of the same card was confirmed after
// this one began. The card that binding made is returned if it is this
// member's (the issue: don't fail on the bank's "already bound"); another
// member's card makes it card_bound_elsewhere.
//
// action names the refused call's audit row (otp.verify); "" when the
// caller has written it.
func (s *Service) alreadyBound(ctx context.Context, tx pgx.Tx, b bindingRow, berr error, action string) (Binding, error, error) {
	now := s.now()
	details := map[string]any{"class": bankadapters.OutcomeOf(berr), "bank_code": bankCode(berr)}
	refused := func() {
		if action != "" {
			s.auditRow(ctx, b.MerchantID, action, b.ID, audit.OutcomeFailed, details)
		}
	}
	card, err := activeCardByFingerprint(ctx, tx, b.MerchantID, [][]byte{b.PANFP})
	if errors.Is(err, ErrNotFound) {
		// No card here holds the agreement: another merchant's, or that of
		// a binding of this card whose confirm has not committed yet (it
		// cannot be seen, and failing now would refuse the member its own
		// card). The binding stays, retryable: a later try finds that
		// card; for another merchant's it ends when its code expires.
		refused()
		return Binding{}, fmt.Errorf("%w: the bank has an agreement for the card that no card here holds yet", ErrBankUnavailable), nil
	}
	if err != nil {
		return Binding{}, nil, err
	}
	memberID := b.MemberID
	if memberID == "" {
		m, gerr := getMemberByExternalID(ctx, tx, b.MerchantID, b.ExternalUserID)
		if gerr != nil && !errors.Is(gerr, ErrNotFound) {
			return Binding{}, nil, gerr
		}
		memberID = m.ID
	}
	var batch pgx.Batch
	if memberID != "" && card.MemberID == memberID {
		b.Status, b.MemberID, b.CardID = StatusBound, memberID, card.ID
		queueUpdateBinding(&batch, b, "", now)
		refused()
		s.auditRow(ctx, b.MerchantID, "bind.bound", b.ID, audit.OutcomeOK,
			map[string]any{"card": card.ID, "member": memberID, "existing_card": true})
		if err := s.send(ctx, tx, &batch, bindingEvent(b, "binding.bound")); err != nil {
			return Binding{}, nil, err
		}
		return b.Binding, nil, nil
	}
	b.Status, b.FailureCode = StatusFailed, failureCode(ErrCardBoundElsewhere)
	if b.ExternalUserID != "" {
		b.MemberID = "" // an implicit binding names a member only once bound
	}
	queueUpdateBinding(&batch, b, bankCode(berr), now)
	refused()
	if err := s.send(ctx, tx, &batch, bindingEvent(b, "binding.failed")); err != nil {
		return Binding{}, nil, err
	}
	return b.Binding, ErrCardBoundElsewhere, nil
}

// bind creates the card (and the implicit member) for a confirmed binding.
func (s *Service) bind(ctx context.Context, tx pgx.Tx, b bindingRow, agreementNo string) (Binding, error, error) {
	now := s.now()
	var batch pgx.Batch // the closing statements, sent with the event
	card := Card{ID: ids.New("card"), MerchantID: b.MerchantID, Status: CardActive, CardInfo: b.Card, CreatedAt: now}
	agreementCT, err := s.vault.Encrypt(ctx, []byte(agreementNo), CardAgreementAAD(b.MerchantID, card.ID))
	if err != nil {
		return Binding{}, nil, err
	}
	// cardTaken: the statement that made the member found an active card
	// with this number already, so inserting the card again would only
	// conflict again.
	cardWritten, cardTaken := false, false
	// What the bank verified of an existing member's identity, recorded
	// only once the card is in: a binding failed below completes nothing.
	var verified func(*pgx.Batch)
	made := ""        // the implicit member made here, if any
	replaced := false // an existing card took this binding's agreement
	if b.MemberID == "" {
		// Implicit: the member is created now, with the card, or found if
		// the same external id bound a card meanwhile.
		m := Member{ID: ids.New("mem"), MerchantID: b.MerchantID, ExternalID: b.ExternalUserID, Kind: KindImplicit, CreatedAt: now}
		card.MemberID = m.ID
		memberWritten, written, err := insertMemberWithCard(ctx, tx, m, b.ID, card, b.PANCT, b.PANFP, agreementCT)
		if err != nil {
			return Binding{}, nil, err
		}
		if !memberWritten {
			// The member exists (made explicitly, or by another binding
			// meanwhile): as below.
			existing, gerr := lockMember(ctx, tx, whereMemberExternalID, b.MerchantID, b.ExternalUserID)
			if gerr != nil {
				return Binding{}, nil, gerr
			}
			if verified, err = s.memberIdentity(ctx, existing, b); err != nil {
				return s.failAfterBank(ctx, tx, &batch, b, agreementNo, err)
			}
			m = existing.Member
		}
		if memberWritten {
			made = m.ID
		}
		b.MemberID, card.MemberID = m.ID, m.ID
		cardWritten, cardTaken = written, memberWritten && !written
	} else {
		// Locked: two bindings of a partly declared member confirmed at
		// once must not both complete its identity.
		m, err := lockMember(ctx, tx, whereMemberID, b.MerchantID, b.MemberID)
		if err != nil {
			return Binding{}, nil, err
		}
		if verified, err = s.memberIdentity(ctx, m, b); err != nil {
			return s.failAfterBank(ctx, tx, &batch, b, agreementNo, err)
		}
		card.MemberID = m.ID
	}
	if !cardWritten {
		err := errActiveCardExists
		if !cardTaken {
			err = insertCard(ctx, tx, card, b.ID, b.PANCT, b.PANFP, agreementCT)
		}
		if err != nil {
			if !errors.Is(err, errActiveCardExists) {
				return Binding{}, nil, err
			}
			// Another binding of this card won the race.
			existing, gerr := activeCardByFingerprint(ctx, tx, b.MerchantID, [][]byte{b.PANFP})
			if gerr != nil {
				return Binding{}, nil, gerr
			}
			if existing.MemberID != b.MemberID {
				if made != "" {
					// An implicit member exists once its binding succeeds.
					queueDeleteMember(&batch, b.MerchantID, made)
				}
				return s.failAfterBank(ctx, tx, &batch, b, agreementNo, ErrCardBoundElsewhere)
			}
			// The bank made this confirm an agreement rather than answer
			// "already bound", so the card's own is gone there: the card
			// keeps the new one. If the card ended meanwhile (unbound,
			// revoked), this binding makes it anew.
			ct, err := s.vault.Encrypt(ctx, []byte(agreementNo), CardAgreementAAD(b.MerchantID, existing.ID))
			if err != nil {
				return Binding{}, nil, err
			}
			if ok, err := setActiveCardAgreement(ctx, tx, b.MerchantID, existing.ID, ct, now); err != nil {
				return Binding{}, nil, err
			} else if ok {
				card, replaced = existing, true
			} else if err := insertCard(ctx, tx, card, b.ID, b.PANCT, b.PANFP, agreementCT); err != nil {
				return Binding{}, nil, err
			}
		}
	}
	if verified != nil {
		verified(&batch)
	}
	b.Status, b.CardID = StatusBound, card.ID
	queueUpdateBinding(&batch, b, "", now)
	details := map[string]any{"card": card.ID, "member": b.MemberID}
	if replaced {
		details["agreement_replaced"] = true
	}
	s.auditRow(ctx, b.MerchantID, "bind.bound", b.ID, audit.OutcomeOK, details)
	if err := s.send(ctx, tx, &batch, bindingEvent(b, "binding.bound")); err != nil {
		return Binding{}, nil, err
	}
	return b.Binding, nil, nil
}

// memberIdentity checks a binding the bank confirmed against its existing
// member, read under the member's lock (another binding may have completed
// the identity since this one was checked at apply), and returns what
// records the bank's verification: what the member did not declare is kept
// by reference to this binding (a declared value, checked equal, still
// reads first), so the next binding is checked against both.
func (s *Service) memberIdentity(ctx context.Context, m memberRow, b bindingRow) (func(*pgx.Batch), error) {
	if err := s.checkBindingIdentity(ctx, m, b); err != nil {
		return nil, err
	}
	switch {
	case m.NameFP == nil || m.IDNumberFP == nil:
		return func(batch *pgx.Batch) { queueSetMemberIdentity(batch, b.MerchantID, m.ID, b) }, nil
	case !m.Verified:
		return func(batch *pgx.Batch) { queueMarkMemberVerified(batch, b.MerchantID, m.ID) }, nil
	}
	return nil, nil
}

// failAfterBank fails a binding the bank confirmed but quickpay must refuse
// (identity or card conflict found only now), and releases the agreement.
// batch holds the statements bind queued so far.
func (s *Service) failAfterBank(ctx context.Context, tx pgx.Tx, batch *pgx.Batch, b bindingRow, agreementNo string, why error) (Binding, error, error) {
	outcome, details := audit.OutcomeOK, map[string]any{"reason": failureCode(why)}
	bank, ok := s.banks.Bank(b.Card.BankCode)
	err := fmt.Errorf("no channel to bank %s", b.Card.BankCode)
	if ok {
		err = bank.Unbind(ctx, agreementNo)
	}
	if err != nil {
		// The bank keeps an agreement quickpay will not use: operators
		// release it (the audit row names the binding; its bank
		// reference is on the binding).
		outcome, details["bank_code"] = audit.OutcomeFailed, bankCode(err)
		s.log.Error("release of a refused binding's agreement failed; release it at the bank",
			"binding", b.ID, "bank", b.Card.BankCode, "err", err)
	}
	s.auditRow(ctx, b.MerchantID, "bind.release", b.ID, outcome, details)
	b.Status, b.FailureCode = StatusFailed, failureCode(why)
	if b.ExternalUserID != "" {
		// An implicit binding names a member only once bound (the bindings
		// CHECK); a failed one keeps its external user id alone.
		b.MemberID = ""
	}
	queueUpdateBinding(batch, b, "", s.now())
	if err := s.send(ctx, tx, batch, bindingEvent(b, "binding.failed")); err != nil {
		return Binding{}, nil, err
	}
	return b.Binding, why, nil
}

func failureCode(err error) string {
	switch {
	case errors.Is(err, ErrCardBoundElsewhere):
		return "card_bound_elsewhere"
	case errors.Is(err, ErrIdentityMismatch):
		return "identity_mismatch"
	}
	return "failed"
}

// checkBindingIdentity refuses a binding whose holder or ID number is not
// the member's, by their fingerprints (see apply's checkIdentity).
func (s *Service) checkBindingIdentity(ctx context.Context, m memberRow, b bindingRow) error {
	for _, f := range []struct {
		field, domain string
		stored, fp    []byte // the member's fingerprint and the binding's
		ct            []byte // the binding's value
	}{
		{"id_number", DomainIDNumber, m.IDNumberFP, b.IDNumberFP, b.IDNumberCT},
		{"holder_name", DomainName, m.NameFP, b.NameFP, b.NameCT},
	} {
		if f.stored == nil || f.fp == nil || string(f.stored) == string(f.fp) {
			continue
		}
		// Different fingerprints may be one value under two fp key
		// versions (a rotation's re-keying has reached one row and not the
		// other): the binding's value is compared as apply compares.
		value, err := s.vault.Decrypt(ctx, f.ct, BindingAAD(b.MerchantID, b.ID, f.field), sensitive.Access{
			MerchantID: b.MerchantID, Actor: actor(b.MerchantID), Subject: b.ID, Reason: "identity check across fp key versions"})
		if err != nil {
			return err
		}
		if ok, err := s.fpMatches(ctx, f.stored, f.domain, value); err != nil || !ok {
			if err != nil {
				return err
			}
			return &IdentityMismatchError{Field: f.field}
		}
	}
	return nil
}

// GetCard returns one of the merchant's cards. Errors: ErrNotFound.
func (s *Service) GetCard(ctx context.Context, merchantID, id string) (Card, error) {
	c, _, err := getCard(ctx, s.pool, merchantID, id, false)
	return c, err
}

// ListCards returns a member's cards, oldest first. Errors: ErrNotFound
// (no such member).
func (s *Service) ListCards(ctx context.Context, merchantID, memberID string) ([]Card, error) {
	if _, err := getMember(ctx, s.pool, merchantID, memberID); err != nil {
		return nil, err
	}
	return listMemberCards(ctx, s.pool, merchantID, memberID)
}

// Unbind terminates the card's agreement at the bank first, then marks the
// card unbound and emits card.unbound. Unbinding an unbound card returns it;
// so does unbinding a card whose agreement the bank answers it no longer
// has ("agreement invalid"): the card becomes unbound all the same.
// A bank that does not end the agreement leaves the card active; the
// decryption and the failed try are audited all the same.
// Errors: ErrNotFound, ErrCardDeclined (the bank refused), ErrBankUnavailable.
func (s *Service) Unbind(ctx context.Context, merchantID, id string) (Card, error) {
	release, err := s.bankSlot(ctx)
	if err != nil {
		return Card{}, err
	}
	defer release()
	var out Card
	var final error // the bank's refusal, returned after its audit rows commit
	err = db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		ctx := audit.WithExecer(ctx, tx) // decryptions audit in this transaction
		c, agreementCT, err := getCard(ctx, tx, merchantID, id, true)
		if err != nil {
			return err
		}
		if c.Status != CardActive {
			out = c
			return nil
		}
		agreement, err := s.vault.Decrypt(ctx, agreementCT, CardAgreementAAD(merchantID, c.ID), sensitive.Access{
			MerchantID: merchantID, Actor: actor(merchantID), Subject: c.ID, Reason: "unbind at bank"})
		if err != nil {
			return err
		}
		bank, ok := s.banks.Bank(c.BankCode)
		if !ok {
			return ErrBankUnavailable
		}
		details := map[string]any(nil)
		if err := bank.Unbind(ctx, string(agreement)); agreementGone(err) {
			// The bank dropped the agreement already (the cardholder
			// ended it there): what unbinding asks for is done.
			details = map[string]any{"agreement_gone": true, "bank_code": bankCode(err)}
		} else if err != nil {
			final = unbindError(err)
			return s.auditTx(ctx, tx, merchantID, "card.unbind", c.ID, audit.OutcomeFailed, map[string]any{
				"class": bankadapters.OutcomeOf(err), "bank_code": bankCode(err)})
		}
		now := s.now()
		if err := setCardStatus(ctx, tx, merchantID, c.ID, CardUnbound, now); err != nil {
			return err
		}
		c.Status = CardUnbound
		if err := s.auditTx(ctx, tx, merchantID, "card.unbind", c.ID, audit.OutcomeOK, details); err != nil {
			return err
		}
		out = c
		if err := s.send(ctx, tx, &pgx.Batch{}, cardEvent(c, "card.unbound")); err != nil {
			return err
		}
		return s.ended(ctx, tx, merchantID, c.ID, CardUnbound)
	})
	if err != nil {
		return Card{}, err
	}
	if final != nil {
		return Card{}, final
	}
	return out, nil
}

// agreementGone reports whether the bank refused an unbind because it
// knows no live agreement by that number.
func agreementGone(err error) bool {
	var be *bankadapters.Error
	return errors.As(err, &be) && be.Reason == bankadapters.ReasonAgreementInvalid
}

// unbindError turns the bank's answer to an unbind into the domain's error:
// a refusal is final, anything else may be tried again.
func unbindError(err error) error {
	switch bankadapters.OutcomeOf(err) {
	case bankadapters.OutcomeHardDecline, bankadapters.OutcomeRetryableDecline:
		return fmt.Errorf("%w: %v", ErrCardDeclined, err)
	}
	return fmt.Errorf("%w: %v", ErrBankUnavailable, err)
}

// Revoke marks a card revoked when quickpay learns its agreement ended at
// the bank (a charge answered "agreement invalid"). Errors: ErrNotFound.
func (s *Service) Revoke(ctx context.Context, merchantID, id, reason string) (Card, error) {
	var out Card
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		c, _, err := getCard(ctx, tx, merchantID, id, true)
		if err != nil {
			return err
		}
		out = c
		if c.Status != CardActive {
			return nil
		}
		if err := setCardStatus(ctx, tx, merchantID, c.ID, CardRevoked, s.now()); err != nil {
			return err
		}
		out.Status = CardRevoked
		if err := s.auditTx(ctx, tx, merchantID, "card.revoke", c.ID, audit.OutcomeOK, map[string]any{"reason": reason}); err != nil {
			return err
		}
		return s.ended(ctx, tx, merchantID, c.ID, CardRevoked)
	})
	return out, err
}

// bankError turns a bind_apply refusal into the domain's error.
func (s *Service) bankError(err error) error {
	var be *bankadapters.Error
	if !errors.As(err, &be) {
		return fmt.Errorf("%w: %v", ErrBankUnavailable, err)
	}
	switch be.Outcome {
	case bankadapters.OutcomeElementsMismatch:
		return &ElementsMismatchError{Field: be.Field}
	case bankadapters.OutcomeAlreadyBound:
		// The platform's agreement for this card exists at the bank but no
		// card of this merchant holds it (another merchant's member bound
		// it through the platform's merchant number).
		return ErrCardBoundElsewhere
	case bankadapters.OutcomeHardDecline, bankadapters.OutcomeRetryableDecline:
		return ErrCardDeclined
	}
	return fmt.Errorf("%w: %v", ErrBankUnavailable, err)
}

func bankCode(err error) string {
	var be *bankadapters.Error
	if errors.As(err, &be) {
		return be.Code
	}
	return ""
}

func (s *Service) audit(ctx context.Context, merchantID, action, subject, outcome string, details map[string]any) {
	if err := s.auditTx(ctx, s.pool, merchantID, action, subject, outcome, details); err != nil {
		s.log.Error("audit", "action", action, "subject", subject, "err", err)
	}
}

func (s *Service) auditTx(ctx context.Context, q audit.Execer, merchantID, action, subject, outcome string, details map[string]any) error {
	d := map[string]any{"outcome": outcome}
	for k, v := range details {
		d[k] = v
	}
	return audit.Write(ctx, q, audit.Entry{MerchantID: merchantID, Actor: actor(merchantID), Action: action, Subject: subject, Details: d})
}

// auditRow holds an audit row for the Collector of ctx (WithCollector),
// which writes it with the transaction's closing statements.
func (s *Service) auditRow(ctx context.Context, merchantID, action, subject, outcome string, details map[string]any) {
	// Under a collector only marshalling details can fail, and they are
	// ids and outcomes.
	if err := s.auditTx(ctx, nil, merchantID, action, subject, outcome, details); err != nil {
		panic(fmt.Sprintf("binding: audit row %s: %v", action, err))
	}
}

// send sends a transaction's closing statements in one round trip: those
// queued on b, the audit rows held under ctx, and the events.
func (s *Service) send(ctx context.Context, tx pgx.Tx, b *pgx.Batch, events ...webhooks.Pending) error {
	audit.QueueCollected(ctx, b)
	deliver, err := s.emit(b, events)
	if err != nil {
		return err
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return err
	}
	return deliver(ctx, tx)
}

// Event payloads: what a merchant may see, never card data beyond masked.
func bindingEvent(b bindingRow, eventType string) webhooks.Pending {
	return webhooks.Pending{MerchantID: b.MerchantID, Type: eventType, Data: map[string]any{
		"binding_id": b.ID, "status": b.Status, "member_id": nullable(b.MemberID),
		"card_id": nullable(b.CardID), "failure_code": nullable(b.FailureCode),
		"card": map[string]any{"bank_code": b.Card.BankCode, "masked_pan": b.Card.MaskedPAN, "last4": b.Card.Last4}}}
}

func cardEvent(c Card, eventType string) webhooks.Pending {
	return webhooks.Pending{MerchantID: c.MerchantID, Type: eventType, Data: map[string]any{
		"card_id": c.ID, "member_id": c.MemberID, "status": c.Status, "bank_code": c.BankCode,
		"masked_pan": c.MaskedPAN, "last4": c.Last4}}
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}
