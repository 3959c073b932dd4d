// Package simclient speaks banksim's test-control API (docs/banksim.md,
// "Test control"): accounts, SMS inbox, faults, ledger, merchants, banks,
// agreements a cardholder ends, and the clock. Tests and `quickpay dev` use it; banksim serves these routes to
// loopback clients only (unless started with --remote-control).
package simclient

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/internal/sensitive"
)

// Client calls one banksim.
type Client struct {
	BaseURL string
	HTTP    *http.Client
}

// NewClient returns a client for the banksim at baseURL. It keeps up to 64
// idle connections to it (net/http's default keeps 2 per host): concurrent
// tests and load tools would otherwise open a new connection for most
// calls.
func NewClient(baseURL string) *Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), HTTP: &http.Client{Transport: t, Timeout: 30 * time.Second}}
}

// Account is a card account as POST /sim/accounts takes it. Its card data
// are banksim's own records of synthetic cards.
type Account struct {
	BankCode    string `json:"bank_code"`
	CardNumber  string `json:"card_number"`
	CardType    string `json:"card_type"` // "debit" or "credit"
	HolderName  string `json:"holder_name"`
	IDNumber    string `json:"id_number"`
	Phone       string `json:"phone"`
	Balance     int64  `json:"balance"` // fen
	Expiry      string `json:"expiry,omitempty"`
	CVV2        string `json:"cvv2,omitempty"`
	SingleLimit int64  `json:"single_limit,omitempty"` // banksim defaults to 5 000 000
	DailyLimit  int64  `json:"daily_limit,omitempty"`  // banksim defaults to 20 000 000
	Status      string `json:"status,omitempty"`       // active (default), frozen, closed
}

// AccountState is GET /sim/accounts/{card}: the account and its agreements.
type AccountState struct {
	Account
	Agreements []Agreement `json:"agreements"`
}

// Agreement is a binding as the bank records it.
type Agreement struct {
	AgreementNo string `json:"agreement_no"`
	MerchantNo  string `json:"merchant_no"`
	Status      string `json:"status"`
}

// SMS is a text in banksim's carrier inbox. Code is the first 4–8 digit
// run of Text.
type SMS struct {
	To     string    `json:"to"`
	Text   string    `json:"text"`
	Code   string    `json:"code"`
	SentAt time.Time `json:"sent_at"`
}

// Fault modes (docs/banksim.md).
const (
	FaultTimeout      = "timeout"
	FaultError        = "error"
	FaultProcessing   = "processing"
	FaultDecline      = "decline"
	FaultDropResponse = "drop_response"
	FaultAmount       = "amount" // charge: the bank debits and names another amount
)

// Fault is one injected failure on a bank's operation.
type Fault struct {
	BankCode  string
	Operation string // "bind_apply", "charge", "query", …
	Mode      string // one of the Fault* modes
	Code      string // decline: a reason name ("insufficient_funds") or the dialect's code
	// Count is how many calls it hits; 0 means banksim's default, once.
	Count int
	// UntilCleared keeps it until DELETE /sim/faults (banksim's count 0).
	UntilCleared bool
	// Apply (timeout) performs the operation before holding the answer.
	Apply bool
	// Amount (mode amount) is the fen the bank debits and names instead
	// of the amount sent; 0: the sent amount plus 1.
	Amount int64
}

// Ledger entry types.
const (
	EntryDebit  = "debit"
	EntryRefund = "refund"
)

// LedgerEntry is money the bank actually moved: a debit, or a refund
// (OrderNo its refund number, RefundOf the debit's order number). Amount is
// positive either way.
type LedgerEntry struct {
	Type        string    `json:"type"` // EntryDebit or EntryRefund
	BankCode    string    `json:"bank_code"`
	CardNumber  string    `json:"card_number"`
	MerchantNo  string    `json:"merchant_no"`
	OrderNo     string    `json:"order_no"`
	RefundOf    string    `json:"refund_of,omitempty"`
	AgreementNo string    `json:"agreement_no"`
	Amount      int64     `json:"amount"`
	BankTxnNo   string    `json:"bank_txn_no"`
	At          time.Time `json:"at"`
}

