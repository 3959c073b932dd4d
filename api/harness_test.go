package api_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/quickpay/quickpay/api"
	"github.com/quickpay/quickpay/api/idempotency"
	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/bankadapters/channels"
	"github.com/quickpay/quickpay/bankadapters/conformance"
	"github.com/quickpay/quickpay/bankadapters/formrsa"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/limits"
	"github.com/quickpay/quickpay/internal/merchants"
	"github.com/quickpay/quickpay/internal/sms"
	"github.com/quickpay/quickpay/internal/webhooks"
	"github.com/quickpay/quickpay/mandate"
)

// testServer is the real API (token endpoint, JWKS, the bindings,
// mandates and webhooks areas, the bank callbacks, idempotency, the
// document) over a testenv.Stack and its banksim, composed as cmd/quickpay
// composes it.
type testServer struct {
	*testenv.Stack
	url       string
	merchants *merchants.Store
	echo      *echo.Echo
	hooks     *webhooks.Service
	mandates  *mandate.Service
	rateLimit *api.RateLimit
}

// serverOptions adjust newTestServer; the zero value is the plain setup.
type serverOptions struct {
	// Stack is served over; nil makes a new one for the test.
	Stack *testenv.Stack
	// Banks are the bank adapters. Defaults to Stack.Banks.
	Banks binding.Banks
	// Clock dates bindings, mandates and access tokens (the binding and
	// mandate services' and auth's clock) and times the per-merchant
	// ceilings' buckets and cache. Defaults to the system clock.
	Clock clock.Clock
	// Logger is the server's, auth's, the binding service's and
	// idempotency's. Defaults to slog.Default().
	Logger *slog.Logger
	// Jobs enqueues webhook deliveries. Defaults to an insert-only River
	// client: deliveries are enqueued, never worked.
	Jobs webhooks.JobInserter
	// MandateJobs enqueues the mandate service's charge, query and refund
	// jobs. Defaults to an insert-only River client of its own.
	MandateJobs mandate.Jobs
	// MandateQueue is the River queue of those jobs (mandate.Config.Queue),
	// for a test whose River client works them: its own queue keeps it off
	// other tests' jobs in the package's database. Defaults to mandate.Queue.
	MandateQueue string
	// SMSURL is the carrier the mandate service texts consent codes
	// through. Defaults to Stack's banksim carrier.
	SMSURL string
	// InFlightWait is idempotency's wait for a key in flight. Defaults to
	// idempotency's default.
	InFlightWait time.Duration
	// Limits turns the binding and consent abuse limits on, with these
	// rules. Defaults to off.
	Limits *binding.Limits
}

