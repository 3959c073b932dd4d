package api_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/quickpay/quickpay/api"
	"github.com/quickpay/quickpay/api/apitest"
	"github.com/quickpay/quickpay/bankadapters/conformance"
	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/ids"
	"github.com/quickpay/quickpay/mandate"
)

// TestMandates drives the mandates area over real HTTP against the real
// stack (Postgres, SoftHSM2, Vault, banksim and its SMS carrier), through
// the validating client: every answer is checked against api/openapi.yaml.
//
// Dates: every server here runs on a fake clock in 2030, so that its
// mandates' charge dates are in 2030 or later. The callback subtest runs
// the due-charge pass (RunDue, which scans the whole database) as of a day
// in 2029, so it touches only its own mandate; keep it that way.
func TestMandates(t *testing.T) {
	t.Parallel()
	e := &mandateEnv{Stack: testenv.NewStack(t), gen: conformance.NewGen()}
	e.fixed = e.server(t, clock.NewFake(mandateEpoch))

	t.Run("fixed monthly mandate: consent code, confirm, activated", e.testHappyPath)
	t.Run("wrong codes answer attempts_left; the fifth ends the mandate", e.testWrongCodes)
	t.Run("resends: too soon, then a fresh code, then the limit", e.testResend)
	t.Run("a code older than 5 minutes is mandate_expired", e.testExpired)
	t.Run("validation_failed names the field and sends no SMS", e.testValidation)
	t.Run("variable mandate charges", e.testVariableCharges)
	t.Run("pause, resume, cancel and invalid_state", e.testTransitions)
	t.Run("lists by card and by member", e.testLists)
	t.Run("charge lists: filters, pages, has_more", e.testChargeLists)
	t.Run("another merchant sees nothing", e.testTenants)
	t.Run("a token without withhold gets 403", e.testScope)
	t.Run("one Idempotency-Key makes one mandate and one SMS", e.testIdempotency)
	t.Run("unbinding the card cancels its mandates", e.testUnbind)
	t.Run("sms_unavailable when the carrier is down", e.testSMSUnavailable)
	t.Run("bank callbacks", e.testCallbacks)
}

// mandateEpoch is the fake clocks' start: 2030-01-30 10:00 in Shanghai.
var mandateEpoch = time.Date(2030, 1, 30, 2, 0, 0, 0, time.UTC)

var shanghai = func() *time.Location {
	l, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		panic(err)
	}
	return l
}()

type mandateEnv struct {
	*testenv.Stack
	gen   *conformance.Gen
	fixed *testServer // a server whose clock never moves from mandateEpoch
}

// server is a real server over e's stack whose services and auth run on clk.
func (e *mandateEnv) server(t *testing.T, clk clock.Clock) *testServer {
	t.Helper()
	return newTestServer(t, serverOptions{Stack: e.Stack, Clock: clk})
}

// clocked is a server of its own on a fake clock at mandateEpoch that only
// the calling test moves.
func (e *mandateEnv) clocked(t *testing.T) (*testServer, *clock.Fake) {
	t.Helper()
	clk := clock.NewFake(mandateEpoch)
	return e.server(t, clk), clk
}

// tenant creates a merchant with scopes and gets its token from srv.
func tenantOf(t *testing.T, srv *testServer, scopes ...string) tenant {
	t.Helper()
	m, secret, err := srv.merchants.Create(context.Background(), "mandates "+strings.Join(scopes, "+"), scopes)
	if err != nil {
		t.Fatal(err)
	}
	c := apitest.NewClient(t, srv.url)
	return tenant{id: m.ID, c: c.WithToken(c.Token(t, m.ClientID, secret))}
}

// boundCard is a card bound through the API.
type boundCard struct {
	ID, MemberID, Phone, Last4, Number string
	holder                             conformance.Account
}

// bindCard opens an account at banksim and binds its card for the owner
// (member_id or external_user_id; a fresh implicit member when empty).
func (e *mandateEnv) bindCard(t *testing.T, srv *testServer, m tenant, bank, ownerKey, owner string) boundCard {
	t.Helper()
	return e.bindAccount(t, srv, m, srv.account(t, e.gen, bank, "debit"), ownerKey, owner)
}

