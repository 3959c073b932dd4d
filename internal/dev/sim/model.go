package sim

import (
	"crypto/rsa"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// shanghai is the banks' time zone. China has kept UTC+8 without daylight
// saving since 1991, so a fixed zone is exact and needs no tzdata.
var shanghai = time.FixedZone("CST", 8*3600)

// Dialect is a bank's wire protocol (docs/banksim.md). banksim keeps its
// own set, apart from quickpay's bankadapters.Dialect: it plays the banks,
// and shares no code with the side it is testing. Every switch over a
// Dialect fails on one it does not speak, and New refuses a bank with one.
type Dialect string

// The dialects banksim speaks.
const (
	DialectJSONHMAC Dialect = "json-hmac"
	DialectFormRSA  Dialect = "form-rsa"
)

// Card types and account statuses, as Account carries them. PutAccount
// refuses any other value, and the rules that read them panic on one.
const (
	CardDebit  = "debit"
	CardCredit = "credit"

	StatusActive = "active"
	StatusFrozen = "frozen"
	StatusClosed = "closed"
)

// statusRefusal is what a card of status refuses a binding or a debit
// with: rSuccess for an active card.
func statusRefusal(status string) reason {
	switch status {
	case StatusActive:
		return rSuccess
	case StatusFrozen:
		return rCardFrozen
	case StatusClosed:
		return rCardClosed
	default:
		panic(fmt.Sprintf("banksim: account status %q (PutAccount lets no such status in)", status))
	}
}

// needsCardAuth reports whether a card of cardType binds with its expiry
// and CVV2.
func needsCardAuth(cardType string) bool {
	switch cardType {
	case CardCredit:
		return true
	case CardDebit:
		return false
	default:
		panic(fmt.Sprintf("banksim: card type %q (PutAccount lets no such type in)", cardType))
	}
}

// Account defaults and bank rules (docs/banksim.md, "Rules").
const (
	DefaultSingleLimit int64 = 5_000_000  // fen
	DefaultDailyLimit  int64 = 20_000_000 // fen

	otpValidity       = 5 * time.Minute
	refundWindow      = 180 * 24 * time.Hour
	otpMaxWrong       = 5
	maxFailedPerDay   = 3
	timestampSkew     = 300 // seconds
	nonceMinLen       = 16
	nonceMaxLen       = 64
	maxRequestBody    = 64 << 10
	maxIdentifierLen  = 64
	callbackAttempts  = 6 // the first delivery and up to 5 retries
	smsKeptPerPhone   = 200
	defaultAsyncDelay = 200 * time.Millisecond
	defaultMaxHold    = 60 * time.Second
	defaultCBBackoff  = time.Second
	defaultCBTimeout  = 5 * time.Second
)

type bin struct {
	Prefix   string `json:"prefix"`
	CardType string `json:"card_type"`
	Length   int    `json:"length"`
}

type bank struct {
	code    string
	name    string // as the bank signs its texts
	dialect Dialect
	async   bool
	bins    []bin
	key     *rsa.PrivateKey // form-rsa banks: signs answers and callbacks
	pubPEM  string
}

// bankTable is the fixed set of simulated banks.
func bankTable() []*bank {
	return []*bank{
		{code: "ICBC", name: "中国工商银行", dialect: DialectJSONHMAC, bins: []bin{
			{"622202", CardDebit, 19}, {"427020", CardCredit, 16}}},
		{code: "CCB", name: "中国建设银行", dialect: DialectFormRSA, bins: []bin{
			{"621700", CardDebit, 19}, {"436742", CardCredit, 16}}},
		{code: "CMB", name: "招商银行", dialect: DialectJSONHMAC, async: true, bins: []bin{
			{"622588", CardDebit, 16}, {"439225", CardCredit, 16}}},
	}
}

// binOf returns the BIN entry of the bank that card belongs to, if any.
func (b *bank) binOf(card string) (bin, bool) {
	for _, x := range b.bins {
		if len(card) == x.Length && strings.HasPrefix(card, x.Prefix) {
			return x, true
		}
	}
	return bin{}, false
}

// Merchant is the platform's registration at one bank: its merchant number
// and credentials. HMACSecret is for json-hmac banks, PublicKeyPEM (PKIX,
// RSA-2048 or larger) for form-rsa banks. NotifyURL, optional (absolute
// http or https), is where the bank posts notices that answer no request
// of the platform's: agreements the cardholder ended.
type Merchant struct {
	BankCode     string `json:"bank_code"`
	MerchantNo   string `json:"merchant_no"`
	HMACSecret   string `json:"hmac_secret,omitempty"`
	PublicKeyPEM string `json:"public_key_pem,omitempty"`
	NotifyURL    string `json:"notify_url,omitempty"`
}

// LogValue keeps the secret out of logs.
func (m Merchant) LogValue() slog.Value {
	return slog.GroupValue(slog.String("bank_code", m.BankCode), slog.String("merchant_no", m.MerchantNo))
}

// Account is a card account at a simulated bank, as POST /sim/accounts takes
// it. It holds card data in clear because it is the bank's own record; it
// prints and logs masked.
//
// CardType defaults to the type of the card's BIN. SingleLimit defaults to
// DefaultSingleLimit, DailyLimit to DefaultDailyLimit (0 means the default),
// Status to "active". Expiry ("MMYY") and CVV2 are required for credit cards.
type Account struct {
	BankCode    string `json:"bank_code"`
	CardNumber  string `json:"card_number"`
	CardType    string `json:"card_type"`
	HolderName  string `json:"holder_name"`
	IDNumber    string `json:"id_number"`
	Phone       string `json:"phone"`
	Balance     int64  `json:"balance"`
	Expiry      string `json:"expiry,omitempty"`
	CVV2        string `json:"cvv2,omitempty"`
	SingleLimit int64  `json:"single_limit,omitempty"`
	DailyLimit  int64  `json:"daily_limit,omitempty"`
	Status      string `json:"status,omitempty"`
}

// String shows the account with its card masked and no identity data.
func (a Account) String() string {
	return fmt.Sprintf("%s card %s (%s, %s)", a.BankCode, maskPAN(a.CardNumber), a.CardType, a.Status)
}

// GoString is String: %#v must not reveal the card either.
func (a Account) GoString() string { return a.String() }

// LogValue logs the bank and the masked card only.
func (a Account) LogValue() slog.Value {
	return slog.GroupValue(slog.String("bank_code", a.BankCode), slog.String("card", maskPAN(a.CardNumber)))
}

// maskPAN keeps the first 6 and last 4 digits, the most a PAN may show.
func maskPAN(pan string) string {
	if len(pan) < 13 {
		return "****"
	}
	return pan[:6] + strings.Repeat("*", len(pan)-10) + pan[len(pan)-4:]
}

// reason is a dialect-neutral outcome; each dialect has its own code for it.
type reason uint8

const (
	rSuccess reason = iota
	rProcessing
	rSignInvalid
	rBadRequest
	rMerchantUnknown
	rNameMismatch
	rIDMismatch
	rPhoneMismatch
	rCardNotFound
	rCardAuthMismatch
	rAlreadyBound
	rCardFrozen
	rCardClosed
	rOTPIncorrect
	rOTPExpired
	rOTPLocked
	rBindSessionUnknown
	rInsufficientFunds
	rSingleLimit
	rDailyLimit
	rAgreementInvalid
	rTryTomorrow
	rOrderNotFound
	rOrderConflict
	rOrderNotRefundable
	rRefundWindowExpired
	rRefundExceeds
	rSystemError
	numReasons
)

// reasons is the result-code table of docs/banksim.md.
var reasons = [numReasons]struct{ name, json, form, msg string }{
	rSuccess:             {"success", "0000", "SUCCESS", "success"},
	rProcessing:          {"processing", "0001", "PROCESSING", "accepted, result pending"},
	rSignInvalid:         {"sign_invalid", "1001", "E_SIGN", "signature invalid"},
	rBadRequest:          {"bad_request", "1002", "E_PARAM", "malformed request"},
	rMerchantUnknown:     {"merchant_unknown", "1003", "E_MERCHANT", "unknown merchant"},
	rNameMismatch:        {"name_mismatch", "2001", "E_NAME", "holder name mismatch"},
	rIDMismatch:          {"id_mismatch", "2002", "E_IDNO", "ID number mismatch"},
	rPhoneMismatch:       {"phone_mismatch", "2003", "E_MOBILE", "phone mismatch"},
	rCardNotFound:        {"card_not_found", "2004", "E_CARD", "no such card"},
	rCardAuthMismatch:    {"card_auth_mismatch", "2005", "E_CARD_AUTH", "expiry or CVV2 mismatch"},
	rAlreadyBound:        {"already_bound", "2006", "E_BOUND", "card already bound for this merchant"},
	rCardFrozen:          {"card_frozen", "2007", "E_FROZEN", "card frozen"},
	rCardClosed:          {"card_closed", "2008", "E_CLOSED", "card closed"},
	rOTPIncorrect:        {"otp_incorrect", "3001", "E_SMS_CODE", "verification code incorrect"},
	rOTPExpired:          {"otp_expired", "3002", "E_SMS_EXPIRED", "verification code expired"},
	rOTPLocked:           {"otp_locked", "3003", "E_SMS_LOCKED", "too many wrong verification codes"},
	rBindSessionUnknown:  {"bind_session_unknown", "3004", "E_BIND_SESSION", "bind session unknown or finished"},
	rInsufficientFunds:   {"insufficient_funds", "4001", "E_BALANCE", "insufficient funds"},
	rSingleLimit:         {"single_limit", "4002", "E_SINGLE_LIMIT", "over single-debit limit"},
	rDailyLimit:          {"daily_limit", "4003", "E_DAY_LIMIT", "over daily limit"},
	rAgreementInvalid:    {"agreement_invalid", "4004", "E_PROTOCOL", "agreement unknown or terminated"},
	rTryTomorrow:         {"try_tomorrow", "4005", "E_RETRY_TOMORROW", "too many failed debits today, try tomorrow"},
	rOrderNotFound:       {"order_not_found", "4006", "E_ORDER_NOT_FOUND", "order unknown"},
	rOrderConflict:       {"order_conflict", "4007", "E_ORDER_CONFLICT", "order number reused with other terms"},
	rOrderNotRefundable:  {"order_not_refundable", "4008", "E_REFUND_ORDER", "order unknown or not a successful debit"},
	rRefundWindowExpired: {"refund_window_expired", "4009", "E_REFUND_EXPIRED", "debit older than 180 days"},
	rRefundExceeds:       {"refund_exceeds", "4010", "E_REFUND_AMOUNT", "refund exceeds what is left of the debit"},
	rSystemError:         {"system_error", "9999", "E_SYSTEM", "system error"},
}

func (r reason) String() string { return reasons[r].name }

// code is r's code in dialect d.
func (r reason) code(d Dialect) string {
	switch d {
	case DialectJSONHMAC:
		return reasons[r].json
	case DialectFormRSA:
		return reasons[r].form
	default:
		panic(fmt.Sprintf("banksim: no result codes for dialect %q", d))
	}
}

// parseReason accepts a reason name or a dialect's code for it.
func parseReason(s string) (reason, bool) {
	for r := range numReasons {
		if x := reasons[r]; s == x.name || s == x.json || s == x.form {
			return r, true
		}
	}
	return 0, false
}

// Operations.
type operation uint8

const (
	opBindApply operation = iota
	opBindResend
	opBindConfirm
	opCharge
	opQuery
	opUnbind
	opStatement
	opRefund
	numOps
)

var opNames = [numOps]string{"bind_apply", "bind_resend", "bind_confirm", "charge", "query", "unbind", "statement", "refund"}

func (o operation) String() string { return opNames[o] }

func parseOp(s string) (operation, bool) {
	for o := range numOps {
		if opNames[o] == s {
			return o, true
		}
	}
	return 0, false
}

// chargeStatus is a charge order's state as the banks word it.
type chargeStatus string

const (
	chargeSuccess    chargeStatus = "SUCCESS"
	chargeFailed     chargeStatus = "FAILED"
	chargeProcessing chargeStatus = "PROCESSING"
)
