package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/quickpay/quickpay/api/apitest"
	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/bankadapters/channels"
	"github.com/quickpay/quickpay/bankadapters/conformance"
	"github.com/quickpay/quickpay/bankadapters/formrsa"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/dev/simclient"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/ids"
	"github.com/quickpay/quickpay/internal/sensitive"
	"github.com/quickpay/quickpay/mandate"
)

// TestAgreementTerminated: a cardholder ends the agreement at the bank
// (banksim's POST /sim/agreements/terminate), and the bank's signed notice
// reaches POST /callbacks/banks/{code} over real HTTP, in both dialects
// (ICBC json-hmac, CCB form-rsa): the card is revoked, its mandates
// cancelled (status_reason card_revoked), its charge not yet sent failed,
// card.revoked and mandate.cancelled emitted once each. The bank's retry
// and a replay change nothing and answer 200; a forged or stale notice
// answers 400 and changes nothing; a notice for an agreement no card holds
// answers 200 and is recorded. A charge the bank answers "agreement
// invalid" ends the card the same way.
//
// Notices reach quickpay through a relay of the test's, which records each
// (to replay it, tamper with it, or hand it to a server whose adapters'
// clock is 301 s ahead) and can answer the bank 503 after quickpay
// answered, so that the bank sends the notice again.
//
// It is not parallel, on purpose, as TestRefunds: RunDue scans the whole
// package database. Its dates (2027) are before every other test's and it
// leaves no charge scheduled. banksim's own clock is moved to a day of
// this test's own, far ahead, so that its agreement numbers (dated by the
// bank) are no other test's: every banksim numbers them from 1.
func TestAgreementTerminated(t *testing.T) {
	e := newAgreementEnv(t)
	for _, bank := range []string{"ICBC", "CCB"} {
		t.Run(bank, func(t *testing.T) {
			t.Run("the notice revokes the card, cancels its mandates, fails its unsent charge", func(t *testing.T) {
				e.testNotice(t, bank)
			})
			t.Run("a forged or stale notice answers 400 and changes nothing", func(t *testing.T) { e.testRefused(t, bank) })
			t.Run("a notice for an agreement no card holds is recorded and answered", func(t *testing.T) {
				e.testUnknownAgreement(t, bank)
			})
			t.Run("a charge answered agreement invalid ends the card the same way", func(t *testing.T) {
				e.testAgreementInvalid(t, bank)
			})
		})
	}
}

// agreementEpoch is the fake clock of the test's servers: 2027-05-10 10:00
// in Shanghai, before every other test's dates.
var agreementEpoch = time.Date(2027, 5, 10, 10, 0, 0, 0, shanghai)

type agreementEnv struct {
	*mandateEnv
	srv   *testServer // notices reach it through relay
	stale *testServer // the same world; its adapters' clock is 301 s ahead
	relay *noticeRelay
	clk   *clock.Fake
	jobs  *river.Client[pgx.Tx] // enqueues the charge jobs, which the test works by hand
	m     tenant
}

func newAgreementEnv(t *testing.T) *agreementEnv {
	t.Helper()
	st := testenv.NewStack(t)
	st.Sim.SetNow(time.Date(2167, 8, 17, 10, 0, 0, 0, shanghai))
	relay := newNoticeRelay(t)
	st.SetNotifyURL(t, func(code string) string { return relay.srv.URL + "/callbacks/banks/" + code })

	clk := clock.NewFake(agreementEpoch)
	jobs := insertOnlyRiver(t, st)
	srv := newTestServer(t, serverOptions{Stack: st, Clock: clk, MandateJobs: jobs})
	relay.setTarget(srv.url)

	// The same channels, read by adapters whose clock runs 301 s ahead:
	// to them every notice banksim signs now is stale.
	ctx := context.Background()
	ahead, err := channels.Open(ctx, channels.Config{
		Secrets: st.Secrets, Prefix: st.BanksPrefix, BaseURL: st.SimURL,
		Signer:  func(code string) formrsa.Signer { return st.HSM.BankSigner(code) },
		Options: bankadapters.CallOptions{Timeout: 5 * time.Second, Now: func() time.Time { return time.Now().Add(301 * time.Second) }},
	})
	if err != nil {
		t.Fatal(err)
	}
	stale := newTestServer(t, serverOptions{Stack: st, Banks: ahead, Clock: clk})
	e := &agreementEnv{mandateEnv: &mandateEnv{Stack: st, gen: conformance.NewGen()}, srv: srv, stale: stale, relay: relay,
		clk: clk, jobs: jobs}
	e.m = tenantOf(t, srv, "bind", "withhold")
	return e
}

