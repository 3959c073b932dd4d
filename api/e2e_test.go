package api_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/big"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/quickpay/quickpay/api"
	"github.com/quickpay/quickpay/api/apitest"
	"github.com/quickpay/quickpay/api/idempotency"
	"github.com/quickpay/quickpay/bankadapters/channels"
	"github.com/quickpay/quickpay/bankadapters/conformance"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/dev/simclient"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/ids"
	"github.com/quickpay/quickpay/internal/webhooks"
)

// TestE2E drives the merchant API end to end over real HTTP: real
// merchants and tokens, the real binding service over Postgres, SoftHSM2,
// Vault and banksim, idempotency keys, and webhook deliveries worked by a
// real River client. apitest checks every answer against api/openapi.yaml.
// Every card number, ID number, CVV2, expiry and code the test uses is
// tracked; the last subtest scans a pg_dump of the package's database and
// every log line quickpay wrote for them.
func TestE2E(t *testing.T) {
	t.Parallel()
	e := newE2E(t)

	t.Run("flows", func(t *testing.T) {
		t.Run("explicit member binds a debit card and unbinds it", e.testExplicitHappyPath)
		t.Run("implicit member appears when its credit card is confirmed", e.testImplicitHappyPath)
		t.Run("validation_failed names the field", e.testValidation)
		t.Run("refusals before and at the bank", e.testRefusals)
		t.Run("codes", e.testOTP)
		t.Run("code expiry and resends on the injected clock", e.testClock)
		t.Run("member_exists", e.testMemberExists)
		t.Run("repeat binds of one card", e.testRepeatBinds)
		t.Run("another merchant sees nothing", e.testTenants)
		t.Run("one Idempotency-Key makes one bank call", e.testIdempotency)
		t.Run("a key in flight elsewhere answers idempotency_key_in_use", e.testKeyInUse)
		t.Run("webhooks are signed, listed and retried", e.testWebhooks)
	})
	// Faults are armed per bank in the banksim the flows above share, so
	// this runs alone, after them.
	t.Run("bank_unavailable then a retry succeeds", e.testBankUnavailable)
	// Last: everything above has run.
	t.Run("no card data or code in the database or the logs", e.testNoLeaks)
}

// e2e is the world of TestE2E: one stack, the main server over it, bank
// adapters and a River client that log into one capture, and the register
// of every sensitive value used.
type e2e struct {
	*testServer // the main server: system clock
	stack       *testenv.Stack
	log         *logBuf
	logger      *slog.Logger
	banks       *channels.Registry
	jobs        *river.Client[pgx.Tx]
	gen         *conformance.Gen

	mu        sync.Mutex
	sensitive map[string]string // value → kind
	bindings  []string          // ids of bound bindings, which the dump must hold
	requestID string            // one request id, which the logs must hold
}

// inFlightWait is the idempotency wait of the test servers: long enough
// that 50 concurrent requests all see the first one's answer on a loaded
// machine (the test is about one execution, not about the wait).
const inFlightWait = 30 * time.Second

