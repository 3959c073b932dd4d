package bankadapters_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/bankadapters/channels"
	"github.com/quickpay/quickpay/bankadapters/formrsa"
	"github.com/quickpay/quickpay/internal/dev/sim"
	"github.com/quickpay/quickpay/internal/dev/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// observedBanks opens st's banks again, observed into a fresh registry
// and an in-memory span exporter, with ICBC limited to one call at a time.
func observedBanks(t *testing.T, st *testenv.Stack) (*channels.Registry, *prometheus.Registry, *tracetest.InMemoryExporter) {
	t.Helper()
	reg := prometheus.NewRegistry()
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	obs, err := bankadapters.NewObserver(reg, tp)
	if err != nil {
		t.Fatal(err)
	}
	banks, err := channels.Open(context.Background(), channels.Config{
		Secrets: st.Secrets, Prefix: st.BanksPrefix, BaseURL: st.SimURL,
		Signer:   func(code string) formrsa.Signer { return st.HSM.BankSigner(code) },
		Options:  bankadapters.CallOptions{Timeout: 5 * time.Second, Retries: -1},
		Limits:   map[string]bankadapters.Limit{"ICBC": {Concurrent: 1}},
		Observer: obs,
	})
	if err != nil {
		t.Fatal(err)
	}
	return banks, reg, spans
}

// calls reads quickpay_bank_calls_total{bank,op,outcome} from reg.
func calls(t *testing.T, reg *prometheus.Registry, bank, op, outcome string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "quickpay_bank_calls_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			if l["bank"] == bank && l["op"] == op && l["outcome"] == outcome {
				return m.GetCounter().GetValue()
			}
		}
		t.Fatalf("no series bank=%s op=%s outcome=%s", bank, op, outcome)
	}
	t.Fatal("quickpay_bank_calls_total is not registered")
	return 0
}

// durations is how many calls quickpay_bank_call_duration_seconds holds
// for bank and op.
func durations(t *testing.T, reg *prometheus.Registry, bank, op string) uint64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "quickpay_bank_call_duration_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			if l["bank"] == bank && l["op"] == op {
				return m.GetHistogram().GetSampleCount()
			}
		}
	}
	t.Fatalf("no duration series bank=%s op=%s", bank, op)
	return 0
}

