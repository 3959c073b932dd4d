package opsview

import (
	"encoding/json"
	"time"
)

// The rows the console shows. Money is int64 fen (CNY). A row carries no
// sensitive value: cards and bindings show the masked card number, last
// four digits, bank and status; members show whether they have an
// identity, never the identity. Nothing here is decrypted. Times are UTC;
// an optional time is nil when the column is NULL, an optional text "".

// Merchant is a merchant account.
type Merchant struct {
	ID        string
	Name      string
	Scopes    []string
	ClientID  string
	RetryDays []int
	// FailedLogins in a row of its API client; LockedUntil is set while 10
	// of them lock it.
	FailedLogins int
	LockedUntil  *time.Time
	// DisabledAt is set while an operator has disabled the merchant.
	DisabledAt *time.Time
	CreatedAt  time.Time
}

// Identity says what is known of a member's identity, never what it is.
type Identity string

// A member's identity.
const (
	// IdentityNone: no identity declared or verified yet.
	IdentityNone Identity = "none"
	// IdentityDeclared: the merchant declared it at creation; no bank has
	// verified it.
	IdentityDeclared Identity = "declared"
	// IdentityVerified: a binding's bank verified it.
	IdentityVerified Identity = "verified"
)

// Member is a merchant's end user.
type Member struct {
	ID         string
	MerchantID string
	ExternalID string
	Kind       string // explicit, implicit
	Identity   Identity
	// IdentityBindingID names the binding whose verified identity the
	// member keeps ("" when none).
	IdentityBindingID string
	CreatedAt         time.Time
}