// String shows the entry without its card or agreement number (the card
// masked), so that a test's failure message holds neither.
func (e LedgerEntry) String() string {
	of := ""
	if e.RefundOf != "" {
		of = " of " + e.RefundOf
	}
	return fmt.Sprintf("{%s %s card %s order %s%s %d fen txn %s at %s}", e.Type, e.BankCode, sensitive.NewPAN(e.CardNumber).Masked(),
		e.OrderNo, of, e.Amount, e.BankTxnNo, e.At.Format(time.RFC3339))
}

// Merchant registers the platform at a bank: an HMAC secret for json-hmac
// banks, the platform's RSA public key (PKIX PEM) for form-rsa banks, and
// optionally the URL the bank posts agreement_terminated notices to.
type Merchant struct {
	BankCode     string `json:"bank_code"`
	MerchantNo   string `json:"merchant_no"`
	HMACSecret   string `json:"hmac_secret,omitempty"`
	PublicKeyPEM string `json:"public_key_pem,omitempty"`
	NotifyURL    string `json:"notify_url,omitempty"`
}

// Terminated is an agreement a cardholder ended at the bank.
type Terminated struct {
	BankCode    string `json:"bank_code"`
	MerchantNo  string `json:"merchant_no"`
	AgreementNo string `json:"agreement_no"`
}

// BankInfo is one bank of GET /sim/banks.
type BankInfo struct {
	Code         string               `json:"code"`
	Name         string               `json:"name"`
	Dialect      bankadapters.Dialect `json:"dialect"`
	Async        bool                 `json:"async"`
	BINs         []BIN                `json:"bins"`
	PublicKeyPEM string               `json:"public_key_pem"` // form-rsa: the bank's key
}

// BIN is a card range of a bank.
type BIN struct {
	Prefix   string `json:"prefix"`
	CardType string `json:"card_type"`
	Length   int    `json:"length"`
}

// do sends a JSON request and decodes a JSON answer into out (unless nil).
// Any status but want (any 2xx when want is 0) is an error carrying
// banksim's message.
func (c *Client) do(ctx context.Context, method, path string, in any, want int, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("banksim %s %s: %w", method, routeOf(path), err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("banksim %s %s: reading answer: %w", method, routeOf(path), err)
	}
	if resp.StatusCode != want && (want != 0 || resp.StatusCode/100 != 2) {
		msg := string(raw)
		if len(msg) > 300 {
			msg = msg[:300]
		}
		return fmt.Errorf("banksim %s %s: HTTP %d, want %d: %s", method, routeOf(path), resp.StatusCode, want, msg)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("banksim %s %s: decoding answer: %w", method, routeOf(path), err)
	}
	return nil
}

// routeOf keeps card numbers and phones out of error messages.
func routeOf(path string) string {
	switch {
	case strings.HasPrefix(path, "/sim/accounts/"):
		return "/sim/accounts/{card}"
	case strings.Contains(path, "?"):
		return path[:strings.IndexByte(path, '?')]
	}
	return path
}

// PutAccount creates or replaces a card account.
func (c *Client) PutAccount(ctx context.Context, a Account) error {
	return c.do(ctx, http.MethodPost, "/sim/accounts", a, http.StatusCreated, nil)
}

// Account returns a card account with its balance and agreements.
func (c *Client) Account(ctx context.Context, card string) (AccountState, error) {
	var st AccountState
	err := c.do(ctx, http.MethodGet, "/sim/accounts/"+url.PathEscape(card), nil, http.StatusOK, &st)
	return st, err
}