// noticeRelay stands between banksim and quickpay: it records every
// notice the bank posts and forwards it to quickpay's callback route,
// answering the bank as quickpay did, or 503 (after quickpay answered) for
// the next failNext notices, or 200 without forwarding while swallow is
// set (the notice is kept for the test to post).
type noticeRelay struct {
	srv *httptest.Server

	mu        sync.Mutex
	target    string
	got       []notice
	failNext  int
	swallow   bool
	forwarder *http.Client
}

// notice is one request the bank posted, with quickpay's answer (0 when
// it was not forwarded).
type notice struct {
	path, contentType string
	header            http.Header
	body              []byte
	answered          int
}

func newNoticeRelay(t *testing.T) *noticeRelay {
	t.Helper()
	r := &noticeRelay{forwarder: &http.Client{Timeout: 30 * time.Second}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *noticeRelay) setTarget(baseURL string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.target = baseURL
}

func (r *noticeRelay) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		http.Error(w, "unreadable", http.StatusBadRequest)
		return
	}
	n := notice{path: req.URL.Path, contentType: req.Header.Get("Content-Type"), header: req.Header.Clone(), body: body}
	r.mu.Lock()
	target, swallow := r.target, r.swallow
	r.mu.Unlock()
	status, answer := http.StatusOK, []byte(`{"received":true}`)
	if !swallow {
		fwd, err := http.NewRequestWithContext(req.Context(), http.MethodPost, target+req.URL.Path, bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fwd.Header = req.Header.Clone()
		res, err := r.forwarder.Do(fwd)
		if err != nil {
			http.Error(w, "quickpay unreachable", http.StatusBadGateway)
			return
		}
		answer, _ = io.ReadAll(res.Body)
		res.Body.Close()
		status, n.answered = res.StatusCode, res.StatusCode
	}
	r.mu.Lock()
	r.got = append(r.got, n)
	if r.failNext > 0 {
		r.failNext--
		status, answer = http.StatusServiceUnavailable, []byte("try again")
	}
	r.mu.Unlock()
	w.WriteHeader(status)
	_, _ = w.Write(answer)
}

// about returns the notices received so far that name agreementNo.
func (r *noticeRelay) about(agreementNo string) []notice {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []notice
	for _, n := range r.got {
		if n.agreementNo() == agreementNo {
			out = append(out, n)
		}
	}
	return out
}

// field reads a field of the notice's body (JSON or form).
func (n notice) field(name string) string {
	if strings.HasPrefix(n.contentType, "application/x-www-form-urlencoded") {
		v, _ := url.ParseQuery(string(n.body))
		return v.Get(name)
	}
	var v map[string]any
	_ = json.Unmarshal(n.body, &v)
	s, _ := v[name].(string)
	return s
}

func (n notice) agreementNo() string { return n.field("agreement_no") }

// sameNotice reports whether n and o say the same (each sending is signed
// anew).
func (n notice) sameNotice(o notice) bool {
	for _, f := range []string{"type", "agreement_no", "at"} {
		if n.field(f) == "" || n.field(f) != o.field(f) {
			return false
		}
	}
	return true
}

// post sends the notice again, as the bank sent it, to srv's route.
func (n notice) post(t *testing.T, srv *testServer) *apitest.Response {
	t.Helper()
	return n.postBody(t, srv, n.body)
}

// postBody sends body with the notice's headers to srv's route.
func (n notice) postBody(t *testing.T, srv *testServer, body []byte) *apitest.Response {
	t.Helper()
	opts := []apitest.Option{apitest.ContentType(n.contentType)}
	for k, vs := range n.header {
		if strings.HasPrefix(k, "X-") && len(vs) > 0 {
			opts = append(opts, apitest.Header(k, vs[0]))
		}
	}
	return apitest.NewClient(t, srv.url).Post(t, n.path, body, opts...)
}

// waitNotices polls, with a deadline, until the relay holds n notices
// about agreementNo, and returns them.
func (e *agreementEnv) waitNotices(t *testing.T, agreementNo string, n int) []notice {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := e.relay.about(agreementNo)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d notices about the agreement reached the relay, want %d", len(got), n)
		}
		time.Sleep(20 * time.Millisecond) // poll, bounded by the deadline
	}
}

