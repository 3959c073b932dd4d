// Package formrsa is the adapter of the form-rsa dialect
// (bankadapters.DialectFormRSA): banks whose interface takes form-encoded
// bodies signed RSA-SHA256 (PKCS#1 v1.5) with the platform's key
// — which lives in the HSM — and answers form-encoded bodies signed with the
// bank's own key (in banksim: CCB). The wire format is in docs/banksim.md;
// the operations are bankadapters/internal/core's.
package formrsa

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/bankadapters/internal/core"
	"github.com/quickpay/quickpay/bankadapters/internal/wire"
)

// Signer makes the platform's RSA signatures; *vaultkeys.BankSigner signs in
// the HSM.
type Signer interface {
	SignSHA256(ctx context.Context, msg []byte) ([]byte, error)
}

// Config configures one bank.
type Config struct {
	Code       string // bank code, e.g. "CCB". Required.
	BaseURL    string // the bank's host. Required.
	MerchantNo string // the platform's merchant number at this bank. Required.
	Signer     Signer // signs requests (HSM key qp-bank-{code}). Required.
	// BankPublicKeyPEM verifies the bank's answers (PKIX PEM, from Vault). Required.
	BankPublicKeyPEM string
	bankadapters.CallOptions
}

// Bank is a form-rsa bank.
type Bank struct {
	*core.Adapter
	codec *codec
}

var (
	_ bankadapters.Bank           = (*Bank)(nil)
	_ bankadapters.Statementer    = (*Bank)(nil)
	_ bankadapters.CallbackParser = (*Bank)(nil)
)

// Codes maps the dialect's ret_code values to outcome classes.
var Codes = map[string]bankadapters.CodeClass{
	"SUCCESS":          {Outcome: bankadapters.OutcomeSuccess},
	"PROCESSING":       {Outcome: bankadapters.OutcomeProcessing},
	"E_SIGN":           {Outcome: bankadapters.OutcomeUnavailable},
	"E_PARAM":          {Outcome: bankadapters.OutcomeUnavailable},
	"E_MERCHANT":       {Outcome: bankadapters.OutcomeUnavailable},
	"E_NAME":           {Outcome: bankadapters.OutcomeElementsMismatch, Field: bankadapters.FieldHolderName},
	"E_IDNO":           {Outcome: bankadapters.OutcomeElementsMismatch, Field: bankadapters.FieldIDNumber},
	"E_MOBILE":         {Outcome: bankadapters.OutcomeElementsMismatch, Field: bankadapters.FieldPhone},
	"E_CARD":           {Outcome: bankadapters.OutcomeElementsMismatch, Field: bankadapters.FieldCardNumber},
	"E_CARD_AUTH":      {Outcome: bankadapters.OutcomeElementsMismatch, Field: bankadapters.FieldExpiry},
	"E_BOUND":          {Outcome: bankadapters.OutcomeAlreadyBound},
	"E_FROZEN":         {Outcome: bankadapters.OutcomeHardDecline, Reason: bankadapters.ReasonCardFrozen},
	"E_CLOSED":         {Outcome: bankadapters.OutcomeHardDecline, Reason: bankadapters.ReasonCardClosed},
	"E_SMS_CODE":       {Outcome: bankadapters.OutcomeOTPWrong},
	"E_SMS_EXPIRED":    {Outcome: bankadapters.OutcomeOTPExpired},
	"E_SMS_LOCKED":     {Outcome: bankadapters.OutcomeOTPAttemptsExceeded},
	"E_BIND_SESSION":   {Outcome: bankadapters.OutcomeOTPExpired},
	"E_BALANCE":        {Outcome: bankadapters.OutcomeRetryableDecline, Reason: bankadapters.ReasonInsufficientFunds},
	"E_SINGLE_LIMIT":   {Outcome: bankadapters.OutcomeRetryableDecline, Reason: bankadapters.ReasonSingleLimit},
	"E_DAY_LIMIT":      {Outcome: bankadapters.OutcomeRetryableDecline, Reason: bankadapters.ReasonDailyLimit},
	"E_PROTOCOL":       {Outcome: bankadapters.OutcomeHardDecline, Reason: bankadapters.ReasonAgreementInvalid},
	"E_RETRY_TOMORROW": {Outcome: bankadapters.OutcomeRetryableDecline, Reason: bankadapters.ReasonTryTomorrow},
	"E_ORDER_CONFLICT": {Outcome: bankadapters.OutcomeHardDecline, Reason: bankadapters.ReasonOrderConflict},
	"E_REFUND_ORDER":   {Outcome: bankadapters.OutcomeHardDecline, Reason: bankadapters.ReasonOrderNotRefundable},
	"E_REFUND_EXPIRED": {Outcome: bankadapters.OutcomeHardDecline, Reason: bankadapters.ReasonRefundWindowExpired},
	"E_REFUND_AMOUNT":  {Outcome: bankadapters.OutcomeHardDecline, Reason: bankadapters.ReasonRefundExceeds},
	"E_SYSTEM":         {Outcome: bankadapters.OutcomeUnavailable},
}