// sameHolder opens a debit account at bank held by the holder of card.
func (e *mandateEnv) sameHolder(t *testing.T, srv *testServer, bank string, card boundCard) conformance.Account {
	t.Helper()
	ctx := context.Background()
	info, err := srv.SimCtl.Bank(ctx, bank)
	if err != nil {
		t.Fatal(err)
	}
	a, err := e.gen.Account(info, "debit", 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	a.HolderName, a.IDNumber = card.holder.HolderName, card.holder.IDNumber
	if err := srv.SimCtl.PutAccount(ctx, a); err != nil {
		t.Fatal(err)
	}
	return a
}

func (e *mandateEnv) bindAccount(t *testing.T, srv *testServer, m tenant, a conformance.Account, ownerKey, owner string) boundCard {
	t.Helper()
	req := bindRequest(a)
	if ownerKey == "" {
		ownerKey, owner = "external_user_id", "user-"+randomHex(t, 6)
	}
	req[ownerKey] = owner
	var b bindingAnswer
	if res := m.c.Post(t, "/v1/bindings", req); !res.WantStatus(t, http.StatusCreated) || !res.Decode(t, &b) {
		t.FailNow()
	}
	res := m.c.Post(t, "/v1/bindings/"+b.ID+"/confirm", map[string]string{"otp": srv.code(t, a.Phone)})
	if !res.WantStatus(t, http.StatusOK) || !res.Decode(t, &b) || b.CardID == nil || b.MemberID == nil {
		t.Fatalf("binding %s did not bind", b.ID)
	}
	return boundCard{ID: *b.CardID, MemberID: *b.MemberID, Phone: a.Phone, Number: a.CardNumber,
		Last4: a.CardNumber[len(a.CardNumber)-4:], holder: a}
}

// Answers as the document describes them.
type mandateOTP struct {
	ExpiresAt    time.Time `json:"expires_at"`
	AttemptsLeft int       `json:"attempts_left"`
	ResendAfter  time.Time `json:"resend_after"`
}

type mandateSchedule struct {
	Interval   string  `json:"interval"`
	DayOfMonth *int    `json:"day_of_month"`
	Weekday    *int    `json:"weekday"`
	StartDate  string  `json:"start_date"`
	EndDate    *string `json:"end_date"`
	MaxCharges *int    `json:"max_charges"`
	Timezone   string  `json:"timezone"`
}

type mandateAnswer struct {
	ID             string                `json:"id"`
	CardID         string                `json:"card_id"`
	MemberID       string                `json:"member_id"`
	Reference      string                `json:"reference"`
	Description    string                `json:"description"`
	AmountType     string                `json:"amount_type"`
	Amount         *int64                `json:"amount"`
	MaxAmount      *int64                `json:"max_amount"`
	Currency       string                `json:"currency"`
	Schedule       mandateSchedule       `json:"schedule"`
	NoticeDays     int                   `json:"notice_days"`
	Status         mandate.MandateStatus `json:"status"`
	StatusReason   *string               `json:"status_reason"`
	NextChargeDate *string               `json:"next_charge_date"`
	ChargesCount   int                   `json:"charges_count"`
	OTP            *mandateOTP           `json:"otp"`
	CreatedAt      time.Time             `json:"created_at"`
	UpdatedAt      time.Time             `json:"updated_at"`
}

type attemptAnswer struct {
	OrderNo     string                `json:"order_no"`
	BankCode    string                `json:"bank_code"`
	Amount      int64                 `json:"amount"`
	Status      mandate.AttemptStatus `json:"status"`
	FailureCode *string               `json:"failure_code"`
	CreatedAt   time.Time             `json:"created_at"`
	FinishedAt  *time.Time            `json:"finished_at"`
}

type chargeAnswer struct {
	ID            string               `json:"id"`
	MandateID     string               `json:"mandate_id"`
	Period        string               `json:"period"`
	ChargeDate    string               `json:"charge_date"`
	Amount        int64                `json:"amount"`
	Currency      string               `json:"currency"`
	Description   string               `json:"description"`
	Status        mandate.ChargeStatus `json:"status"`
	Attempts      []attemptAnswer      `json:"attempts"`
	NextAttemptAt *time.Time           `json:"next_attempt_at"`
	NoticeSentAt  *time.Time           `json:"notice_sent_at"`
	Retries       int                  `json:"retries"`
	FailureCode   *string              `json:"failure_code"`
	BankReference *string              `json:"bank_reference"`
	CreatedAt     time.Time            `json:"created_at"`
	UpdatedAt     time.Time            `json:"updated_at"`
}

// sameJSON reports whether a and b render the same JSON.
func sameJSON(t *testing.T, a, b any) bool {
	t.Helper()
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	if err1 != nil || err2 != nil {
		t.Fatalf("marshal: %v %v", err1, err2)
	}
	return bytes.Equal(ja, jb)
}

func intp(p *int) string {
	if p == nil {
		return "<null>"
	}
	return strconv.Itoa(*p)
}

func int64p(p *int64) string {
	if p == nil {
		return "<null>"
	}
	return strconv.FormatInt(*p, 10)
}

// fixedMandate is a fixed monthly mandate request on card: ¥19.99 on day
// 31 from 2030-01-01.
func fixedMandate(cardID string) map[string]any {
	return map[string]any{
		"card_id": cardID, "reference": "contract-" + cardID[len(cardID)-6:], "description": "宽带月费",
		"amount_type": "fixed", "amount": 1999, "currency": "CNY",
		"schedule": map[string]any{"interval": "month", "day_of_month": 31, "start_date": "2030-01-01"},
	}
}

// variableMandate is a variable monthly mandate request on card: at most
// ¥500 on day 5 from 2030-01-01.
func variableMandate(cardID string) map[string]any {
	return map[string]any{
		"card_id": cardID, "reference": "meter-" + cardID[len(cardID)-6:], "description": "电费",
		"amount_type": "variable", "max_amount": 50000,
		"schedule": map[string]any{"interval": "month", "day_of_month": 5, "start_date": "2030-01-01"},
	}
}

// create posts a mandate and wants 201 pending_confirmation.
func createMandate(t *testing.T, m tenant, body map[string]any, opts ...apitest.Option) mandateAnswer {
	t.Helper()
	var md mandateAnswer
	if res := m.c.Post(t, "/v1/mandates", body, opts...); !res.WantStatus(t, http.StatusCreated) || !res.Decode(t, &md) {
		t.FailNow()
	}
	if !ids.Valid("mdt", md.ID) || md.Status != mandate.StatusPendingConfirmation || md.OTP == nil {
		t.Fatalf("created mandate = %+v, want a pending mdt_ with otp", md)
	}
	return md
}

var sixDigits = regexp.MustCompile(`^[0-9]{6}$`)

// consentCode is the newest text to phone, which must be quickpay's
// consent SMS (through the carrier), and its code.
func consentCode(t *testing.T, srv *testServer, phone string) string {
	t.Helper()
	texts, err := srv.SimCtl.SMS(context.Background(), phone)
	if err != nil {
		t.Fatal(err)
	}
	if len(texts) == 0 || !strings.HasPrefix(texts[0].Text, "【quickpay】") || !sixDigits.MatchString(texts[0].Code) {
		t.Fatal("the newest text to the phone is not a quickpay consent code")
	}
	return texts[0].Code
}

// textCount is how many texts the phone received (bank and carrier).
func textCount(t *testing.T, srv *testServer, phone string) int {
	t.Helper()
	texts, err := srv.SimCtl.SMS(context.Background(), phone)
	if err != nil {
		t.Fatal(err)
	}
	return len(texts)
}

// otherCode is a 6-digit code other than code.
func otherCode(code string) string {
	n, _ := strconv.Atoi(code)
	return fmt.Sprintf("%06d", (n+1)%1_000_000)
}

// confirm confirms md with the newest consent code and wants it active.
func confirmMandate(t *testing.T, srv *testServer, m tenant, id, phone string) mandateAnswer {
	t.Helper()
	var md mandateAnswer
	res := m.c.Post(t, "/v1/mandates/"+id+"/confirm", map[string]string{"otp": consentCode(t, srv, phone)})
	if !res.WantStatus(t, http.StatusOK) || !res.Decode(t, &md) {
		t.FailNow()
	}
	if md.Status != mandate.StatusActive || md.OTP != nil || md.StatusReason != nil {
		t.Fatalf("confirmed mandate = %+v, want active without otp", md)
	}
	return md
}

func getMandate(t *testing.T, m tenant, id string) mandateAnswer {
	t.Helper()
	var md mandateAnswer
	if res := m.c.Get(t, "/v1/mandates/"+id); !res.WantStatus(t, http.StatusOK) || !res.Decode(t, &md) {
		t.FailNow()
	}
	return md
}

type mandateEvent struct {
	ID   string `json:"id"`
	Type string `json:"type"`
	Data struct {
		MandateID      string  `json:"mandate_id"`
		ChargeID       string  `json:"charge_id"`
		Status         string  `json:"status"`
		StatusReason   *string `json:"status_reason"`
		FailureCode    *string `json:"failure_code"`
		NextChargeDate *string `json:"next_charge_date"`
	} `json:"data"`
}

// events are the merchant's events of type typ (all of them, one page).
func events(t *testing.T, m tenant, typ string) []mandateEvent {
	t.Helper()
	var page struct {
		Data    []mandateEvent `json:"data"`
		HasMore bool           `json:"has_more"`
	}
	if res := m.c.Get(t, "/v1/events?limit=500"); !res.WantStatus(t, http.StatusOK) || !res.Decode(t, &page) {
		t.FailNow()
	}
	if page.HasMore {
		t.Fatal("more than 500 events: the test's merchant should have a few")
	}
	var out []mandateEvent
	for _, ev := range page.Data {
		if ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

// eventFor is the one event of typ about the mandate (or charge) id.
func eventFor(t *testing.T, m tenant, typ, id string) mandateEvent {
	t.Helper()
	var found []mandateEvent
	for _, ev := range events(t, m, typ) {
		if ev.Data.ChargeID == id || (ev.Data.ChargeID == "" && ev.Data.MandateID == id) {
			found = append(found, ev)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d %s events about %s, want 1", len(found), typ, id)
	}
	return found[0]
}

func (e *mandateEnv) testHappyPath(t *testing.T) {
	t.Parallel()
	srv := e.fixed
	m := tenantOf(t, srv, "bind", "withhold")
	card := e.bindCard(t, srv, m, "ICBC", "", "")
	before := textCount(t, srv, card.Phone)

	body := fixedMandate(card.ID)
	md := createMandate(t, m, body)
	now := mandateEpoch
	if md.CardID != card.ID || md.MemberID != card.MemberID || md.Reference != body["reference"] || md.Description != "宽带月费" ||
		md.AmountType != "fixed" || int64p(md.Amount) != "1999" || md.MaxAmount != nil || md.Currency != "CNY" ||
		md.NoticeDays != 0 || md.StatusReason != nil || md.ChargesCount != 0 ||
		!md.CreatedAt.Equal(now) || !md.UpdatedAt.Equal(now) {
		t.Errorf("created mandate = %+v, want ¥19.99 fixed on %s of %s, created now", md, card.ID, card.MemberID)
	}
	if sc := md.Schedule; sc.Interval != "month" || intp(sc.DayOfMonth) != "31" || sc.Weekday != nil || sc.StartDate != "2030-01-01" ||
		sc.EndDate != nil || sc.MaxCharges != nil || sc.Timezone != "Asia/Shanghai" {
		t.Errorf("schedule = %+v, want monthly on day 31 from 2030-01-01 in Asia/Shanghai", sc)
	}
	// The first charge date on or after today (Jan 30): day 31 of January.
	if str(md.NextChargeDate) != "2030-01-31" {
		t.Errorf("next_charge_date = %s, want 2030-01-31", str(md.NextChargeDate))
	}
	if md.OTP.AttemptsLeft != mandate.OTPMaxAttempts || !md.OTP.ExpiresAt.Equal(now.Add(mandate.OTPValidity)) ||
		!md.OTP.ResendAfter.Equal(now.Add(mandate.OTPResendGap)) {
		t.Errorf("otp = %+v, want 5 attempts, expiry in 5 min, resend after 60 s", *md.OTP)
	}

	t.Run("the member got one consent text naming the amount and card", func(t *testing.T) {
		texts, err := srv.SimCtl.SMS(context.Background(), card.Phone)
		if err != nil {
			t.Fatal(err)
		}
		if len(texts) != before+1 {
			t.Fatalf("%d texts after the mandate, want %d", len(texts), before+1)
		}
		if tx := texts[0]; tx.To != card.Phone || !sixDigits.MatchString(tx.Code) || !strings.Contains(tx.Text, "¥19.99") ||
			!strings.Contains(tx.Text, card.Last4) || !strings.Contains(tx.Text, "宽带月费") {
			t.Errorf("consent text does not carry a 6-digit code, the amount, the card's last 4 and the description")
		}
	})

	if got := getMandate(t, m, md.ID); !sameJSON(t, got, md) {
		t.Errorf("GET mandate = %+v, want the created one %+v", got, md)
	}

	active := confirmMandate(t, srv, m, md.ID, card.Phone)
	if str(active.NextChargeDate) != "2030-01-31" || active.ID != md.ID || int64p(active.Amount) != "1999" {
		t.Errorf("active mandate = %+v, want next charge 2030-01-31", active)
	}
	if got := getMandate(t, m, md.ID); got.Status != mandate.StatusActive || got.OTP != nil {
		t.Errorf("GET after confirm: %s with otp %v, want active without", got.Status, got.OTP)
	}
	ev := eventFor(t, m, "mandate.activated", md.ID)
	if ev.Data.Status != string(mandate.StatusActive) || str(ev.Data.NextChargeDate) != "2030-01-31" {
		t.Errorf("mandate.activated data = %+v", ev.Data)
	}

	t.Run("confirming again returns the active mandate", func(t *testing.T) {
		var again mandateAnswer
		res := m.c.Post(t, "/v1/mandates/"+md.ID+"/confirm", map[string]string{"otp": "000000"})
		if res.WantStatus(t, http.StatusOK) && res.Decode(t, &again) && again.Status != mandate.StatusActive {
			t.Errorf("confirm again: %s, want active", again.Status)
		}
		if n := len(events(t, m, "mandate.activated")); n != 1 {
			t.Errorf("%d mandate.activated events, want 1", n)
		}
	})

	t.Run("weekly mandate on ISO weekday 7", func(t *testing.T) {
		body := fixedMandate(card.ID)
		body["schedule"] = map[string]any{"interval": "week", "weekday": 7, "start_date": "2030-02-01",
			"end_date": "2030-12-31", "max_charges": 10, "timezone": "Europe/Berlin"}
		body["notice_days"] = 2
		md := createMandate(t, m, body)
		// 2030-02-03 is the first Sunday on or after Feb 1.
		if intp(md.Schedule.Weekday) != "7" || md.Schedule.DayOfMonth != nil || str(md.Schedule.EndDate) != "2030-12-31" ||
			intp(md.Schedule.MaxCharges) != "10" || md.Schedule.Timezone != "Europe/Berlin" || md.NoticeDays != 2 ||
			str(md.NextChargeDate) != "2030-02-03" {
			t.Errorf("weekly mandate = %+v, want Sundays from 2030-02-03 in Berlin with notice 2", md)
		}
	})
}

func (e *mandateEnv) testWrongCodes(t *testing.T) {
	t.Parallel()
	srv := e.fixed
	m := tenantOf(t, srv, "bind", "withhold")
	card := e.bindCard(t, srv, m, "CCB", "", "")
	md := createMandate(t, m, fixedMandate(card.ID))
	right := consentCode(t, srv, card.Phone)
	wrong := otherCode(right)
	confirm := "/v1/mandates/" + md.ID + "/confirm"

	wantError(t, m.c.Post(t, confirm, map[string]string{"otp": "12345"}), http.StatusUnprocessableEntity, "validation_failed", "otp")
	for left := mandate.OTPMaxAttempts - 1; left > 0; left-- {
		got := wantError(t, m.c.Post(t, confirm, map[string]string{"otp": wrong}), http.StatusUnprocessableEntity, "otp_incorrect", "")
		if got.AttemptsLeft == nil || *got.AttemptsLeft != left {
			t.Errorf("attempts_left = %v, want %d", got.AttemptsLeft, left)
		}
		if md := getMandate(t, m, md.ID); md.OTP == nil || md.OTP.AttemptsLeft != left {
			t.Errorf("GET otp = %+v, want attempts_left %d", md.OTP, left)
		}
	}
	got := wantError(t, m.c.Post(t, confirm, map[string]string{"otp": wrong}), http.StatusUnprocessableEntity, "otp_attempts_exceeded", "")
	if got.AttemptsLeft != nil {
		t.Errorf("otp_attempts_exceeded carries attempts_left %d", *got.AttemptsLeft)
	}
	// The right code is too late now.
	wantError(t, m.c.Post(t, confirm, map[string]string{"otp": right}), http.StatusUnprocessableEntity, "otp_attempts_exceeded", "")
	wantError(t, m.c.Post(t, "/v1/mandates/"+md.ID+"/resend", nil), http.StatusUnprocessableEntity, "otp_attempts_exceeded", "")
	after := getMandate(t, m, md.ID)
	if after.Status != mandate.StatusExpired || str(after.StatusReason) != "otp_attempts_exceeded" || after.OTP != nil ||
		after.NextChargeDate != nil {
		t.Errorf("after 5 wrong codes: %+v, want expired (otp_attempts_exceeded) with no otp and no next charge", after)
	}
	if n := len(events(t, m, "mandate.activated")); n != 0 {
		t.Errorf("%d mandate.activated events, want none", n)
	}
}

func (e *mandateEnv) testResend(t *testing.T) {
	t.Parallel()
	srv, clk := e.clocked(t)
	m := tenantOf(t, srv, "bind", "withhold")
	card := e.bindCard(t, srv, m, "ICBC", "", "")
	md := createMandate(t, m, fixedMandate(card.ID))
	first := consentCode(t, srv, card.Phone)
	sent := textCount(t, srv, card.Phone)
	resend := "/v1/mandates/" + md.ID + "/resend"

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
	if n := textCount(t, srv, card.Phone); n != sent {
		t.Errorf("%d texts after refused resends, want %d", n, sent)
	}

	clk.Advance(time.Second)
	var again mandateAnswer
	res := m.c.Post(t, resend, nil)
	if !res.WantStatus(t, http.StatusOK) || !res.Decode(t, &again) {
		t.FailNow()
	}
	now := clk.Now()
	if again.Status != mandate.StatusPendingConfirmation || again.OTP == nil || !again.OTP.ExpiresAt.Equal(now.Add(mandate.OTPValidity)) ||
		!again.OTP.ResendAfter.Equal(now.Add(mandate.OTPResendGap)) || again.OTP.AttemptsLeft != mandate.OTPMaxAttempts {
		t.Errorf("after resend: %+v, want the code's times restarted at %s", again.OTP, now)
	}
	if n := textCount(t, srv, card.Phone); n != sent+1 {
		t.Errorf("%d texts after the resend, want %d", n, sent+1)
	}
	if second := consentCode(t, srv, card.Phone); second != first {
		// The first code died with the resend.
		wantError(t, m.c.Post(t, "/v1/mandates/"+md.ID+"/confirm", map[string]string{"otp": first}),
			http.StatusUnprocessableEntity, "otp_incorrect", "")
	}

	// Five sends in all: the create and four resends.
	for range mandate.OTPMaxSends - 2 {
		clk.Advance(mandate.OTPResendGap)
		m.c.Post(t, resend, nil).WantStatus(t, http.StatusOK)
	}
	clk.Advance(mandate.OTPResendGap)
	got := wantError(t, m.c.Post(t, resend, nil), http.StatusTooManyRequests, "otp_resend_limit", "")
	if got.RetryAfter != nil {
		t.Errorf("otp_resend_limit carries retry_after %d: no wait helps", *got.RetryAfter)
	}
	if n := textCount(t, srv, card.Phone); n != sent+mandate.OTPMaxSends-1 {
		t.Errorf("%d texts, want %d", n, sent+mandate.OTPMaxSends-1)
	}
	// The last code still confirms; an active mandate takes no resend.
	confirmMandate(t, srv, m, md.ID, card.Phone)
	wantError(t, m.c.Post(t, resend, nil), http.StatusConflict, "invalid_state", "")
}

func (e *mandateEnv) testExpired(t *testing.T) {
	t.Parallel()
	srv, clk := e.clocked(t)
	m := tenantOf(t, srv, "bind", "withhold")
	card := e.bindCard(t, srv, m, "ICBC", "", "")
	md := createMandate(t, m, fixedMandate(card.ID))
	code := consentCode(t, srv, card.Phone)

	clk.Advance(mandate.OTPValidity)
	if got := getMandate(t, m, md.ID); got.Status != mandate.StatusPendingConfirmation || got.OTP == nil {
		t.Errorf("at exactly 5 minutes the mandate is %s, want pending_confirmation", got.Status)
	}
	clk.Advance(time.Second)
	if got := getMandate(t, m, md.ID); got.Status != mandate.StatusExpired || str(got.StatusReason) != "consent_expired" || got.OTP != nil {
		t.Errorf("after 5 minutes: %+v, want expired (consent_expired) without otp", got)
	}
	wantError(t, m.c.Post(t, "/v1/mandates/"+md.ID+"/confirm", map[string]string{"otp": code}), http.StatusGone, "mandate_expired", "")
	wantError(t, m.c.Post(t, "/v1/mandates/"+md.ID+"/resend", nil), http.StatusGone, "mandate_expired", "")
	if got := getMandate(t, m, md.ID); got.Status != mandate.StatusExpired || got.NextChargeDate != nil {
		t.Errorf("after the refused confirm: %s next %s, want expired without a next charge", got.Status, str(got.NextChargeDate))
	}
	if n := len(events(t, m, "mandate.activated")); n != 0 {
		t.Errorf("%d mandate.activated events, want none", n)
	}
}

func (e *mandateEnv) testValidation(t *testing.T) {
	t.Parallel()
	srv := e.fixed
	m := tenantOf(t, srv, "bind", "withhold")
	card := e.bindCard(t, srv, m, "ICBC", "", "")
	other := tenantOf(t, srv, "bind", "withhold")
	otherCard := e.bindCard(t, srv, other, "ICBC", "", "")
	before, otherBefore := textCount(t, srv, card.Phone), textCount(t, srv, otherCard.Phone)

	schedule := func(edit func(s map[string]any)) func(b map[string]any) {
		return func(b map[string]any) { edit(b["schedule"].(map[string]any)) }
	}
	tests := []struct {
		name   string
		edit   func(b map[string]any)
		status int
		code   string
		field  string
	}{
		{"day_of_month 32", schedule(func(s map[string]any) { s["day_of_month"] = 32 }), 422, "validation_failed", "schedule.day_of_month"},
		{"amount_type bad", func(b map[string]any) { b["amount_type"] = "bad" }, 422, "validation_failed", "amount_type"},
		{"amount missing", func(b map[string]any) { delete(b, "amount") }, 422, "validation_failed", "amount"},
		{"max_amount on a fixed mandate", func(b map[string]any) { b["max_amount"] = 5000 }, 422, "validation_failed", "max_amount"},
		{"max_amount missing on a variable mandate", func(b map[string]any) { b["amount_type"] = "variable"; delete(b, "amount") },
			422, "validation_failed", "max_amount"},
		{"amount over the limit", func(b map[string]any) { b["amount"] = mandate.MaxAmount + 1 }, 422, "validation_failed", "amount"},
		{"currency USD", func(b map[string]any) { b["currency"] = "USD" }, 422, "validation_failed", "currency"},
		{"reference empty", func(b map[string]any) { b["reference"] = "" }, 422, "validation_failed", "reference"},
		// Text that reaches the consent SMS (issue 18). JSON's \u0000
		// decodes to a NUL, which Postgres text refuses: 400 before any SMS.
		{"nul in description", func(b map[string]any) { b["description"] = "water\x00bill" }, 400, "validation_failed", "description"},
		{"nul in reference", func(b map[string]any) { b["reference"] = "ref\x00" }, 400, "validation_failed", "reference"},
		{"newline in description", func(b map[string]any) { b["description"] = "water\n回复1确认" }, 422, "validation_failed", "description"},
		{"control character in reference", func(b map[string]any) { b["reference"] = "ref\x1b[2J" }, 422, "validation_failed", "reference"},
		{"description over the cap", func(b map[string]any) { b["description"] = strings.Repeat("费", mandate.MaxDescriptionLength+1) },
			422, "validation_failed", "description"},
		{"reference over the cap", func(b map[string]any) { b["reference"] = strings.Repeat("r", mandate.MaxReferenceLength+1) },
			422, "validation_failed", "reference"},
		{"notice_days 31", func(b map[string]any) { b["notice_days"] = 31 }, 422, "validation_failed", "notice_days"},
		{"interval year", schedule(func(s map[string]any) { s["interval"] = "year" }), 422, "validation_failed", "schedule.interval"},
		{"weekday on a monthly schedule", schedule(func(s map[string]any) { s["weekday"] = 3 }), 422, "validation_failed", "schedule.weekday"},
		{"weekday 8", schedule(func(s map[string]any) { s["interval"] = "week"; delete(s, "day_of_month"); s["weekday"] = 8 }),
			422, "validation_failed", "schedule.weekday"},
		{"start_date missing", schedule(func(s map[string]any) { delete(s, "start_date") }), 422, "validation_failed", "schedule.start_date"},
		{"start_date not a date", schedule(func(s map[string]any) { s["start_date"] = "01/02/2030" }), 400, "validation_failed", "schedule.start_date"},
		{"start_date Feb 30", schedule(func(s map[string]any) { s["start_date"] = "2030-02-30" }), 400, "validation_failed", "schedule.start_date"},
		{"end_date not a date", schedule(func(s map[string]any) { s["end_date"] = "soon" }), 400, "validation_failed", "schedule.end_date"},
		{"end_date before start_date", schedule(func(s map[string]any) { s["end_date"] = "2029-12-31" }), 422, "validation_failed", "schedule.end_date"},
		{"no charge date left", schedule(func(s map[string]any) { s["end_date"] = "2030-01-15" }), 422, "validation_failed", "schedule.end_date"},
		{"max_charges 1201", schedule(func(s map[string]any) { s["max_charges"] = 1201 }), 422, "validation_failed", "schedule.max_charges"},
		{"unknown timezone", schedule(func(s map[string]any) { s["timezone"] = "Mars/Olympus" }), 422, "validation_failed", "schedule.timezone"},
		{"weekday of the wrong type", schedule(func(s map[string]any) { s["weekday"] = "monday" }), 400, "validation_failed", "schedule.weekday"},
		{"unknown field", func(b map[string]any) { b["amount_cents"] = 1 }, 400, "validation_failed", "amount_cents"},
		{"card_id not a card id", func(b map[string]any) { b["card_id"] = "card_nope" }, 422, "validation_failed", "card_id"},
		{"card of another merchant", func(b map[string]any) { b["card_id"] = otherCard.ID }, 404, "not_found", ""},
		{"card that does not exist", func(b map[string]any) { b["card_id"] = "card_aaaaaaaaaaaaaaaaaaaaaaaa" }, 404, "not_found", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := fixedMandate(card.ID)
			tt.edit(body)
			wantError(t, m.c.Post(t, "/v1/mandates", body), tt.status, tt.code, tt.field)
		})
	}
	wantError(t, m.c.Post(t, "/v1/mandates", []byte(`{"card_id":`)), http.StatusBadRequest, "malformed_json", "")

	if n, o := textCount(t, srv, card.Phone), textCount(t, srv, otherCard.Phone); n != before || o != otherBefore {
		t.Errorf("refused mandates sent texts: %d and %d, want %d and %d", n, o, before, otherBefore)
	}
	var list struct{ Data []mandateAnswer }
	if res := m.c.Get(t, "/v1/mandates?card_id="+card.ID); res.WantStatus(t, http.StatusOK) && res.Decode(t, &list) && len(list.Data) != 0 {
		t.Errorf("refused requests left %d mandates", len(list.Data))
	}
}

func (e *mandateEnv) testVariableCharges(t *testing.T) {
	t.Parallel()
	srv := e.fixed
	m := tenantOf(t, srv, "bind", "withhold")
	card := e.bindCard(t, srv, m, "ICBC", "", "")
	md := createMandate(t, m, variableMandate(card.ID))
	if md.Amount != nil || int64p(md.MaxAmount) != "50000" || str(md.NextChargeDate) != "2030-02-05" {
		t.Errorf("variable mandate = %+v, want max_amount 50000, amount null, next charge 2030-02-05", md)
	}
	charges := "/v1/mandates/" + md.ID + "/charges"

	// Not yet active.
	wantError(t, m.c.Post(t, charges, map[string]any{"amount": 100}), http.StatusConflict, "invalid_state", "")
	confirmMandate(t, srv, m, md.ID, card.Phone)

	wantError(t, m.c.Post(t, charges, map[string]any{"amount": 50001}), http.StatusUnprocessableEntity, "amount_over_max", "")
	wantError(t, m.c.Post(t, charges, map[string]any{"amount": 0}), http.StatusUnprocessableEntity, "validation_failed", "amount")
	wantError(t, m.c.Post(t, charges, map[string]any{"amount": 100, "period": "2030-W05"}), http.StatusUnprocessableEntity, "validation_failed", "period")
	wantError(t, m.c.Post(t, charges, map[string]any{"amount": 100, "period": "2030-01"}), http.StatusUnprocessableEntity, "validation_failed", "period")
	wantError(t, m.c.Post(t, charges, map[string]any{"amount": "100"}), http.StatusBadRequest, "validation_failed", "amount")

	var ch chargeAnswer
	res := m.c.Post(t, charges, map[string]any{"amount": 12345})
	if !res.WantStatus(t, http.StatusCreated) || !res.Decode(t, &ch) {
		t.FailNow()
	}
	// 2030-02-05 begins at 00:00 in Shanghai: 16:00 UTC the day before.
	due := time.Date(2030, 2, 5, 0, 0, 0, 0, shanghai)
	if !ids.Valid("chg", ch.ID) || ch.MandateID != md.ID || ch.Period != "2030-02" || ch.ChargeDate != "2030-02-05" ||
		ch.Amount != 12345 || ch.Currency != "CNY" || ch.Description != "电费" || ch.Status != mandate.ChargeScheduled ||
		ch.Attempts == nil || len(ch.Attempts) != 0 || ch.NextAttemptAt == nil || !ch.NextAttemptAt.Equal(due) ||
		ch.NoticeSentAt != nil || ch.Retries != 0 || ch.FailureCode != nil || ch.BankReference != nil ||
		!ch.CreatedAt.Equal(mandateEpoch) {
		t.Errorf("charge = %+v, want 12345 scheduled for 2030-02 at %s", ch, due.UTC())
	}

	t.Run("a period takes one charge", func(t *testing.T) {
		wantError(t, m.c.Post(t, charges, map[string]any{"amount": 100}), http.StatusConflict, "period_already_charged", "")
		wantError(t, m.c.Post(t, charges, map[string]any{"amount": 100, "period": "2030-02"}), http.StatusConflict, "period_already_charged", "")
	})

	var march chargeAnswer
	res = m.c.Post(t, charges, map[string]any{"amount": 50000, "period": "2030-03", "description": "三月电费"})
	if res.WantStatus(t, http.StatusCreated) && res.Decode(t, &march) &&
		(march.Period != "2030-03" || march.ChargeDate != "2030-03-05" || march.Description != "三月电费" || march.Amount != 50000) {
		t.Errorf("March charge = %+v", march)
	}

	var got chargeAnswer
	if res := m.c.Get(t, "/v1/charges/"+ch.ID); res.WantStatus(t, http.StatusOK) && res.Decode(t, &got) &&
		!sameJSON(t, got, ch) {
		t.Errorf("GET charge = %+v, want %+v", got, ch)
	}
	var list struct{ Data []chargeAnswer }
	// Newest first: both were created at the fixed clock's time, so the
	// greater id first.
	newest, older := ch, march
	if march.ID > ch.ID {
		newest, older = march, ch
	}
	if res := m.c.Get(t, charges); res.WantStatus(t, http.StatusOK) && res.Decode(t, &list) &&
		(len(list.Data) != 2 || !sameJSON(t, list.Data[0], newest) || !sameJSON(t, list.Data[1], older)) {
		t.Errorf("charges = %+v, want %s then %s", list.Data, newest.ID, older.ID)
	}
	m.c.Get(t, "/v1/charges/chg_aaaaaaaaaaaaaaaaaaaaaaaa").WantError(t, http.StatusNotFound, "not_found")
	m.c.Get(t, "/v1/charges/"+md.ID).WantError(t, http.StatusNotFound, "not_found")

	t.Run("pausing fails the charges not yet sent", func(t *testing.T) {
		m.c.Post(t, "/v1/mandates/"+md.ID+"/pause", nil).WantStatus(t, http.StatusOK)
		for _, id := range []string{ch.ID, march.ID} {
			var c chargeAnswer
			if res := m.c.Get(t, "/v1/charges/"+id); res.WantStatus(t, http.StatusOK) && res.Decode(t, &c) &&
				(c.Status != mandate.ChargeFailed || str(c.FailureCode) != "mandate_paused" || c.NextAttemptAt != nil) {
				t.Errorf("charge after pause = %s %s next %v, want failed mandate_paused", c.Status, str(c.FailureCode), c.NextAttemptAt)
			}
		}
		if n := len(events(t, m, "charge.failed")); n != 2 {
			t.Errorf("%d charge.failed events, want 2", n)
		}
		// A paused mandate takes no charge.
		wantError(t, m.c.Post(t, charges, map[string]any{"amount": 100, "period": "2030-04"}), http.StatusConflict, "invalid_state", "")
	})

	t.Run("a fixed mandate takes no posted charge", func(t *testing.T) {
		fixed := createMandate(t, m, fixedMandate(card.ID))
		confirmMandate(t, srv, m, fixed.ID, card.Phone)
		wantError(t, m.c.Post(t, "/v1/mandates/"+fixed.ID+"/charges", map[string]any{"amount": 1999}),
			http.StatusUnprocessableEntity, "mandate_not_variable", "")
		var list struct{ Data []chargeAnswer }
		if res := m.c.Get(t, "/v1/mandates/"+fixed.ID+"/charges"); res.WantStatus(t, http.StatusOK) && res.Decode(t, &list) && len(list.Data) != 0 {
			t.Errorf("fixed mandate has %d charges, want none yet", len(list.Data))
		}
	})
}

func (e *mandateEnv) testTransitions(t *testing.T) {
	t.Parallel()
	srv := e.fixed
	m := tenantOf(t, srv, "bind", "withhold")
	card := e.bindCard(t, srv, m, "ICBC", "", "")
	md := createMandate(t, m, fixedMandate(card.ID))
	path := func(action string) string { return "/v1/mandates/" + md.ID + "/" + action }
	step := func(t *testing.T, action string, status mandate.MandateStatus, reason string) mandateAnswer {
		t.Helper()
		var got mandateAnswer
		res := m.c.Post(t, path(action), nil)
		if res.WantStatus(t, http.StatusOK) && res.Decode(t, &got) && (got.Status != status || str(got.StatusReason) != reason) {
			t.Errorf("%s: %s (%s), want %s (%s)", action, got.Status, str(got.StatusReason), status, reason)
		}
		return got
	}

	// Pending: only cancel (or confirm) applies.
	wantError(t, m.c.Post(t, path("pause"), nil), http.StatusConflict, "invalid_state", "")
	wantError(t, m.c.Post(t, path("resume"), nil), http.StatusConflict, "invalid_state", "")
	confirmMandate(t, srv, m, md.ID, card.Phone)

	if got := step(t, "pause", mandate.StatusPaused, "merchant"); got.NextChargeDate != nil {
		t.Errorf("paused next_charge_date = %s, want null", str(got.NextChargeDate))
	}
	step(t, "pause", mandate.StatusPaused, "merchant") // again: unchanged
	if got := getMandate(t, m, md.ID); got.NextChargeDate != nil {
		t.Errorf("GET paused next_charge_date = %s, want null", str(got.NextChargeDate))
	}
	wantError(t, m.c.Post(t, path("confirm"), map[string]string{"otp": "123456"}), http.StatusConflict, "invalid_state", "")
	if got := step(t, "resume", mandate.StatusActive, "<null>"); str(got.NextChargeDate) != "2030-01-31" {
		t.Errorf("resumed next_charge_date = %s, want 2030-01-31", str(got.NextChargeDate))
	}
	step(t, "resume", mandate.StatusActive, "<null>")
	if got := step(t, "cancel", mandate.StatusCancelled, "merchant"); got.NextChargeDate != nil {
		t.Errorf("cancelled next_charge_date = %s, want null", str(got.NextChargeDate))
	}
	step(t, "cancel", mandate.StatusCancelled, "merchant")
	wantError(t, m.c.Post(t, path("resume"), nil), http.StatusConflict, "invalid_state", "")
	wantError(t, m.c.Post(t, path("pause"), nil), http.StatusConflict, "invalid_state", "")
	wantError(t, m.c.Post(t, path("resend"), nil), http.StatusConflict, "invalid_state", "")
	if got := getMandate(t, m, md.ID); got.Status != mandate.StatusCancelled {
		t.Errorf("GET after the refused resume: %s, want cancelled", got.Status)
	}

	for typ, n := range map[string]int{"mandate.paused": 1, "mandate.resumed": 1, "mandate.cancelled": 1} {
		if got := len(events(t, m, typ)); got != n {
			t.Errorf("%d %s events, want %d", got, typ, n)
		}
	}

	t.Run("a pending mandate can be cancelled", func(t *testing.T) {
		pending := createMandate(t, m, fixedMandate(card.ID))
		var got mandateAnswer
		res := m.c.Post(t, "/v1/mandates/"+pending.ID+"/cancel", nil)
		if res.WantStatus(t, http.StatusOK) && res.Decode(t, &got) && (got.Status != mandate.StatusCancelled || got.OTP != nil) {
			t.Errorf("cancelled pending mandate = %+v", got)
		}
		wantError(t, m.c.Post(t, "/v1/mandates/"+pending.ID+"/confirm", map[string]string{"otp": consentCode(t, srv, card.Phone)}),
			http.StatusConflict, "invalid_state", "")
	})

	t.Run("ids that are not mandates are not_found", func(t *testing.T) {
		for _, id := range []string{"mdt_aaaaaaaaaaaaaaaaaaaaaaaa", "mdt_x", card.ID} {
			m.c.Post(t, "/v1/mandates/"+id+"/pause", nil).WantError(t, http.StatusNotFound, "not_found")
			m.c.Get(t, "/v1/mandates/"+id).WantError(t, http.StatusNotFound, "not_found")
		}
	})
}

// memberWithTwoCards creates a member of m and binds it an ICBC card and a
// CCB card (the same holder, or the identity check refuses the second).
func (e *mandateEnv) memberWithTwoCards(t *testing.T, srv *testServer, m tenant) (mem struct{ ID string }, one, two boundCard) {
	t.Helper()
	if res := m.c.Post(t, "/v1/members", map[string]string{"external_id": "user-" + randomHex(t, 6)}); !res.WantStatus(t, http.StatusCreated) ||
		!res.Decode(t, &mem) {
		t.FailNow()
	}
	one = e.bindCard(t, srv, m, "ICBC", "member_id", mem.ID)
	two = e.bindAccount(t, srv, m, e.sameHolder(t, srv, "CCB", one), "member_id", mem.ID)
	return mem, one, two
}

func (e *mandateEnv) testLists(t *testing.T) {
	t.Parallel()
	// Lists are newest first: the clock moves between the creates.
	srv, clk := e.clocked(t)
	m := tenantOf(t, srv, "bind", "withhold")
	mem, one, two := e.memberWithTwoCards(t, srv, m)
	a := createMandate(t, m, fixedMandate(one.ID))
	clk.Advance(time.Second)
	b := createMandate(t, m, variableMandate(two.ID))
	clk.Advance(time.Second)
	c := createMandate(t, m, variableMandate(one.ID))

	list := func(t *testing.T, c *apitest.Client, query string) []string {
		t.Helper()
		var l struct {
			Data []mandateAnswer `json:"data"`
		}
		if res := c.Get(t, "/v1/mandates?"+query); !res.WantStatus(t, http.StatusOK) || !res.Decode(t, &l) {
			return nil
		}
		out := []string{}
		for _, md := range l.Data {
			out = append(out, md.ID)
		}
		return out
	}
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"card_id=" + one.ID, []string{c.ID, a.ID}},
		{"card_id=" + two.ID, []string{b.ID}},
		{"member_id=" + mem.ID, []string{c.ID, b.ID, a.ID}},
		{"member_id=mem_aaaaaaaaaaaaaaaaaaaaaaaa", []string{}},
		// No filter: every mandate of the merchant; filters combine.
		{"", []string{c.ID, b.ID, a.ID}},
		{"card_id=" + one.ID + "&member_id=" + mem.ID, []string{c.ID, a.ID}},
		{"card_id=" + two.ID + "&member_id=mem_aaaaaaaaaaaaaaaaaaaaaaaa", []string{}},
		{"status=pending_confirmation", []string{c.ID, b.ID, a.ID}},
		{"status=active", []string{}},
		{"limit=2", []string{c.ID, b.ID}},
		{"limit=2&starting_after=" + b.ID, []string{a.ID}},
		{"member_id=" + mem.ID + "&starting_after=" + c.ID, []string{b.ID, a.ID}},
	} {
		if got := list(t, m.c, tc.query); !slices.Equal(got, tc.want) {
			t.Errorf("GET /v1/mandates?%s = %v, want %v", tc.query, got, tc.want)
		}
	}
	t.Run("a pending mandate whose code ran out lists as expired", func(t *testing.T) {
		clk.Advance(mandate.OTPValidity + time.Second)
		if got := list(t, m.c, "status=expired"); !slices.Equal(got, []string{c.ID, b.ID, a.ID}) {
			t.Errorf("expired mandates = %v, want all three", got)
		}
		if got := list(t, m.c, "status=pending_confirmation"); len(got) != 0 {
			t.Errorf("pending mandates = %v, want none", got)
		}
	})
	for _, tc := range []struct{ query, field string }{
		{"card_id=" + mem.ID, "card_id"},
		{"member_id=nope", "member_id"},
		{"status=bogus", "status"},
		{"limit=0", "limit"},
		{"limit=101", "limit"},
		{"limit=two", "limit"},
	} {
		wantError(t, m.c.Get(t, "/v1/mandates?"+tc.query), http.StatusUnprocessableEntity, "validation_failed", tc.field)
	}
	m.c.Get(t, "/v1/mandates?starting_after=mdt_aaaaaaaaaaaaaaaaaaaaaaaa").WantError(t, http.StatusNotFound, "not_found")
	m.c.Get(t, "/v1/mandates?starting_after="+one.ID).WantError(t, http.StatusNotFound, "not_found")

	other := tenantOf(t, srv, "bind", "withhold")
	if got := list(t, other.c, "card_id="+one.ID); len(got) != 0 {
		t.Errorf("another merchant lists %v on the card, want nothing", got)
	}
	if got := list(t, other.c, "member_id="+mem.ID); len(got) != 0 {
		t.Errorf("another merchant lists %v of the member, want nothing", got)
	}
	if got := list(t, other.c, ""); len(got) != 0 {
		t.Errorf("another merchant lists %v, want nothing", got)
	}
	other.c.Get(t, "/v1/mandates?starting_after="+b.ID).WantError(t, http.StatusNotFound, "not_found")
}

func (e *mandateEnv) testTenants(t *testing.T) {
	t.Parallel()
	srv := e.fixed
	a := tenantOf(t, srv, "bind", "withhold")
	b := tenantOf(t, srv, "bind", "withhold")
	card := e.bindCard(t, srv, a, "ICBC", "", "")
	md := createMandate(t, a, variableMandate(card.ID))
	confirmMandate(t, srv, a, md.ID, card.Phone)
	var ch chargeAnswer
	if res := a.c.Post(t, "/v1/mandates/"+md.ID+"/charges", map[string]any{"amount": 100}); !res.WantStatus(t, http.StatusCreated) ||
		!res.Decode(t, &ch) {
		t.FailNow()
	}
	pending := createMandate(t, a, fixedMandate(card.ID))
	code := consentCode(t, srv, card.Phone)
	texts := textCount(t, srv, card.Phone)

	for _, tc := range []struct {
		name string
		do   func(t *testing.T) *apitest.Response
	}{
		{"GET mandate", func(t *testing.T) *apitest.Response { return b.c.Get(t, "/v1/mandates/"+md.ID) }},
		{"GET its charges", func(t *testing.T) *apitest.Response { return b.c.Get(t, "/v1/mandates/"+md.ID+"/charges") }},
		{"GET a charge", func(t *testing.T) *apitest.Response { return b.c.Get(t, "/v1/charges/"+ch.ID) }},
		{"POST a charge", func(t *testing.T) *apitest.Response {
			return b.c.Post(t, "/v1/mandates/"+md.ID+"/charges", map[string]any{"amount": 100, "period": "2030-03"})
		}},
		{"pause", func(t *testing.T) *apitest.Response { return b.c.Post(t, "/v1/mandates/"+md.ID+"/pause", nil) }},
		{"cancel", func(t *testing.T) *apitest.Response { return b.c.Post(t, "/v1/mandates/"+md.ID+"/cancel", nil) }},
		{"confirm with the right code", func(t *testing.T) *apitest.Response {
			return b.c.Post(t, "/v1/mandates/"+pending.ID+"/confirm", map[string]string{"otp": code})
		}},
		{"resend", func(t *testing.T) *apitest.Response { return b.c.Post(t, "/v1/mandates/"+pending.ID+"/resend", nil) }},
		{"create on its card", func(t *testing.T) *apitest.Response { return b.c.Post(t, "/v1/mandates", fixedMandate(card.ID)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, tc.do(t), http.StatusNotFound, "not_found", "")
		})
	}

	if got := getMandate(t, a, md.ID); got.Status != mandate.StatusActive {
		t.Errorf("A's mandate is %s after B's tries, want active", got.Status)
	}
	if got := getMandate(t, a, pending.ID); got.Status != mandate.StatusPendingConfirmation || got.OTP == nil ||
		got.OTP.AttemptsLeft != mandate.OTPMaxAttempts {
		t.Errorf("A's pending mandate after B's tries = %+v, want untouched", got)
	}
	var list struct{ Data []chargeAnswer }
	if res := a.c.Get(t, "/v1/mandates/"+md.ID+"/charges"); res.WantStatus(t, http.StatusOK) && res.Decode(t, &list) && len(list.Data) != 1 {
		t.Errorf("A's mandate has %d charges after B's tries, want 1", len(list.Data))
	}
	if n := textCount(t, srv, card.Phone); n != texts {
		t.Errorf("B's tries sent %d texts to A's member", n-texts)
	}
	if evs := events(t, b, "mandate.activated"); len(evs) != 0 {
		t.Errorf("B sees %d mandate.activated events", len(evs))
	}
}

func (e *mandateEnv) testScope(t *testing.T) {
	t.Parallel()
	srv := e.fixed
	a := tenantOf(t, srv, "bind", "withhold")
	card := e.bindCard(t, srv, a, "ICBC", "", "")
	md := createMandate(t, a, fixedMandate(card.ID))
	texts := textCount(t, srv, card.Phone)

	bindOnly := tenantOf(t, srv, "bind")
	bindCard := e.bindCard(t, srv, bindOnly, "ICBC", "", "")
	for _, tc := range []struct {
		name string
		do   func(t *testing.T) *apitest.Response
	}{
		{"POST /v1/mandates", func(t *testing.T) *apitest.Response {
			return bindOnly.c.Post(t, "/v1/mandates", fixedMandate(bindCard.ID))
		}},
		{"GET /v1/mandates", func(t *testing.T) *apitest.Response { return bindOnly.c.Get(t, "/v1/mandates?card_id="+bindCard.ID) }},
		{"GET /v1/mandates/{id}", func(t *testing.T) *apitest.Response { return bindOnly.c.Get(t, "/v1/mandates/"+md.ID) }},
		{"cancel", func(t *testing.T) *apitest.Response { return bindOnly.c.Post(t, "/v1/mandates/"+md.ID+"/cancel", nil) }},
		{"GET /v1/charges/{id}", func(t *testing.T) *apitest.Response {
			return bindOnly.c.Get(t, "/v1/charges/chg_aaaaaaaaaaaaaaaaaaaaaaaa")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := wantError(t, tc.do(t), http.StatusForbidden, "insufficient_scope", "")
			if got.RequiredScope != "withhold" {
				t.Errorf("required_scope = %q, want withhold", got.RequiredScope)
			}
		})
	}
	// Echo answers an unknown path under a group with the group's
	// middleware: a route group per scope made a misspelt path answer 403
	// naming the last group's scope.
	t.Run("an unknown /v1 path answers 404 whatever the token's scopes", func(t *testing.T) {
		for _, scopes := range [][]string{{"bind"}, {"withhold"}, {"bind", "withhold"}} {
			m, secret, err := srv.merchants.Create(context.Background(), "unknown path "+strings.Join(scopes, "+"), scopes)
			if err != nil {
				t.Fatal(err)
			}
			req, err := http.NewRequest(http.MethodGet, srv.url+"/v1/mandate/"+md.ID, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+apitest.NewClient(t, srv.url).Token(t, m.ClientID, secret))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var body struct{ Error struct{ Code string } }
			err = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusNotFound || body.Error.Code != "not_found" {
				t.Errorf("scopes %v: status %d, code %q (%v); want 404 not_found", scopes, resp.StatusCode, body.Error.Code, err)
			}
		}
		resp, err := http.Get(srv.url + "/v1/mandate/" + md.ID)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("without a token: status %d, want 401", resp.StatusCode)
		}
	})
	if n := textCount(t, srv, bindCard.Phone); n != 1 {
		t.Errorf("the bind-only merchant's member got %d texts, want only the bank's", n)
	}
	if got := getMandate(t, a, md.ID); got.Status != mandate.StatusPendingConfirmation || textCount(t, srv, card.Phone) != texts {
		t.Errorf("the mandate is %s after refused calls, want pending and no new text", got.Status)
	}
}