// Card is a bound card: its masked number only.
type Card struct {
	ID         string
	MerchantID string
	MemberID   string
	BindingID  string
	Status     string // active, unbound, revoked
	BankCode   string
	BankName   string
	CardType   string // debit, credit
	MaskedPAN  string
	Last4      string
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// Binding is one attempt to bind a card, with its OTP session's counters.
type Binding struct {
	ID             string
	MerchantID     string
	MemberID       string // "" for an implicit binding not yet bound
	ExternalUserID string // an implicit binding's user id, else ""
	Status         string // otp_sent, bound, failed, expired
	BankCode       string
	BankName       string
	CardType       string
	MaskedPAN      string
	Last4          string
	CardID         string
	FailureCode    string
	// BankFailureCode is the bank's own code beside FailureCode.
	BankFailureCode string
	OTPSends        int
	OTPAttempts     int
	OTPExpiresAt    time.Time
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

// Mandate is a withholding agreement. Amount is set for a fixed mandate,
// MaxAmount for a variable one (the other is 0); DayOfMonth for a monthly
// one, Weekday (1 Monday … 7 Sunday) for a weekly one.
type Mandate struct {
	ID             string
	MerchantID     string
	MemberID       string
	CardID         string
	Reference      string
	Description    string
	AmountType     string // fixed, variable
	Amount         int64
	MaxAmount      int64
	Currency       string
	Interval       string // month, week
	DayOfMonth     int
	Weekday        int
	StartDate      time.Time
	EndDate        *time.Time
	MaxCharges     int // 0: no limit
	Timezone       string
	NoticeDays     int
	Status         string
	StatusReason   string
	NextPeriod     string
	NextChargeDate *time.Time
	ChargesCount   int
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// Charge is one period's debit of a mandate. BankCode is its card's bank.
type Charge struct {
	ID               string
	MerchantID       string
	MandateID        string
	CardID           string
	BankCode         string
	Period           string
	ChargeDate       time.Time
	Amount           int64
	Currency         string
	Description      string
	Status           string
	FailureCode      string
	BankReference    string
	Retries          int
	AttemptsCount    int
	AmountRefunded   int64
	AmountRefundHeld int64
	NextAttemptAt    *time.Time
	NoticeAt         *time.Time
	NoticeSentAt     *time.Time
	CreatedAt        time.Time
	UpdatedAt        time.Time
}

// Attempt is one bank debit of a charge, under its own order number.
type Attempt struct {
	OrderNo    string
	MerchantID string
	ChargeID   string
	CardID     string
	Seq        int
	BankCode   string
	Amount     int64
	// BankAmount is what the bank said it debited, set only for an
	// amount_mismatch.
	BankAmount  *int64
	Status      string // processing, unknown, succeeded, failed, amount_mismatch
	FailureCode string
	BankResult  string // the bank's own code
	BankTxnNo   string
	Queries     int
	BankDay     time.Time
	CreatedAt   time.Time
	FinishedAt  *time.Time
}

// ChargeDetail is a charge with its attempts, first first.
type ChargeDetail struct {
	Charge
	Attempts []Attempt
}

// Refund is money returned from a succeeded charge.
type Refund struct {
	ID            string
	MerchantID    string
	ChargeID      string
	MandateID     string
	CardID        string
	BankCode      string
	OrderNo       string // the debit refunded
	RefundNo      string // the bank refund number
	Amount        int64
	Currency      string
	Reason        string
	Status        string // pending, succeeded, failed
	FailureCode   string
	BankResult    string
	BankReference string
	Queries       int
	SentAt        *time.Time
	UnknownSince  *time.Time
	NextQueryAt   *time.Time
	FinishedAt    *time.Time
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

// Event is an outbox event. Data is the JSON merchants receive (it holds
// no sensitive value). Delivered says whether an endpoint answered 2xx to
// it.
type Event struct {
	ID         string
	Seq        int64
	MerchantID string
	Type       string
	Data       json.RawMessage
	Delivered  bool
	CreatedAt  time.Time
}

// Delivery is one attempt to deliver an event. StatusCode is 0 when no
// answer came (Error says why).
type Delivery struct {
	ID         int64
	Attempt    int
	URL        string
	StatusCode int
	Error      string
	Duration   time.Duration
	At         time.Time
}

// EventDetail is an event with its delivery attempts, first first, and
// its delivery job's state: JobState "" when no job is waiting to deliver
// it, NextRetryAt when River will run that job next.
type EventDetail struct {
	Event
	Deliveries  []Delivery
	JobState    string
	NextRetryAt *time.Time
}

// Undelivered is an event of the webhook backlog: named by a delivery job
// that has not completed, with no 2xx answer recorded. JobID is that River
// job, JobState its state (available, scheduled, retryable, running,
// pending: waiting; discarded, cancelled: given up, an operator
// redelivers). An event two such jobs name (redelivered while its first
// job still retries) is listed under each.
type Undelivered struct {
	EventID     string
	Seq         int64
	MerchantID  string
	Type        string
	CreatedAt   time.Time
	Attempts    int // delivery attempts recorded
	LastStatus  int // the last attempt's status code, 0 for none
	LastError   string
	JobID       int64
	JobState    string
	NextRetryAt *time.Time

	position int64 // in its job's events, for the cursor
}

// Mismatch is what a reconciliation run found between a bank's statement
// and quickpay's attempts or refunds. Open is true while it is in the
// latest run of its bank and bank day: a later run that no longer finds it
// (the statement final, or the attempt settled since) closes it.
type Mismatch struct {
	RunID      int64
	Kind       string // unknown_debit, missing_debit, amount_mismatch, unknown_refund, missing_refund, refund_amount_mismatch
	BankCode   string
	BankDay    time.Time
	OrderNo    string
	MerchantID string // "" for a debit or refund quickpay does not know
	BankAmount *int64
	OurAmount  *int64
	Open       bool
	CreatedAt  time.Time
}

// AuditEntry is a row of the audit trail. Details never holds a sensitive
// value.
type AuditEntry struct {
	ID         int64
	At         time.Time
	MerchantID string
	Actor      string
	Action     string
	Subject    string
	RequestID  string
	Details    json.RawMessage
}

// KeyPolicy is a key purpose's versions as Postgres records them: the
// version new writes use and the oldest decryption accepts. Rotation
// progress (rows still below the current version) is vaultkeys'.
type KeyPolicy struct {
	Purpose              string // data, fp, jwt
	CurrentVersion       int
	MinDecryptionVersion int
	UpdatedAt            time.Time
	Versions             []KeyVersion
}

// KeyVersion is one version of a purpose's key, by its HSM label.
type KeyVersion struct {
	Version   int
	Label     string
	CreatedAt time.Time
}

// HitKind is what a search hit is.
type HitKind string

// Search hits.
const (
	HitMerchant HitKind = "merchant"
	HitMember   HitKind = "member"
	HitBinding  HitKind = "binding"
	HitCard     HitKind = "card"
	HitMandate  HitKind = "mandate"
	HitCharge   HitKind = "charge"
	HitRefund   HitKind = "refund"
	HitEvent    HitKind = "event"
)

// Hit is one search result: the row's kind, id and merchant, and a line
// saying what it is and why it matched (for an order number or bank
// reference, which one).
type Hit struct {
	Kind       HitKind
	ID         string
	MerchantID string
	Summary    string
}
