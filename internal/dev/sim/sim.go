// Package sim is banksim: the simulated issuing banks (ICBC, CCB, CMB) with
// their quick-pay and withholding interfaces, the SMS carrier, and the
// test-control endpoints. docs/banksim.md is the wire contract it implements;
// quickpay's bankadapters talk to it over real HTTP exactly as they would to
// a bank.
//
// # State and concurrency
//
// Everything lives in memory. There is no global lock held across work: each
// card account has its own mutex (balance, limits, agreements, the day's
// counters, its ledger), each order (a charge or a refund) its own, and the
// maps that index accounts, agreements, bind sessions, orders (sharded) and
// nonces (sharded) are held only to look up or insert. Lock order, where two
// are held: accounts map → card; bind session → card → agreements map;
// refund → its debit; order → card.
//
// # Time
//
// Real time is Config.Now. The banks' clock is real time plus an offset that
// POST /sim/clock moves. The banks' clock decides business days (Asia/
// Shanghai) for limits, failure caps and statements, OTP expiry, the refund
// window, statements' finality and every time the banks name (finished_at,
// a termination's at, SMS sent_at). Signature timestamps are on real time,
// wherever the banks' clock is: the ±300 s window of requests, the nonce
// memory, and the timestamps banksim signs its answers, callbacks and
// notices with. AsyncDelay, callback backoff and fault holds are real
// durations.
//
// # Logging
//
// Logs never carry a card number (masked to first 6 + last 4), ID number,
// phone, CVV2, expiry, OTP, secret or request body.
package sim

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Sim. The zero value is usable.
type Config struct {
	// AsyncDelay is how long an asynchronous charge (every CMB charge, and
	// any charge under a "processing" fault) stays PROCESSING before it
	// settles. Defaults to 200ms.
	AsyncDelay time.Duration

	// Now is real time: request timestamps and nonces are checked against
	// it, and answers, callbacks and notices are stamped with it. The banks'
	// clock is Now plus an offset that POST /sim/clock sets or advances.
	// Defaults to time.Now.
	Now func() time.Time

	// Merchants are registered at New, as by POST /sim/merchants.
	Merchants []Merchant

	// Accounts are created at New, as by POST /sim/accounts.
	Accounts []Account

	// BankKeys are the form-rsa banks' own RSA keys by bank code ("CCB").
	// A form-rsa bank without one gets a fresh RSA-2048 key at New, which
	// takes a good fraction of a second; tests that create many sims pass
	// one. Defaults to generated keys.
	BankKeys map[string]*rsa.PrivateKey

	// Logger receives banksim's own log lines (per-request lines at Debug).
	// Defaults to discarding them.
	Logger *slog.Logger

	// CallbackBackoff is the wait before the first retry of an async
	// callback; it doubles after each retry. Defaults to 1s.
	CallbackBackoff time.Duration

	// CallbackTimeout bounds each callback attempt. Defaults to 5s.
	CallbackTimeout time.Duration

	// MaxHold bounds how long a "timeout" fault holds an answer while the
	// caller is still waiting. Defaults to 60s.
	MaxHold time.Duration

	// RemoteControl serves the /sim/* test-control endpoints to
	// non-loopback clients too (e.g. banksim in a container). Defaults to
	// false: they answer 403 to any RemoteAddr that is not loopback.
	RemoteControl bool
}

// Sim is a running set of simulated banks. Its methods are safe for
// concurrent use.
type Sim struct {
	cfg   Config
	log   *slog.Logger
	banks map[string]*bank
	// bankList keeps the table order for GET /sim/banks.
	bankList []*bank
	offset   atomic.Int64 // clock offset, nanoseconds
	seed     maphash.Seed
	seq      atomic.Uint64 // ids: bind refs, agreements, transactions, texts
	instance string        // random per Sim, in every id: another banksim never repeats one
	cbClient *http.Client

	merchantsMu sync.RWMutex
	merchants   map[merchantKey]*merchant

	accountsMu sync.RWMutex
	accounts   map[string]*account // by card number

	agreementsMu sync.RWMutex
	agreements   map[string]*agreement // by agreement number

	sessionsMu sync.Mutex
	sessions   map[string]*bindSession     // by bind_ref
	requests   map[requestKey]*bindSession // by bind_apply request_no

	orders orderShards
	nonces nonceCache
	faults faultSet
	sms    inbox

	// background work: settlements and callbacks.
	bgMu   sync.Mutex
	closed bool
	bg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc
}

type merchantKey struct{ bank, no string }

type merchant struct {
	bank      *bank
	no        string
	secret    []byte         // json-hmac
	pub       *rsa.PublicKey // form-rsa
	notifyURL string         // "" when the platform gave none
}