// SMS returns the texts sent to phone, newest first.
func (c *Client) SMS(ctx context.Context, phone string) ([]SMS, error) {
	var out []SMS
	err := c.do(ctx, http.MethodGet, "/sim/sms?phone="+url.QueryEscape(phone), nil, http.StatusOK, &out)
	return out, err
}

// AddFault injects a fault.
func (c *Client) AddFault(ctx context.Context, f Fault) error {
	in := struct {
		BankCode  string `json:"bank_code"`
		Operation string `json:"operation"`
		Mode      string `json:"mode"`
		Code      string `json:"code,omitempty"`
		Count     *int   `json:"count,omitempty"`
		Apply     bool   `json:"apply,omitempty"`
		Amount    int64  `json:"amount,omitempty"`
	}{BankCode: f.BankCode, Operation: f.Operation, Mode: f.Mode, Code: f.Code, Apply: f.Apply, Amount: f.Amount}
	switch {
	case f.UntilCleared:
		zero := 0
		in.Count = &zero
	case f.Count > 0:
		in.Count = &f.Count
	}
	return c.do(ctx, http.MethodPost, "/sim/faults", in, http.StatusCreated, nil)
}

// ArmedFaults is how many faults are armed and not yet used up: a test
// learns from it that a call has reached the bank.
func (c *Client) ArmedFaults(ctx context.Context) (int, error) {
	var faults []json.RawMessage
	if err := c.do(ctx, http.MethodGet, "/sim/faults", nil, http.StatusOK, &faults); err != nil {
		return 0, err
	}
	return len(faults), nil
}