func newTestServer(t testing.TB, o serverOptions) *testServer {
	t.Helper()
	st := o.Stack
	if st == nil {
		st = testenv.NewStack(t)
	}
	if o.Banks == nil {
		o.Banks = st.Banks
	}
	if o.Clock == nil {
		o.Clock = clock.System{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	store, err := merchants.NewStore(merchants.Config{Pool: st.Pool})
	if err != nil {
		t.Fatal(err)
	}
	auth, err := api.NewAuth(api.AuthConfig{Merchants: store, Vault: st.Vault, Clock: o.Clock, Logger: o.Logger})
	if err != nil {
		t.Fatal(err)
	}
	if o.Jobs == nil {
		o.Jobs = insertOnlyRiver(t, st)
	}
	if o.MandateJobs == nil {
		o.MandateJobs = insertOnlyRiver(t, st)
	}
	hooks, err := webhooks.New(webhooks.Config{Pool: st.Pool, Vault: st.Vault, Jobs: o.Jobs,
		AllowPrivateNetworks: true}) // loopback receivers, as dev
	if err != nil {
		t.Fatal(err)
	}
	var mandates *mandate.Service
	var limiter binding.Limiter
	var rules binding.Limits
	if o.Limits != nil {
		if limiter, err = limits.New(st.Pool); err != nil {
			t.Fatal(err)
		}
		rules = *o.Limits
	}
	svc, err := binding.New(binding.Config{Pool: st.Pool, Vault: st.Vault, Banks: o.Banks, Clock: o.Clock, Logger: o.Logger,
		Emit: hooks.Queue, Limiter: limiter, Limits: rules,
		CardEnded: func(ctx context.Context, tx pgx.Tx, merchantID, cardID, status string) error {
			return mandates.CancelForCard(ctx, tx, merchantID, cardID, status)
		}})
	if err != nil {
		t.Fatal(err)
	}
	if o.SMSURL == "" {
		o.SMSURL = st.SimURL + "/carrier/sms"
	}
	carrier, err := sms.New(sms.Config{URL: o.SMSURL, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var baseURL string // the server's: set before it serves
	var phoneLimit mandate.PhoneLimit
	if o.Limits != nil {
		phoneLimit = svc
	}
	mandates, err = mandate.New(mandate.Config{Pool: st.Pool, Cards: svc, Hasher: st.Vault, Banks: o.Banks, PhoneLimit: phoneLimit,
		SMS: carrier, Jobs: o.MandateJobs, Queue: o.MandateQueue, Emit: hooks.EmitAll, Clock: o.Clock, Logger: o.Logger,
		NotifyURL: func(code string) string { return api.CallbackURL(baseURL, code) }})
	if err != nil {
		t.Fatal(err)
	}
	idem, err := idempotency.New(idempotency.Config{Pool: st.Pool, Hasher: st.Vault, Sealer: st.Vault, Logger: o.Logger, InFlightWait: o.InFlightWait})
	if err != nil {
		t.Fatal(err)
	}
	rateLimit, err := api.NewRateLimit(api.RateLimitConfig{Ceilings: store, Clock: o.Clock})
	if err != nil {
		t.Fatal(err)
	}
	e := api.New(api.Config{
		Pool: st.Pool, HSM: st.HSM, Secrets: st.Secrets, Logger: o.Logger,
		Auth: auth, Idempotency: idem.Middleware(api.MerchantID), RateLimit: rateLimit.Middleware(),
		Areas: []api.Area{&api.Bindings{Service: svc}, &api.Mandates{Service: mandates, Banks: o.Banks},
			api.Webhooks{Service: hooks, Merchants: store}, &api.Settlement{Files: mandates},
			&api.Sessions{Bindings: svc, Mandates: mandates, Merchants: store, Clock: o.Clock, Logger: o.Logger}},
	})
	if err := api.RegisterOpenAPI(e); err != nil {
		t.Fatal(err)
	}
	// The package's leak scan looks for unkeyed digests of every body sent.
	srv := httptest.NewUnstartedServer(testenv.RecordBodies(e))
	baseURL = "http://" + srv.Listener.Addr().String() // before any request can read it
	srv.Start()
	t.Cleanup(srv.Close)
	return &testServer{Stack: st, url: srv.URL, merchants: store, echo: e, hooks: hooks, mandates: mandates,
		rateLimit: rateLimit}
}

// insertOnlyRiver is a River client that enqueues jobs and never works them.
func insertOnlyRiver(t testing.TB, st *testenv.Stack) *river.Client[pgx.Tx] {
	t.Helper()
	jobs, err := river.NewClient(riverpgxv5.New(st.Pool), &river.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return jobs
}

// newConformanceServer is the plain real server over a stack of its own.
func newConformanceServer(t testing.TB) *testServer {
	t.Helper()
	return newTestServer(t, serverOptions{})
}

// loggedBanks connects the platform to st's banksim once more, under
// merchant numbers of its own, and opens bank adapters that log to log.
// (testenv.NewStack's adapters log to slog.Default() and it takes no
// logger.)
func loggedBanks(t testing.TB, st *testenv.Stack, log *slog.Logger) *channels.Registry {
	t.Helper()
	reg, _ := connectBanks(t, st, log)
	return reg
}

// connectBanks connects the platform to st's banksim under merchant
// numbers of its own and opens bank adapters over those channels, logging
// to log. It also returns the channel settings by bank code (merchant_no,
// hmac_secret…), for tests that sign as a bank would.
func connectBanks(t testing.TB, st *testenv.Stack, log *slog.Logger) (*channels.Registry, map[string]map[string]any) {
	t.Helper()
	ctx := context.Background()
	suffix := randomHex(t, 3)
	prefix := "secret/quickpay/banks-logged-" + randomHex(t, 4)
	chans, err := st.SimCtl.ConnectPlatform(ctx, func(code string) string { return "QPL" + code + suffix }, st.HSM.BankPublicKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	for code, ch := range chans {
		if err := st.Secrets.Write(ctx, prefix+"/"+code, ch); err != nil {
			t.Fatal(err)
		}
	}
	reg, err := channels.Open(ctx, channels.Config{
		Secrets: st.Secrets, Prefix: prefix, BaseURL: st.SimURL,
		Signer:  func(code string) formrsa.Signer { return st.HSM.BankSigner(code) },
		Options: bankadapters.CallOptions{Timeout: 5 * time.Second, Logger: log},
	})
	if err != nil {
		t.Fatal(err)
	}
	return reg, chans
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func (s *testServer) credentials(t testing.TB, scopes ...string) (clientID, secret string) {
	t.Helper()
	m, secret, err := s.merchants.Create(context.Background(), "openapi "+strings.Join(scopes, "+"), scopes)
	if err != nil {
		t.Fatal(err)
	}
	return m.ClientID, secret
}

func (s *testServer) account(t testing.TB, gen *conformance.Gen, bank, cardType string) conformance.Account {
	t.Helper()
	info, err := s.SimCtl.Bank(context.Background(), bank)
	if err != nil {
		t.Fatal(err)
	}
	a, err := gen.Account(info, cardType, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SimCtl.PutAccount(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	return a
}

// code is the newest SMS code the phone received.
func (s *testServer) code(t testing.TB, phone string) string {
	t.Helper()
	texts, err := s.SimCtl.SMS(context.Background(), phone)
	if err != nil || len(texts) == 0 {
		t.Fatalf("no SMS for the phone: %v", err)
	}
	return texts[0].Code
}

func bindRequest(a conformance.Account) map[string]string {
	req := map[string]string{"holder_name": a.HolderName, "id_number": a.IDNumber, "card_number": a.CardNumber, "phone": a.Phone}
	if a.CardType == "credit" {
		req["expiry"], req["cvv2"] = a.Expiry, a.CVV2
	}
	return req
}

type bindingAnswer struct {
	ID       string  `json:"id"`
	Status   string  `json:"status"`
	MemberID *string `json:"member_id"`
	CardID   *string `json:"card_id"`
	OTP      *struct {
		AttemptsLeft int `json:"attempts_left"`
	} `json:"otp"`
}