// New returns a Sim with cfg's merchants and accounts. It fails if one of
// them is invalid or a bank key is not usable.
func New(cfg Config) (*Sim, error) {
	if cfg.AsyncDelay <= 0 {
		cfg.AsyncDelay = defaultAsyncDelay
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.CallbackBackoff <= 0 {
		cfg.CallbackBackoff = defaultCBBackoff
	}
	if cfg.CallbackTimeout <= 0 {
		cfg.CallbackTimeout = defaultCBTimeout
	}
	if cfg.MaxHold <= 0 {
		cfg.MaxHold = defaultMaxHold
	}
	s := &Sim{
		cfg:        cfg,
		log:        cfg.Logger,
		banks:      map[string]*bank{},
		seed:       maphash.MakeSeed(),
		instance:   rand.Text()[:6],
		cbClient:   &http.Client{Timeout: cfg.CallbackTimeout},
		merchants:  map[merchantKey]*merchant{},
		accounts:   map[string]*account{},
		agreements: map[string]*agreement{},
		sessions:   map[string]*bindSession{},
		requests:   map[requestKey]*bindSession{},
		sms:        inbox{byPhone: map[string][]textMessage{}},
	}
	s.orders.init()
	s.nonces.init(s.seed)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	for code := range cfg.BankKeys {
		found := false
		for _, b := range bankTable() {
			found = found || (b.code == code && b.dialect == DialectFormRSA)
		}
		if !found {
			return nil, fmt.Errorf("bank key for %q: no form-rsa bank has that code", code)
		}
	}
	for _, b := range bankTable() {
		if err := b.setUp(cfg.BankKeys[b.code]); err != nil {
			return nil, err
		}
		s.banks[b.code] = b
		s.bankList = append(s.bankList, b)
	}
	for i, m := range cfg.Merchants {
		if err := s.RegisterMerchant(m); err != nil {
			return nil, fmt.Errorf("merchant %d: %w", i, err)
		}
	}
	for i, a := range cfg.Accounts {
		if err := s.PutAccount(a); err != nil {
			return nil, fmt.Errorf("account %d: %w", i, err)
		}
	}
	return s, nil
}

// setUp readies b to answer in its dialect: a form-rsa bank gets its
// signing key (key, or a fresh RSA-2048 one when nil). It refuses a
// dialect banksim does not speak.
func (b *bank) setUp(key *rsa.PrivateKey) error {
	switch b.dialect {
	case DialectJSONHMAC:
		return nil // it signs with each merchant's secret
	case DialectFormRSA:
	default:
		return fmt.Errorf("bank %s: banksim does not speak dialect %q", b.code, b.dialect)
	}
	if key == nil {
		var err error
		if key, err = rsa.GenerateKey(randReader, 2048); err != nil {
			return fmt.Errorf("generate %s key: %w", b.code, err)
		}
	} else if key.N.BitLen() < 2048 {
		return fmt.Errorf("bank key for %s: %d bits, want at least 2048", b.code, key.N.BitLen())
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return fmt.Errorf("bank key for %s: %w", b.code, err)
	}
	b.key = key
	b.pubPEM = string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	return nil
}

// Close stops background work: charges still PROCESSING stay so, pending
// callbacks are dropped, and "timeout" faults release their holds. It waits
// for running callback attempts to end. The handler keeps answering.
func (s *Sim) Close() {
	s.bgMu.Lock()
	s.closed = true
	s.bgMu.Unlock()
	s.cancel()
	s.bg.Wait()
}

// goBackground runs f unless the Sim is closed.
func (s *Sim) goBackground(f func()) {
	s.bgMu.Lock()
	defer s.bgMu.Unlock()
	if s.closed {
		return
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		f()
	}()
}

// Now returns the banks' clock.
func (s *Sim) Now() time.Time {
	return s.cfg.Now().Add(time.Duration(s.offset.Load()))
}

// realNow is real time (Config.Now), which signature timestamps are on.
func (s *Sim) realNow() time.Time { return s.cfg.Now() }

// SetNow moves the banks' clock to t. Signature timestamps stay on real
// time (Config.Now).
func (s *Sim) SetNow(t time.Time) {
	s.offset.Store(int64(t.Sub(s.cfg.Now())))
	s.log.Info("clock set", "now", s.Now().In(shanghai).Format(time.RFC3339))
}

// Advance moves the banks' clock by d (which may be negative).
func (s *Sim) Advance(d time.Duration) {
	s.offset.Add(int64(d))
	s.log.Info("clock advanced", "by", d.String(), "now", s.Now().In(shanghai).Format(time.RFC3339))
}

// today is the banks' current date in Asia/Shanghai.
func (s *Sim) today() string { return s.Now().In(shanghai).Format(time.DateOnly) }

// BankPublicKey returns the RSA public key a form-rsa bank signs its answers
// and callbacks with, or an error for an unknown or json-hmac bank.
func (s *Sim) BankPublicKey(code string) (*rsa.PublicKey, error) {
	b := s.banks[code]
	if b == nil {
		return nil, fmt.Errorf("unknown bank %q", code)
	}
	if b.key == nil {
		return nil, fmt.Errorf("bank %s signs with HMAC, not RSA", code)
	}
	return &b.key.PublicKey, nil
}

// RegisterMerchant registers the platform at a bank, replacing earlier
// credentials and notify URL for the same merchant number. A json-hmac bank
// needs HMACSecret, a form-rsa bank PublicKeyPEM; NotifyURL, when given,
// must be an absolute http(s) URL.
func (s *Sim) RegisterMerchant(m Merchant) error {
	b := s.banks[m.BankCode]
	if b == nil {
		return fmt.Errorf("unknown bank_code %q", m.BankCode)
	}
	if !validIdentifier(m.MerchantNo) {
		return errors.New("merchant_no: want 1-64 printable ASCII characters without spaces")
	}
	if m.NotifyURL != "" && !validNotifyURL(m.NotifyURL) {
		return errors.New("notify_url: want an absolute http(s) URL")
	}
	reg := &merchant{bank: b, no: m.MerchantNo, notifyURL: m.NotifyURL}
	switch b.dialect {
	case DialectJSONHMAC:
		if len(m.HMACSecret) < 16 {
			return fmt.Errorf("hmac_secret: %s signs with HMAC and needs a secret of at least 16 bytes", b.code)
		}
		reg.secret = []byte(m.HMACSecret)
	case DialectFormRSA:
		pub, err := parseRSAPublicKey(m.PublicKeyPEM)
		if err != nil {
			return fmt.Errorf("public_key_pem: %w", err)
		}
		reg.pub = pub
	default:
		return fmt.Errorf("bank %s speaks dialect %q, whose credentials banksim does not know", b.code, b.dialect)
	}
	s.merchantsMu.Lock()
	s.merchants[merchantKey{b.code, m.MerchantNo}] = reg
	s.merchantsMu.Unlock()
	s.log.Info("merchant registered", "merchant", m)
	return nil
}

func parseRSAPublicKey(p string) (*rsa.PublicKey, error) {
	blk, _ := pem.Decode([]byte(p))
	if blk == nil {
		return nil, errors.New("no PEM block")
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("not a PKIX public key: %w", err)
	}
	pub, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, errors.New("not an RSA key")
	}
	if pub.N.BitLen() < 2048 {
		return nil, fmt.Errorf("RSA key of %d bits, want at least 2048", pub.N.BitLen())
	}
	return pub, nil
}