// ClearFaults removes the faults armed at bankCode, or every fault when
// bankCode is empty.
func (c *Client) ClearFaults(ctx context.Context, bankCode string) error {
	path := "/sim/faults"
	if bankCode != "" {
		path += "?bank_code=" + url.QueryEscape(bankCode)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, c.BaseURL+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("banksim DELETE /sim/faults: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("banksim DELETE /sim/faults: HTTP %d", resp.StatusCode)
	}
	return nil
}

// Ledger returns the debits the banks made on card, or on every card when
// card is empty.
func (c *Client) Ledger(ctx context.Context, card string) ([]LedgerEntry, error) {
	var out []LedgerEntry
	err := c.do(ctx, http.MethodGet, "/sim/ledger?card_number="+url.QueryEscape(card), nil, http.StatusOK, &out)
	return out, err
}

// TerminateAgreement ends card's live agreements as its holder would at the
// bank: only merchantNo's when it is not empty, every one otherwise. The
// bank then posts a signed agreement_terminated notice to each merchant
// registered with a notify URL. It returns the agreements ended (none when
// none was live); an unknown card is an error.
func (c *Client) TerminateAgreement(ctx context.Context, cardNumber, merchantNo string) ([]Terminated, error) {
	in := struct {
		CardNumber string `json:"card_number"`
		MerchantNo string `json:"merchant_no,omitempty"`
	}{cardNumber, merchantNo}
	var out struct {
		Terminated []Terminated `json:"terminated"`
	}
	if err := c.do(ctx, http.MethodPost, "/sim/agreements/terminate", in, http.StatusOK, &out); err != nil {
		return nil, err
	}
	return out.Terminated, nil
}

// RegisterMerchant registers (or re-registers) the platform at a bank.
func (c *Client) RegisterMerchant(ctx context.Context, m Merchant) error {
	return c.do(ctx, http.MethodPost, "/sim/merchants", m, http.StatusCreated, nil)
}

// Banks lists the simulated banks.
func (c *Client) Banks(ctx context.Context) ([]BankInfo, error) {
	var out []BankInfo
	err := c.do(ctx, http.MethodGet, "/sim/banks", nil, http.StatusOK, &out)
	return out, err
}

// Bank returns one bank of Banks.
func (c *Client) Bank(ctx context.Context, code string) (BankInfo, error) {
	banks, err := c.Banks(ctx)
	if err != nil {
		return BankInfo{}, err
	}
	for _, b := range banks {
		if b.Code == code {
			return b, nil
		}
	}
	return BankInfo{}, fmt.Errorf("banksim has no bank %q", code)
}

type clockState struct {
	Now time.Time `json:"now"`
}

// Clock returns the banks' clock.
func (c *Client) Clock(ctx context.Context) (time.Time, error) {
	var st clockState
	err := c.do(ctx, http.MethodGet, "/sim/clock", nil, http.StatusOK, &st)
	return st.Now, err
}

// SetClock moves the banks' clock to t and returns it.
func (c *Client) SetClock(ctx context.Context, t time.Time) (time.Time, error) {
	var st clockState
	err := c.do(ctx, http.MethodPost, "/sim/clock", clockState{Now: t}, 0, &st)
	if err == nil && st.Now.IsZero() {
		return c.Clock(ctx)
	}
	return st.Now, err
}

// AdvanceClock moves the banks' clock by d and returns it.
func (c *Client) AdvanceClock(ctx context.Context, d time.Duration) (time.Time, error) {
	var st clockState
	err := c.do(ctx, http.MethodPost, "/sim/clock", struct {
		Advance string `json:"advance"`
	}{d.String()}, 0, &st)
	if err == nil && st.Now.IsZero() {
		return c.Clock(ctx)
	}
	return st.Now, err
}

// ConnectOption adjusts ConnectPlatform.
type ConnectOption func(*connectOptions)

type connectOptions struct {
	notifyURL func(code string) string
}

// WithNotifyURL registers notifyURL(code) as each bank's notify_url, where
// the bank posts agreement_terminated notices (e.g. quickpay's
// /callbacks/banks/{code}); "" leaves a bank without one.
func WithNotifyURL(notifyURL func(code string) string) ConnectOption {
	return func(o *connectOptions) { o.notifyURL = notifyURL }
}

// ConnectPlatform registers the platform at every bank banksim simulates:
// merchant number merchantNo(code), a fresh random HMAC secret for json-hmac
// banks, for form-rsa banks the public key publicKeyPEM(code) (the HSM key
// qp-bank-<code>), and a notify URL when WithNotifyURL gives one. It
// returns each bank's channel settings in the shape bankadapters/channels
// reads from Vault.
func (c *Client) ConnectPlatform(ctx context.Context, merchantNo func(code string) string,
	publicKeyPEM func(ctx context.Context, code string) (string, error), opts ...ConnectOption) (map[string]map[string]any, error) {
	var o connectOptions
	for _, opt := range opts {
		opt(&o)
	}
	banks, err := c.Banks(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]map[string]any, len(banks))
	for _, b := range banks {
		m := Merchant{BankCode: b.Code, MerchantNo: merchantNo(b.Code)}
		if o.notifyURL != nil {
			m.NotifyURL = o.notifyURL(b.Code)
		}
		channel := map[string]any{"dialect": string(b.Dialect), "merchant_no": m.MerchantNo}
		switch b.Dialect {
		case bankadapters.DialectJSONHMAC:
			secret := make([]byte, 32)
			if _, err := rand.Read(secret); err != nil {
				return nil, err
			}
			m.HMACSecret = hex.EncodeToString(secret)
			channel["hmac_secret"] = m.HMACSecret
		case bankadapters.DialectFormRSA:
			if m.PublicKeyPEM, err = publicKeyPEM(ctx, b.Code); err != nil {
				return nil, err
			}
			channel["bank_public_key_pem"] = b.PublicKeyPEM
		default:
			return nil, fmt.Errorf("bank %s has unknown dialect %q", b.Code, b.Dialect)
		}
		if err := c.RegisterMerchant(ctx, m); err != nil {
			return nil, fmt.Errorf("register at %s: %w", b.Code, err)
		}
		out[b.Code] = channel
	}
	return out, nil
}