func (e *mandateEnv) testIdempotency(t *testing.T) {
	t.Parallel()
	srv := e.fixed
	m := tenantOf(t, srv, "bind", "withhold")
	card := e.bindCard(t, srv, m, "CCB", "", "")
	before := textCount(t, srv, card.Phone)
	body := fixedMandate(card.ID)
	key := apitest.IdempotencyKey("mandate-" + randomHex(t, 6))

	first := m.c.Post(t, "/v1/mandates", body, key)
	first.WantStatus(t, http.StatusCreated)
	again := m.c.Post(t, "/v1/mandates", body, key)
	if again.WantStatus(t, http.StatusCreated) && (!bytes.Equal(again.Body, first.Body) || again.Header.Get("Idempotent-Replayed") != "true") {
		t.Errorf("replay: body equal %v, Idempotent-Replayed %q; want the saved body, replayed",
			bytes.Equal(again.Body, first.Body), again.Header.Get("Idempotent-Replayed"))
	}
	if n := textCount(t, srv, card.Phone); n != before+1 {
		t.Errorf("%d consent texts for one key, want 1", n-before)
	}
	var list struct{ Data []mandateAnswer }
	if res := m.c.Get(t, "/v1/mandates?card_id="+card.ID); res.WantStatus(t, http.StatusOK) && res.Decode(t, &list) && len(list.Data) != 1 {
		t.Errorf("%d mandates for one key, want 1", len(list.Data))
	}
	body["amount"] = 2999
	wantError(t, m.c.Post(t, "/v1/mandates", body, key), http.StatusUnprocessableEntity, "idempotency_key_reused", "")
	if n := textCount(t, srv, card.Phone); n != before+1 {
		t.Errorf("%d consent texts after a reused key, want 1", n-before)
	}
}