func (s *Sim) merchant(b *bank, no string) *merchant {
	s.merchantsMu.RLock()
	m := s.merchants[merchantKey{b.code, no}]
	s.merchantsMu.RUnlock()
	return m
}

// Handler serves the banks, the carrier and the test-control endpoints.
func (s *Sim) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, struct {
			Status string `json:"status"`
		}{"ok"})
	})
	mux.HandleFunc("POST /banks/{code}/{op}", s.serveBank)
	mux.HandleFunc("POST /carrier/sms", s.serveCarrierSMS)

	ctl := func(pattern string, h http.HandlerFunc) { mux.Handle(pattern, s.loopbackOnly(h)) }
	ctl("GET /sim/banks", s.serveBanks)
	ctl("POST /sim/merchants", s.servePostMerchant)
	ctl("POST /sim/accounts", s.servePostAccount)
	ctl("GET /sim/accounts/{card_number}", s.serveGetAccount)
	ctl("GET /sim/sms", s.serveGetSMS)
	ctl("POST /sim/faults", s.servePostFault)
	ctl("GET /sim/faults", s.serveGetFaults)
	ctl("DELETE /sim/faults", s.serveDeleteFaults)
	ctl("GET /sim/ledger", s.serveLedger)
	ctl("POST /sim/agreements/terminate", s.servePostTerminate)
	ctl("GET /sim/clock", s.serveGetClock)
	ctl("POST /sim/clock", s.servePostClock)
	return mux
}

// loopbackOnly refuses test control to clients that are not on loopback,
// unless Config.RemoteControl is set.
func (s *Sim) loopbackOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.cfg.RemoteControl {
			ap, err := netip.ParseAddrPort(r.RemoteAddr)
			if err != nil || !ap.Addr().Unmap().IsLoopback() {
				writeError(w, http.StatusForbidden, "test control is served to loopback clients only")
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}
