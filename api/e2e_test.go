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
	"github.com/quickpay/quickpay/api/client"
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

// TestE2E drives the merchant API end to end over real HTTP through
// api/client, the Go client merchants import (e2e_client_test.go), so a
// client bug fails it: real merchants and tokens the client fetches, the
// real binding service over Postgres, SoftHSM2, Vault and banksim,
// idempotency keys, and webhook deliveries worked by a real River client.
// Every answer is checked against api/openapi.yaml: the client's by its
// transport, the few raw requests' (malformed bodies) by apitest.
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

// wantError fails unless res (a raw request's answer) is an error answer
// with status, code and field ("" for none), whose request_id is the
// answer's X-Request-Id.
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

// is reports whether a binding or card status is want.
func is[S ~string, W ~string](got S, want W) bool { return string(got) == string(want) }

// member creates an explicit member (a random external id when req has none).
func (e *e2e) member(t *testing.T, m tenant, req client.CreateMemberRequest) client.Member {
	t.Helper()
	if req.ExternalId == "" {
		req.ExternalId = "user-" + randomHex(t, 6)
	}
	res, err := m.api.CreateMemberWithResponse(on(t), nil, req)
	if err != nil || res.JSON201 == nil {
		t.Fatalf("create member: %v", err)
	}
	mem := *res.JSON201
	if !ids.Valid("mem", mem.Id) || mem.Kind != client.Explicit || mem.ExternalId != req.ExternalId {
		t.Fatalf("member = %+v, want an explicit mem_ for %s", mem, req.ExternalId)
	}
	return mem
}

// start creates a binding and wants 201 otp_sent.
func (e *e2e) start(t *testing.T, m tenant, req client.CreateBindingRequest) client.Binding {
	t.Helper()
	res, err := m.api.CreateBindingWithResponse(on(t), nil, req)
	if err != nil {
		t.Fatalf("create binding: %v", err)
	}
	if res.JSON201 == nil {
		t.Fatalf("create binding answered %d, want 201", res.StatusCode())
	}
	b := *res.JSON201
	if !is(b.Status, binding.StatusOTPSent) || b.Otp == nil || b.CardId != nil {
		t.Fatalf("started binding = %+v, want otp_sent with otp and no card", b)
	}
	return b
}

// confirm confirms the binding with the newest code sent to phone and
// wants it bound.
func (e *e2e) confirm(t *testing.T, m tenant, bindingID, phone string) client.Binding {
	t.Helper()
	res, err := m.api.ConfirmBindingWithResponse(on(t), bindingID, nil, client.ConfirmBindingRequest{Otp: e.otp(t, phone)})
	if err != nil || res.JSON200 == nil {
		t.Fatalf("confirm binding: %v", err)
	}
	b := *res.JSON200
	if b.Id != bindingID || !is(b.Status, binding.StatusBound) || b.CardId == nil || !ids.Valid("card", *b.CardId) ||
		b.MemberId == nil || b.Otp != nil {
		t.Fatalf("confirmed binding = %+v, want bound with card_id and member_id", b)
	}
	e.mu.Lock()
	e.bindings = append(e.bindings, b.Id)
	if e.requestID == "" {
		e.requestID = res.HTTPResponse.Header.Get(echoRequestID)
	}
	e.mu.Unlock()
	return b
}

// bindCard binds a's card with req's owner and returns the bound binding.
func (e *e2e) bindCard(t *testing.T, m tenant, req client.CreateBindingRequest, a conformance.Account) client.Binding {
	t.Helper()
	b := e.start(t, m, req)
	return e.confirm(t, m, b.Id, a.Phone)
}

// getBinding, getCard and memberCards read through the client and fail t
// on an error.
func getBinding(t *testing.T, m tenant, id string) client.Binding {
	t.Helper()
	res, err := m.api.GetBindingWithResponse(on(t), id)
	if err != nil || res.JSON200 == nil {
		t.Fatalf("get binding: %v", err)
	}
	return *res.JSON200
}

func getCard(t *testing.T, m tenant, id string) client.Card {
	t.Helper()
	res, err := m.api.GetCardWithResponse(on(t), id)
	if err != nil || res.JSON200 == nil {
		t.Fatalf("get card: %v", err)
	}
	return *res.JSON200
}

func memberCards(t *testing.T, m tenant, memberID string) []client.Card {
	t.Helper()
	var out []client.Card
	for c, err := range m.api.MemberCards(on(t), memberID) {
		if err != nil {
			t.Fatalf("member cards: %v", err)
		}
		out = append(out, c)
	}
	return out
}

func unbind(t *testing.T, m tenant, cardID string) client.Card {
	t.Helper()
	res, err := m.api.UnbindCardWithResponse(on(t), cardID)
	if err != nil || res.JSON200 == nil {
		t.Fatalf("unbind card: %v", err)
	}
	return *res.JSON200
}