func (e *mandateEnv) testUnbind(t *testing.T) {
	t.Parallel()
	srv := e.fixed
	m := tenantOf(t, srv, "bind", "withhold")
	card := e.bindCard(t, srv, m, "ICBC", "", "")
	active := createMandate(t, m, variableMandate(card.ID))
	confirmMandate(t, srv, m, active.ID, card.Phone)
	var ch chargeAnswer
	if res := m.c.Post(t, "/v1/mandates/"+active.ID+"/charges", map[string]any{"amount": 4200}); !res.WantStatus(t, http.StatusCreated) ||
		!res.Decode(t, &ch) {
		t.FailNow()
	}
	pending := createMandate(t, m, fixedMandate(card.ID))
	other := e.bindCard(t, srv, m, "ICBC", "", "")
	untouched := createMandate(t, m, fixedMandate(other.ID))

	m.c.Delete(t, "/v1/cards/"+card.ID).WantStatus(t, http.StatusOK)

	for _, id := range []string{active.ID, pending.ID} {
		got := getMandate(t, m, id)
		if got.Status != mandate.StatusCancelled || str(got.StatusReason) != "card_unbound" || got.NextChargeDate != nil || got.OTP != nil {
			t.Errorf("mandate on the unbound card = %s (%s) next %s, want cancelled (card_unbound) without next charge",
				got.Status, str(got.StatusReason), str(got.NextChargeDate))
		}
		ev := eventFor(t, m, "mandate.cancelled", id)
		if ev.Data.Status != string(mandate.StatusCancelled) || str(ev.Data.StatusReason) != "card_unbound" {
			t.Errorf("mandate.cancelled data = %+v, want cancelled card_unbound", ev.Data)
		}
	}
	var c chargeAnswer
	if res := m.c.Get(t, "/v1/charges/"+ch.ID); res.WantStatus(t, http.StatusOK) && res.Decode(t, &c) &&
		(c.Status != mandate.ChargeFailed || str(c.FailureCode) != "mandate_cancelled") {
		t.Errorf("charge of the cancelled mandate: %s %s, want failed mandate_cancelled", c.Status, str(c.FailureCode))
	}
	if got := getMandate(t, m, untouched.ID); got.Status != mandate.StatusPendingConfirmation {
		t.Errorf("a mandate on another card is %s, want still pending", got.Status)
	}
	wantError(t, m.c.Post(t, "/v1/mandates", fixedMandate(card.ID)), http.StatusConflict, "card_not_active", "")
	wantError(t, m.c.Post(t, "/v1/mandates/"+active.ID+"/resume", nil), http.StatusConflict, "invalid_state", "")
}