func TestObserverCountsCallsByOutcomeClass(t *testing.T) {
	st := testenv.NewStack(t)
	banks, reg, spans := observedBanks(t, st)
	ctx := context.Background()
	for _, code := range []string{"ICBC", "CCB"} {
		bank, ok := banks.Bank(code)
		if !ok {
			t.Fatalf("no bank %s", code)
		}
		t.Run(code, func(t *testing.T) {
			charge := func(orderNo string) bankadapters.ChargeRequest {
				return bankadapters.ChargeRequest{OrderNo: orderNo, AgreementNo: "AGR-NONE-" + orderNo, Amount: 100,
					Currency: "CNY"}
			}
			cases := []struct {
				name, op, outcome string
				fault             *sim.Fault
				call              func(ctx context.Context) error
			}{
				{name: "statement answered", op: "statement", outcome: bankadapters.CallOK, call: func(ctx context.Context) error {
					st, ok := bank.(bankadapters.Statementer)
					if !ok {
						t.Skipf("%s serves no statements", code)
					}
					_, err := st.Statement(ctx, time.Now())
					return err
				}},
				{name: "query of an order the bank never saw", op: "query", outcome: bankadapters.CallDeclined,
					call: func(ctx context.Context) error {
						_, err := bank.Query(ctx, "ORD-NEVER-"+code)
						if !errors.Is(err, bankadapters.ErrOrderNotFound) {
							t.Errorf("query: %v, want ErrOrderNotFound", err)
						}
						return nil
					}},
				{name: "charge of an agreement the bank does not know", op: "charge", outcome: bankadapters.CallDeclined,
					call: func(ctx context.Context) error {
						r, err := bank.Charge(ctx, charge("ORD-DECL-"+code))
						if r.Status != bankadapters.ChargeFailed {
							t.Errorf("charge: status %s (%v), want failed", r.Status, err)
						}
						return err
					}},
				{name: "charge answered 5xx", op: "charge", outcome: bankadapters.CallUnknown,
					fault: &sim.Fault{Operation: "charge", Mode: sim.FaultError, Count: 1},
					call: func(ctx context.Context) error {
						r, err := bank.Charge(ctx, charge("ORD-5XX-"+code))
						if r.Status != bankadapters.ChargeUnknown {
							t.Errorf("charge: status %s (%v), want unknown", r.Status, err)
						}
						return err
					}},
				{name: "query whose answer is dropped", op: "query", outcome: bankadapters.CallUnknown,
					fault: &sim.Fault{Operation: "query", Mode: sim.FaultDropResponse, Count: 1},
					call: func(ctx context.Context) error {
						_, err := bank.Query(ctx, "ORD-DROP-"+code)
						if bankadapters.OutcomeOf(err) != bankadapters.OutcomeUnavailable {
							t.Errorf("query: %v, want bank_unavailable", err)
						}
						return nil
					}},
				{name: "charge the adapter refuses to build", op: "charge", outcome: bankadapters.CallError,
					call: func(ctx context.Context) error {
						req := charge("ORD-ZERO-" + code)
						req.Amount = 0
						if _, err := bank.Charge(ctx, req); err == nil {
							t.Error("charge of 0 fen: no error")
						}
						return nil
					}},
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					if c.fault != nil {
						f := *c.fault
						f.BankCode = code
						if _, err := st.Sim.AddFault(f); err != nil {
							t.Fatal(err)
						}
						t.Cleanup(func() { _ = st.SimCtl.ClearFaults(ctx, code) })
					}
					before, n := calls(t, reg, code, c.op, c.outcome), durations(t, reg, code, c.op)
					if err := c.call(ctx); err != nil && c.outcome == bankadapters.CallOK {
						t.Fatalf("%s: %v", c.op, err)
					}
					if got := calls(t, reg, code, c.op, c.outcome); got != before+1 {
						t.Errorf("%s %s %s: %v calls, want %v", code, c.op, c.outcome, got, before+1)
					}
					if got := durations(t, reg, code, c.op); got != n+1 {
						t.Errorf("%s %s: %d latencies, want %d", code, c.op, got, n+1)
					}
				})
			}
		})
	}

	t.Run("a call not sent past the bank's limit is an error", func(t *testing.T) {
		bank, _ := banks.Bank("ICBC")
		before := calls(t, reg, "ICBC", "query", bankadapters.CallError)
		dead, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := bank.Query(dead, "ORD-NOTSENT"); !errors.Is(err, bankadapters.ErrNotSent) {
			t.Fatalf("query: %v, want ErrNotSent", err)
		}
		if got := calls(t, reg, "ICBC", "query", bankadapters.CallError); got != before+1 {
			t.Errorf("query error: %v calls, want %v", got, before+1)
		}
	})

	t.Run("each call is a span with its outcome", func(t *testing.T) {
		var found bool
		for _, s := range spans.GetSpans() {
			if s.Name != "bank charge" {
				continue
			}
			attrs := map[string]string{}
			for _, a := range s.Attributes {
				attrs[string(a.Key)] = a.Value.Emit()
			}
			if attrs["bank"] == "CCB" && attrs["bank.outcome"] == bankadapters.CallUnknown {
				found = true
			}
		}
		if !found {
			t.Errorf("no span \"bank charge\" at CCB with outcome unknown among %d spans", len(spans.GetSpans()))
		}
	})
}

func TestObserveKeepsOptionalInterfaces(t *testing.T) {
	st := testenv.NewStack(t)
	banks, _, _ := observedBanks(t, st)
	for _, code := range []string{"ICBC", "CCB"} {
		observed, _ := banks.Bank(code)
		plain, _ := st.Banks.Bank(code)
		_, st1 := plain.(bankadapters.Statementer)
		_, st2 := observed.(bankadapters.Statementer)
		_, cp1 := plain.(bankadapters.CallbackParser)
		_, cp2 := observed.(bankadapters.CallbackParser)
		if st1 != st2 || cp1 != cp2 {
			t.Errorf("%s: Statementer %v→%v, CallbackParser %v→%v", code, st1, st2, cp1, cp2)
		}
	}
	var nilObserver *bankadapters.Observer
	plain, _ := st.Banks.Bank("ICBC")
	if nilObserver.Observe(plain) != plain {
		t.Error("a nil Observer wrapped the bank")
	}
}