// New returns the adapter.
func New(cfg Config) (*Bank, error) {
	if cfg.Code == "" || cfg.BaseURL == "" || cfg.MerchantNo == "" || cfg.Signer == nil || cfg.BankPublicKeyPEM == "" {
		return nil, errors.New("formrsa: Config needs Code, BaseURL, MerchantNo, Signer and BankPublicKeyPEM")
	}
	pub, err := parsePublicKey(cfg.BankPublicKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("formrsa: bank public key: %w", err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &codec{merchantNo: cfg.MerchantNo, signer: cfg.Signer, bankKey: pub, now: cfg.Now}
	return &Bank{codec: c, Adapter: &core.Adapter{
		Code: cfg.Code, BaseURL: cfg.BaseURL, Codec: c, Codes: Codes, Success: "SUCCESS", OrderNotFound: "E_ORDER_NOT_FOUND",
		Caller: wire.NewCaller(cfg.Code, cfg.HTTPClient, cfg.Timeout, cfg.Retries, cfg.Logger),
	}}, nil
}

// Code implements bankadapters.Bank.
func (b *Bank) Code() string { return b.Adapter.Code }

func parsePublicKey(p string) (*rsa.PublicKey, error) {
	block, _ := pem.Decode([]byte(p))
	if block == nil {
		return nil, errors.New("not PEM")
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	rk, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, errors.New("not an RSA key")
	}
	return rk, nil
}

type codec struct {
	merchantNo string
	signer     Signer
	bankKey    *rsa.PublicKey
	now        func() time.Time
}

// canonical is every non-empty field but sign, sorted by name, as k=v&….
func canonical(v url.Values) string {
	keys := make([]string, 0, len(v))
	for k := range v {
		if k != "sign" && v.Get(k) != "" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(v.Get(k))
	}
	return b.String()
}

// Encode adds merchant_no, timestamp, nonce and sign_type, and signs the
// canonical string in the HSM.
func (c *codec) Encode(ctx context.Context, path string, fields map[string]string) (wire.Request, error) {
	v := url.Values{}
	for k, val := range fields {
		if val != "" {
			v.Set(k, val)
		}
	}
	v.Set("merchant_no", c.merchantNo)
	v.Set("timestamp", strconv.FormatInt(c.now().Unix(), 10))
	v.Set("nonce", wire.Nonce())
	v.Set("sign_type", "RSA2")
	sig, err := c.signer.SignSHA256(ctx, []byte(canonical(v)))
	if err != nil {
		return wire.Request{}, err
	}
	v.Set("sign", base64.StdEncoding.EncodeToString(sig))
	return wire.Request{Path: path, ContentType: "application/x-www-form-urlencoded", Body: []byte(v.Encode())}, nil
}

// Decode verifies the bank's signature and maps ret_code and ret_msg to code
// and message.
func (c *codec) Decode(resp *wire.Response) (map[string]string, error) {
	v, err := url.ParseQuery(string(resp.Body))
	if err != nil {
		return nil, errors.New("answer is not form-encoded")
	}
	if err := c.verify(v); err != nil {
		return nil, err
	}
	out := fields(v)
	out["code"], out["message"] = v.Get("ret_code"), v.Get("ret_msg")
	return out, nil
}

// verify checks the bank's signature over the canonical string of v.
func (c *codec) verify(v url.Values) error {
	sig, err := base64.StdEncoding.DecodeString(v.Get("sign"))
	if err != nil || len(sig) == 0 {
		return errors.New("answer is not signed")
	}
	digest := sha256.Sum256([]byte(canonical(v)))
	if err := rsa.VerifyPKCS1v15(c.bankKey, crypto.SHA256, digest[:], sig); err != nil {
		return errors.New("answer signature does not verify")
	}
	return nil
}

// fields is each field's first value.
func fields(v url.Values) map[string]string {
	out := make(map[string]string, len(v)+2)
	for k := range v {
		out[k] = v.Get(k)
	}
	return out
}

// Entries reads lines of order_no|agreement_no|amount|bank_txn_no|finished_at,
// each a debit, or of those and |type|refund_of, type debit (or empty) or
// refund. A refund's order_no is its refund number and refund_of the debit
// it refunds. A line of another shape or type fails the statement.
func (c *codec) Entries(raw string) ([]bankadapters.StatementEntry, error) {
	var out []bankadapters.StatementEntry
	for line := range strings.SplitSeq(strings.TrimSpace(raw), "\n") {
		if line == "" {
			continue
		}
		f := strings.Split(line, "|")
		if len(f) != 5 && len(f) != 7 {
			return nil, errEntryFields
		}
		amount, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			return nil, errEntryAmount
		}
		e := bankadapters.StatementEntry{Type: bankadapters.EntryDebit, OrderNo: f[0], AgreementNo: f[1], Amount: amount, BankTxnNo: f[3]}
		e.FinishedAt, _ = time.Parse(time.RFC3339, f[4])
		if len(f) == 7 {
			switch f[5] {
			case "", "debit":
				if f[6] != "" {
					return nil, errEntryDebitRefundOf
				}
			case "refund":
				if f[6] == "" {
					return nil, errEntryRefundOf
				}
				e.Type, e.RefundOf = bankadapters.EntryRefund, f[6]
			default:
				return nil, errEntryType
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// Entries' refusals: fixed, as a statement line holds agreement numbers.
var (
	errEntryFields        = errors.New("statement line does not have 5 or 7 fields")
	errEntryAmount        = errors.New("statement amount is not an integer")
	errEntryType          = errors.New("statement line's type is neither debit nor refund")
	errEntryRefundOf      = errors.New("statement line of a refund names no refunded order")
	errEntryDebitRefundOf = errors.New("statement line of a debit names a refunded order")
)

// ParseCallback implements bankadapters.CallbackParser. A callback is a
// form like an answer: it checks merchant_no, verifies the bank's signature
// over the canonical string, refuses a timestamp more than 300 s from the
// adapter's clock (CallOptions.Now), and reads the form as the notice its
// type says (a debit's result, a refund's, an agreement the cardholder
// ended). Anything else is an error with a fixed message. The header is
// not read: everything signed is in the form.
func (b *Bank) ParseCallback(_ map[string][]string, body []byte) (bankadapters.Notice, error) {
	v, err := url.ParseQuery(string(body))
	if err != nil {
		return bankadapters.Notice{}, errCallbackNotForm
	}
	if v.Get("merchant_no") != b.codec.merchantNo {
		return bankadapters.Notice{}, core.ErrCallbackMerchant
	}
	if err := b.codec.verify(v); err != nil {
		return bankadapters.Notice{}, core.ErrCallbackSignature
	}
	if err := core.Fresh(v.Get("timestamp"), b.codec.now()); err != nil {
		return bankadapters.Notice{}, err
	}
	return b.Notice(fields(v))
}

// errCallbackNotForm: a callback body that is not form-encoded.
var errCallbackNotForm = errors.New("callback body is not form-encoded")