// feed walks the merchant's whole event feed with the client's iterator.
func feed(t *testing.T, m tenant, p client.ListEventsParams) []client.Event {
	t.Helper()
	var out []client.Event
	for ev, err := range m.api.Events(on(t), p) {
		if err != nil {
			t.Fatalf("events: %v", err)
		}
		out = append(out, ev)
	}
	return out
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
	ctx := on(t)
	m := e.merchant(t, e.testServer)
	a := e.account(t, "ICBC", "debit")

	mem := e.member(t, m, client.CreateMemberRequest{})
	var got client.Member
	// (To the microsecond: see the subtest below.)
	if res, err := m.api.GetMemberWithResponse(ctx, mem.Id); err != nil || res.JSON200 == nil {
		t.Errorf("GET member: %v", err)
	} else if got = *res.JSON200; got.Id != mem.Id || got.ExternalId != mem.ExternalId || got.Kind != mem.Kind ||
		!sameMicrosecond(got.CreatedAt, mem.CreatedAt) {
		t.Errorf("GET member = %+v, want %+v", got, mem)
	}

	b := e.start(t, m, forMember(bindReq(a), mem.Id))
	t.Run("create answers carry the times later reads show", func(t *testing.T) {
		if got.CreatedAt != mem.CreatedAt {
			t.Errorf("POST /v1/members created_at %s, GET %s", mem.CreatedAt.Format(time.RFC3339Nano), got.CreatedAt.Format(time.RFC3339Nano))
		}
		if read := getBinding(t, m, b.Id); read.CreatedAt != b.CreatedAt || read.Otp == nil || *read.Otp != *b.Otp {
			t.Errorf("POST /v1/bindings answered created_at %s otp %+v; GET answers %s %+v",
				b.CreatedAt.Format(time.RFC3339Nano), *b.Otp, read.CreatedAt.Format(time.RFC3339Nano), read.Otp)
		}
	})
	wantCard := client.CardInfo{BankCode: "ICBC", BankName: b.Card.BankName, CardType: client.CardInfoCardTypeDebit,
		MaskedPan: maskedPAN(a.CardNumber), Last4: a.CardNumber[len(a.CardNumber)-4:]}
	if !ids.Valid("bnd", b.Id) || str(b.MemberId) != mem.Id || b.Card != wantCard || b.Card.BankName == "" {
		t.Errorf("binding = %+v, want bnd_ of %s with card %+v", b, mem.Id, wantCard)
	}
	if b.Otp.AttemptsLeft != binding.OTPMaxAttempts ||
		!b.Otp.ExpiresAt.Equal(b.CreatedAt.Add(binding.OTPValidity)) ||
		!b.Otp.ResendAfter.Equal(b.CreatedAt.Add(binding.OTPResendGap)) {
		t.Errorf("otp = %+v for a binding created at %s", *b.Otp, b.CreatedAt)
	}
	e.wantTexts(t, a.Phone, 1)
	if ags := e.agreements(t, a.CardNumber); len(ags) != 0 {
		t.Errorf("agreements before the code = %v, want none", agreementStatuses(ags))
	}

	bound := e.confirm(t, m, b.Id, a.Phone)
	if str(bound.MemberId) != mem.Id || bound.Card != wantCard {
		t.Errorf("bound binding = %+v, want member %s and card %+v", bound, mem.Id, wantCard)
	}
	cardID := *bound.CardId

	if again := getBinding(t, m, b.Id); !is(again.Status, binding.StatusBound) || str(again.CardId) != cardID || again.Otp != nil {
		t.Errorf("GET binding = %+v, want bound to %s", again, cardID)
	}
	card := getCard(t, m, cardID)
	wantActive := client.Card{Id: cardID, MemberId: mem.Id, Status: client.CardStatusActive, BankCode: wantCard.BankCode,
		BankName: wantCard.BankName, CardType: client.CardCardTypeDebit, MaskedPan: wantCard.MaskedPan, Last4: wantCard.Last4,
		CreatedAt: card.CreatedAt}
	if card != wantActive || card.CreatedAt.IsZero() {
		t.Errorf("GET card = %+v, want %+v", card, wantActive)
	}
	if list := memberCards(t, m, mem.Id); len(list) != 1 || list[0] != wantActive {
		t.Errorf("member cards = %+v, want only %+v", list, wantActive)
	}
	if ags := e.agreements(t, a.CardNumber); !slices.Equal(agreementStatuses(ags), []string{"active"}) {
		t.Errorf("banksim agreements after confirm = %v, want one active", agreementStatuses(ags))
	}

	wantUnbound := wantActive
	wantUnbound.Status = client.CardStatusUnbound
	if card := unbind(t, m, cardID); card != wantUnbound {
		t.Errorf("DELETE card = %+v, want %+v", card, wantUnbound)
	}
	if card := getCard(t, m, cardID); !is(card.Status, binding.CardUnbound) {
		t.Errorf("GET card after DELETE: status %q, want unbound", card.Status)
	}
	if list := memberCards(t, m, mem.Id); len(list) != 1 || !is(list[0].Status, binding.CardUnbound) {
		t.Errorf("member cards after DELETE = %+v, want the one card unbound", list)
	}
	if ags := e.agreements(t, a.CardNumber); !slices.Equal(agreementStatuses(ags), []string{"terminated"}) {
		t.Errorf("banksim agreements after DELETE = %v, want the one terminated", agreementStatuses(ags))
	}
}

// findMember is GET /v1/members?external_id= through the client.
func findMember(ctx context.Context, m tenant, ext string) (*client.Member, error) {
	res, err := m.api.FindMemberWithResponse(ctx, &client.FindMemberParams{ExternalId: ext})
	if err != nil {
		return nil, err
	}
	return res.JSON200, nil
}

func (e *e2e) testImplicitHappyPath(t *testing.T) {
	t.Parallel()
	ctx := on(t)
	m := e.merchant(t, e.testServer)
	a := e.account(t, "CMB", "credit")
	ext := "user-" + randomHex(t, 6)

	_, err := findMember(ctx, m, ext)
	wantAPIError(t, ctx, err, http.StatusNotFound, "not_found", "")
	b := e.start(t, m, forUser(bindReq(a), ext))
	if b.MemberId != nil || b.Card.BankCode != "CMB" || b.Card.CardType != client.CardInfoCardTypeCredit || b.Card.MaskedPan != maskedPAN(a.CardNumber) {
		t.Errorf("implicit binding = %+v, want no member yet and a CMB credit card", b)
	}
	// The member exists only once the card is bound.
	_, err = findMember(ctx, m, ext)
	wantAPIError(t, ctx, err, http.StatusNotFound, "not_found", "")

	bound := e.confirm(t, m, b.Id, a.Phone)
	mem, err := findMember(ctx, m, ext)
	if err != nil || mem == nil {
		t.Fatalf("find member: %v", err)
	}
	if mem.Id != *bound.MemberId || mem.Kind != client.Implicit || mem.ExternalId != ext {
		t.Errorf("found member = %+v, want implicit %s for %s", mem, *bound.MemberId, ext)
	}
	if res, err := m.api.GetMemberWithResponse(ctx, mem.Id); err != nil || res.JSON200 == nil || *res.JSON200 != *mem {
		t.Errorf("GET member = %v (%v), want %+v", res, err, *mem)
	}
	if card := getCard(t, m, *bound.CardId); card.MemberId != mem.Id || !is(card.Status, binding.CardActive) || card.CardType != client.CardCardTypeCredit {
		t.Errorf("card = %+v, want the implicit member's active credit card", card)
	}
	if list := memberCards(t, m, mem.Id); len(list) != 1 || list[0].Id != *bound.CardId {
		t.Errorf("member cards = %+v, want only %s", list, *bound.CardId)
	}
	// The implicit member holds its external id like an explicit one.
	_, err = m.api.CreateMemberWithResponse(ctx, nil, client.CreateMemberRequest{ExternalId: ext})
	wantAPIError(t, ctx, err, http.StatusConflict, "member_exists", "")

	if card := unbind(t, m, *bound.CardId); !is(card.Status, binding.CardUnbound) {
		t.Errorf("DELETE card: status %q, want unbound", card.Status)
	}
	if ags := e.agreements(t, a.CardNumber); !slices.Equal(agreementStatuses(ags), []string{"terminated"}) {
		t.Errorf("banksim agreements after DELETE = %v, want the one terminated", agreementStatuses(ags))
	}
}

