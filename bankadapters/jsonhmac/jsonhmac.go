// Package jsonhmac is the adapter of the json-hmac dialect
// (bankadapters.DialectJSONHMAC): banks whose interface takes JSON bodies
// signed with HMAC-SHA256 under a per-merchant secret and answers the same
// way (in banksim: ICBC, synchronous, and CMB, whose charges settle
// asynchronously with a signed callback). The wire format is in
// docs/banksim.md; the operations are bankadapters/internal/core's.
package jsonhmac

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/bankadapters/internal/core"
	"github.com/quickpay/quickpay/bankadapters/internal/wire"
)

// Config configures one bank.
type Config struct {
	Code       string // bank code, e.g. "ICBC". Required.
	BaseURL    string // the bank's host, e.g. http://127.0.0.1:9000. Required.
	MerchantNo string // the platform's merchant number at this bank. Required.
	Secret     []byte // the HMAC secret, from Vault. Required.
	bankadapters.CallOptions
}

// Bank is a json-hmac bank.
type Bank struct {
	*core.Adapter
	codec *codec
}

var (
	_ bankadapters.Bank           = (*Bank)(nil)
	_ bankadapters.Statementer    = (*Bank)(nil)
	_ bankadapters.CallbackParser = (*Bank)(nil)
)

// Codes maps the dialect's codes to outcome classes (docs/banksim.md).
var Codes = map[string]bankadapters.CodeClass{
	"0000": {Outcome: bankadapters.OutcomeSuccess},
	"0001": {Outcome: bankadapters.OutcomeProcessing},
	"1001": {Outcome: bankadapters.OutcomeUnavailable},
	"1002": {Outcome: bankadapters.OutcomeUnavailable},
	"1003": {Outcome: bankadapters.OutcomeUnavailable},
	"2001": {Outcome: bankadapters.OutcomeElementsMismatch, Field: bankadapters.FieldHolderName},
	"2002": {Outcome: bankadapters.OutcomeElementsMismatch, Field: bankadapters.FieldIDNumber},
	"2003": {Outcome: bankadapters.OutcomeElementsMismatch, Field: bankadapters.FieldPhone},
	"2004": {Outcome: bankadapters.OutcomeElementsMismatch, Field: bankadapters.FieldCardNumber},
	"2005": {Outcome: bankadapters.OutcomeElementsMismatch, Field: bankadapters.FieldExpiry},
	"2006": {Outcome: bankadapters.OutcomeAlreadyBound},
	"2007": {Outcome: bankadapters.OutcomeHardDecline, Reason: bankadapters.ReasonCardFrozen},
	"2008": {Outcome: bankadapters.OutcomeHardDecline, Reason: bankadapters.ReasonCardClosed},
	"3001": {Outcome: bankadapters.OutcomeOTPWrong},
	"3002": {Outcome: bankadapters.OutcomeOTPExpired},
	"3003": {Outcome: bankadapters.OutcomeOTPAttemptsExceeded},
	"3004": {Outcome: bankadapters.OutcomeOTPExpired},
	"4001": {Outcome: bankadapters.OutcomeRetryableDecline, Reason: bankadapters.ReasonInsufficientFunds},
	"4002": {Outcome: bankadapters.OutcomeRetryableDecline, Reason: bankadapters.ReasonSingleLimit},
	"4003": {Outcome: bankadapters.OutcomeRetryableDecline, Reason: bankadapters.ReasonDailyLimit},
	"4004": {Outcome: bankadapters.OutcomeHardDecline, Reason: bankadapters.ReasonAgreementInvalid},
	"4005": {Outcome: bankadapters.OutcomeRetryableDecline, Reason: bankadapters.ReasonTryTomorrow},
	"4007": {Outcome: bankadapters.OutcomeHardDecline, Reason: bankadapters.ReasonOrderConflict},
	"4008": {Outcome: bankadapters.OutcomeHardDecline, Reason: bankadapters.ReasonOrderNotRefundable},
	"4009": {Outcome: bankadapters.OutcomeHardDecline, Reason: bankadapters.ReasonRefundWindowExpired},
	"4010": {Outcome: bankadapters.OutcomeHardDecline, Reason: bankadapters.ReasonRefundExceeds},
	"9999": {Outcome: bankadapters.OutcomeUnavailable},
}

// New returns the adapter.
func New(cfg Config) (*Bank, error) {
	if cfg.Code == "" || cfg.BaseURL == "" || cfg.MerchantNo == "" || len(cfg.Secret) == 0 {
		return nil, errors.New("jsonhmac: Config needs Code, BaseURL, MerchantNo and Secret")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &codec{merchantNo: cfg.MerchantNo, secret: cfg.Secret, now: cfg.Now}
	return &Bank{codec: c, Adapter: &core.Adapter{
		Code: cfg.Code, BaseURL: cfg.BaseURL, Codec: c, Codes: Codes, Success: "0000", OrderNotFound: "4006",
		Caller: wire.NewCaller(cfg.Code, cfg.HTTPClient, cfg.Timeout, cfg.Retries, cfg.Logger),
	}}, nil
}

// Code implements bankadapters.Bank.
func (b *Bank) Code() string { return b.Adapter.Code }

type codec struct {
	merchantNo string
	secret     []byte
	now        func() time.Time
}

func (c *codec) mac(parts ...[]byte) string {
	m := hmac.New(sha256.New, c.secret)
	for _, p := range parts {
		m.Write(p)
	}
	return hex.EncodeToString(m.Sum(nil))
}

// Encode writes fields as a JSON object (amount as a number, empty fields
// left out) and signs POST\n{path}\n{timestamp}\n{nonce}\n{body}.
func (c *codec) Encode(_ context.Context, path string, fields map[string]string) (wire.Request, error) {
	obj := make(map[string]any, len(fields))
	for k, v := range fields {
		switch {
		case v == "":
		case k == "amount":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return wire.Request{}, errors.New("amount is not an integer")
			}
			obj[k] = n
		default:
			obj[k] = v
		}
	}
	body, err := json.Marshal(obj)
	if err != nil {
		return wire.Request{}, err
	}
	ts, nonce := strconv.FormatInt(c.now().Unix(), 10), wire.Nonce()
	h := http.Header{}
	h.Set("X-Merchant-No", c.merchantNo)
	h.Set("X-Timestamp", ts)
	h.Set("X-Nonce", nonce)
	h.Set("X-Signature", c.mac([]byte("POST\n"+path+"\n"+ts+"\n"+nonce+"\n"), body))
	return wire.Request{Path: path, ContentType: "application/json", Header: h, Body: body}, nil
}