// terminate ends the card's agreement at its bank, as its holder would,
// and returns the agreement's number.
func (e *agreementEnv) terminate(t *testing.T, cardNumber string) string {
	t.Helper()
	ended, err := e.SimCtl.TerminateAgreement(context.Background(), cardNumber, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(ended) != 1 {
		t.Fatalf("banksim ended %d agreements of the card, want 1", len(ended))
	}
	return ended[0].AgreementNo
}

// cardStatus is the card's status as GET /v1/cards/{id} answers it.
func (e *agreementEnv) cardStatus(t *testing.T, id string) binding.CardStatus {
	t.Helper()
	var c struct {
		Status binding.CardStatus `json:"status"`
	}
	if res := e.m.c.Get(t, "/v1/cards/"+id); !res.WantStatus(t, http.StatusOK) || !res.Decode(t, &c) {
		t.FailNow()
	}
	return c.Status
}

func (e *agreementEnv) charge(t *testing.T, id string) chargeAnswer {
	t.Helper()
	var c chargeAnswer
	if res := e.m.c.Get(t, "/v1/charges/"+id); !res.WantStatus(t, http.StatusOK) || !res.Decode(t, &c) {
		t.FailNow()
	}
	return c
}

// cardEvents counts the merchant's events of typ about the card.
func (e *agreementEnv) cardEvents(t *testing.T, typ, cardID string) int {
	t.Helper()
	var page struct {
		Data []struct {
			Type string `json:"type"`
			Data struct {
				CardID string             `json:"card_id"`
				Status binding.CardStatus `json:"status"`
			} `json:"data"`
		} `json:"data"`
		HasMore bool `json:"has_more"`
	}
	if res := e.m.c.Get(t, "/v1/events?limit=500"); !res.WantStatus(t, http.StatusOK) || !res.Decode(t, &page) {
		t.FailNow()
	}
	if page.HasMore {
		t.Fatal("more than 500 events: the test's merchant should have fewer")
	}
	n := 0
	for _, ev := range page.Data {
		if ev.Type == typ && ev.Data.CardID == cardID {
			if typ == "card.revoked" && ev.Data.Status != binding.CardRevoked {
				t.Errorf("card.revoked data status = %s", ev.Data.Status)
			}
			n++
		}
	}
	return n
}

// mandateMonthly is a mandate request on card, monthly on day from the
// first of the epoch's month: variable up to ¥500, or fixed ¥19.99.
func mandateMonthly(cardID, amountType string, day int) map[string]any {
	body := map[string]any{
		"card_id": cardID, "reference": "agr-" + ids.New("ref")[4:12], "description": "水费",
		"amount_type": amountType, "currency": "CNY",
		"schedule": map[string]any{"interval": "month", "day_of_month": day, "start_date": "2027-05-01"},
	}
	if amountType == "fixed" {
		body["amount"] = 1999
	} else {
		body["max_amount"] = 50000
	}
	return body
}

// postCharge posts a variable mandate's amount for its next period.
func (e *agreementEnv) postCharge(t *testing.T, mandateID string, amount int64) chargeAnswer {
	t.Helper()
	var ch chargeAnswer
	if res := e.m.c.Post(t, "/v1/mandates/"+mandateID+"/charges", map[string]any{"amount": amount}); !res.WantStatus(t, http.StatusCreated) ||
		!res.Decode(t, &ch) {
		t.FailNow()
	}
	return ch
}

// endedWith checks that the card and its mandates ended as a revocation
// ends them, each event once, and the charges failed with failure.
func (e *agreementEnv) endedWith(t *testing.T, card boundCard, mandates []string, failed map[string]string) {
	t.Helper()
	if got := e.cardStatus(t, card.ID); got != binding.CardRevoked {
		t.Errorf("card = %s, want revoked", got)
	}
	if n := e.cardEvents(t, "card.revoked", card.ID); n != 1 {
		t.Errorf("%d card.revoked events, want 1", n)
	}
	for _, id := range mandates {
		got := getMandate(t, e.m, id)
		if got.Status != mandate.StatusCancelled || str(got.StatusReason) != "card_revoked" || got.NextChargeDate != nil {
			t.Errorf("mandate %s = %s (%s) next %s, want cancelled (card_revoked), nothing next", id, got.Status,
				str(got.StatusReason), str(got.NextChargeDate))
		}
		ev := eventFor(t, e.m, "mandate.cancelled", id) // exactly one
		if str(ev.Data.StatusReason) != "card_revoked" {
			t.Errorf("mandate.cancelled status_reason = %s, want card_revoked", str(ev.Data.StatusReason))
		}
	}
	for id, failure := range failed {
		if c := e.charge(t, id); c.Status != mandate.ChargeFailed || str(c.FailureCode) != failure {
			t.Errorf("charge %s = %s (%s), want failed (%s)", id, c.Status, str(c.FailureCode), failure)
		}
		eventFor(t, e.m, "charge.failed", id) // exactly one
	}
}

func (e *agreementEnv) testNotice(t *testing.T, bank string) {
	card := e.bindCard(t, e.srv, e.m, bank, "", "")
	other := e.bindCard(t, e.srv, e.m, bank, "", "")
	fixed := createMandate(t, e.m, mandateMonthly(card.ID, "fixed", 25))
	confirmMandate(t, e.srv, e.m, fixed.ID, card.Phone)
	variable := createMandate(t, e.m, mandateMonthly(card.ID, "variable", 20))
	confirmMandate(t, e.srv, e.m, variable.ID, card.Phone)
	ch := e.postCharge(t, variable.ID, 4321)
	if ch.Status != mandate.ChargeScheduled {
		t.Fatalf("posted charge = %s, want scheduled", ch.Status)
	}
	untouched := createMandate(t, e.m, mandateMonthly(other.ID, "fixed", 25))
	confirmMandate(t, e.srv, e.m, untouched.ID, other.Phone)

	// quickpay applies the first notice; the relay answers the bank 503,
	// so the bank sends it again.
	e.relay.mu.Lock()
	e.relay.failNext = 1
	e.relay.mu.Unlock()
	agreementNo := e.terminate(t, card.Number)
	got := e.waitNotices(t, agreementNo, 2)
	for i, n := range got {
		if n.answered != http.StatusOK || n.path != "/callbacks/banks/"+bank || !n.sameNotice(got[0]) ||
			n.field("type") != "agreement_terminated" {
			t.Errorf("delivery %d: quickpay answered %d at %s (an agreement_terminated notice, the same: %v), want 200 at the bank's route",
				i+1, n.answered, n.path, n.sameNotice(got[0]))
		}
	}
	e.endedWith(t, card, []string{fixed.ID, variable.ID}, map[string]string{ch.ID: "mandate_cancelled"})

	// A replay of the captured notice: 200, nothing more.
	res := got[0].post(t, e.srv)
	var ack struct {
		Received bool `json:"received"`
	}
	if res.WantStatus(t, http.StatusOK) && res.Decode(t, &ack) && !ack.Received {
		t.Error("the replay's answer does not say received")
	}
	e.endedWith(t, card, []string{fixed.ID, variable.ID}, map[string]string{ch.ID: "mandate_cancelled"})

	if got := e.cardStatus(t, other.ID); got != binding.CardActive {
		t.Errorf("the member's other card = %s, want active", got)
	}
	if got := getMandate(t, e.m, untouched.ID); got.Status != mandate.StatusActive {
		t.Errorf("a mandate on another card = %s, want active", got.Status)
	}
	// Later charges of the ended card's mandates: none (the mandates are
	// cancelled); cancel the other card's so the package's runs find none.
	e.m.c.Post(t, "/v1/mandates/"+untouched.ID+"/cancel", nil).WantStatus(t, http.StatusOK)
}

func (e *agreementEnv) testRefused(t *testing.T, bank string) {
	card := e.bindCard(t, e.srv, e.m, bank, "", "")
	// The bank's notice is kept back from quickpay for the test to post.
	e.relay.mu.Lock()
	e.relay.swallow = true
	e.relay.mu.Unlock()
	agreementNo := e.terminate(t, card.Number)
	n := e.waitNotices(t, agreementNo, 1)[0]
	e.relay.mu.Lock()
	e.relay.swallow = false
	e.relay.mu.Unlock()

	// Another agreement number under the bank's signature of this one.
	forged := bytes.Replace(n.body, []byte(agreementNo), []byte(agreementNo+"0"), 1)
	if bytes.Equal(forged, n.body) {
		t.Fatal("the notice's body does not hold its agreement number")
	}
	wantError(t, n.postBody(t, e.srv, forged), http.StatusBadRequest, "invalid_callback", "")
	// Signed now, and 301 s old to adapters whose clock is 301 s ahead.
	wantError(t, n.post(t, e.stale), http.StatusBadRequest, "invalid_callback", "")
	if got := e.cardStatus(t, card.ID); got != binding.CardActive {
		t.Errorf("card after refused notices = %s, want active", got)
	}
	if c := e.cardEvents(t, "card.revoked", card.ID); c != 0 {
		t.Errorf("%d card.revoked events after refused notices, want none", c)
	}

	// The genuine notice, in time: the card ends.
	n.post(t, e.srv).WantStatus(t, http.StatusOK)
	e.endedWith(t, card, nil, nil)
}

func (e *agreementEnv) testUnknownAgreement(t *testing.T, bank string) {
	ctx := context.Background()
	// An agreement made at the bank under the platform's merchant number
	// that no card of quickpay's holds (bound past quickpay).
	a := e.srv.account(t, e.gen, bank, "debit")
	b, ok := e.srv.Banks.Bank(bank)
	if !ok {
		t.Fatalf("no adapter for %s", bank)
	}
	sess, err := b.BindApply(ctx, bankadapters.BindRequest{RequestNo: ids.New("req"), CardNumber: sensitive.NewPAN(a.CardNumber),
		HolderName: a.HolderName, IDNumber: sensitive.NewIDNumber(a.IDNumber), Phone: a.Phone})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.BindConfirm(ctx, sess.BindRef, sensitive.NewOTP(e.srv.code(t, a.Phone))); err != nil {
		t.Fatal(err)
	}
	agreementNo := e.terminate(t, a.CardNumber)
	got := e.waitNotices(t, agreementNo, 1)
	if got[0].answered != http.StatusOK {
		t.Errorf("quickpay answered %d to a notice for an unknown agreement, want 200", got[0].answered)
	}
	got[0].post(t, e.srv).WantStatus(t, http.StatusOK)

	fp, err := e.Vault.Fingerprint(ctx, binding.DomainAgreement, []byte(agreementNo))
	if err != nil {
		t.Fatal(err)
	}
	var rows int
	var outcome string
	var merchant *string
	if err := e.Pool.QueryRow(ctx, `SELECT count(*), min(outcome), min(merchant_id) FROM bank_notices
		WHERE bank_code = $1 AND kind = 'agreement_terminated' AND agreement_fp = $2`, bank, fp).Scan(&rows, &outcome, &merchant); err != nil {
		t.Fatal(err)
	}
	if rows != 1 || outcome != "unknown_agreement" || merchant != nil {
		t.Errorf("recorded %d notices (%s, merchant %s), want one unknown_agreement of no merchant", rows, outcome, str(merchant))
	}
}

func (e *agreementEnv) testAgreementInvalid(t *testing.T, bank string) {
	ctx := context.Background()
	card := e.bindCard(t, e.srv, e.m, bank, "", "")
	due := createMandate(t, e.m, mandateMonthly(card.ID, "variable", agreementEpoch.Day()))
	confirmMandate(t, e.srv, e.m, due.ID, card.Phone)
	sent := e.postCharge(t, due.ID, 1234)
	later := createMandate(t, e.m, mandateMonthly(card.ID, "variable", 20))
	confirmMandate(t, e.srv, e.m, later.ID, card.Phone)
	unsent := e.postCharge(t, later.ID, 4321)

	if err := e.SimCtl.AddFault(ctx, simclient.Fault{BankCode: bank, Operation: "charge", Mode: simclient.FaultDecline,
		Code: "agreement_invalid"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.mandates.RunDue(ctx, e.clk.Now()); err != nil {
		t.Fatal(err)
	}
	claimed := e.charge(t, sent.ID)
	if claimed.Status != mandate.ChargeProcessing || len(claimed.Attempts) != 1 {
		t.Fatalf("claimed charge = %s with %d attempts, want processing with one", claimed.Status, len(claimed.Attempts))
	}
	job := chargeJob(t, e.jobs, claimed.Attempts[0].OrderNo)
	if err := (&mandate.ChargeWorker{Service: e.srv.mandates}).Work(ctx, job); err != nil {
		t.Fatal(err)
	}
	e.endedWith(t, card, []string{due.ID, later.ID}, map[string]string{sent.ID: "agreement_invalid", unsent.ID: "mandate_cancelled"})

	// The bank's own notice comes later: it changes nothing.
	agreementNo := e.terminate(t, card.Number)
	if got := e.waitNotices(t, agreementNo, 1); got[0].answered != http.StatusOK {
		t.Errorf("quickpay answered %d to the notice, want 200", got[0].answered)
	}
	e.endedWith(t, card, []string{due.ID, later.ID}, map[string]string{sent.ID: "agreement_invalid", unsent.ID: "mandate_cancelled"})
}