func (e *e2e) testValidation(t *testing.T) {
	t.Parallel()
	m := e.merchant(t, e.testServer)
	mem := e.member(t, m, client.CreateMemberRequest{})
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

	// Requests the typed client can send.
	for _, tc := range []struct {
		name   string
		a      conformance.Account
		change func(r *client.CreateBindingRequest)
		field  string
	}{
		{"holder_name with digits", debit, func(r *client.CreateBindingRequest) { r.HolderName = "X1" }, "holder_name"},
		{"holder_name empty", debit, func(r *client.CreateBindingRequest) { r.HolderName = "" }, "holder_name"},
		{"id_number with a wrong check character", debit, func(r *client.CreateBindingRequest) { r.IdNumber = badID }, "id_number"},
		{"card_number failing Luhn", debit, func(r *client.CreateBindingRequest) { r.CardNumber = badPAN }, "card_number"},
		{"card_number too short", debit, func(r *client.CreateBindingRequest) { r.CardNumber = "1234" }, "card_number"},
		{"phone not a mobile number", debit, func(r *client.CreateBindingRequest) { r.Phone = "12345678901" }, "phone"},
		{"credit expiry month 13", credit, func(r *client.CreateBindingRequest) { r.Expiry = ptr("1399") }, "expiry"},
		{"credit expiry missing", credit, func(r *client.CreateBindingRequest) { r.Expiry = nil }, "expiry"},
		{"credit cvv2 of 2 digits", credit, func(r *client.CreateBindingRequest) { r.Cvv2 = ptr("12") }, "cvv2"},
		{"credit cvv2 missing", credit, func(r *client.CreateBindingRequest) { r.Cvv2 = nil }, "cvv2"},
		{"member_id and external_user_id", debit, func(r *client.CreateBindingRequest) { r.ExternalUserId = ptr("u-both") }, "member_id"},
		{"neither member_id nor external_user_id", debit, func(r *client.CreateBindingRequest) { r.MemberId = nil }, "member_id"},
		{"external_user_id too long", debit, func(r *client.CreateBindingRequest) {
			r.MemberId, r.ExternalUserId = nil, ptr(strings.Repeat("u", 129))
		}, "external_user_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := on(t)
			req := forMember(bindReq(tc.a), mem.Id)
			tc.change(&req)
			_, err := m.api.CreateBindingWithResponse(ctx, nil, req)
			wantAPIError(t, ctx, err, http.StatusUnprocessableEntity, "validation_failed", tc.field)
			// A 422 is not retried: one request went out.
			if n := len(callsOf(ctx)); n != 1 {
				t.Errorf("the client sent %d requests for a 422, want 1", n)
			}
		})
	}

	// Requests a typed client cannot send (a member missing from the JSON,
	// an unknown or mistyped member, malformed JSON, an oversized body) go
	// raw, through apitest, which validates their answers the same way.
	with := func(a conformance.Account, change map[string]any) map[string]any {
		req := map[string]any{"member_id": mem.Id}
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
		{"holder_name missing", with(debit, map[string]any{"holder_name": nil}), 422, "holder_name"},
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
	create := func(ctx context.Context, req client.CreateBindingRequest) error {
		_, err := m.api.CreateBindingWithResponse(ctx, nil, req)
		return err
	}

	t.Run("card_unsupported", func(t *testing.T) {
		t.Parallel()
		ctx := on(t)
		a := e.account(t, "ICBC", "debit")
		req := forUser(bindReq(a), "user-"+randomHex(t, 6))
		req.CardNumber = e.gen.CardNumber("999999", 16)
		e.track("PAN", req.CardNumber)
		wantAPIError(t, ctx, create(ctx, req), http.StatusUnprocessableEntity, "card_unsupported", "")
	})

	t.Run("elements_mismatch names the element the bank refused", func(t *testing.T) {
		t.Parallel()
		ctx := on(t)
		debit := e.account(t, "ICBC", "debit")
		credit := e.account(t, "CMB", "credit")
		otherID, otherPAN := e.gen.ResidentID(), e.gen.CardNumber("622202", 19)
		e.track("ID number", otherID)
		e.track("PAN", otherPAN)
		wrongCVV := fmt.Sprintf("%03d", (mustAtoi(t, credit.CVV2)+1)%1000)
		e.track("CVV2", wrongCVV)
		otherPhone := e.gen.Phone()
		for _, tc := range []struct {
			a      conformance.Account
			change func(r *client.CreateBindingRequest)
			field  string
		}{
			{debit, func(r *client.CreateBindingRequest) { r.HolderName = "欧阳修" }, "holder_name"},
			{debit, func(r *client.CreateBindingRequest) { r.IdNumber = otherID }, "id_number"},
			{debit, func(r *client.CreateBindingRequest) { r.Phone = otherPhone }, "phone"},
			{debit, func(r *client.CreateBindingRequest) { r.CardNumber = otherPAN }, "card_number"}, // routable, unknown at the bank
			{credit, func(r *client.CreateBindingRequest) { r.Cvv2 = ptr(wrongCVV) }, "expiry"},      // banks do not say which
		} {
			ext := "user-" + randomHex(t, 6)
			req := forUser(bindReq(tc.a), ext)
			tc.change(&req)
			wantAPIError(t, ctx, create(ctx, req), http.StatusUnprocessableEntity, "elements_mismatch", tc.field)
			// No member was made for the refused binding.
			_, err := findMember(ctx, m, ext)
			wantAPIError(t, ctx, err, http.StatusNotFound, "not_found", "")
		}
		e.wantTexts(t, debit.Phone, 0)
		e.wantTexts(t, credit.Phone, 0)
	})

	t.Run("card_declined for a card the bank has frozen or closed", func(t *testing.T) {
		t.Parallel()
		ctx := on(t)
		for _, status := range []string{"frozen", "closed"} {
			a := e.account(t, "ICBC", "debit")
			a.Status = status
			if err := e.SimCtl.PutAccount(context.Background(), a); err != nil {
				t.Fatal(err)
			}
			wantAPIError(t, ctx, create(ctx, forUser(bindReq(a), "user-"+randomHex(t, 6))), http.StatusUnprocessableEntity, "card_declined", "")
			e.wantTexts(t, a.Phone, 0)
		}
	})

	t.Run("identity_mismatch against the member's identity", func(t *testing.T) {
		t.Parallel()
		ctx := on(t)
		a := e.account(t, "ICBC", "debit")
		someoneElse := e.gen.ResidentID()
		e.track("ID number", someoneElse)
		byID := e.member(t, m, client.CreateMemberRequest{Name: ptr(a.HolderName), IdNumber: ptr(someoneElse)})
		byName := e.member(t, m, client.CreateMemberRequest{Name: ptr("欧阳修"), IdNumber: ptr(a.IDNumber)})
		for member, field := range map[string]string{byID.Id: "id_number", byName.Id: "holder_name"} {
			wantAPIError(t, ctx, create(ctx, forMember(bindReq(a), member)), http.StatusUnprocessableEntity, "identity_mismatch", field)
		}
		e.wantTexts(t, a.Phone, 0)

		// A member whose identity a bound card verified refuses another person's card.
		verified := e.member(t, m, client.CreateMemberRequest{})
		e.bindCard(t, m, forMember(bindReq(a), verified.Id), a)
		other := e.account(t, "CCB", "debit")
		wantAPIError(t, ctx, create(ctx, forMember(bindReq(other), verified.Id)), http.StatusUnprocessableEntity, "identity_mismatch", "id_number")
		e.wantTexts(t, other.Phone, 0)
	})

	t.Run("not_found", func(t *testing.T) {
		t.Parallel()
		ctx := on(t)
		a := e.account(t, "ICBC", "debit")
		for _, member := range []string{ids.New("mem"), "mem_x", ids.New("card")} {
			wantAPIError(t, ctx, create(ctx, forMember(bindReq(a), member)), http.StatusNotFound, "not_found", "")
		}
		for name, get := range map[string]func() error{
			"member":           func() error { _, err := m.api.GetMemberWithResponse(ctx, ids.New("mem")); return err },
			"member cards":     func() error { _, err := m.api.ListMemberCardsWithResponse(ctx, ids.New("mem")); return err },
			"binding":          func() error { _, err := m.api.GetBindingWithResponse(ctx, ids.New("bnd")); return err },
			"binding nonsense": func() error { _, err := m.api.GetBindingWithResponse(ctx, "bnd_nonsense"); return err },
			"card":             func() error { _, err := m.api.GetCardWithResponse(ctx, ids.New("card")); return err },
			"card of a bnd id": func() error { _, err := m.api.GetCardWithResponse(ctx, ids.New("bnd")); return err },
			"resend":           func() error { _, err := m.api.ResendBindingCodeWithResponse(ctx, ids.New("bnd"), nil); return err },
			"confirm": func() error {
				_, err := m.api.ConfirmBindingWithResponse(ctx, ids.New("bnd"), nil, client.ConfirmBindingRequest{Otp: "123456"})
				return err
			},
			"unbind": func() error { _, err := m.api.UnbindCardWithResponse(ctx, ids.New("card")); return err },
		} {
			t.Run(name, func(t *testing.T) { wantAPIError(t, ctx, get(), http.StatusNotFound, "not_found", "") })
		}
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
	confirm := func(ctx context.Context, id, code string) error {
		_, err := m.api.ConfirmBindingWithResponse(ctx, id, nil, client.ConfirmBindingRequest{Otp: code})
		return err
	}

	t.Run("five wrong codes end the binding", func(t *testing.T) {
		t.Parallel()
		ctx := on(t)
		a := e.account(t, "ICBC", "debit")
		ext := "user-" + randomHex(t, 6)
		b := e.start(t, m, forUser(bindReq(a), ext))
		right := e.otp(t, a.Phone)

		// A malformed code is not a try.
		wantAPIError(t, ctx, confirm(ctx, b.Id, "12345"), http.StatusUnprocessableEntity, "validation_failed", "otp")
		if got := getBinding(t, m, b.Id); got.Otp == nil || got.Otp.AttemptsLeft != 5 {
			t.Errorf("after a malformed code: %+v, want 5 attempts left", got.Otp)
		}
		for left := 4; left >= 1; left-- {
			got := wantAPIError(t, ctx, confirm(ctx, b.Id, e.wrongOTP(t, right)), http.StatusUnprocessableEntity, "otp_incorrect", "")
			if got.AttemptsLeft == nil || *got.AttemptsLeft != left {
				t.Errorf("attempts_left = %v, want %d", got.AttemptsLeft, left)
			}
		}
		if got := getBinding(t, m, b.Id); !is(got.Status, binding.StatusOTPSent) || got.Otp == nil || got.Otp.AttemptsLeft != 1 {
			t.Errorf("after 4 wrong codes: %+v, want otp_sent with 1 attempt left", got)
		}
		wantAPIError(t, ctx, confirm(ctx, b.Id, e.wrongOTP(t, right)), http.StatusUnprocessableEntity, "otp_attempts_exceeded", "")
		// The binding is over: the right code, and a resend, are refused.
		wantAPIError(t, ctx, confirm(ctx, b.Id, right), http.StatusUnprocessableEntity, "otp_attempts_exceeded", "")
		_, err := m.api.ResendBindingCodeWithResponse(ctx, b.Id, nil)
		wantAPIError(t, ctx, err, http.StatusUnprocessableEntity, "otp_attempts_exceeded", "")
		if got := getBinding(t, m, b.Id); !is(got.Status, binding.StatusFailed) || str(got.FailureCode) != "otp_attempts_exceeded" ||
			got.Otp != nil || got.CardId != nil {
			t.Errorf("failed binding = %+v, want failed otp_attempts_exceeded", got)
		}
		if ags := e.agreements(t, a.CardNumber); len(ags) != 0 {
			t.Errorf("banksim agreements = %v, want none", agreementStatuses(ags))
		}
		_, err = findMember(ctx, m, ext)
		wantAPIError(t, ctx, err, http.StatusNotFound, "not_found", "")
		// The merchant hears of the failure.
		failed := 0
		for _, ev := range feed(t, m, client.ListEventsParams{}) {
			if ev.Type == webhooks.EventBindingFailed && ev.Data["binding_id"] == b.Id {
				failed++
				if ev.Data["failure_code"] != "otp_attempts_exceeded" || ev.Data["status"] != string(binding.StatusFailed) {
					t.Errorf("binding.failed data = %v", ev.Data)
				}
			}
		}
		if failed != 1 {
			t.Errorf("%d binding.failed events for the binding, want 1", failed)
		}
	})

	t.Run("wrong code twice then right", func(t *testing.T) {
		t.Parallel()
		ctx := on(t)
		a := e.account(t, "CCB", "debit")
		mem := e.member(t, m, client.CreateMemberRequest{})
		b := e.start(t, m, forMember(bindReq(a), mem.Id))
		right := e.otp(t, a.Phone)
		for _, left := range []int{4, 3} {
			got := wantAPIError(t, ctx, confirm(ctx, b.Id, e.wrongOTP(t, right)), http.StatusUnprocessableEntity, "otp_incorrect", "")
			if got.AttemptsLeft == nil || *got.AttemptsLeft != left {
				t.Errorf("attempts_left = %v, want %d", got.AttemptsLeft, left)
			}
		}
		bound := e.confirm(t, m, b.Id, a.Phone)
		if str(bound.MemberId) != mem.Id {
			t.Errorf("bound to member %s, want %s", str(bound.MemberId), mem.Id)
		}
		// Confirming a bound binding again returns it.
		res, err := m.api.ConfirmBindingWithResponse(ctx, b.Id, nil, client.ConfirmBindingRequest{Otp: right})
		if err != nil || res.JSON200 == nil || !is(res.JSON200.Status, binding.StatusBound) || str(res.JSON200.CardId) != *bound.CardId {
			t.Errorf("confirm again = %v (%v), want the bound binding", res, err)
		}
	})
}

// clocked is a server of its own whose binding service and auth run on a
// fake clock that only this test moves, and a merchant's client whose
// waits before a retry move that clock instead of sleeping (waited lists
// them).
func (e *e2e) clocked(t *testing.T) (m tenant, clk *clock.Fake, waited func() []time.Duration) {
	t.Helper()
	// Postgres keeps microseconds; so does this clock, so that exact
	// boundaries are exact (see the skipped subtest on precision).
	clk = clock.NewFake(time.Now().Truncate(time.Microsecond))
	srv := e.server(t, clk)
	m = e.merchant(t, srv)
	var mu sync.Mutex
	var waits []time.Duration
	m.api = m.client(t, func(c *client.Config) {
		c.Now = clk.Now
		c.Sleep = func(_ context.Context, d time.Duration) error {
			mu.Lock()
			waits = append(waits, d)
			mu.Unlock()
			clk.Advance(d)
			return nil
		}
	})
	return m, clk, func() []time.Duration {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(waits)
	}
}

func (e *e2e) testClock(t *testing.T) {
	t.Parallel()

	t.Run("binding_expired after 5 minutes", func(t *testing.T) {
		t.Parallel()
		ctx := on(t)
		m, clk, _ := e.clocked(t)
		a := e.account(t, "ICBC", "debit")
		b := e.start(t, m, forUser(bindReq(a), "user-"+randomHex(t, 6)))
		code := e.otp(t, a.Phone)

		clk.Advance(binding.OTPValidity)
		if got := getBinding(t, m, b.Id); !is(got.Status, binding.StatusOTPSent) {
			t.Errorf("at exactly 5 minutes the binding is %s, want otp_sent", got.Status)
		}
		clk.Advance(time.Second)
		if got := getBinding(t, m, b.Id); !is(got.Status, binding.StatusExpired) || str(got.FailureCode) != "binding_expired" || got.Otp != nil {
			t.Errorf("after 5 minutes: %+v, want expired", got)
		}
		// The bank would still take the code (its clock did not move): quickpay refuses it.
		_, err := m.api.ConfirmBindingWithResponse(ctx, b.Id, nil, client.ConfirmBindingRequest{Otp: code})
		wantAPIError(t, ctx, err, http.StatusGone, "binding_expired", "")
		_, err = m.api.ResendBindingCodeWithResponse(ctx, b.Id, nil)
		wantAPIError(t, ctx, err, http.StatusGone, "binding_expired", "")
		if ags := e.agreements(t, a.CardNumber); len(ags) != 0 {
			t.Errorf("banksim agreements = %v, want none", agreementStatuses(ags))
		}
		e.wantTexts(t, a.Phone, 1)
	})

	t.Run("otp_resend_too_soon: a wait over the client's limit is returned, a short one waited out", func(t *testing.T) {
		t.Parallel()
		ctx := on(t)
		m, clk, waited := e.clocked(t)
		a := e.account(t, "CCB", "debit")
		b := e.start(t, m, forUser(bindReq(a), "user-"+randomHex(t, 6)))
		first := e.otp(t, a.Phone)

		// 60 s is more than the client waits (MaxRetryWait, 30 s): the 429
		// comes back at once, with its wait.
		_, err := m.api.ResendBindingCodeWithResponse(ctx, b.Id, nil)
		got := wantAPIError(t, ctx, err, http.StatusTooManyRequests, "otp_resend_too_soon", "")
		if got.RetryAfter != binding.OTPResendGap || len(waited()) != 0 {
			t.Errorf("retry after %s, waits %v; want %s and none", got.RetryAfter, waited(), binding.OTPResendGap)
		}
		e.wantTexts(t, a.Phone, 1)

		// 1 s is waited out (on the fake clock) and the same request sent again.
		clk.Advance(binding.OTPResendGap - time.Second)
		before := len(callsOf(ctx))
		res, err := m.api.ResendBindingCodeWithResponse(ctx, b.Id, nil)
		if err != nil || res.JSON200 == nil {
			t.Fatalf("resend after a short wait: %v", err)
		}
		tries := callsOf(ctx)[before:]
		if len(tries) != 2 || tries[0].Status != http.StatusTooManyRequests || tries[1].Status != http.StatusOK ||
			tries[0].Key == "" || tries[0].Key != tries[1].Key {
			t.Errorf("the resend's tries = %+v, want 429 then 200 under one Idempotency-Key", tries)
		}
		if w := waited(); !slices.Equal(w, []time.Duration{time.Second}) {
			t.Errorf("the client waited %v, want [1s] (Retry-After)", w)
		}
		again, now := *res.JSON200, clk.Now()
		if !is(again.Status, binding.StatusOTPSent) || again.Otp == nil || !again.Otp.ExpiresAt.Equal(now.Add(binding.OTPValidity)) ||
			!again.Otp.ResendAfter.Equal(now.Add(binding.OTPResendGap)) {
			t.Errorf("after resend: %+v, want the code's times restarted at %s", again.Otp, now)
		}
		e.wantTexts(t, a.Phone, 2)
		second := e.otp(t, a.Phone)
		if second != first {
			// The bank's old code died with the resend.
			_, err := m.api.ConfirmBindingWithResponse(ctx, b.Id, nil, client.ConfirmBindingRequest{Otp: first})
			wantAPIError(t, ctx, err, http.StatusUnprocessableEntity, "otp_incorrect", "")
		}
		e.confirm(t, m, b.Id, a.Phone)
	})

	t.Run("otp_resend_limit after 5 sends, not retried", func(t *testing.T) {
		t.Parallel()
		ctx := on(t)
		m, clk, waited := e.clocked(t)
		a := e.account(t, "ICBC", "debit")
		b := e.start(t, m, forUser(bindReq(a), "user-"+randomHex(t, 6)))
		for range binding.OTPMaxSends - 1 {
			clk.Advance(binding.OTPResendGap + time.Second)
			if _, err := m.api.ResendBindingCodeWithResponse(ctx, b.Id, nil); err != nil {
				t.Fatalf("resend: %v", err)
			}
			e.otp(t, a.Phone)
		}
		e.wantTexts(t, a.Phone, binding.OTPMaxSends)
		clk.Advance(binding.OTPResendGap + time.Second)
		before := len(callsOf(ctx))
		_, err := m.api.ResendBindingCodeWithResponse(ctx, b.Id, nil)
		got := wantAPIError(t, ctx, err, http.StatusTooManyRequests, "otp_resend_limit", "")
		if got.RetryAfter != 0 {
			t.Errorf("otp_resend_limit carries retry_after %s: no wait helps", got.RetryAfter)
		}
		if n := len(callsOf(ctx)) - before; n != 1 || len(waited()) != 0 {
			t.Errorf("otp_resend_limit: %d requests and waits %v, want 1 and none (no wait lifts it)", n, waited())
		}
		e.wantTexts(t, a.Phone, binding.OTPMaxSends)
		// The last code still binds.
		e.confirm(t, m, b.Id, a.Phone)
	})
}

func (e *e2e) testMemberExists(t *testing.T) {
	t.Parallel()
	ctx := on(t)
	m := e.merchant(t, e.testServer)
	mem := e.member(t, m, client.CreateMemberRequest{})
	_, err := m.api.CreateMemberWithResponse(ctx, nil, client.CreateMemberRequest{ExternalId: mem.ExternalId})
	wantAPIError(t, ctx, err, http.StatusConflict, "member_exists", "")
	// Another merchant may use the same external id.
	other := e.merchant(t, e.testServer)
	e.member(t, other, client.CreateMemberRequest{ExternalId: mem.ExternalId})
}

func (e *e2e) testRepeatBinds(t *testing.T) {
	t.Parallel()
	m := e.merchant(t, e.testServer)
	a := e.account(t, "ICBC", "debit")
	first := e.member(t, m, client.CreateMemberRequest{})
	bound := e.bindCard(t, m, forMember(bindReq(a), first.Id), a)

	t.Run("same card for the same member answers 200 with the same card", func(t *testing.T) {
		res, err := m.api.CreateBindingWithResponse(on(t), nil, forMember(bindReq(a), first.Id))
		if err != nil || res.JSON200 == nil {
			t.Fatalf("repeat bind: %v (want 200)", err)
		}
		if b := *res.JSON200; b.Id == bound.Id || !is(b.Status, binding.StatusBound) || str(b.CardId) != *bound.CardId ||
			str(b.MemberId) != first.Id || b.Otp != nil {
			t.Errorf("repeat bind = %+v, want a new binding bound to %s", b, *bound.CardId)
		}
		e.wantTexts(t, a.Phone, 1) // no bank call
	})

	t.Run("same card for another member is card_bound_elsewhere", func(t *testing.T) {
		ctx := on(t)
		second := e.member(t, m, client.CreateMemberRequest{})
		_, err := m.api.CreateBindingWithResponse(ctx, nil, forMember(bindReq(a), second.Id))
		wantAPIError(t, ctx, err, http.StatusConflict, "card_bound_elsewhere", "")
		_, err = m.api.CreateBindingWithResponse(ctx, nil, forUser(bindReq(a), "user-"+randomHex(t, 6)))
		wantAPIError(t, ctx, err, http.StatusConflict, "card_bound_elsewhere", "")
		e.wantTexts(t, a.Phone, 1)
	})

	t.Run("same card at another merchant is card_bound_elsewhere until unbound", func(t *testing.T) {
		ctx := on(t)
		other := e.merchant(t, e.testServer)
		req := forUser(bindReq(a), "user-"+randomHex(t, 6))
		// The platform's agreement for the card exists at the bank.
		_, err := other.api.CreateBindingWithResponse(ctx, nil, req)
		wantAPIError(t, ctx, err, http.StatusConflict, "card_bound_elsewhere", "")
		e.wantTexts(t, a.Phone, 1)

		unbind(t, m, *bound.CardId)
		b := e.start(t, other, req)
		e.confirm(t, other, b.Id, a.Phone)
		if ags := e.agreements(t, a.CardNumber); !slices.Equal(agreementStatuses(ags), []string{"terminated", "active"}) {
			t.Errorf("banksim agreements = %v, want the first terminated and the second active", agreementStatuses(ags))
		}
	})
}

func (e *e2e) testTenants(t *testing.T) {
	t.Parallel()
	a, b := e.merchant(t, e.testServer), e.merchant(t, e.testServer)
	card := e.account(t, "ICBC", "debit")
	mem := e.member(t, a, client.CreateMemberRequest{})
	bound := e.bindCard(t, a, forMember(bindReq(card), mem.Id), card)
	pendingCard := e.account(t, "CCB", "debit")
	pending := e.start(t, a, forUser(bindReq(pendingCard), "user-"+randomHex(t, 6)))
	code := e.otp(t, pendingCard.Phone)

	// Each probe of A's object, and of a random id of the same kind, by B.
	type probe func(ctx context.Context, id string) error
	probes := []struct {
		name string
		do   probe
		a, x string
	}{
		{"GET member", func(ctx context.Context, id string) error { _, err := b.api.GetMemberWithResponse(ctx, id); return err },
			mem.Id, ids.New("mem")},
		{"GET member cards", func(ctx context.Context, id string) error {
			_, err := b.api.ListMemberCardsWithResponse(ctx, id)
			return err
		}, mem.Id, ids.New("mem")},
		{"find member", func(ctx context.Context, id string) error { _, err := findMember(ctx, b, id); return err },
			mem.ExternalId, "user-" + randomHex(t, 6)},
		{"bind for member", func(ctx context.Context, id string) error {
			_, err := b.api.CreateBindingWithResponse(ctx, nil, forMember(bindReq(card), id))
			return err
		}, mem.Id, ids.New("mem")},
		{"GET binding", func(ctx context.Context, id string) error {
			_, err := b.api.GetBindingWithResponse(ctx, id)
			return err
		},
			bound.Id, ids.New("bnd")},
		{"resend", func(ctx context.Context, id string) error {
			_, err := b.api.ResendBindingCodeWithResponse(ctx, id, nil)
			return err
		}, pending.Id, ids.New("bnd")},
		// A's right code: were the binding reachable, this would bind it.
		{"confirm", func(ctx context.Context, id string) error {
			_, err := b.api.ConfirmBindingWithResponse(ctx, id, nil, client.ConfirmBindingRequest{Otp: code})
			return err
		}, pending.Id, ids.New("bnd")},
		{"GET card", func(ctx context.Context, id string) error { _, err := b.api.GetCardWithResponse(ctx, id); return err },
			*bound.CardId, ids.New("card")},
		{"DELETE card", func(ctx context.Context, id string) error {
			_, err := b.api.UnbindCardWithResponse(ctx, id)
			return err
		},
			*bound.CardId, ids.New("card")},
	}
	for _, p := range probes {
		t.Run(p.name, func(t *testing.T) {
			ctx := on(t)
			theirs := p.do(ctx, p.a)
			got, want := fails(theirs), fails(p.do(ctx, p.x))
			got.RequestID, want.RequestID = "", ""
			if got.Status != want.Status || got.Code != want.Code || got.Message != want.Message || got.Field != want.Field ||
				(got.AttemptsLeft == nil) != (want.AttemptsLeft == nil) || got.RetryAfter != want.RetryAfter {
				t.Errorf("B on A's object → %+v; on an unknown id → %+v", got, want)
			}
			wantAPIError(t, ctx, theirs, http.StatusNotFound, "not_found", "")
		})
	}

	t.Run("A's objects are untouched", func(t *testing.T) {
		if c := getCard(t, a, *bound.CardId); !is(c.Status, binding.CardActive) {
			t.Errorf("A's card is %s after B's DELETE, want active", c.Status)
		}
		if ags := e.agreements(t, card.CardNumber); !slices.Equal(agreementStatuses(ags), []string{"active"}) {
			t.Errorf("banksim agreements = %v, want one active", agreementStatuses(ags))
		}
		if p := getBinding(t, a, pending.Id); !is(p.Status, binding.StatusOTPSent) || p.Otp == nil || p.Otp.AttemptsLeft != binding.OTPMaxAttempts {
			t.Errorf("A's pending binding = %+v, want otp_sent with every attempt left", p)
		}
		e.wantTexts(t, pendingCard.Phone, 1) // B's resend sent nothing
		e.confirm(t, a, pending.Id, pendingCard.Phone)
		if evs := feed(t, b, client.ListEventsParams{}); len(evs) != 0 {
			t.Errorf("B sees %d events, want none", len(evs))
		}
	})
}

func (e *e2e) testIdempotency(t *testing.T) {
	t.Parallel()
	ctx := on(t)
	m := e.merchant(t, e.testServer)
	a := e.account(t, "ICBC", "debit")
	mem := e.member(t, m, client.CreateMemberRequest{})
	req := forMember(bindReq(a), mem.Id)
	key := "bind-" + randomHex(t, 8)
	params := &client.CreateBindingParams{IdempotencyKey: &key}

	const n = 50
	answers := make([]*client.CreateBindingResponse, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			answers[i], errs[i] = m.api.CreateBindingWithResponse(ctx, params, req)
		})
	}
	close(start)
	wg.Wait()

	fresh := 0
	for i, res := range answers {
		if errs[i] != nil || res.StatusCode() != http.StatusCreated {
			t.Errorf("answer %d: %v, want 201", i, errs[i])
			continue
		}
		if !bytes.Equal(res.Body, answers[0].Body) {
			t.Errorf("answer %d differs from answer 0", i)
		}
		if res.HTTPResponse.Header.Get(idempotency.HeaderReplayed) != "true" {
			fresh++
		}
	}
	if fresh != 1 {
		t.Errorf("%d answers were not replays, want exactly 1", fresh)
	}
	for _, ex := range callsOf(ctx) {
		if ex.Path == "/v1/bindings" && ex.Key != key {
			t.Errorf("a try went out with Idempotency-Key %q, want the caller's %q", ex.Key, key)
		}
	}
	e.wantTexts(t, a.Phone, 1) // exactly one bind_apply
	var rows int
	if err := e.Pool.QueryRow(context.Background(), `SELECT count(*) FROM bindings WHERE merchant_id = $1`, m.id).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 1 {
		t.Errorf("%d bindings stored, want 1", rows)
	}

	// The same JSON in other bytes is another request. The typed client
	// always sends one encoding, so this one goes raw: the bytes the
	// client sent, with a space added.
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	other := bytes.Replace(body, []byte(`"member_id"`), []byte(` "member_id"`), 1)
	if bytes.Equal(other, body) {
		t.Fatal("the request has no member_id to respace")
	}
	wantError(t, m.c.Post(t, "/v1/bindings", other, apitest.IdempotencyKey(key)), http.StatusUnprocessableEntity, "idempotency_key_reused", "")
	// Another request under the key, through the client: refused, not retried.
	changed := req
	changed.Phone = e.gen.Phone()
	before := len(callsOf(ctx))
	_, err = m.api.CreateBindingWithResponse(ctx, params, changed)
	wantAPIError(t, ctx, err, http.StatusUnprocessableEntity, "idempotency_key_reused", "")
	if n := len(callsOf(ctx)) - before; n != 1 {
		t.Errorf("idempotency_key_reused took %d requests, want 1", n)
	}
	again, err := m.api.CreateBindingWithResponse(ctx, params, req)
	if err != nil || !bytes.Equal(again.Body, answers[0].Body) || again.HTTPResponse.Header.Get(idempotency.HeaderReplayed) != "true" {
		t.Errorf("a later retry with the key is not the saved answer replayed (%v)", err)
	}
	e.wantTexts(t, a.Phone, 1)
}