func newE2E(t *testing.T) *e2e {
	t.Helper()
	st := testenv.NewStack(t)
	lb := newLogBuf()
	logger := slog.New(slog.NewJSONHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e := &e2e{stack: st, log: lb, logger: logger, gen: conformance.NewGen(), sensitive: map[string]string{}}
	e.banks = loggedBanks(t, st, logger)

	deliver, err := webhooks.NewDeliverWorker(webhooks.WorkerConfig{
		Pool: st.Pool, Vault: st.Vault, Logger: logger, AllowPrivateNetworks: true,
		Timeout: 5 * time.Second,
		// Fast retries, for tests only: production waits 30 s doubling.
		Backoff: webhooks.Backoff{Base: 20 * time.Millisecond, Max: 200 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, deliver)
	e.jobs, err = river.NewClient(riverpgxv5.New(st.Pool), &river.Config{
		// River's own chatter stays out; its warnings and errors are kept.
		Logger:            slog.New(slog.NewJSONHandler(lb, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Workers:           workers,
		Queues:            map[string]river.QueueConfig{webhooks.Queue: {MaxWorkers: 4}},
		FetchCooldown:     10 * time.Millisecond,
		FetchPollInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := e.jobs.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		_ = e.jobs.StopAndCancel(sctx)
		cancel()
	})
	e.testServer = e.server(t, clock.System{})
	return e
}

// server is a real server over e's stack with clk as its binding service's
// and auth's clock, logging into e's capture, delivering through e's River.
func (e *e2e) server(t *testing.T, clk clock.Clock) *testServer {
	t.Helper()
	return newTestServer(t, serverOptions{Stack: e.stack, Banks: e.banks, Clock: clk, Logger: e.logger, Jobs: e.jobs,
		InFlightWait: inFlightWait})
}

// tenant is a merchant with a client holding its access token.
type tenant struct {
	id string
	c  *apitest.Client
}

// merchant creates a merchant (merchants.Store.Create) and gets its access
// token from srv's POST /v1/oauth/token.
func (e *e2e) merchant(t *testing.T, srv *testServer) tenant {
	t.Helper()
	m, secret, err := srv.merchants.Create(context.Background(), "e2e merchant", []string{"bind"})
	if err != nil {
		t.Fatal(err)
	}
	c := apitest.NewClient(t, srv.url)
	return tenant{id: m.ID, c: c.WithToken(c.Token(t, m.ClientID, secret))}
}

// track registers a sensitive value for the leak scan.
func (e *e2e) track(kind, value string) {
	if value == "" {
		return
	}
	e.mu.Lock()
	e.sensitive[value] = kind
	e.mu.Unlock()
}

// account opens a fresh account at banksim and tracks its card data.
func (e *e2e) account(t *testing.T, bank, cardType string) conformance.Account {
	t.Helper()
	a := e.testServer.account(t, e.gen, bank, cardType)
	e.track("PAN", a.CardNumber)
	e.track("ID number", a.IDNumber)
	e.track("CVV2", a.CVV2)
	e.track("expiry", a.Expiry)
	return a
}

// texts are the SMS banksim sent to phone, newest first.
func (e *e2e) texts(t *testing.T, phone string) []simclient.SMS {
	t.Helper()
	texts, err := e.SimCtl.SMS(context.Background(), phone)
	if err != nil {
		t.Fatal(err)
	}
	return texts
}

// wantTexts fails unless banksim sent exactly n texts to phone.
func (e *e2e) wantTexts(t *testing.T, phone string, n int) {
	t.Helper()
	if got := len(e.texts(t, phone)); got != n {
		t.Errorf("banksim sent %d texts to the phone, want %d", got, n)
	}
}

// otp is the newest code banksim texted to phone.
func (e *e2e) otp(t *testing.T, phone string) string {
	t.Helper()
	texts := e.texts(t, phone)
	if len(texts) == 0 || texts[0].Code == "" {
		t.Fatal("banksim sent no code to the phone")
	}
	e.track("OTP", texts[0].Code)
	return texts[0].Code
}

// wrongOTP is a random 6-digit code other than right, tracked.
func (e *e2e) wrongOTP(t *testing.T, right string) string {
	t.Helper()
	for {
		n, err := rand.Int(rand.Reader, big.NewInt(1_000_000))
		if err != nil {
			t.Fatal(err)
		}
		if code := fmt.Sprintf("%06d", n.Int64()); code != right {
			e.track("OTP", code)
			return code
		}
	}
}

// Answers as the document describes them.
type e2eMember struct {
	ID         string    `json:"id"`
	ExternalID string    `json:"external_id"`
	Kind       string    `json:"kind"`
	CreatedAt  time.Time `json:"created_at"`
}

type e2eCardInfo struct {
	BankCode  string `json:"bank_code"`
	BankName  string `json:"bank_name"`
	CardType  string `json:"card_type"`
	MaskedPAN string `json:"masked_pan"`
	Last4     string `json:"last4"`
}

type e2eBinding struct {
	ID       string         `json:"id"`
	Status   binding.Status `json:"status"`
	MemberID *string        `json:"member_id"`
	CardID   *string        `json:"card_id"`
	Card     e2eCardInfo    `json:"card"`
	OTP      *struct {
		ExpiresAt    time.Time `json:"expires_at"`
		AttemptsLeft int       `json:"attempts_left"`
		ResendAfter  time.Time `json:"resend_after"`
	} `json:"otp"`
	FailureCode *string   `json:"failure_code"`
	CreatedAt   time.Time `json:"created_at"`
}

type e2eCard struct {
	ID       string             `json:"id"`
	MemberID string             `json:"member_id"`
	Status   binding.CardStatus `json:"status"`
	e2eCardInfo
	CreatedAt time.Time `json:"created_at"`
}

func str(p *string) string {
	if p == nil {
		return "<null>"
	}
	return *p
}

func sameMicrosecond(a, b time.Time) bool {
	return a.Truncate(time.Microsecond).Equal(b.Truncate(time.Microsecond))
}

func maskedPAN(pan string) string {
	return pan[:6] + strings.Repeat("*", len(pan)-10) + pan[len(pan)-4:]
}

// wantError fails unless res is an error answer with status, code and
// field ("" for none), whose request_id is the answer's X-Request-Id.
func wantError(t *testing.T, res *apitest.Response, status int, code, field string) apitest.APIError {
	t.Helper()
	got := res.APIError()
	if res.Status != status || got.Code != code || got.Field != field {
		t.Errorf("%s %s → %d %q field %q, want %d %q field %q", res.Method, res.Path, res.Status, got.Code, got.Field, status, code, field)
	}
	if got.RequestID == "" || got.RequestID != res.Header.Get(echoRequestID) {
		t.Errorf("%s %s: request_id %q, X-Request-Id %q", res.Method, res.Path, got.RequestID, res.Header.Get(echoRequestID))
	}
	return got
}

const echoRequestID = "X-Request-Id"

// member creates an explicit member.
func (e *e2e) member(t *testing.T, c *apitest.Client, body map[string]string) e2eMember {
	t.Helper()
	if body["external_id"] == "" {
		body["external_id"] = "user-" + randomHex(t, 6)
	}
	res := c.Post(t, "/v1/members", body)
	var m e2eMember
	if !res.WantStatus(t, http.StatusCreated) || !res.Decode(t, &m) {
		t.FailNow()
	}
	if !ids.Valid("mem", m.ID) || m.Kind != "explicit" || m.ExternalID != body["external_id"] {
		t.Fatalf("member = %+v, want an explicit mem_ for %s", m, body["external_id"])
	}
	return m
}

// start posts a binding and wants 201 otp_sent.
func (e *e2e) start(t *testing.T, c *apitest.Client, req map[string]string, opts ...apitest.Option) e2eBinding {
	t.Helper()
	res := c.Post(t, "/v1/bindings", req, opts...)
	var b e2eBinding
	if !res.WantStatus(t, http.StatusCreated) || !res.Decode(t, &b) {
		t.FailNow()
	}
	if b.Status != binding.StatusOTPSent || b.OTP == nil || b.CardID != nil {
		t.Fatalf("started binding = %+v, want otp_sent with otp and no card", b)
	}
	return b
}

// confirm confirms b with the newest code sent to phone and wants it bound.
func (e *e2e) confirm(t *testing.T, c *apitest.Client, bindingID, phone string) e2eBinding {
	t.Helper()
	res := c.Post(t, "/v1/bindings/"+bindingID+"/confirm", map[string]string{"otp": e.otp(t, phone)})
	var b e2eBinding
	if !res.WantStatus(t, http.StatusOK) || !res.Decode(t, &b) {
		t.FailNow()
	}
	if b.ID != bindingID || b.Status != binding.StatusBound || b.CardID == nil || !ids.Valid("card", *b.CardID) ||
		b.MemberID == nil || b.OTP != nil {
		t.Fatalf("confirmed binding = %+v, want bound with card_id and member_id", b)
	}
	e.mu.Lock()
	e.bindings = append(e.bindings, b.ID)
	if e.requestID == "" {
		e.requestID = res.Header.Get(echoRequestID)
	}
	e.mu.Unlock()
	return b
}

// bindCard binds a's card for owner (member_id or external_user_id) and
// returns the bound binding.
func (e *e2e) bindCard(t *testing.T, c *apitest.Client, ownerKey, owner string, a conformance.Account) e2eBinding {
	t.Helper()
	req := bindRequest(a)
	req[ownerKey] = owner
	b := e.start(t, c, req)
	return e.confirm(t, c, b.ID, a.Phone)
}

// agreements are banksim's agreements of card.
func (e *e2e) agreements(t *testing.T, card string) []simclient.Agreement {
	t.Helper()
	st, err := e.SimCtl.Account(context.Background(), card)
	if err != nil {
		t.Fatal(err)
	}
	return st.Agreements
}

func agreementStatuses(ags []simclient.Agreement) []string {
	var out []string
	for _, a := range ags {
		out = append(out, a.Status)
	}
	return out
}

func (e *e2e) testExplicitHappyPath(t *testing.T) {
	t.Parallel()
	m := e.merchant(t, e.testServer)
	a := e.account(t, "ICBC", "debit")

	mem := e.member(t, m.c, map[string]string{})
	var got e2eMember
	// (To the microsecond: see the subtest below.)
	if res := m.c.Get(t, "/v1/members/"+mem.ID); res.WantStatus(t, http.StatusOK) && res.Decode(t, &got) &&
		(got.ID != mem.ID || got.ExternalID != mem.ExternalID || got.Kind != mem.Kind || !sameMicrosecond(got.CreatedAt, mem.CreatedAt)) {
		t.Errorf("GET member = %+v, want %+v", got, mem)
	}

	req := bindRequest(a)
	req["member_id"] = mem.ID
	b := e.start(t, m.c, req)
	t.Run("create answers carry the times later reads show", func(t *testing.T) {
		if got.CreatedAt != mem.CreatedAt {
			t.Errorf("POST /v1/members created_at %s, GET %s", mem.CreatedAt.Format(time.RFC3339Nano), got.CreatedAt.Format(time.RFC3339Nano))
		}
		var read e2eBinding
		if res := m.c.Get(t, "/v1/bindings/"+b.ID); res.WantStatus(t, http.StatusOK) && res.Decode(t, &read) &&
			(read.CreatedAt != b.CreatedAt || read.OTP == nil || *read.OTP != *b.OTP) {
			t.Errorf("POST /v1/bindings answered created_at %s otp %+v; GET answers %s %+v",
				b.CreatedAt.Format(time.RFC3339Nano), *b.OTP, read.CreatedAt.Format(time.RFC3339Nano), read.OTP)
		}
	})
	wantCard := e2eCardInfo{BankCode: "ICBC", BankName: b.Card.BankName, CardType: "debit",
		MaskedPAN: maskedPAN(a.CardNumber), Last4: a.CardNumber[len(a.CardNumber)-4:]}
	if !ids.Valid("bnd", b.ID) || str(b.MemberID) != mem.ID || b.Card != wantCard || b.Card.BankName == "" {
		t.Errorf("binding = %+v, want bnd_ of %s with card %+v", b, mem.ID, wantCard)
	}
	if b.OTP.AttemptsLeft != binding.OTPMaxAttempts ||
		!b.OTP.ExpiresAt.Equal(b.CreatedAt.Add(binding.OTPValidity)) ||
		!b.OTP.ResendAfter.Equal(b.CreatedAt.Add(binding.OTPResendGap)) {
		t.Errorf("otp = %+v for a binding created at %s", *b.OTP, b.CreatedAt)
	}
	e.wantTexts(t, a.Phone, 1)
	if ags := e.agreements(t, a.CardNumber); len(ags) != 0 {
		t.Errorf("agreements before the code = %v, want none", agreementStatuses(ags))
	}

	bound := e.confirm(t, m.c, b.ID, a.Phone)
	if str(bound.MemberID) != mem.ID || bound.Card != wantCard {
		t.Errorf("bound binding = %+v, want member %s and card %+v", bound, mem.ID, wantCard)
	}
	cardID := *bound.CardID

	var again e2eBinding
	if res := m.c.Get(t, "/v1/bindings/"+b.ID); res.WantStatus(t, http.StatusOK) && res.Decode(t, &again) &&
		(again.Status != binding.StatusBound || str(again.CardID) != cardID || again.OTP != nil) {
		t.Errorf("GET binding = %+v, want bound to %s", again, cardID)
	}
	wantActive := e2eCard{ID: cardID, MemberID: mem.ID, Status: binding.CardActive, e2eCardInfo: wantCard}
	var card e2eCard
	if res := m.c.Get(t, "/v1/cards/"+cardID); res.WantStatus(t, http.StatusOK) && res.Decode(t, &card) {
		wantActive.CreatedAt = card.CreatedAt
		if card != wantActive || card.CreatedAt.IsZero() {
			t.Errorf("GET card = %+v, want %+v", card, wantActive)
		}
	}
	var list struct{ Data []e2eCard }
	if res := m.c.Get(t, "/v1/members/"+mem.ID+"/cards"); res.WantStatus(t, http.StatusOK) && res.Decode(t, &list) &&
		(len(list.Data) != 1 || list.Data[0] != wantActive) {
		t.Errorf("member cards = %+v, want only %+v", list.Data, wantActive)
	}
	if ags := e.agreements(t, a.CardNumber); !slices.Equal(agreementStatuses(ags), []string{"active"}) {
		t.Errorf("banksim agreements after confirm = %v, want one active", agreementStatuses(ags))
	}

	res := m.c.Delete(t, "/v1/cards/"+cardID)
	wantUnbound := wantActive
	wantUnbound.Status = binding.CardUnbound
	if res.WantStatus(t, http.StatusOK) && res.Decode(t, &card) && card != wantUnbound {
		t.Errorf("DELETE card = %+v, want %+v", card, wantUnbound)
	}
	if res := m.c.Get(t, "/v1/cards/"+cardID); res.WantStatus(t, http.StatusOK) && res.Decode(t, &card) && card.Status != binding.CardUnbound {
		t.Errorf("GET card after DELETE: status %q, want unbound", card.Status)
	}
	if res := m.c.Get(t, "/v1/members/"+mem.ID+"/cards"); res.WantStatus(t, http.StatusOK) && res.Decode(t, &list) &&
		(len(list.Data) != 1 || list.Data[0].Status != binding.CardUnbound) {
		t.Errorf("member cards after DELETE = %+v, want the one card unbound", list.Data)
	}
	if ags := e.agreements(t, a.CardNumber); !slices.Equal(agreementStatuses(ags), []string{"terminated"}) {
		t.Errorf("banksim agreements after DELETE = %v, want the one terminated", agreementStatuses(ags))
	}
}

func (e *e2e) testImplicitHappyPath(t *testing.T) {
	t.Parallel()
	m := e.merchant(t, e.testServer)
	a := e.account(t, "CMB", "credit")
	ext := "user-" + randomHex(t, 6)
	find := "/v1/members?external_id=" + ext

	wantError(t, m.c.Get(t, find), http.StatusNotFound, "not_found", "")
	req := bindRequest(a)
	req["external_user_id"] = ext
	b := e.start(t, m.c, req)
	if b.MemberID != nil || b.Card.BankCode != "CMB" || b.Card.CardType != "credit" || b.Card.MaskedPAN != maskedPAN(a.CardNumber) {
		t.Errorf("implicit binding = %+v, want no member yet and a CMB credit card", b)
	}
	// The member exists only once the card is bound.
	wantError(t, m.c.Get(t, find), http.StatusNotFound, "not_found", "")

	bound := e.confirm(t, m.c, b.ID, a.Phone)
	var mem e2eMember
	if res := m.c.Get(t, find); !res.WantStatus(t, http.StatusOK) || !res.Decode(t, &mem) {
		t.FailNow()
	}
	if mem.ID != *bound.MemberID || mem.Kind != "implicit" || mem.ExternalID != ext {
		t.Errorf("found member = %+v, want implicit %s for %s", mem, *bound.MemberID, ext)
	}
	var byID e2eMember
	if res := m.c.Get(t, "/v1/members/"+mem.ID); res.WantStatus(t, http.StatusOK) && res.Decode(t, &byID) && byID != mem {
		t.Errorf("GET member = %+v, want %+v", byID, mem)
	}
	var card e2eCard
	if res := m.c.Get(t, "/v1/cards/"+*bound.CardID); res.WantStatus(t, http.StatusOK) && res.Decode(t, &card) &&
		(card.MemberID != mem.ID || card.Status != binding.CardActive || card.CardType != "credit") {
		t.Errorf("card = %+v, want the implicit member's active credit card", card)
	}
	var list struct{ Data []e2eCard }
	if res := m.c.Get(t, "/v1/members/"+mem.ID+"/cards"); res.WantStatus(t, http.StatusOK) && res.Decode(t, &list) &&
		(len(list.Data) != 1 || list.Data[0].ID != *bound.CardID) {
		t.Errorf("member cards = %+v, want only %s", list.Data, *bound.CardID)
	}
	// The implicit member holds its external id like an explicit one.
	wantError(t, m.c.Post(t, "/v1/members", map[string]string{"external_id": ext}), http.StatusConflict, "member_exists", "")

	if res := m.c.Delete(t, "/v1/cards/"+*bound.CardID); res.WantStatus(t, http.StatusOK) && res.Decode(t, &card) && card.Status != binding.CardUnbound {
		t.Errorf("DELETE card: status %q, want unbound", card.Status)
	}
	if ags := e.agreements(t, a.CardNumber); !slices.Equal(agreementStatuses(ags), []string{"terminated"}) {
		t.Errorf("banksim agreements after DELETE = %v, want the one terminated", agreementStatuses(ags))
	}
}

func (e *e2e) testValidation(t *testing.T) {
	t.Parallel()
	m := e.merchant(t, e.testServer)
	mem := e.member(t, m.c, map[string]string{})
	debit := e.account(t, "ICBC", "debit")
	credit := e.account(t, "CMB", "credit")

	// A Luhn-failing card number and an ID number with a wrong check
	// character, both otherwise well-formed.
	last := debit.CardNumber[len(debit.CardNumber)-1]
	badPAN := debit.CardNumber[:len(debit.CardNumber)-1] + strconv.Itoa(int(last-'0'+1)%10)
	badID := debit.IDNumber[:17] + map[bool]string{true: "1", false: "X"}[debit.IDNumber[17] == 'X']
	numberPAN := e.gen.CardNumber("622202", 19) // sent as a JSON number
	e.track("PAN", badPAN)
	e.track("ID number", badID)
	e.track("PAN", numberPAN)

	with := func(a conformance.Account, change map[string]any) map[string]any {
		req := map[string]any{"member_id": mem.ID}
		for k, v := range bindRequest(a) {
			req[k] = v
		}
		for k, v := range change {
			if v == nil {
				delete(req, k)
			} else {
				req[k] = v
			}
		}
		return req
	}
	for _, tc := range []struct {
		name   string
		body   map[string]any
		status int
		field  string
	}{
		{"holder_name with digits", with(debit, map[string]any{"holder_name": "X1"}), 422, "holder_name"},
		{"holder_name missing", with(debit, map[string]any{"holder_name": nil}), 422, "holder_name"},
		{"id_number with a wrong check character", with(debit, map[string]any{"id_number": badID}), 422, "id_number"},
		{"card_number failing Luhn", with(debit, map[string]any{"card_number": badPAN}), 422, "card_number"},
		{"card_number too short", with(debit, map[string]any{"card_number": "1234"}), 422, "card_number"},
		{"phone not a mobile number", with(debit, map[string]any{"phone": "12345678901"}), 422, "phone"},
		{"credit expiry month 13", with(credit, map[string]any{"expiry": "1399"}), 422, "expiry"},
		{"credit expiry missing", with(credit, map[string]any{"expiry": nil}), 422, "expiry"},
		{"credit cvv2 of 2 digits", with(credit, map[string]any{"cvv2": "12"}), 422, "cvv2"},
		{"credit cvv2 missing", with(credit, map[string]any{"cvv2": nil}), 422, "cvv2"},
		{"member_id and external_user_id", with(debit, map[string]any{"external_user_id": "u-both"}), 422, "member_id"},
		{"neither member_id nor external_user_id", with(debit, map[string]any{"member_id": nil}), 422, "member_id"},
		{"external_user_id too long", with(debit, map[string]any{"member_id": nil, "external_user_id": strings.Repeat("u", 129)}), 422, "external_user_id"},
		{"unknown JSON field", with(debit, map[string]any{"pin": "123456"}), 400, "pin"},
		{"holder_name of the wrong type", with(debit, map[string]any{"holder_name": 42}), 400, "holder_name"},
		{"card_number of the wrong type", with(debit, map[string]any{"card_number": json.Number(numberPAN)}), 400, "card_number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, m.c.Post(t, "/v1/bindings", tc.body), tc.status, "validation_failed", tc.field)
		})
	}
	t.Run("malformed JSON", func(t *testing.T) {
		wantError(t, m.c.Post(t, "/v1/bindings", []byte(`{"holder_name":`)), http.StatusBadRequest, "malformed_json", "")
		wantError(t, m.c.Post(t, "/v1/bindings", []byte(`{} {}`)), http.StatusBadRequest, "malformed_json", "")
		wantError(t, m.c.Post(t, "/v1/bindings", []byte(``)), http.StatusBadRequest, "malformed_json", "")
		for _, notObject := range []string{`[]`, `"x"`, `123`, `true`, `null`, ` null `} {
			wantError(t, m.c.Post(t, "/v1/bindings", []byte(notObject)), http.StatusBadRequest, "malformed_json", "")
		}
	})
	t.Run("body over 64 KiB", func(t *testing.T) {
		body, err := json.Marshal(with(debit, map[string]any{"holder_name": strings.Repeat("张", api.MaxBody/3+1)}))
		if err != nil {
			t.Fatal(err)
		}
		wantError(t, m.c.Post(t, "/v1/bindings", body), http.StatusRequestEntityTooLarge, "body_too_large", "")
		wantError(t, m.c.Post(t, "/v1/bindings", body, apitest.IdempotencyKey("big-"+randomHex(t, 4))),
			http.StatusRequestEntityTooLarge, "body_too_large", "")
		// Exactly the limit is read.
		fits := append([]byte(`{"x":"`), bytes.Repeat([]byte("a"), api.MaxBody-len(`{"x":""}`))...)
		fits = append(fits, `"}`...)
		wantError(t, m.c.Post(t, "/v1/bindings", fits), http.StatusBadRequest, "validation_failed", "x")
	})
	t.Run("a route that takes no body refuses one", func(t *testing.T) {
		path := "/v1/bindings/" + ids.New("bnd") + "/resend"
		wantError(t, m.c.Post(t, path, map[string]any{"reason": "lost"}), http.StatusBadRequest, "validation_failed", "reason")
		wantError(t, m.c.Post(t, path, []byte(`{`)), http.StatusBadRequest, "malformed_json", "")
		wantError(t, m.c.Post(t, path, bytes.Repeat([]byte(" "), api.MaxBody+1)), http.StatusRequestEntityTooLarge,
			"body_too_large", "")
		// Empty, or an object without fields: the binding is looked up.
		wantError(t, m.c.Post(t, path, []byte(``)), http.StatusNotFound, "not_found", "")
		wantError(t, m.c.Post(t, path, []byte(` {} `)), http.StatusNotFound, "not_found", "")
	})
	t.Run("no refused request reached the bank", func(t *testing.T) {
		e.wantTexts(t, debit.Phone, 0)
		e.wantTexts(t, credit.Phone, 0)
	})
}

func (e *e2e) testRefusals(t *testing.T) {
	t.Parallel()
	m := e.merchant(t, e.testServer)

	t.Run("card_unsupported", func(t *testing.T) {
		t.Parallel()
		a := e.account(t, "ICBC", "debit")
		req := bindRequest(a)
		req["external_user_id"] = "user-" + randomHex(t, 6)
		req["card_number"] = e.gen.CardNumber("999999", 16)
		e.track("PAN", req["card_number"])
		wantError(t, m.c.Post(t, "/v1/bindings", req), http.StatusUnprocessableEntity, "card_unsupported", "")
	})

	t.Run("elements_mismatch names the element the bank refused", func(t *testing.T) {
		t.Parallel()
		debit := e.account(t, "ICBC", "debit")
		credit := e.account(t, "CMB", "credit")
		otherID, otherPAN := e.gen.ResidentID(), e.gen.CardNumber("622202", 19)
		e.track("ID number", otherID)
		e.track("PAN", otherPAN)
		wrongCVV := fmt.Sprintf("%03d", (mustAtoi(t, credit.CVV2)+1)%1000)
		e.track("CVV2", wrongCVV)
		for _, tc := range []struct {
			a      conformance.Account
			change map[string]string
			field  string
		}{
			{debit, map[string]string{"holder_name": "欧阳修"}, "holder_name"},
			{debit, map[string]string{"id_number": otherID}, "id_number"},
			{debit, map[string]string{"phone": e.gen.Phone()}, "phone"},
			{debit, map[string]string{"card_number": otherPAN}, "card_number"}, // routable, unknown at the bank
			{credit, map[string]string{"cvv2": wrongCVV}, "expiry"},            // banks do not say which
		} {
			req := bindRequest(tc.a)
			req["external_user_id"] = "user-" + randomHex(t, 6)
			maps.Copy(req, tc.change)
			wantError(t, m.c.Post(t, "/v1/bindings", req), http.StatusUnprocessableEntity, "elements_mismatch", tc.field)
			// No member was made for the refused binding.
			wantError(t, m.c.Get(t, "/v1/members?external_id="+req["external_user_id"]), http.StatusNotFound, "not_found", "")
		}
		e.wantTexts(t, debit.Phone, 0)
		e.wantTexts(t, credit.Phone, 0)
	})

	t.Run("card_declined for a card the bank has frozen or closed", func(t *testing.T) {
		t.Parallel()
		for _, status := range []string{"frozen", "closed"} {
			a := e.account(t, "ICBC", "debit")
			a.Status = status
			if err := e.SimCtl.PutAccount(context.Background(), a); err != nil {
				t.Fatal(err)
			}
			req := bindRequest(a)
			req["external_user_id"] = "user-" + randomHex(t, 6)
			wantError(t, m.c.Post(t, "/v1/bindings", req), http.StatusUnprocessableEntity, "card_declined", "")
			e.wantTexts(t, a.Phone, 0)
		}
	})

	t.Run("identity_mismatch against the member's identity", func(t *testing.T) {
		t.Parallel()
		a := e.account(t, "ICBC", "debit")
		someoneElse := e.gen.ResidentID()
		e.track("ID number", someoneElse)
		byID := e.member(t, m.c, map[string]string{"name": a.HolderName, "id_number": someoneElse})
		byName := e.member(t, m.c, map[string]string{"name": "欧阳修", "id_number": a.IDNumber})
		for member, field := range map[string]string{byID.ID: "id_number", byName.ID: "holder_name"} {
			req := bindRequest(a)
			req["member_id"] = member
			wantError(t, m.c.Post(t, "/v1/bindings", req), http.StatusUnprocessableEntity, "identity_mismatch", field)
		}
		e.wantTexts(t, a.Phone, 0)

		// A member whose identity a bound card verified refuses another person's card.
		verified := e.member(t, m.c, map[string]string{})
		e.bindCard(t, m.c, "member_id", verified.ID, a)
		other := e.account(t, "CCB", "debit")
		req := bindRequest(other)
		req["member_id"] = verified.ID
		wantError(t, m.c.Post(t, "/v1/bindings", req), http.StatusUnprocessableEntity, "identity_mismatch", "id_number")
		e.wantTexts(t, other.Phone, 0)
	})

	t.Run("not_found", func(t *testing.T) {
		t.Parallel()
		a := e.account(t, "ICBC", "debit")
		req := bindRequest(a)
		for _, member := range []string{ids.New("mem"), "mem_x", ids.New("card")} {
			req["member_id"] = member
			wantError(t, m.c.Post(t, "/v1/bindings", req), http.StatusNotFound, "not_found", "")
		}
		for _, path := range []string{"/v1/members/" + ids.New("mem"), "/v1/members/" + ids.New("mem") + "/cards",
			"/v1/bindings/" + ids.New("bnd"), "/v1/bindings/bnd_nonsense", "/v1/cards/" + ids.New("card"), "/v1/cards/" + ids.New("bnd")} {
			wantError(t, m.c.Get(t, path), http.StatusNotFound, "not_found", "")
		}
		wantError(t, m.c.Post(t, "/v1/bindings/"+ids.New("bnd")+"/resend", nil), http.StatusNotFound, "not_found", "")
		wantError(t, m.c.Post(t, "/v1/bindings/"+ids.New("bnd")+"/confirm", map[string]string{"otp": "123456"}),
			http.StatusNotFound, "not_found", "")
		wantError(t, m.c.Delete(t, "/v1/cards/"+ids.New("card")), http.StatusNotFound, "not_found", "")
		e.wantTexts(t, a.Phone, 0)
	})
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (e *e2e) testOTP(t *testing.T) {
	t.Parallel()
	m := e.merchant(t, e.testServer)
	get := func(t *testing.T, id string) e2eBinding {
		t.Helper()
		var b e2eBinding
		if res := m.c.Get(t, "/v1/bindings/"+id); !res.WantStatus(t, http.StatusOK) || !res.Decode(t, &b) {
			t.FailNow()
		}
		return b
	}

	t.Run("five wrong codes end the binding", func(t *testing.T) {
		t.Parallel()
		a := e.account(t, "ICBC", "debit")
		req := bindRequest(a)
		req["external_user_id"] = "user-" + randomHex(t, 6)
		b := e.start(t, m.c, req)
		right := e.otp(t, a.Phone)
		confirm := "/v1/bindings/" + b.ID + "/confirm"

		// A malformed code is not a try.
		wantError(t, m.c.Post(t, confirm, map[string]string{"otp": "12345"}), http.StatusUnprocessableEntity, "validation_failed", "otp")
		if got := get(t, b.ID); got.OTP == nil || got.OTP.AttemptsLeft != 5 {
			t.Errorf("after a malformed code: %+v, want 5 attempts left", got.OTP)
		}
		for left := 4; left >= 1; left-- {
			wrong := e.wrongOTP(t, right)
			got := wantError(t, m.c.Post(t, confirm, map[string]string{"otp": wrong}), http.StatusUnprocessableEntity, "otp_incorrect", "")
			if got.AttemptsLeft == nil || *got.AttemptsLeft != left {
				t.Errorf("attempts_left = %v, want %d", got.AttemptsLeft, left)
			}
		}
		if got := get(t, b.ID); got.Status != binding.StatusOTPSent || got.OTP == nil || got.OTP.AttemptsLeft != 1 {
			t.Errorf("after 4 wrong codes: %+v, want otp_sent with 1 attempt left", got)
		}
		wantError(t, m.c.Post(t, confirm, map[string]string{"otp": e.wrongOTP(t, right)}), http.StatusUnprocessableEntity, "otp_attempts_exceeded", "")
		// The binding is over: the right code, and a resend, are refused.
		wantError(t, m.c.Post(t, confirm, map[string]string{"otp": right}), http.StatusUnprocessableEntity, "otp_attempts_exceeded", "")
		wantError(t, m.c.Post(t, "/v1/bindings/"+b.ID+"/resend", nil), http.StatusUnprocessableEntity, "otp_attempts_exceeded", "")
		if got := get(t, b.ID); got.Status != binding.StatusFailed || str(got.FailureCode) != "otp_attempts_exceeded" || got.OTP != nil || got.CardID != nil {
			t.Errorf("failed binding = %+v, want failed otp_attempts_exceeded", got)
		}
		if ags := e.agreements(t, a.CardNumber); len(ags) != 0 {
			t.Errorf("banksim agreements = %v, want none", agreementStatuses(ags))
		}
		wantError(t, m.c.Get(t, "/v1/members?external_id="+req["external_user_id"]), http.StatusNotFound, "not_found", "")
		// The merchant hears of the failure.
		var feed struct{ Data []e2eEvent }
		if res := m.c.Get(t, "/v1/events"); res.WantStatus(t, http.StatusOK) && res.Decode(t, &feed) {
			failed := 0
			for _, ev := range feed.Data {
				var data map[string]any
				if ev.Type == webhooks.EventBindingFailed && json.Unmarshal(ev.Data, &data) == nil && data["binding_id"] == b.ID {
					failed++
					if data["failure_code"] != "otp_attempts_exceeded" || data["status"] != string(binding.StatusFailed) {
						t.Errorf("binding.failed data = %v", data)
					}
				}
			}
			if failed != 1 {
				t.Errorf("%d binding.failed events for the binding, want 1", failed)
			}
		}
	})

	t.Run("wrong code twice then right", func(t *testing.T) {
		t.Parallel()
		a := e.account(t, "CCB", "debit")
		mem := e.member(t, m.c, map[string]string{})
		req := bindRequest(a)
		req["member_id"] = mem.ID
		b := e.start(t, m.c, req)
		right := e.otp(t, a.Phone)
		for _, left := range []int{4, 3} {
			res := m.c.Post(t, "/v1/bindings/"+b.ID+"/confirm", map[string]string{"otp": e.wrongOTP(t, right)})
			if got := wantError(t, res, http.StatusUnprocessableEntity, "otp_incorrect", ""); got.AttemptsLeft == nil || *got.AttemptsLeft != left {
				t.Errorf("attempts_left = %v, want %d", got.AttemptsLeft, left)
			}
		}
		bound := e.confirm(t, m.c, b.ID, a.Phone)
		if str(bound.MemberID) != mem.ID {
			t.Errorf("bound to member %s, want %s", str(bound.MemberID), mem.ID)
		}
		// Confirming a bound binding again returns it.
		var again e2eBinding
		res := m.c.Post(t, "/v1/bindings/"+b.ID+"/confirm", map[string]string{"otp": right})
		if res.WantStatus(t, http.StatusOK) && res.Decode(t, &again) && (again.Status != binding.StatusBound || str(again.CardID) != *bound.CardID) {
			t.Errorf("confirm again = %+v, want the bound binding", again)
		}
	})
}

// clocked is a server of its own whose binding service and auth run on a
// fake clock that only this test moves.
func (e *e2e) clocked(t *testing.T) (tenant, *clock.Fake) {
	t.Helper()
	// Postgres keeps microseconds; so does this clock, so that exact
	// boundaries are exact (see the skipped subtest on precision).
	clk := clock.NewFake(time.Now().Truncate(time.Microsecond))
	srv := e.server(t, clk)
	return e.merchant(t, srv), clk
}

func (e *e2e) testClock(t *testing.T) {
	t.Parallel()

	t.Run("binding_expired after 5 minutes", func(t *testing.T) {
		t.Parallel()
		m, clk := e.clocked(t)
		a := e.account(t, "ICBC", "debit")
		req := bindRequest(a)
		req["external_user_id"] = "user-" + randomHex(t, 6)
		b := e.start(t, m.c, req)
		code := e.otp(t, a.Phone)

		clk.Advance(binding.OTPValidity)
		var got e2eBinding
		if res := m.c.Get(t, "/v1/bindings/"+b.ID); res.WantStatus(t, http.StatusOK) && res.Decode(t, &got) && got.Status != binding.StatusOTPSent {
			t.Errorf("at exactly 5 minutes the binding is %s, want otp_sent", got.Status)
		}
		clk.Advance(time.Second)
		if res := m.c.Get(t, "/v1/bindings/"+b.ID); res.WantStatus(t, http.StatusOK) && res.Decode(t, &got) &&
			(got.Status != binding.StatusExpired || str(got.FailureCode) != "binding_expired" || got.OTP != nil) {
			t.Errorf("after 5 minutes: %+v, want expired", got)
		}
		// The bank would still take the code (its clock did not move): quickpay refuses it.
		wantError(t, m.c.Post(t, "/v1/bindings/"+b.ID+"/confirm", map[string]string{"otp": code}), http.StatusGone, "binding_expired", "")
		wantError(t, m.c.Post(t, "/v1/bindings/"+b.ID+"/resend", nil), http.StatusGone, "binding_expired", "")
		if ags := e.agreements(t, a.CardNumber); len(ags) != 0 {
			t.Errorf("banksim agreements = %v, want none", agreementStatuses(ags))
		}
		e.wantTexts(t, a.Phone, 1)
	})

	t.Run("otp_resend_too_soon until 60 seconds passed", func(t *testing.T) {
		t.Parallel()
		m, clk := e.clocked(t)
		a := e.account(t, "CCB", "debit")
		req := bindRequest(a)
		req["external_user_id"] = "user-" + randomHex(t, 6)
		b := e.start(t, m.c, req)
		first := e.otp(t, a.Phone)
		resend := "/v1/bindings/" + b.ID + "/resend"

		for _, tc := range []struct {
			advance time.Duration
			wait    int
		}{{0, 60}, {59 * time.Second, 1}} {
			clk.Advance(tc.advance)
			got := wantError(t, m.c.Post(t, resend, nil), http.StatusTooManyRequests, "otp_resend_too_soon", "")
			if got.RetryAfter == nil || *got.RetryAfter != tc.wait {
				t.Errorf("retry_after = %v, want %d", got.RetryAfter, tc.wait)
			}
		}
		e.wantTexts(t, a.Phone, 1)
		clk.Advance(time.Second)
		var again e2eBinding
		res := m.c.Post(t, resend, nil)
		if !res.WantStatus(t, http.StatusOK) || !res.Decode(t, &again) {
			t.FailNow()
		}
		now := clk.Now()
		if again.Status != binding.StatusOTPSent || again.OTP == nil || !again.OTP.ExpiresAt.Equal(now.Add(binding.OTPValidity)) ||
			!again.OTP.ResendAfter.Equal(now.Add(binding.OTPResendGap)) {
			t.Errorf("after resend: %+v, want the code's times restarted at %s", again.OTP, now)
		}
		e.wantTexts(t, a.Phone, 2)
		second := e.otp(t, a.Phone)
		if second != first {
			// The bank's old code died with the resend.
			wantError(t, m.c.Post(t, "/v1/bindings/"+b.ID+"/confirm", map[string]string{"otp": first}),
				http.StatusUnprocessableEntity, "otp_incorrect", "")
		}
		e.confirm(t, m.c, b.ID, a.Phone)
	})

	t.Run("otp_resend_limit after 5 sends", func(t *testing.T) {
		t.Parallel()
		m, clk := e.clocked(t)
		a := e.account(t, "ICBC", "debit")
		req := bindRequest(a)
		req["external_user_id"] = "user-" + randomHex(t, 6)
		b := e.start(t, m.c, req)
		resend := "/v1/bindings/" + b.ID + "/resend"
		for range binding.OTPMaxSends - 1 {
			clk.Advance(binding.OTPResendGap + time.Second)
			m.c.Post(t, resend, nil).WantStatus(t, http.StatusOK)
			e.otp(t, a.Phone)
		}
		e.wantTexts(t, a.Phone, binding.OTPMaxSends)
		clk.Advance(binding.OTPResendGap + time.Second)
		got := wantError(t, m.c.Post(t, resend, nil), http.StatusTooManyRequests, "otp_resend_limit", "")
		if got.RetryAfter != nil {
			t.Errorf("otp_resend_limit carries retry_after %d: no wait helps", *got.RetryAfter)
		}
		e.wantTexts(t, a.Phone, binding.OTPMaxSends)
		// The last code still binds.
		e.confirm(t, m.c, b.ID, a.Phone)
	})
}

func (e *e2e) testMemberExists(t *testing.T) {
	t.Parallel()
	m := e.merchant(t, e.testServer)
	mem := e.member(t, m.c, map[string]string{})
	wantError(t, m.c.Post(t, "/v1/members", map[string]string{"external_id": mem.ExternalID}), http.StatusConflict, "member_exists", "")
	// Another merchant may use the same external id.
	other := e.merchant(t, e.testServer)
	e.member(t, other.c, map[string]string{"external_id": mem.ExternalID})
}

func (e *e2e) testRepeatBinds(t *testing.T) {
	t.Parallel()
	m := e.merchant(t, e.testServer)
	a := e.account(t, "ICBC", "debit")
	first := e.member(t, m.c, map[string]string{})
	bound := e.bindCard(t, m.c, "member_id", first.ID, a)

	t.Run("same card for the same member answers 200 with the same card", func(t *testing.T) {
		req := bindRequest(a)
		req["member_id"] = first.ID
		res := m.c.Post(t, "/v1/bindings", req)
		var b e2eBinding
		if res.WantStatus(t, http.StatusOK) && res.Decode(t, &b) &&
			(b.ID == bound.ID || b.Status != binding.StatusBound || str(b.CardID) != *bound.CardID || str(b.MemberID) != first.ID || b.OTP != nil) {
			t.Errorf("repeat bind = %+v, want a new binding bound to %s", b, *bound.CardID)
		}
		e.wantTexts(t, a.Phone, 1) // no bank call
	})

	t.Run("same card for another member is card_bound_elsewhere", func(t *testing.T) {
		second := e.member(t, m.c, map[string]string{})
		req := bindRequest(a)
		req["member_id"] = second.ID
		wantError(t, m.c.Post(t, "/v1/bindings", req), http.StatusConflict, "card_bound_elsewhere", "")
		req = bindRequest(a)
		req["external_user_id"] = "user-" + randomHex(t, 6)
		wantError(t, m.c.Post(t, "/v1/bindings", req), http.StatusConflict, "card_bound_elsewhere", "")
		e.wantTexts(t, a.Phone, 1)
	})

	t.Run("same card at another merchant is card_bound_elsewhere until unbound", func(t *testing.T) {
		other := e.merchant(t, e.testServer)
		req := bindRequest(a)
		req["external_user_id"] = "user-" + randomHex(t, 6)
		// The platform's agreement for the card exists at the bank.
		wantError(t, other.c.Post(t, "/v1/bindings", req), http.StatusConflict, "card_bound_elsewhere", "")
		e.wantTexts(t, a.Phone, 1)

		m.c.Delete(t, "/v1/cards/"+*bound.CardID).WantStatus(t, http.StatusOK)
		b := e.start(t, other.c, req)
		e.confirm(t, other.c, b.ID, a.Phone)
		if ags := e.agreements(t, a.CardNumber); !slices.Equal(agreementStatuses(ags), []string{"terminated", "active"}) {
			t.Errorf("banksim agreements = %v, want the first terminated and the second active", agreementStatuses(ags))
		}
	})
}

func (e *e2e) testTenants(t *testing.T) {
	t.Parallel()
	a, b := e.merchant(t, e.testServer), e.merchant(t, e.testServer)
	card := e.account(t, "ICBC", "debit")
	mem := e.member(t, a.c, map[string]string{})
	bound := e.bindCard(t, a.c, "member_id", mem.ID, card)
	pendingCard := e.account(t, "CCB", "debit")
	req := bindRequest(pendingCard)
	req["external_user_id"] = "user-" + randomHex(t, 6)
	pending := e.start(t, a.c, req)
	code := e.otp(t, pendingCard.Phone)

	// Each probe of A's object, and of a random id of the same kind.
	type probe func(t *testing.T, id string) *apitest.Response
	probes := []struct {
		name string
		do   probe
		a, x string
	}{
		{"GET member", func(t *testing.T, id string) *apitest.Response { return b.c.Get(t, "/v1/members/"+id) }, mem.ID, ids.New("mem")},
		{"GET member cards", func(t *testing.T, id string) *apitest.Response { return b.c.Get(t, "/v1/members/"+id+"/cards") }, mem.ID, ids.New("mem")},
		{"find member", func(t *testing.T, id string) *apitest.Response { return b.c.Get(t, "/v1/members?external_id="+id) },
			mem.ExternalID, "user-" + randomHex(t, 6)},
		{"bind for member", func(t *testing.T, id string) *apitest.Response {
			r := bindRequest(card)
			r["member_id"] = id
			return b.c.Post(t, "/v1/bindings", r)
		}, mem.ID, ids.New("mem")},
		{"GET binding", func(t *testing.T, id string) *apitest.Response { return b.c.Get(t, "/v1/bindings/"+id) }, bound.ID, ids.New("bnd")},
		{"resend", func(t *testing.T, id string) *apitest.Response { return b.c.Post(t, "/v1/bindings/"+id+"/resend", nil) },
			pending.ID, ids.New("bnd")},
		// A's right code: were the binding reachable, this would bind it.
		{"confirm", func(t *testing.T, id string) *apitest.Response {
			return b.c.Post(t, "/v1/bindings/"+id+"/confirm", map[string]string{"otp": code})
		}, pending.ID, ids.New("bnd")},
		{"GET card", func(t *testing.T, id string) *apitest.Response { return b.c.Get(t, "/v1/cards/"+id) }, *bound.CardID, ids.New("card")},
		{"DELETE card", func(t *testing.T, id string) *apitest.Response { return b.c.Delete(t, "/v1/cards/"+id) }, *bound.CardID, ids.New("card")},
	}
	for _, p := range probes {
		t.Run(p.name, func(t *testing.T) {
			theirs, unknown := p.do(t, p.a), p.do(t, p.x)
			got, want := theirs.APIError(), unknown.APIError()
			got.RequestID, want.RequestID = "", ""
			if theirs.Status != unknown.Status || got != want {
				t.Errorf("B on A's object → %d %+v; on an unknown id → %d %+v", theirs.Status, got, unknown.Status, want)
			}
			wantError(t, theirs, http.StatusNotFound, "not_found", "")
		})
	}

	t.Run("A's objects are untouched", func(t *testing.T) {
		var c e2eCard
		if res := a.c.Get(t, "/v1/cards/"+*bound.CardID); res.WantStatus(t, http.StatusOK) && res.Decode(t, &c) && c.Status != binding.CardActive {
			t.Errorf("A's card is %s after B's DELETE, want active", c.Status)
		}
		if ags := e.agreements(t, card.CardNumber); !slices.Equal(agreementStatuses(ags), []string{"active"}) {
			t.Errorf("banksim agreements = %v, want one active", agreementStatuses(ags))
		}
		var p e2eBinding
		if res := a.c.Get(t, "/v1/bindings/"+pending.ID); res.WantStatus(t, http.StatusOK) && res.Decode(t, &p) &&
			(p.Status != binding.StatusOTPSent || p.OTP == nil || p.OTP.AttemptsLeft != binding.OTPMaxAttempts) {
			t.Errorf("A's pending binding = %+v, want otp_sent with every attempt left", p)
		}
		e.wantTexts(t, pendingCard.Phone, 1) // B's resend sent nothing
		e.confirm(t, a.c, pending.ID, pendingCard.Phone)
		var evs struct{ Data []json.RawMessage }
		if res := b.c.Get(t, "/v1/events"); res.WantStatus(t, http.StatusOK) && res.Decode(t, &evs) && len(evs.Data) != 0 {
			t.Errorf("B sees %d events, want none", len(evs.Data))
		}
	})
}

func (e *e2e) testIdempotency(t *testing.T) {
	t.Parallel()
	m := e.merchant(t, e.testServer)
	a := e.account(t, "ICBC", "debit")
	mem := e.member(t, m.c, map[string]string{})
	req := bindRequest(a)
	req["member_id"] = mem.ID
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	key := "bind-" + randomHex(t, 8)

	const n = 50
	answers := make([]*apitest.Response, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			answers[i] = m.c.Post(t, "/v1/bindings", body, apitest.IdempotencyKey(key))
		})
	}
	close(start)
	wg.Wait()

	fresh := 0
	for i, res := range answers {
		if res.Status != http.StatusCreated {
			t.Errorf("answer %d: %d %s, want 201", i, res.Status, res.APIError().Code)
			continue
		}
		if !bytes.Equal(res.Body, answers[0].Body) {
			t.Errorf("answer %d differs from answer 0", i)
		}
		if res.Header.Get(idempotency.HeaderReplayed) != "true" {
			fresh++
		}
	}
	if fresh != 1 {
		t.Errorf("%d answers were not replays, want exactly 1", fresh)
	}
	e.wantTexts(t, a.Phone, 1) // exactly one bind_apply
	var rows int
	if err := e.Pool.QueryRow(context.Background(), `SELECT count(*) FROM bindings WHERE merchant_id = $1`, m.id).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 1 {
		t.Errorf("%d bindings stored, want 1", rows)
	}

	other := bytes.Replace(body, []byte(`"member_id"`), []byte(` "member_id"`), 1)
	wantError(t, m.c.Post(t, "/v1/bindings", other, apitest.IdempotencyKey(key)), http.StatusUnprocessableEntity, "idempotency_key_reused", "")
	again := m.c.Post(t, "/v1/bindings", body, apitest.IdempotencyKey(key))
	if again.WantStatus(t, http.StatusCreated) && (!bytes.Equal(again.Body, answers[0].Body) || again.Header.Get(idempotency.HeaderReplayed) != "true") {
		t.Error("a later retry with the key is not the saved answer replayed")
	}
	e.wantTexts(t, a.Phone, 1)
}

// testKeyInUse: a request whose key another instance holds in flight
// waits InFlightWait, then answers 409 idempotency_key_in_use (checked
// against the OpenAPI document like every answer); once that instance lets
// the key go, the request runs.
func (e *e2e) testKeyInUse(t *testing.T) {
	ctx := context.Background()
	srv := newTestServer(t, serverOptions{Stack: e.stack, Banks: e.banks, Logger: e.logger, Jobs: e.jobs,
		InFlightWait: 100 * time.Millisecond})
	m := e.merchant(t, srv)
	elsewhere, err := idempotency.New(idempotency.Config{Pool: e.Pool, Hasher: e.Vault, Logger: e.logger})
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"external_id":"user-` + randomHex(t, 6) + `"}`)
	req, err := elsewhere.NewRequest(ctx, m.id, "member-"+randomHex(t, 8), http.MethodPost, "/v1/members", body)
	if err != nil {
		t.Fatal(err)
	}
	claim, err := elsewhere.Claim(ctx, req)
	if err != nil || !claim.Owned {
		t.Fatalf("the other instance's claim = %+v, %v", claim, err)
	}
	key := apitest.IdempotencyKey(req.Key)
	wantError(t, m.c.Post(t, "/v1/members", body, key), http.StatusConflict, "idempotency_key_in_use", "")
	var members int
	if err := e.Pool.QueryRow(ctx, `SELECT count(*) FROM members WHERE merchant_id = $1`, m.id).Scan(&members); err != nil || members != 0 {
		t.Errorf("%d members (%v) after the 409, want none", members, err)
	}

	if err := elsewhere.Release(ctx, req, claim); err != nil {
		t.Fatal(err)
	}
	res := m.c.Post(t, "/v1/members", body, key)
	if res.WantStatus(t, http.StatusCreated) && res.Header.Get(idempotency.HeaderReplayed) != "" {
		t.Error("the request after the key was let go was a replay")
	}
}

// receiver is a merchant's webhook endpoint that records what it gets.
type receiver struct {
	srv  *httptest.Server
	mu   sync.Mutex
	got  []delivery
	fail int // answer 500 to this many requests first
}

type delivery struct {
	header http.Header
	body   []byte
	status int
}

func newReceiver(t *testing.T, failFirst int) *receiver {
	t.Helper()
	r := &receiver{fail: failFirst}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		status := http.StatusOK
		if len(r.got) < r.fail {
			status = http.StatusInternalServerError
		}
		r.got = append(r.got, delivery{header: req.Header.Clone(), body: body, status: status})
		r.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// of returns the deliveries of events of type typ.
func (r *receiver) of(typ string) []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []delivery
	for _, d := range r.got {
		var ev struct{ Type string }
		if json.Unmarshal(d.body, &ev) == nil && ev.Type == typ {
			out = append(out, d)
		}
	}
	return out
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) bool {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Errorf("after %s: still waiting for %s", timeout, what)
			return false
		case <-tick.C:
		}
	}
	return true
}

var signatureRE = regexp.MustCompile(`^t=[0-9]+,v1=[0-9a-f]{64}$`)

// hmacCheck verifies a Quickpay-Signature independently of package
// webhooks: "t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>".
func hmacCheck(secret, header string, body []byte, now time.Time) error {
	if !signatureRE.MatchString(header) {
		return errors.New("header is not t=<unix>,v1=<64 hex>")
	}
	ts, v1, _ := strings.Cut(strings.TrimPrefix(header, "t="), ",v1=")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return err
	}
	if d := now.Sub(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return fmt.Errorf("signed at %s, %s from now", time.Unix(sec, 0), d)
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	if want := hex.EncodeToString(mac.Sum(nil)); !hmac.Equal([]byte(v1), []byte(want)) {
		return errors.New("v1 is not the HMAC of the body")
	}
	return nil
}

// wantSigned fails unless d carries a valid signature of its body under
// secret, by webhooks.Verify and by hmacCheck, and neither accepts it for
// another body or secret.
func wantSigned(t *testing.T, d delivery, secret string) {
	t.Helper()
	sig := d.header.Get(webhooks.SignatureHeader)
	now := time.Now()
	if err := webhooks.Verify(secret, sig, d.body, now, 0); err != nil {
		t.Errorf("webhooks.Verify: %v", err)
	}
	if err := hmacCheck(secret, sig, d.body, now); err != nil {
		t.Errorf("independent HMAC check: %v", err)
	}
	tampered := append(bytes.Clone(d.body), ' ')
	if webhooks.Verify(secret, sig, tampered, now, 0) == nil || hmacCheck(secret, sig, tampered, now) == nil ||
		hmacCheck(secret+"x", sig, d.body, now) == nil {
		t.Error("the signature checks accept another body or secret")
	}
	if ct := d.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("delivery Content-Type %q", ct)
	}
}

type e2eEvent struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	CreatedAt time.Time       `json:"created_at"`
	Data      json.RawMessage `json:"data"`
}

func decodeEvent(t *testing.T, body []byte) (e2eEvent, map[string]any) {
	t.Helper()
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatalf("delivery body is not a JSON object: %v", err)
	}
	if keys := slices.Sorted(maps.Keys(raw)); !slices.Equal(keys, []string{"created_at", "data", "id", "type"}) {
		t.Errorf("delivery members %v, want created_at data id type", keys)
	}
	var ev e2eEvent
	var data map[string]any
	if err := json.Unmarshal(body, &ev); err != nil || json.Unmarshal(ev.Data, &data) != nil {
		t.Fatalf("delivery body: %v", err)
	}
	return ev, data
}

func (e *e2e) testWebhooks(t *testing.T) {
	t.Parallel()
	m := e.merchant(t, e.testServer)
	ctx := context.Background()
	setEndpoint := func(r *receiver) string {
		t.Helper()
		var ep struct {
			URL    string   `json:"url"`
			Events []string `json:"events"`
			Secret string   `json:"secret"`
		}
		res := m.c.Put(t, "/v1/webhook_endpoint", map[string]any{"url": r.srv.URL + "/quickpay"})
		if !res.WantStatus(t, http.StatusOK) || !res.Decode(t, &ep) || !strings.HasPrefix(ep.Secret, webhooks.SecretPrefix) ||
			ep.URL != r.srv.URL+"/quickpay" || len(ep.Events) != len(webhooks.EventTypes()) {
			t.Fatalf("endpoint = %+v", ep)
		}
		return ep.Secret
	}

	first := newReceiver(t, 0)
	secret := setEndpoint(first)
	a := e.account(t, "ICBC", "debit")
	mem := e.member(t, m.c, map[string]string{})
	bound := e.bindCard(t, m.c, "member_id", mem.ID, a)

	if !eventually(t, 30*time.Second, "binding.bound at the receiver", func() bool { return len(first.of(webhooks.EventBindingBound)) > 0 }) {
		t.FailNow()
	}
	d := first.of(webhooks.EventBindingBound)[0]
	wantSigned(t, d, secret)
	ev, data := decodeEvent(t, d.body)
	if !ids.Valid("evt", ev.ID) || data["binding_id"] != bound.ID || data["card_id"] != *bound.CardID ||
		data["member_id"] != mem.ID || data["status"] != string(binding.StatusBound) {
		t.Errorf("binding.bound = %s %v, want binding %s card %s", ev.ID, data, bound.ID, *bound.CardID)
	}
	var feed struct {
		Data    []e2eEvent `json:"data"`
		HasMore bool       `json:"has_more"`
	}
	if res := m.c.Get(t, "/v1/events"); res.WantStatus(t, http.StatusOK) && res.Decode(t, &feed) {
		if len(feed.Data) != 1 || feed.Data[0].ID != ev.ID || feed.Data[0].Type != webhooks.EventBindingBound ||
			!feed.Data[0].CreatedAt.Equal(ev.CreatedAt) || !jsonEqual(feed.Data[0].Data, ev.Data) || feed.HasMore {
			t.Errorf("events = %+v, want only the delivered %s", feed.Data, ev.ID)
		}
	}

	// The endpoint moves to a receiver that fails twice.
	flaky := newReceiver(t, 2)
	secret2 := setEndpoint(flaky)
	if secret2 == secret {
		t.Error("setting the endpoint again kept the secret")
	}
	m.c.Delete(t, "/v1/cards/"+*bound.CardID).WantStatus(t, http.StatusOK)
	if !eventually(t, 30*time.Second, "card.unbound answered 200", func() bool {
		got := flaky.of(webhooks.EventCardUnbound)
		return len(got) > 0 && got[len(got)-1].status == http.StatusOK
	}) {
		t.FailNow()
	}
	got := flaky.of(webhooks.EventCardUnbound)
	if len(got) != 3 {
		t.Errorf("card.unbound came %d times, want 3 (500, 500, 200)", len(got))
	}
	unbound, udata := decodeEvent(t, got[len(got)-1].body)
	for i, d := range got {
		wantSigned(t, d, secret2)
		if ev, _ := decodeEvent(t, d.body); ev.ID != unbound.ID {
			t.Errorf("attempt %d delivered %s, want the same event %s", i+1, ev.ID, unbound.ID)
		}
	}
	if udata["card_id"] != *bound.CardID || udata["status"] != string(binding.CardUnbound) {
		t.Errorf("card.unbound data = %v", udata)
	}
	if n := len(first.of(webhooks.EventCardUnbound)); n != 0 {
		t.Errorf("the former endpoint got card.unbound %d times", n)
	}

	type attempt struct {
		N      int
		Status int
		URL    string
	}
	var attempts []attempt
	eventually(t, 10*time.Second, "3 recorded attempts", func() bool {
		rows, err := e.Pool.Query(ctx, `SELECT attempt, coalesce(status_code, 0), url FROM webhook_deliveries
			WHERE merchant_id = $1 AND event_id = $2 ORDER BY attempt`, m.id, unbound.ID)
		if err != nil {
			t.Error(err)
			return true
		}
		attempts, err = pgx.CollectRows(rows, pgx.RowToStructByPos[attempt])
		if err != nil {
			t.Error(err)
			return true
		}
		return len(attempts) >= 3
	})
	want := []attempt{{1, 500, flaky.srv.URL + "/quickpay"}, {2, 500, flaky.srv.URL + "/quickpay"}, {3, 200, flaky.srv.URL + "/quickpay"}}
	if !slices.Equal(attempts, want) {
		t.Errorf("webhook_deliveries = %+v, want %+v", attempts, want)
	}
	if res := m.c.Get(t, "/v1/events?after="+ev.ID); res.WantStatus(t, http.StatusOK) && res.Decode(t, &feed) &&
		(len(feed.Data) != 1 || feed.Data[0].ID != unbound.ID || feed.Data[0].Type != webhooks.EventCardUnbound) {
		t.Errorf("events after binding.bound = %+v, want only %s", feed.Data, unbound.ID)
	}
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	ja, _ := json.Marshal(x)
	jb, _ := json.Marshal(y)
	return bytes.Equal(ja, jb)
}

func (e *e2e) testBankUnavailable(t *testing.T) {
	ctx := context.Background()
	m := e.merchant(t, e.testServer)
	a := e.account(t, "ICBC", "debit")
	t.Cleanup(func() { _ = e.SimCtl.ClearFaults(context.Background(), "ICBC") })

	req := bindRequest(a)
	req["external_user_id"] = "user-" + randomHex(t, 6)
	key := apitest.IdempotencyKey("bind-" + randomHex(t, 8))
	if err := e.SimCtl.AddFault(ctx, simclient.Fault{BankCode: "ICBC", Operation: "bind_apply", Mode: simclient.FaultError, Count: 1}); err != nil {
		t.Fatal(err)
	}
	wantError(t, m.c.Post(t, "/v1/bindings", req, key), http.StatusServiceUnavailable, "bank_unavailable", "")
	e.wantTexts(t, a.Phone, 0)

	// A 503 is not saved: the retry with the same key runs and succeeds.
	res := m.c.Post(t, "/v1/bindings", req, key)
	var b e2eBinding
	if !res.WantStatus(t, http.StatusCreated) || !res.Decode(t, &b) {
		t.FailNow()
	}
	if res.Header.Get(idempotency.HeaderReplayed) != "" {
		t.Error("the retry after a 503 was a replay")
	}
	e.wantTexts(t, a.Phone, 1)

	// The bank failing the code's check leaves the binding as it was.
	if err := e.SimCtl.AddFault(ctx, simclient.Fault{BankCode: "ICBC", Operation: "bind_confirm", Mode: simclient.FaultError, Count: 1}); err != nil {
		t.Fatal(err)
	}
	wantError(t, m.c.Post(t, "/v1/bindings/"+b.ID+"/confirm", map[string]string{"otp": e.otp(t, a.Phone)}),
		http.StatusServiceUnavailable, "bank_unavailable", "")
	var got e2eBinding
	if res := m.c.Get(t, "/v1/bindings/"+b.ID); res.WantStatus(t, http.StatusOK) && res.Decode(t, &got) &&
		(got.Status != binding.StatusOTPSent || got.OTP == nil || got.OTP.AttemptsLeft != binding.OTPMaxAttempts) {
		t.Errorf("after the bank failed: %+v, want otp_sent with every attempt left", got)
	}
	e.confirm(t, m.c, b.ID, a.Phone)
}

// testNoLeaks scans a pg_dump of the package's database and every line
// quickpay logged for each sensitive value the test used.
func (e *e2e) testNoLeaks(t *testing.T) {
	e.mu.Lock()
	values := maps.Clone(e.sensitive)
	bound := slices.Clone(e.bindings)
	rid := e.requestID
	e.mu.Unlock()

	dump := testenv.PGDump(t)
	logs := e.log.String()

	// The scan proves something only if both hold what the test did.
	for _, id := range bound {
		if !strings.Contains(dump, id) {
			t.Fatalf("the dump lacks binding %s: the scan would prove nothing", id)
		}
	}
	for _, want := range []string{`"msg":"http request"`, `"request_id":"` + rid + `"`, `"msg":"bank call"`} {
		if rid == "" || !strings.Contains(logs, want) {
			t.Fatalf("the logs lack %s: the scan would prove nothing", want)
		}
	}
	kinds := map[string]int{}
	for _, k := range values {
		kinds[k]++
	}
	for _, k := range []string{"PAN", "ID number", "CVV2", "expiry", "OTP"} {
		if kinds[k] == 0 {
			t.Errorf("no %s was tracked", k)
		}
	}
	t.Logf("scanned %d KiB of dump and %d KiB of logs for %v", len(dump)>>10, len(logs)>>10, kinds)

	// And no unkeyed digest of a value or of a body the package's test
	// servers were sent (RecordBodies), such as a request fingerprint.
	digests := testenv.NewDigestScan(testenv.Sent(), values)
	for where, hay := range map[string]string{"pg_dump": dump, "logs": logs} {
		lower := strings.ToLower(hay)
		for v, kind := range values {
			if form, ok := testenv.Leak(hay, lower, kind, v); ok {
				t.Errorf("%s: %s (%s) found %s", where, kind, testenv.Describe(v), form)
			}
		}
		for _, err := range digests.Find(where, hay) {
			t.Error(err)
		}
	}
}