func (e *mandateEnv) testSMSUnavailable(t *testing.T) {
	t.Parallel()
	// A carrier address where nothing listens: every send is refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String() + "/carrier/sms"
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	srv := newTestServer(t, serverOptions{Stack: e.Stack, Clock: clock.NewFake(mandateEpoch), SMSURL: down})
	m := tenantOf(t, srv, "bind", "withhold")
	card := e.bindCard(t, srv, m, "ICBC", "", "")
	texts := textCount(t, srv, card.Phone)

	wantError(t, m.c.Post(t, "/v1/mandates", fixedMandate(card.ID)), http.StatusServiceUnavailable, "sms_unavailable", "")
	// Written before the carrier is asked (no call inside a transaction),
	// the mandate is kept, expired: it can never be confirmed or charged.
	var list struct{ Data []mandateAnswer }
	if res := m.c.Get(t, "/v1/mandates?card_id="+card.ID); res.WantStatus(t, http.StatusOK) && res.Decode(t, &list) {
		if len(list.Data) != 1 || list.Data[0].Status != "expired" || list.Data[0].StatusReason == nil ||
			*list.Data[0].StatusReason != "consent_not_sent" || list.Data[0].NextChargeDate != nil {
			t.Errorf("a mandate whose code was not sent = %+v, want one, expired (consent_not_sent), charging nothing", list.Data)
		}
	}
	if n := textCount(t, srv, card.Phone); n != texts {
		t.Errorf("%d texts reached the member, want none", n-texts)
	}
}