// testKeyInUse: a request whose key another instance holds in flight
// waits InFlightWait, then answers 409 idempotency_key_in_use (checked
// against the OpenAPI document like every answer). The client waits and
// sends it again under the same key; by then that instance has let the key
// go, and the request runs once.
func (e *e2e) testKeyInUse(t *testing.T) {
	ctx := on(t)
	srv := newTestServer(t, serverOptions{Stack: e.stack, Banks: e.banks, Logger: e.logger, Jobs: e.jobs,
		InFlightWait: 100 * time.Millisecond})
	m := e.merchant(t, srv)
	elsewhere, err := idempotency.New(idempotency.Config{Pool: e.Pool, Hasher: e.Vault, Logger: e.logger})
	if err != nil {
		t.Fatal(err)
	}
	member := client.CreateMemberRequest{ExternalId: "user-" + randomHex(t, 6)}
	body, err := json.Marshal(member) // the bytes the client sends
	if err != nil {
		t.Fatal(err)
	}
	key := "member-" + randomHex(t, 8)
	req, err := elsewhere.NewRequest(context.Background(), m.id, key, http.MethodPost, "/v1/members", body)
	if err != nil {
		t.Fatal(err)
	}
	claim, err := elsewhere.Claim(context.Background(), req)
	if err != nil || !claim.Owned {
		t.Fatalf("the other instance's claim = %+v, %v", claim, err)
	}
	released := 0
	c := m.client(t, func(c *client.Config) {
		c.Sleep = func(context.Context, time.Duration) error {
			// Between the 409 and the retry: nothing was made; the other
			// instance lets the key go.
			var members int
			if err := e.Pool.QueryRow(context.Background(), `SELECT count(*) FROM members WHERE merchant_id = $1`, m.id).Scan(&members); err != nil || members != 0 {
				t.Errorf("%d members (%v) after the 409, want none", members, err)
			}
			if released == 0 {
				if err := elsewhere.Release(context.Background(), req, claim); err != nil {
					return err
				}
			}
			released++
			return nil
		}
	})
	res, err := c.CreateMemberWithResponse(ctx, &client.CreateMemberParams{IdempotencyKey: &key}, member)
	if err != nil || res.JSON201 == nil {
		t.Fatalf("create member: %v", err)
	}
	if res.HTTPResponse.Header.Get(idempotency.HeaderReplayed) != "" {
		t.Error("the request after the key was let go was a replay")
	}
	var tries []exchange
	for _, ex := range callsOf(ctx) {
		if ex.Path == "/v1/members" {
			tries = append(tries, ex)
		}
	}
	first := 0
	if len(tries) > 0 {
		first = tries[0].Status
	}
	if len(tries) != 2 || tries[0].Status != http.StatusConflict || !bytes.Contains(tries[0].Body, []byte(`"idempotency_key_in_use"`)) ||
		tries[1].Status != http.StatusCreated || tries[0].Key != key || tries[1].Key != key || released != 1 {
		t.Errorf("tries = %d (first %d), waits %d; want 409 idempotency_key_in_use, one wait, then 201, both under the key",
			len(tries), first, released)
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
// wantSigned fails unless d carries a valid signature of its body under
// secret, by webhooks.Verify, by the client's VerifyWebhook (what merchants
// run) and by hmacCheck, and none accepts it for another body or secret.
func wantSigned(t *testing.T, d delivery, secret string) {
	t.Helper()
	sig := d.header.Get(client.SignatureHeader)
	now := time.Now()
	if err := webhooks.Verify(secret, sig, d.body, now, 0); err != nil {
		t.Errorf("webhooks.Verify: %v", err)
	}
	if err := client.VerifyWebhook(secret, sig, d.body, now, 0); err != nil {
		t.Errorf("client.VerifyWebhook: %v", err)
	}
	if err := hmacCheck(secret, sig, d.body, now); err != nil {
		t.Errorf("independent HMAC check: %v", err)
	}
	tampered := append(bytes.Clone(d.body), ' ')
	if webhooks.Verify(secret, sig, tampered, now, 0) == nil || hmacCheck(secret, sig, tampered, now) == nil ||
		hmacCheck(secret+"x", sig, d.body, now) == nil ||
		!errors.Is(client.VerifyWebhook(secret, sig, tampered, now, 0), client.ErrSignatureMismatch) ||
		!errors.Is(client.VerifyWebhook(secret+"x", sig, d.body, now, 0), client.ErrSignatureMismatch) ||
		!errors.Is(client.VerifyWebhook(secret, sig, d.body, now.Add(client.DefaultTolerance+time.Minute), 0), client.ErrSignatureExpired) {
		t.Error("the signature checks accept another body, secret or time")
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
	ctx := on(t)
	m := e.merchant(t, e.testServer)
	setEndpoint := func(r *receiver) string {
		t.Helper()
		res, err := m.api.SetWebhookEndpointWithResponse(ctx, nil, client.WebhookEndpointRequest{Url: r.srv.URL + "/quickpay"})
		if err != nil || res.JSON200 == nil {
			t.Fatalf("set the webhook endpoint: %v", err)
		}
		ep := *res.JSON200
		if !strings.HasPrefix(ep.Secret, webhooks.SecretPrefix) || ep.Url != r.srv.URL+"/quickpay" || len(ep.Events) != len(webhooks.EventTypes()) {
			t.Fatalf("endpoint = %+v", ep)
		}
		return ep.Secret
	}

	first := newReceiver(t, 0)
	secret := setEndpoint(first)
	a := e.account(t, "ICBC", "debit")
	mem := e.member(t, m, client.CreateMemberRequest{})
	bound := e.bindCard(t, m, forMember(bindReq(a), mem.Id), a)

	if !eventually(t, 30*time.Second, "binding.bound at the receiver", func() bool { return len(first.of(webhooks.EventBindingBound)) > 0 }) {
		t.FailNow()
	}
	d := first.of(webhooks.EventBindingBound)[0]
	wantSigned(t, d, secret)
	ev, data := decodeEvent(t, d.body)
	if !ids.Valid("evt", ev.ID) || data["binding_id"] != bound.Id || data["card_id"] != *bound.CardId ||
		data["member_id"] != mem.Id || data["status"] != string(binding.StatusBound) {
		t.Errorf("binding.bound = %s %v, want binding %s card %s", ev.ID, data, bound.Id, *bound.CardId)
	}
	if feed, err := m.api.ListEventsWithResponse(ctx, &client.ListEventsParams{}); err != nil || feed.JSON200 == nil {
		t.Errorf("events: %v", err)
	} else if got := feed.JSON200; len(got.Data) != 1 || got.Data[0].Id != ev.ID || got.Data[0].Type != webhooks.EventBindingBound ||
		!got.Data[0].CreatedAt.Equal(ev.CreatedAt) || !jsonEqual(mustJSON(t, got.Data[0].Data), ev.Data) || got.HasMore {
		t.Errorf("events = %+v, want only the delivered %s", got.Data, ev.ID)
	}

	// The endpoint moves to a receiver that fails twice.
	flaky := newReceiver(t, 2)
	secret2 := setEndpoint(flaky)
	if secret2 == secret {
		t.Error("setting the endpoint again kept the secret")
	}
	unbind(t, m, *bound.CardId)
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
	if udata["card_id"] != *bound.CardId || udata["status"] != string(binding.CardUnbound) {
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
		rows, err := e.Pool.Query(context.Background(), `SELECT attempt, coalesce(status_code, 0), url FROM webhook_deliveries
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
	if after := feed(t, m, client.ListEventsParams{After: &ev.ID}); len(after) != 1 || after[0].Id != unbound.ID ||
		after[0].Type != webhooks.EventCardUnbound {
		t.Errorf("events after binding.bound = %+v, want only %s", after, unbound.ID)
	}
	// A page of one walks the same feed (the iterator follows has_more).
	var walked []string
	for ev, err := range m.api.Events(ctx, client.ListEventsParams{Limit: ptr(1)}) {
		if err != nil {
			t.Fatalf("events by pages of 1: %v", err)
		}
		walked = append(walked, ev.Id)
	}
	if !slices.Equal(walked, []string{ev.ID, unbound.ID}) {
		t.Errorf("events by pages of 1 = %v, want [%s %s]", walked, ev.ID, unbound.ID)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
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

// testBankUnavailable: a 503 bank_unavailable is retried by the client
// under the same Idempotency-Key, and the retry runs (a 503 is not saved);
// a client that does not retry sees the 503, and the binding stays as it
// was.
func (e *e2e) testBankUnavailable(t *testing.T) {
	ctx := on(t)
	m := e.merchant(t, e.testServer)
	a := e.account(t, "ICBC", "debit")
	t.Cleanup(func() { _ = e.SimCtl.ClearFaults(context.Background(), "ICBC") })

	waits := 0
	retrying := m.client(t, func(c *client.Config) {
		c.Sleep = func(context.Context, time.Duration) error {
			e.wantTexts(t, a.Phone, 0) // between the tries: the bank sent nothing
			waits++
			return nil
		}
	})
	if err := e.SimCtl.AddFault(context.Background(), simclient.Fault{BankCode: "ICBC", Operation: "bind_apply", Mode: simclient.FaultError, Count: 1}); err != nil {
		t.Fatal(err)
	}
	res, err := retrying.CreateBindingWithResponse(ctx, nil, forUser(bindReq(a), "user-"+randomHex(t, 6)))
	if err != nil || res.JSON201 == nil {
		t.Fatalf("create binding through a 503: %v", err)
	}
	b := *res.JSON201
	tries := callsOf(ctx)
	if len(tries) != 2 || waits != 1 || tries[0].Status != http.StatusServiceUnavailable ||
		!bytes.Contains(tries[0].Body, []byte(`"bank_unavailable"`)) || tries[1].Status != http.StatusCreated ||
		tries[0].Key == "" || tries[0].Key != tries[1].Key {
		t.Errorf("%d tries, %d waits; want 503 bank_unavailable, one wait, then 201, under one Idempotency-Key", len(tries), waits)
	}
	if res.HTTPResponse.Header.Get(idempotency.HeaderReplayed) != "" {
		t.Error("the retry after a 503 was a replay")
	}
	e.wantTexts(t, a.Phone, 1)

	// The bank failing the code's check leaves the binding as it was.
	once := m.client(t, func(c *client.Config) { c.MaxAttempts = 1 })
	if err := e.SimCtl.AddFault(context.Background(), simclient.Fault{BankCode: "ICBC", Operation: "bind_confirm", Mode: simclient.FaultError, Count: 1}); err != nil {
		t.Fatal(err)
	}
	_, err = once.ConfirmBindingWithResponse(ctx, b.Id, nil, client.ConfirmBindingRequest{Otp: e.otp(t, a.Phone)})
	wantAPIError(t, ctx, err, http.StatusServiceUnavailable, "bank_unavailable", "")
	if got := getBinding(t, m, b.Id); !is(got.Status, binding.StatusOTPSent) || got.Otp == nil || got.Otp.AttemptsLeft != binding.OTPMaxAttempts {
		t.Errorf("after the bank failed: %+v, want otp_sent with every attempt left", got)
	}
	e.confirm(t, m, b.Id, a.Phone)
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