// Decode verifies {status}\n{timestamp}\n{nonce}\n{body} and flattens the
// answer's scalar fields to strings; "entries" keeps its raw JSON.
func (c *codec) Decode(resp *wire.Response) (map[string]string, error) {
	want := c.mac([]byte(strconv.Itoa(resp.Status)+"\n"+resp.Header.Get("X-Timestamp")+"\n"+resp.Header.Get("X-Nonce")+"\n"), resp.Body)
	if sig := resp.Header.Get("X-Signature"); sig == "" || !hmac.Equal([]byte(sig), []byte(want)) {
		return nil, errors.New("answer signature does not verify")
	}
	return flatten(resp.Body)
}

func flatten(body []byte) (map[string]string, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, errors.New("answer is not a JSON object")
	}
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		var s string
		if json.Unmarshal(v, &s) == nil {
			out[k] = s
			continue
		}
		var n json.Number
		if json.Unmarshal(v, &n) == nil {
			out[k] = n.String()
			continue
		}
		out[k] = string(v)
	}
	return out, nil
}

// Entries reads a JSON array of debits and refunds, keeping the successful
// ones. An entry without a type is a debit. An entry of a status or type it
// does not know fails the statement: reconciliation must not guess whether
// or which way money moved.
func (c *codec) Entries(raw string) ([]bankadapters.StatementEntry, error) {
	if raw == "" || raw == "null" {
		return nil, nil
	}
	var rows []struct {
		Type        string `json:"type"`
		OrderNo     string `json:"order_no"`
		RefundOf    string `json:"refund_of"`
		AgreementNo string `json:"agreement_no"`
		Amount      int64  `json:"amount"`
		Status      string `json:"status"`
		BankTxnNo   string `json:"bank_txn_no"`
		FinishedAt  string `json:"finished_at"`
	}
	if err := json.Unmarshal([]byte(raw), &rows); err != nil {
		return nil, fmt.Errorf("statement entries: %w", err)
	}
	out := make([]bankadapters.StatementEntry, 0, len(rows))
	for _, e := range rows {
		var typ bankadapters.EntryType
		switch e.Type {
		case "", "debit":
			typ = bankadapters.EntryDebit
			if e.RefundOf != "" {
				return nil, fmt.Errorf("statement entry of order %q: a debit that names a refunded order", e.OrderNo)
			}
		case "refund":
			typ = bankadapters.EntryRefund
			if e.RefundOf == "" {
				return nil, fmt.Errorf("statement entry of refund %q: no refunded order", e.OrderNo)
			}
		default:
			return nil, fmt.Errorf("statement entry of order %q: type %q is neither debit nor refund", e.OrderNo, e.Type)
		}
		switch e.Status {
		case "", "SUCCESS":
		case "FAILED":
			continue // no money moved
		default:
			return nil, fmt.Errorf("statement entry of order %q: status %q is neither SUCCESS nor FAILED", e.OrderNo, e.Status)
		}
		t, _ := time.Parse(time.RFC3339, e.FinishedAt)
		out = append(out, bankadapters.StatementEntry{Type: typ, OrderNo: e.OrderNo, RefundOf: e.RefundOf,
			AgreementNo: e.AgreementNo, Amount: e.Amount, BankTxnNo: e.BankTxnNo, FinishedAt: t})
	}
	return out, nil
}

// ParseCallback implements bankadapters.CallbackParser: it checks the
// merchant number, verifies the bank's signature over
// CALLBACK\n{timestamp}\n{nonce}\n{body}, refuses a timestamp more than
// 300 s from the adapter's clock (CallOptions.Now), and reads the body as
// the notice its type says (a debit's result, a refund's, an agreement the
// cardholder ended). Anything else is an error with a fixed message.
func (b *Bank) ParseCallback(header map[string][]string, body []byte) (bankadapters.Notice, error) {
	h := http.Header(header)
	if h.Get("X-Merchant-No") != b.codec.merchantNo {
		return bankadapters.Notice{}, core.ErrCallbackMerchant
	}
	want := b.codec.mac([]byte("CALLBACK\n"+h.Get("X-Timestamp")+"\n"+h.Get("X-Nonce")+"\n"), body)
	if sig := h.Get("X-Signature"); sig == "" || !hmac.Equal([]byte(sig), []byte(want)) {
		return bankadapters.Notice{}, core.ErrCallbackSignature
	}
	if err := core.Fresh(h.Get("X-Timestamp"), b.codec.now()); err != nil {
		return bankadapters.Notice{}, err
	}
	f, err := flatten(body)
	if err != nil {
		return bankadapters.Notice{}, errCallbackNotJSON
	}
	return b.Notice(f)
}

// errCallbackNotJSON: a signed callback body that is not a JSON object.
var errCallbackNotJSON = errors.New("callback body is not a JSON object")
