package binding

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/internal/audit"
	"github.com/quickpay/quickpay/internal/ids"
	"github.com/quickpay/quickpay/internal/sensitive"
	"github.com/quickpay/quickpay/internal/webhooks"
)

// Binding sessions: a merchant hands its user to quickpay's hosted page
// (api/hosted) with a link, and the page binds a card (and takes a
// mandate's consent) through this service and mandate's, so that every
// rule of the API holds there too. The link carries a token of
// SessionTokenBytes random bytes that is stored only as its keyed
// fingerprint (DomainSessionToken); it opens the session until the session
// completes or fails, and never after SessionValidity.

// SessionValidity is how long a session's link works.
const SessionValidity = 30 * time.Minute

// SessionTokenBytes is the size of a session token's random part (256 bits).
const SessionTokenBytes = 32

// DomainSessionToken is the fingerprint domain of session tokens.
const DomainSessionToken = "binding_session_token"

// MaxSessionRefusals is how many attempts of the card form the data may
// have refused (elements or identity mismatch, card bound elsewhere or
// declined or unsupported, invalid fields) before the session fails with
// SessionTooManyAttempts: without it a link's holder could probe whose
// card and identity match for as long as the link lives.
const MaxSessionRefusals = 5

// SessionTooManyAttempts is the failure_code of a session that ran out
// of card attempts.
const SessionTooManyAttempts = "too_many_attempts"

// MaxReturnURLLength bounds a session's return_url.
const MaxReturnURLLength = 2048

// SessionStatus is a session's state: open → completed | failed, stored
// (the binding_sessions.status CHECK); expired is an open session read
// past its expiry.
type SessionStatus string

// Session states.
const (
	SessionOpen      SessionStatus = "open"
	SessionCompleted SessionStatus = "completed"
	SessionFailed    SessionStatus = "failed"
	SessionExpired   SessionStatus = "expired"
)

// Check returns an error for a value outside the set.
func (s SessionStatus) Check() error {
	switch s {
	case SessionOpen, SessionCompleted, SessionFailed, SessionExpired:
		return nil
	default:
		return fmt.Errorf("binding: unknown session status %q", string(s))
	}
}

// Session errors.
var (
	// ErrSessionExpired: the session's link is past its expiry.
	ErrSessionExpired = errors.New("binding session expired")
	// ErrSessionClosed: the session completed or failed; its link is used.
	ErrSessionClosed = errors.New("binding session closed")
	// ErrSessionMoved: the session's binding or mandate attempt is no
	// longer the one the caller read (another request moved it on). Only
	// the hosted page sees it; the API never does.
	ErrSessionMoved = errors.New("binding session moved on")
	// ErrSessionAttempts: the session's card attempts are used up
	// (MaxSessionRefusals refused or in flight).
	ErrSessionAttempts = errors.New("binding session has too many refused card attempts")
)