// testCallbacks posts to the public bank callback route as banks would,
// and runs one CMB charge end to end: the worker sends it, CMB answers
// "processing", and its callback to quickpay settles it.
func (e *mandateEnv) testCallbacks(t *testing.T) {
	t.Parallel()
	// Adapters over channels of this test's own, so that it can sign as
	// CMB signs; a River client whose jobs the test runs by hand; a clock
	// in 2029 (see TestMandates).
	banks, chans := connectBanks(t, e.Stack, slog.Default())
	jobs := insertOnlyRiver(t, e.Stack)
	clk := clock.NewFake(time.Date(2029, 6, 15, 10, 0, 0, 0, shanghai))
	srv := newTestServer(t, serverOptions{Stack: e.Stack, Banks: banks, Clock: clk, MandateJobs: jobs})
	c := apitest.NewClient(t, srv.url) // no token: the route takes none
	cmb := chans["CMB"]
	secret, _ := cmb["hmac_secret"].(string)
	merchantNo, _ := cmb["merchant_no"].(string)
	if secret == "" || merchantNo == "" {
		t.Fatal("CMB's channel has no hmac_secret or merchant_no")
	}
	// signed is a callback body as CMB signs it (jsonhmac dialect).
	signed := func(body []byte, merchantNo, secret string) []apitest.Option {
		ts, nonce := strconv.FormatInt(time.Now().Unix(), 10), randomHex(t, 8)
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte("CALLBACK\n" + ts + "\n" + nonce + "\n"))
		mac.Write(body)
		return []apitest.Option{apitest.Header("X-Merchant-No", merchantNo), apitest.Header("X-Timestamp", ts),
			apitest.Header("X-Nonce", nonce), apitest.Header("X-Signature", hex.EncodeToString(mac.Sum(nil)))}
	}
	result := func(orderNo, status, code string) []byte {
		b, _ := json.Marshal(map[string]any{"order_no": orderNo, "status": status, "result_code": code, "amount": 4321})
		return b
	}

	t.Run("refusals", func(t *testing.T) {
		body := result("QPNOSUCHORDER", "SUCCESS", "0000")
		wantError(t, c.Post(t, "/callbacks/banks/NOPE", body, signed(body, merchantNo, secret)...), http.StatusNotFound, "not_found", "")
		// CCB signs its callbacks with its RSA key (form-rsa): an HMAC-signed
		// JSON body is no callback of CCB's.
		wantError(t, c.Post(t, "/callbacks/banks/CCB", body, signed(body, merchantNo, secret)...), http.StatusBadRequest, "invalid_callback", "")
		wantError(t, c.Post(t, "/callbacks/banks/CMB", body, signed(body, merchantNo, "not-the-secret")...),
			http.StatusBadRequest, "invalid_callback", "")
		wantError(t, c.Post(t, "/callbacks/banks/CMB", body), http.StatusBadRequest, "invalid_callback", "")
		wantError(t, c.Post(t, "/callbacks/banks/CMB", body, signed(body, "QPOTHER", secret)...), http.StatusBadRequest, "invalid_callback", "")
		notJSON := []byte("order_no=QPNOSUCHORDER")
		wantError(t, c.Post(t, "/callbacks/banks/CMB", notJSON, signed(notJSON, merchantNo, secret)...),
			http.StatusBadRequest, "invalid_callback", "")
		big := []byte(`{"order_no":"` + strings.Repeat("x", api.MaxBody) + `"}`)
		wantError(t, c.Post(t, "/callbacks/banks/CMB", big, signed(big, merchantNo, secret)...),
			http.StatusRequestEntityTooLarge, "body_too_large", "")
		// A verified result about an order quickpay never sent.
		wantError(t, c.Post(t, "/callbacks/banks/CMB", body, signed(body, merchantNo, secret)...), http.StatusNotFound, "not_found", "")
	})

	t.Run("a CMB charge settles through its callback", func(t *testing.T) {
		m := tenantOf(t, srv, "bind", "withhold")
		card := e.bindCard(t, srv, m, "CMB", "", "")
		body := variableMandate(card.ID)
		body["schedule"] = map[string]any{"interval": "month", "day_of_month": 15, "start_date": "2029-06-01"}
		md := createMandate(t, m, body)
		if str(md.NextChargeDate) != "2029-06-15" {
			t.Fatalf("next_charge_date = %s, want today 2029-06-15", str(md.NextChargeDate))
		}
		confirmMandate(t, srv, m, md.ID, card.Phone)
		var ch chargeAnswer
		if res := m.c.Post(t, "/v1/mandates/"+md.ID+"/charges", map[string]any{"amount": 4321}); !res.WantStatus(t, http.StatusCreated) ||
			!res.Decode(t, &ch) {
			t.FailNow()
		}

		ctx := context.Background()
		if _, err := srv.mandates.RunDue(ctx, clk.Now()); err != nil {
			t.Fatal(err)
		}
		var claimed chargeAnswer
		if res := m.c.Get(t, "/v1/charges/"+ch.ID); !res.WantStatus(t, http.StatusOK) || !res.Decode(t, &claimed) {
			t.FailNow()
		}
		if claimed.Status != mandate.ChargeProcessing || len(claimed.Attempts) != 1 {
			t.Fatalf("claimed charge = %+v, want processing with one attempt", claimed)
		}
		job := chargeJob(t, jobs, claimed.Attempts[0].OrderNo)
		if err := (&mandate.ChargeWorker{Service: srv.mandates}).Work(ctx, job); err != nil {
			t.Fatal(err)
		}
		// CMB answered "processing": the charge is unknown until CMB's
		// callback settles it (the status query the worker enqueued is
		// never worked here).
		deadline := time.Now().Add(30 * time.Second)
		var got chargeAnswer
		for {
			if res := m.c.Get(t, "/v1/charges/"+ch.ID); !res.WantStatus(t, http.StatusOK) || !res.Decode(t, &got) {
				t.FailNow()
			}
			if (got.Status != mandate.ChargeProcessing && got.Status != mandate.ChargeUnknown) || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond) // poll, bounded by the deadline
		}
		if got.Status != mandate.ChargeSucceeded || got.BankReference == nil || len(got.Attempts) != 1 {
			t.Fatalf("charge = %+v, want succeeded with one attempt and a bank reference", got)
		}
		at := got.Attempts[0]
		if at.OrderNo != job.Args.OrderNos[0] || at.BankCode != "CMB" || at.Amount != 4321 || at.Status != mandate.AttemptSucceeded ||
			at.FinishedAt == nil || at.FailureCode != nil {
			t.Errorf("attempt = %+v, want CMB %s succeeded for 4321", at, job.Args.OrderNos[0])
		}
		ev := eventFor(t, m, "charge.succeeded", ch.ID)
		if ev.Data.Status != string(mandate.ChargeSucceeded) {
			t.Errorf("charge.succeeded data = %+v", ev.Data)
		}
		ledger, err := srv.SimCtl.Ledger(ctx, card.Number)
		if err != nil {
			t.Fatal(err)
		}
		if len(ledger) != 1 {
			t.Errorf("banksim debited the card %d times, want once", len(ledger))
		}

		// Banks resend: a second (here contradicting) result for a settled
		// order is taken and changes nothing.
		late := result(at.OrderNo, "FAILED", "4001")
		res := c.Post(t, "/callbacks/banks/CMB", late, signed(late, merchantNo, secret)...)
		var ack struct {
			Received bool `json:"received"`
		}
		if res.WantStatus(t, http.StatusOK) && res.Decode(t, &ack) && !ack.Received {
			t.Error("callback answer does not say received")
		}
		var after chargeAnswer
		if res := m.c.Get(t, "/v1/charges/"+ch.ID); res.WantStatus(t, http.StatusOK) && res.Decode(t, &after) &&
			(after.Status != mandate.ChargeSucceeded || str(after.BankReference) != str(got.BankReference)) {
			t.Errorf("after a late callback: %s %s, want still succeeded", after.Status, str(after.BankReference))
		}
	})
}

// chargeJob is the one charge job enqueued for the order, of one attempt.
func chargeJob(t *testing.T, jobs *river.Client[pgx.Tx], orderNo string) *river.Job[mandate.ChargeArgs] {
	t.Helper()
	res, err := jobs.JobList(context.Background(), river.NewJobListParams().Kinds(mandate.ChargeArgs{}.Kind()).First(10_000))
	if err != nil {
		t.Fatal(err)
	}
	var found []*river.Job[mandate.ChargeArgs]
	for _, row := range res.Jobs {
		var args mandate.ChargeArgs
		if err := json.Unmarshal(row.EncodedArgs, &args); err != nil {
			t.Fatal(err)
		}
		if len(args.OrderNos) == 1 && args.OrderNos[0] == orderNo {
			found = append(found, &river.Job[mandate.ChargeArgs]{JobRow: row, Args: args})
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d charge jobs for the order, want 1", len(found))
	}
	found[0].Attempt = 1
	return found[0]
}