// Session is one hosted binding.
type Session struct {
	ID             string
	MerchantID     string
	MemberID       string // the member's id once known (given, or bound)
	ExternalUserID string // the implicit member's id, if given
	ReturnURL      string
	// Mandate is the mandate terms the merchant gave (the POST
	// /v1/mandates body without card_id, as JSON), nil for none. binding
	// keeps them and does not read them.
	Mandate     []byte
	Status      SessionStatus
	BindingID   string
	CardID      string
	MandateID   string
	FailureCode string
	ExpiresAt   time.Time
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// SessionInput creates a session: MemberID or ExternalUserID, ReturnURL,
// and optional mandate terms (validated by the caller).
type SessionInput struct {
	MemberID       string
	ExternalUserID string
	ReturnURL      string
	Mandate        []byte
}

// ValidReturnURL reports whether u may be a session's return_url: an
// absolute https URL, or http on a loopback host (dev), without
// credentials or a fragment, whose host is an IP literal or a DNS name of
// letters, digits and hyphens (ValidHostname): the hosted page names its
// origin in a CSP, where "*" or "*.example" would be wildcards.
func ValidReturnURL(u string) bool {
	if u == "" || len(u) > MaxReturnURLLength {
		return false
	}
	p, err := url.Parse(u)
	if err != nil || p.User != nil || p.Fragment != "" || p.Host == "" || p.Opaque != "" || !ValidHostname(p.Hostname()) {
		return false
	}
	switch p.Scheme {
	case "https":
		return true
	case "http":
		return IsLoopbackHost(p.Hostname())
	default:
		return false
	}
}

// ValidHostname reports whether host (no port, no brackets) is an IP
// literal or a DNS name: dot-separated labels of 1–63 letters, digits and
// hyphens, not starting or ending with a hyphen, 253 characters at most.
func ValidHostname(host string) bool {
	if net.ParseIP(host) != nil {
		return true
	}
	if host == "" || len(host) > 253 {
		return false
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// IsLoopbackHost reports whether host (no port) is localhost or a loopback
// address.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// CreateSession validates in, creates an open session expiring after
// SessionValidity, and returns it with its token, which is given once
// and stored only as its fingerprint.
//
// Errors: *FieldError (member_id, external_user_id, return_url),
// ErrNotFound (member).
func (s *Service) CreateSession(ctx context.Context, merchantID string, in SessionInput) (Session, string, error) {
	switch {
	case (in.MemberID == "") == (in.ExternalUserID == ""):
		return Session{}, "", &FieldError{Field: "member_id", Message: "give member_id or external_user_id, not both"}
	case in.MemberID != "" && !ids.Valid("mem", in.MemberID):
		return Session{}, "", ErrNotFound
	case in.ExternalUserID != "" && !ValidExternalID(in.ExternalUserID):
		return Session{}, "", &FieldError{Field: "external_user_id", Message: "must be 1–128 printable characters"}
	case !ValidReturnURL(in.ReturnURL):
		return Session{}, "", &FieldError{Field: "return_url", Message: "must be an https URL (http only on a loopback host) without credentials or fragment"}
	}
	if in.MemberID != "" {
		if _, err := getMember(ctx, s.pool, merchantID, in.MemberID); err != nil {
			return Session{}, "", err
		}
	}
	raw := make([]byte, SessionTokenBytes)
	if _, err := rand.Read(raw); err != nil {
		return Session{}, "", fmt.Errorf("session token: %w", err)
	}
	token := base64.RawURLEncoding.EncodeToString(raw)
	fp, err := s.vault.Fingerprint(ctx, DomainSessionToken, []byte(token))
	if err != nil {
		return Session{}, "", err
	}
	now := s.now()
	ss := Session{ID: ids.New("bss"), MerchantID: merchantID, MemberID: in.MemberID, ExternalUserID: in.ExternalUserID,
		ReturnURL: in.ReturnURL, Mandate: in.Mandate, Status: SessionOpen, ExpiresAt: now.Add(SessionValidity),
		CreatedAt: now, UpdatedAt: now}
	err = s.inBatch(ctx, func(u *unit) {
		queueInsertSession(&u.batch, ss, fp)
		u.audit(merchantID, "session.created", ss.ID, audit.OutcomeOK, map[string]any{"mandate": in.Mandate != nil})
	})
	if err != nil {
		return Session{}, "", fmt.Errorf("create session: %w", err)
	}
	return ss, token, nil
}

// GetSession returns the merchant's session, expired if it is open past
// its expiry.
//
// Errors: ErrNotFound.
func (s *Service) GetSession(ctx context.Context, merchantID, id string) (Session, error) {
	ss, err := getSession(ctx, s.pool, merchantID, id)
	if err != nil {
		return Session{}, err
	}
	return s.asRead(ss), nil
}

// OpenSession finds the session a link's token opens. An expired session
// answers ErrSessionExpired and a completed or failed one ErrSessionClosed,
// each with the session (for the page to name its merchant; never to
// follow its return_url).
//
// Errors: ErrNotFound, ErrSessionExpired, ErrSessionClosed.
func (s *Service) OpenSession(ctx context.Context, token string) (Session, error) {
	if raw, err := base64.RawURLEncoding.DecodeString(token); err != nil || len(raw) != SessionTokenBytes {
		return Session{}, ErrNotFound
	}
	fps, err := s.vault.Fingerprints(ctx, DomainSessionToken, []byte(token))
	if err != nil {
		return Session{}, err
	}
	ss, err := sessionByToken(ctx, s.pool, fps)
	if err != nil {
		return Session{}, err
	}
	ss = s.asRead(ss)
	switch ss.Status {
	case SessionOpen:
		return ss, nil
	case SessionExpired:
		return ss, ErrSessionExpired
	case SessionCompleted, SessionFailed:
		return ss, ErrSessionClosed
	default:
		return Session{}, ss.Status.Check()
	}
}

func (s *Service) asRead(ss Session) Session {
	if ss.Status == SessionOpen && !s.now().Before(ss.ExpiresAt) {
		ss.Status = SessionExpired
	}
	return ss
}

// SessionStep records the session's next binding or mandate attempt (an
// empty id leaves that one as it is), if the session still names the
// attempts ss names (compare and set: of two requests that read the same
// session, one records its attempt). Starting a step needs a session that
// is open and not expired.
//
// Errors: ErrSessionExpired, ErrSessionClosed (completed or failed),
// ErrSessionMoved (another attempt was recorded since ss was read).
func (s *Service) SessionStep(ctx context.Context, ss Session, bindingID, mandateID string) (Session, error) {
	now := s.now()
	if !now.Before(ss.ExpiresAt) {
		return ss, ErrSessionExpired
	}
	ok, err := updateOpenSession(ctx, s.pool, ss.MerchantID, ss.ID, now,
		"binding_id = COALESCE($4, binding_id), mandate_id = COALESCE($5, mandate_id)",
		"expires_at > $3 AND binding_id IS NOT DISTINCT FROM $6 AND mandate_id IS NOT DISTINCT FROM $7",
		nullable(bindingID), nullable(mandateID), nullable(ss.BindingID), nullable(ss.MandateID))
	if err != nil {
		return ss, fmt.Errorf("session %s step: %w", ss.ID, err)
	}
	if !ok {
		return ss, s.notUpdated(ctx, s.pool, ss)
	}
	if bindingID != "" {
		ss.BindingID = bindingID
	}
	if mandateID != "" {
		ss.MandateID = mandateID
	}
	ss.UpdatedAt = now
	return ss, nil
}

// TakeSessionAttempt counts one attempt of the card form against ss
// before the binding starts, and returns how many the session has
// counted with it. The caller gives it back (GiveBackSessionAttempt)
// unless the data was refused, and fails the session when the count
// reached MaxSessionRefusals. Counting before the bank is asked bounds
// concurrent attempts too.
//
// Errors: ErrSessionAttempts (MaxSessionRefusals counted),
// ErrSessionExpired, ErrSessionClosed.
func (s *Service) TakeSessionAttempt(ctx context.Context, ss Session) (int, error) {
	now := s.now()
	if !now.Before(ss.ExpiresAt) {
		return 0, ErrSessionExpired
	}
	n, ok, err := takeSessionAttempt(ctx, s.pool, ss.MerchantID, ss.ID, now, MaxSessionRefusals)
	if err != nil {
		return 0, fmt.Errorf("session %s attempt: %w", ss.ID, err)
	}
	if ok {
		return n, nil
	}
	if err := s.notUpdated(ctx, s.pool, ss); !errors.Is(err, ErrSessionMoved) {
		return 0, err
	}
	return 0, ErrSessionAttempts
}

// GiveBackSessionAttempt uncounts an attempt TakeSessionAttempt counted
// that the data did not refuse (it started a binding, or the bank did
// not answer). A session no longer open keeps its count.
func (s *Service) GiveBackSessionAttempt(ctx context.Context, ss Session) error {
	if _, err := updateOpenSession(ctx, s.pool, ss.MerchantID, ss.ID, s.now(), "card_refusals = card_refusals - 1",
		"card_refusals > 0"); err != nil {
		return fmt.Errorf("session %s attempt back: %w", ss.ID, err)
	}
	return nil
}

// notUpdated is why an update of an open session ss changed no row: the
// session as it is now is closed, expired, or names other attempts.
func (s *Service) notUpdated(ctx context.Context, q querier, ss Session) error {
	cur, err := getSession(ctx, q, ss.MerchantID, ss.ID)
	if err != nil {
		return err
	}
	switch cur = s.asRead(cur); cur.Status {
	case SessionCompleted, SessionFailed:
		return ErrSessionClosed
	case SessionExpired:
		return ErrSessionExpired
	case SessionOpen:
		return ErrSessionMoved
	default:
		return cur.Status.Check()
	}
}

// CompleteSession ends an open session completed with its member, card
// and (if it has terms) active mandate, and emits
// binding_session.completed with the session as GET shows it. The session
// must still name ss's binding and mandateID (none without terms): the
// attempts were recorded before it expired, so it completes even past its
// expiry (a code confirmed just before the end is not lost).
//
// Errors: ErrSessionClosed (completed or failed), ErrSessionMoved (it
// names other attempts), ErrSessionExpired (expired, naming other
// attempts).
func (s *Service) CompleteSession(ctx context.Context, ss Session, memberID, cardID, mandateID string) (Session, error) {
	if ss.BindingID == "" {
		return Session{}, fmt.Errorf("complete session %s: no binding recorded", ss.ID)
	}
	ss.MemberID, ss.CardID, ss.Status, ss.MandateID = memberID, cardID, SessionCompleted, mandateID
	err := s.inTx(ctx, func(u *unit) error {
		now := s.now()
		ok, err := updateOpenSession(u.ctx, u.tx, ss.MerchantID, ss.ID, now,
			"status = 'completed', member_id = $4, card_id = $5",
			"binding_id = $6 AND mandate_id IS NOT DISTINCT FROM $7",
			memberID, cardID, ss.BindingID, nullable(mandateID))
		if err != nil {
			return err
		}
		if !ok {
			return s.notUpdated(u.ctx, u.tx, ss)
		}
		ss.UpdatedAt = now
		u.audit(ss.MerchantID, "session.completed", ss.ID, audit.OutcomeOK, map[string]any{"card": cardID, "member": memberID})
		u.emit(webhooks.Pending{MerchantID: ss.MerchantID, Type: webhooks.EventBindingSessionCompleted, Data: SessionData(ss)})
		return nil
	})
	if err != nil {
		return Session{}, fmt.Errorf("complete session %s: %w", ss.ID, err)
	}
	return ss, nil
}

// FailSession ends an open session failed with code (the code of the
// refusal that ended it). Like completion it needs the session open, not
// unexpired: the refusal came from a step started before the expiry.
//
// Errors: ErrSessionClosed (no longer open).
func (s *Service) FailSession(ctx context.Context, ss Session, code string) (Session, error) {
	if code == "" {
		return ss, errors.New("binding: a failed session needs a failure code")
	}
	err := s.inTx(ctx, func(u *unit) error {
		now := s.now()
		ok, err := updateOpenSession(u.ctx, u.tx, ss.MerchantID, ss.ID, now, "status = 'failed', failure_code = $4", "", code)
		if err != nil {
			return err
		}
		if !ok {
			return ErrSessionClosed
		}
		ss.Status, ss.FailureCode, ss.UpdatedAt = SessionFailed, code, now
		u.audit(ss.MerchantID, "session.failed", ss.ID, audit.OutcomeFailed, map[string]any{"code": code})
		return nil
	})
	if err != nil {
		return Session{}, fmt.Errorf("fail session %s: %w", ss.ID, err)
	}
	return ss, nil
}

// SessionView is a session as GET /v1/binding_sessions/{id} shows it, and
// the data of binding_session.completed.
type SessionView struct {
	ID          string        `json:"id"`
	Status      SessionStatus `json:"status"`
	BindingID   *string       `json:"binding_id"`
	CardID      *string       `json:"card_id"`
	MemberID    *string       `json:"member_id"`
	MandateID   *string       `json:"mandate_id"`
	FailureCode *string       `json:"failure_code"`
	ExpiresAt   time.Time     `json:"expires_at"`
}

// SessionData is ss's view.
func SessionData(ss Session) SessionView {
	return SessionView{ID: ss.ID, Status: ss.Status, BindingID: nullable(ss.BindingID), CardID: nullable(ss.CardID),
		MemberID: nullable(ss.MemberID), MandateID: nullable(ss.MandateID), FailureCode: nullable(ss.FailureCode),
		ExpiresAt: ss.ExpiresAt.UTC()}
}

// CardRoute is where a card number routes by the BIN table (bank and card
// type), for the hosted page's card-type hint; the binding itself routes
// again.
//
// Errors: ErrCardUnsupported.
func (s *Service) CardRoute(pan sensitive.PAN) (bankadapters.CardInfo, error) {
	info, err := s.banks.Route(pan)
	if err != nil {
		return bankadapters.CardInfo{}, ErrCardUnsupported
	}
	return info, nil
}
