package sim_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quickpay/quickpay/internal/dev/sim"
)

// receiver is a callback endpoint. It answers 500 to the first failFirst
// deliveries (all of them if failFirst < 0) and 200 after.
type receiver struct {
	url        string
	deliveries chan delivery
	count      atomic.Int32
}

type delivery struct {
	header http.Header
	body   []byte
}

func newReceiver(t *testing.T, failFirst int) *receiver {
	t.Helper()
	r := &receiver{deliveries: make(chan delivery, 64)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		n := r.count.Add(1)
		r.deliveries <- delivery{req.Header.Clone(), body}
		if failFirst < 0 || int(n) <= failFirst {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	r.url = srv.URL + "/notify"
	return r
}

// next awaits the next delivery.
func (r *receiver) next(t *testing.T) delivery {
	t.Helper()
	select {
	case d := <-r.deliveries:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("no callback delivered within 10 s")
		return delivery{}
	}
}

type callback struct {
	Type       string `json:"type"`
	OrderNo    string `json:"order_no"`
	RefundOf   string `json:"refund_of"`
	Status     string `json:"status"`
	ResultCode string `json:"result_code"`
	Amount     int64  `json:"amount"`
	BankTxnNo  string `json:"bank_txn_no"`
	FinishedAt string `json:"finished_at"`
	nonce      string
	ts         string // the signature's timestamp
}

// verifyCallback checks the delivery's signature in c's dialect and
// decodes it.
func (c *bankClient) verifyCallback(t *testing.T, d delivery) callback {
	t.Helper()
	if c.form {
		v, err := url.ParseQuery(string(d.body))
		if err != nil {
			t.Fatalf("callback is not a form: %q", d.body)
		}
		if err := rsaVerify(c.bankPub, canonical(v), v.Get("sign")); err != nil || v.Get("sign_type") != "RSA2" {
			t.Fatalf("callback signature: %v", err)
		}
		if v.Get("merchant_no") != c.merchantNo {
			t.Errorf("callback merchant_no %q", v.Get("merchant_no"))
		}
		amt, _ := strconv.ParseInt(v.Get("amount"), 10, 64)
		return callback{Type: v.Get("type"), OrderNo: v.Get("order_no"), RefundOf: v.Get("refund_of"), Status: v.Get("status"),
			ResultCode: v.Get("result_code"), Amount: amt, BankTxnNo: v.Get("bank_txn_no"), FinishedAt: v.Get("finished_at"),
			nonce: v.Get("nonce"), ts: v.Get("timestamp")}
	}
	h := d.header
	want := hmacHex(c.secret, "CALLBACK\n"+h.Get("X-Timestamp")+"\n"+h.Get("X-Nonce")+"\n"+string(d.body))
	if h.Get("X-Signature") != want {
		t.Fatalf("callback signature does not verify")
	}
	if h.Get("X-Merchant-No") != c.merchantNo || h.Get("Content-Type") != "application/json" {
		t.Errorf("callback headers %v", h)
	}
	var cb callback
	if err := json.Unmarshal(d.body, &cb); err != nil {
		t.Fatalf("callback body %q: %v", d.body, err)
	}
	cb.nonce, cb.ts = h.Get("X-Nonce"), h.Get("X-Timestamp")
	return cb
}

func (c *bankClient) chargeAsync(order, agreement string, amount int64, notify string) answer {
	c.e.t.Helper()
	return c.call("charge", fields{OrderNo: order, AgreementNo: agreement, Amount: amount, Currency: "CNY",
		Description: "test", NotifyURL: notify})
}

func TestAsyncChargesSettleAndCallBack(t *testing.T) {
	t.Parallel()
	t.Run("processing, then a signed success callback", func(t *testing.T) {
		t.Parallel()
		const delay = time.Second
		e := newEnv(t, withConfig(func(c *sim.Config) { c.AsyncDelay = delay }))
		c := e.banks["CMB"]
		rcv := newReceiver(t, 0)
		a := e.openAccount("CMB", "debit", 10_000)
		agr := c.bind(a)
		order := e.orderNo()
		start := time.Now()
		ch := c.chargeAsync(order, agr, 2500, rcv.url)
		c.want(ch, "processing")
		if ch.Status != "PROCESSING" || ch.BankTxnNo == "" || ch.OrderNo != order {
			t.Fatalf("charge %+v", ch)
		}
		q := c.query(order)
		again := c.chargeAsync(order, agr, 2500, rcv.url)
		if time.Since(start) < delay*9/10 { // still inside the delay: nothing may have settled
			c.want(q, "success")
			if q.Status != "PROCESSING" || q.ResultCode != "0001" || q.FinishedAt != "" || q.Amount != 2500 {
				t.Errorf("query while processing %+v", q)
			}
			c.want(again, "processing")
			if e.account(a.CardNumber).Balance != 10_000 {
				t.Error("debited before settling")
			}
		}
		cb := c.verifyCallback(t, rcv.next(t))
		if cb.Type != "debit" || cb.RefundOf != "" || cb.OrderNo != order || cb.Status != "SUCCESS" || cb.ResultCode != "0000" || cb.Amount != 2500 ||
			cb.BankTxnNo != ch.BankTxnNo || cb.FinishedAt == "" {
			t.Fatalf("callback %+v", cb)
		}
		q = c.query(order)
		if q.Status != "SUCCESS" || q.ResultCode != "0000" || q.FinishedAt != cb.FinishedAt {
			t.Errorf("query after settling %+v", q)
		}
		c.want(c.chargeAsync(order, agr, 2500, rcv.url), "success")
		if v := e.account(a.CardNumber); v.Balance != 7500 || len(e.ledger(a.CardNumber)) != 1 {
			t.Errorf("balance %d after one async debit", v.Balance)
		}
		if n := rcv.count.Load(); n != 1 {
			t.Errorf("%d callbacks, want 1", n)
		}
	})
	t.Run("a decline settles as FAILED with its code", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		c := e.banks["CMB"]
		rcv := newReceiver(t, 0)
		a := e.openAccount("CMB", "credit", 100)
		agr := c.bind(a)
		order := e.orderNo()
		c.want(c.chargeAsync(order, agr, 101, rcv.url), "processing")
		cb := c.verifyCallback(t, rcv.next(t))
		if cb.Status != "FAILED" || cb.ResultCode != "4001" || cb.OrderNo != order {
			t.Fatalf("callback %+v", cb)
		}
		q := c.query(order)
		if q.Status != "FAILED" || q.ResultCode != "4001" {
			t.Errorf("query %+v", q)
		}
		c.want(c.chargeAsync(order, agr, 101, rcv.url), "insufficient_funds")
		if v := e.account(a.CardNumber); v.Balance != 100 || v.FailedDebitsToday != 1 {
			t.Errorf("account %+v", v)
		}
	})
	t.Run("callback retried until answered 2xx", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		c := e.banks["CMB"]
		rcv := newReceiver(t, 2)
		agr := c.bind(e.openAccount("CMB", "debit", 100))
		c.want(c.chargeAsync(e.orderNo(), agr, 10, rcv.url), "processing")
		var first callback
		nonces := map[string]bool{}
		for i := range 3 {
			cb := c.verifyCallback(t, rcv.next(t))
			if i == 0 {
				first = cb
			}
			if cb.OrderNo != first.OrderNo || cb.Status != "SUCCESS" || cb.BankTxnNo != first.BankTxnNo {
				t.Errorf("delivery %d differs: %+v", i+1, cb)
			}
			nonces[cb.nonce] = true
		}
		if len(nonces) != 3 {
			t.Errorf("retries reused nonces: %v", nonces)
		}
		waitFor(t, "delivery log", func() bool { return strings.Contains(e.logs.String(), `"callback delivered"`) })
		if n := rcv.count.Load(); n != 3 {
			t.Errorf("%d deliveries, want 3", n)
		}
	})
	t.Run("callback abandoned after 5 retries", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		c := e.banks["CMB"]
		rcv := newReceiver(t, -1)
		agr := c.bind(e.openAccount("CMB", "debit", 100))
		order := e.orderNo()
		c.want(c.chargeAsync(order, agr, 10, rcv.url), "processing")
		waitFor(t, "the callback to be abandoned", func() bool { return strings.Contains(e.logs.String(), `"callback abandoned"`) })
		if n := rcv.count.Load(); n != 6 {
			t.Errorf("%d deliveries, want 6 (the first and 5 retries)", n)
		}
		if q := c.query(order); q.Status != "SUCCESS" {
			t.Errorf("query after abandoned callback: %+v", q)
		}
	})
	t.Run("notify_url is required", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		c := e.banks["CMB"]
		agr := c.bind(e.openAccount("CMB", "debit", 100))
		order := e.orderNo()
		c.want(c.charge(order, agr, 10), "bad_request")
		c.want(c.query(order), "order_not_found")
	})
}

func TestFaults(t *testing.T) {
	t.Parallel()
	type fixture struct {
		e   *env
		c   *bankClient
		a   sim.Account
		agr string
	}
	setup := func(t *testing.T, code string, opts ...envOption) fixture {
		t.Helper()
		e := newEnv(t, opts...)
		c := e.banks[code]
		a := e.openAccount(code, "debit", 10_000)
		return fixture{e, c, a, c.bind(a)}
	}
	sendCharge := func(f fixture, ctx context.Context, order string, amount int64) (int, []byte, error) {
		st, _, raw, err := f.c.send(ctx, f.c.build("charge", fields{OrderNo: order, AgreementNo: f.agr, Amount: amount, Currency: "CNY"}))
		return st, raw, err
	}
	for _, code := range syncBanks {
		t.Run(code, func(t *testing.T) {
			t.Parallel()
			t.Run("error answers 503 and does nothing", func(t *testing.T) {
				t.Parallel()
				f := setup(t, code)
				f.e.fault(map[string]any{"bank_code": code, "operation": "charge", "mode": "error"})
				order := f.e.orderNo()
				st, raw, err := sendCharge(f, context.Background(), order, 100)
				if err != nil || st != http.StatusServiceUnavailable {
					t.Fatalf("status %d err %v", st, err)
				}
				if strings.Contains(string(raw), "code") {
					t.Errorf("503 body looks like a bank answer: %q", raw)
				}
				f.c.want(f.c.query(order), "order_not_found")
				f.c.want(f.c.charge(order, f.agr, 100), "success") // count 1: the next call is normal
			})
			t.Run("decline by reason name", func(t *testing.T) {
				t.Parallel()
				f := setup(t, code)
				f.e.fault(map[string]any{"bank_code": code, "operation": "charge", "mode": "decline", "code": "insufficient_funds"})
				order := f.e.orderNo()
				r := f.c.charge(order, f.agr, 100)
				f.c.want(r, "insufficient_funds")
				if r.Status != "FAILED" || r.OrderNo != order {
					t.Errorf("declined charge %+v", r)
				}
				f.c.want(f.c.query(order), "order_not_found")
				if v := f.e.account(f.a.CardNumber); v.Balance != 10_000 || v.FailedDebitsToday != 0 {
					t.Errorf("a decline fault touched the account: %+v", v)
				}
				f.c.want(f.c.charge(order, f.agr, 100), "success")
			})
			t.Run("decline by the dialect's code", func(t *testing.T) {
				t.Parallel()
				f := setup(t, code)
				f.e.fault(map[string]any{"bank_code": code, "operation": "charge", "mode": "decline", "code": f.c.codeOf("daily_limit")})
				f.c.want(f.c.charge(f.e.orderNo(), f.agr, 100), "daily_limit")
			})
			t.Run("decline on bind_apply sends no text", func(t *testing.T) {
				t.Parallel()
				f := setup(t, code)
				b := f.e.openAccount(code, "debit", 0)
				f.e.fault(map[string]any{"bank_code": code, "operation": "bind_apply", "mode": "decline", "code": "phone_mismatch"})
				f.c.want(f.c.bindApply(b), "phone_mismatch")
				if n := len(f.e.texts(b.Phone)); n != 0 {
					t.Errorf("%d texts", n)
				}
			})
			t.Run("timeout holds until the caller gives up and does nothing", func(t *testing.T) {
				t.Parallel()
				f := setup(t, code)
				f.e.fault(map[string]any{"bank_code": code, "operation": "charge", "mode": "timeout"})
				order := f.e.orderNo()
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				defer cancel()
				_, _, err := sendCharge(f, ctx, order, 100)
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("err %v, want the caller's deadline", err)
				}
				f.c.want(f.c.query(order), "order_not_found")
				if n := len(f.e.ledger(f.a.CardNumber)); n != 0 {
					t.Errorf("%d debits", n)
				}
			})
			t.Run("timeout with apply performs the charge", func(t *testing.T) {
				t.Parallel()
				f := setup(t, code)
				f.e.fault(map[string]any{"bank_code": code, "operation": "charge", "mode": "timeout", "apply": true})
				order := f.e.orderNo()
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				defer cancel()
				if _, _, err := sendCharge(f, ctx, order, 100); !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("err %v, want the caller's deadline", err)
				}
				q := f.c.query(order)
				if q.Status != "SUCCESS" || len(f.e.ledger(f.a.CardNumber)) != 1 {
					t.Errorf("query %+v", q)
				}
			})
			t.Run("timeout past MaxHold", func(t *testing.T) {
				t.Parallel()
				f := setup(t, code, withConfig(func(c *sim.Config) { c.MaxHold = 50 * time.Millisecond }))
				f.e.fault(map[string]any{"bank_code": code, "operation": "charge", "mode": "timeout"})
				if st, _, err := sendCharge(f, context.Background(), f.e.orderNo(), 100); err != nil || st != http.StatusGatewayTimeout {
					t.Errorf("without apply: %d %v, want 504", st, err)
				}
				f.e.fault(map[string]any{"bank_code": code, "operation": "charge", "mode": "timeout", "apply": true})
				w := f.c.build("charge", fields{OrderNo: f.e.orderNo(), AgreementNo: f.agr, Amount: 100, Currency: "CNY"})
				f.c.want(f.c.exchange(w), "success") // the late answer
			})
			t.Run("processing settles later and calls back", func(t *testing.T) {
				t.Parallel()
				f := setup(t, code)
				rcv := newReceiver(t, 0)
				f.e.fault(map[string]any{"bank_code": code, "operation": "charge", "mode": "processing"})
				order := f.e.orderNo()
				r := f.c.chargeAsync(order, f.agr, 100, rcv.url)
				f.c.want(r, "processing")
				if r.Status != "PROCESSING" {
					t.Errorf("status %s", r.Status)
				}
				cb := f.c.verifyCallback(t, rcv.next(t))
				if cb.Type != "debit" || cb.Status != "SUCCESS" || cb.ResultCode != f.c.codeOf("success") || cb.BankTxnNo != r.BankTxnNo {
					t.Errorf("callback %+v", cb)
				}
				if q := f.c.query(order); q.Status != "SUCCESS" {
					t.Errorf("query %+v", q)
				}
			})
			t.Run("callbacks are stamped with real time, finished_at with the banks' clock", func(t *testing.T) {
				t.Parallel()
				f := setup(t, code)
				rcv := newReceiver(t, 0)
				f.e.advance(48 * time.Hour)
				f.e.fault(map[string]any{"bank_code": code, "operation": "charge", "mode": "processing"})
				f.c.want(f.c.chargeAsync(f.e.orderNo(), f.agr, 100, rcv.url), "processing")
				cb := f.c.verifyCallback(t, rcv.next(t))
				if cb.ts != strconv.FormatInt(base.Unix(), 10) || cb.FinishedAt != base.Add(48*time.Hour).Format(time.RFC3339) {
					t.Errorf("callback stamped %s, finished_at %s; want real time %d and the banks' %s", cb.ts, cb.FinishedAt,
						base.Unix(), base.Add(48*time.Hour).Format(time.RFC3339))
				}
			})
			t.Run("processing without notify_url settles silently", func(t *testing.T) {
				t.Parallel()
				f := setup(t, code)
				f.e.fault(map[string]any{"bank_code": code, "operation": "charge", "mode": "processing"})
				order := f.e.orderNo()
				f.c.want(f.c.charge(order, f.agr, 100), "processing")
				waitFor(t, "the order to settle", func() bool { return f.c.query(order).Status == "SUCCESS" })
			})
			t.Run("drop_response performs and closes the connection unanswered", func(t *testing.T) {
				t.Parallel()
				f := setup(t, code)
				f.e.fault(map[string]any{"bank_code": code, "operation": "charge", "mode": "drop_response"})
				order := f.e.orderNo()
				st, _, err := sendCharge(f, context.Background(), order, 100)
				if err == nil {
					t.Fatalf("got HTTP %d, want no answer", st)
				}
				l := f.e.ledger(f.a.CardNumber)
				if len(l) != 1 || l[0].OrderNo != order {
					t.Fatalf("ledger %+v", l)
				}
				r := f.c.charge(order, f.agr, 100) // the platform's retry of the same order
				f.c.want(r, "success")
				if r.BankTxnNo != l[0].BankTxnNo || len(f.e.ledger(f.a.CardNumber)) != 1 {
					t.Error("the retry debited again")
				}
			})
			t.Run("drop_response on bind_confirm still makes the agreement", func(t *testing.T) {
				t.Parallel()
				f := setup(t, code)
				b := f.e.openAccount(code, "debit", 0)
				ap := f.c.bindApply(b)
				f.e.fault(map[string]any{"bank_code": code, "operation": "bind_confirm", "mode": "drop_response"})
				_, _, _, err := f.c.send(context.Background(), f.c.build("bind_confirm", fields{BindRef: ap.BindRef, OTP: f.e.latestCode(b.Phone)}))
				if err == nil {
					t.Fatal("bind_confirm answered")
				}
				if v := f.e.account(b.CardNumber); len(v.Agreements) != 1 || v.Agreements[0].Status != "active" {
					t.Fatalf("agreements %+v", v.Agreements)
				}
				f.c.want(f.c.bindApply(b), "already_bound")
			})
			t.Run("count 2, then normal", func(t *testing.T) {
				t.Parallel()
				f := setup(t, code)
				f.e.fault(map[string]any{"bank_code": code, "operation": "query", "mode": "error", "count": 2})
				for i := range 2 {
					st, _, _, err := f.c.send(context.Background(), f.c.build("query", fields{OrderNo: "X"}))
					if err != nil || st != http.StatusServiceUnavailable {
						t.Fatalf("call %d: %d %v", i+1, st, err)
					}
				}
				f.c.want(f.c.query("X"), "order_not_found")
			})
			t.Run("count 0 lasts until cleared", func(t *testing.T) {
				t.Parallel()
				f := setup(t, code)
				f.e.fault(map[string]any{"bank_code": code, "operation": "query", "mode": "error", "count": 0})
				for i := range 3 {
					st, _, _, _ := f.c.send(context.Background(), f.c.build("query", fields{OrderNo: "X"}))
					if st != http.StatusServiceUnavailable {
						t.Fatalf("call %d: %d", i+1, st)
					}
				}
				var armed []map[string]any
				f.e.do("GET", "/sim/faults", nil, http.StatusOK, &armed)
				if len(armed) != 1 || armed[0]["mode"] != "error" {
					t.Fatalf("armed %v", armed)
				}
				f.e.do("DELETE", "/sim/faults", nil, http.StatusNoContent, nil)
				f.c.want(f.c.query("X"), "order_not_found")
				f.e.do("GET", "/sim/faults", nil, http.StatusOK, &armed)
				if len(armed) != 0 {
					t.Errorf("after DELETE: %v", armed)
				}
			})
		})
	}
	t.Run("faults apply to their bank and operation only", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		e.fault(map[string]any{"bank_code": "ICBC", "operation": "charge", "mode": "error", "count": 0})
		e.fault(map[string]any{"bank_code": "CCB", "operation": "charge", "mode": "error", "count": 0})
		for _, code := range []string{"ICBC", "CMB"} {
			c := e.banks[code]
			c.want(c.query("X"), "order_not_found")
		}
		e.do("DELETE", "/sim/faults?bank_code=ICBC", nil, http.StatusNoContent, nil)
		var armed []map[string]any
		e.do("GET", "/sim/faults", nil, http.StatusOK, &armed)
		if len(armed) != 1 || armed[0]["bank_code"] != "CCB" {
			t.Fatalf("after clearing ICBC: %v", armed)
		}
		a := e.openAccount("ICBC", "debit", 100)
		ic := e.banks["ICBC"]
		ic.want(ic.charge(e.orderNo(), ic.bind(a), 1), "success")
	})
	t.Run("invalid faults are refused", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		for _, f := range []string{
			`{"bank_code":"BOC","operation":"charge","mode":"error"}`,
			`{"bank_code":"ICBC","operation":"capture","mode":"error"}`,
			`{"bank_code":"ICBC","operation":"refund","mode":"amount"}`,
			`{"bank_code":"ICBC","operation":"statement","mode":"processing"}`,
			`{"bank_code":"ICBC","operation":"charge","mode":"explode"}`,
			`{"bank_code":"ICBC","operation":"query","mode":"processing"}`,
			`{"bank_code":"ICBC","operation":"charge","mode":"decline"}`,
			`{"bank_code":"ICBC","operation":"charge","mode":"decline","code":"9876"}`,
			`{"bank_code":"ICBC","operation":"charge","mode":"error","count":-1}`,
			`{"bank_code":"ICBC","operation":"charge","mode":"error","times":2}`,
		} {
			if st, body := e.try("POST", "/sim/faults", f); st != http.StatusBadRequest {
				t.Errorf("%s: %d %s", f, st, body)
			}
		}
	})
}

func TestRequestAuthentication(t *testing.T) {
	t.Parallel()
	for _, code := range syncBanks {
		t.Run(code, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			c := e.banks[code]
			bk, _ := testKeys(t)
			query := fields{OrderNo: "X"}
			// badSign signs with another key (form-rsa) or secret (json-hmac).
			badSign := func(w wire) wire {
				if c.form {
					w.form.Set("sign", rsaSign(t, bk, canonical(w.form)))
					w.body = []byte(w.form.Encode())
				} else {
					ts, nonce := w.header.Get("X-Timestamp"), w.header.Get("X-Nonce")
					w.header.Set("X-Signature", hmacHex([]byte("not-the-secret-0123456789"), "POST\n"+w.path+"\n"+ts+"\n"+nonce+"\n"+string(w.body)))
				}
				return w
			}
			changeBody := func(w wire) wire {
				if c.form {
					w.form.Set("order_no", "Y")
					w.body = []byte(w.form.Encode())
				} else {
					w.body = []byte(strings.Replace(string(w.body), `"X"`, `"Y"`, 1))
				}
				return w
			}
			refused := func(t *testing.T, a answer, status int, reason string, signed bool) {
				t.Helper()
				if a.HTTPStatus != status || a.Code != c.codeOf(reason) || a.Signed != signed {
					t.Errorf("HTTP %d code %s signed %v, want %d %s signed %v (%s)", a.HTTPStatus, a.Code, a.Signed,
						status, c.codeOf(reason), signed, a.Message)
				}
			}
			t.Run("signature by another key", func(t *testing.T) {
				refused(t, c.exchange(badSign(c.build("query", query))), 401, "sign_invalid", true)
			})
			t.Run("body changed after signing", func(t *testing.T) {
				refused(t, c.exchange(changeBody(c.build("query", query))), 401, "sign_invalid", true)
			})
			t.Run("a forged request does not burn its nonce", func(t *testing.T) {
				nonce := randomNonce()
				w := c.build("query", query, func(s *signing) { s.nonce = nonce })
				c.exchange(badSign(c.build("query", query, func(s *signing) { s.nonce = nonce })))
				c.want(c.exchange(w), "order_not_found")
			})
			t.Run("replayed request", func(t *testing.T) {
				a := e.openAccount(code, "debit", 1000)
				agr := c.bind(a)
				w := c.build("charge", fields{OrderNo: e.orderNo(), AgreementNo: agr, Amount: 100, Currency: "CNY"})
				c.want(c.exchange(w), "success")
				refused(t, c.exchange(w), 401, "sign_invalid", true)
				if n := len(e.ledger(a.CardNumber)); n != 1 {
					t.Errorf("%d debits", n)
				}
			})
			t.Run("nonce reused within 10 minutes of real time, then after 20", func(t *testing.T) {
				nonce := randomNonce()
				reuse := func(s *signing) { s.nonce = nonce }
				c.want(c.exchange(c.build("query", query, reuse)), "order_not_found")
				e.advanceReal(9*time.Minute + 59*time.Second)
				refused(t, c.exchange(c.build("query", query, reuse)), 401, "sign_invalid", true)
				e.advance(24 * time.Hour) // the banks' clock does not make it forget
				refused(t, c.exchange(c.build("query", query, reuse)), 401, "sign_invalid", true)
				e.advance(-24 * time.Hour)
				e.advanceReal(11 * time.Minute)
				c.want(c.exchange(c.build("query", query, reuse)), "order_not_found")
			})
			t.Run("timestamps within 300 s of real time", func(t *testing.T) {
				for _, d := range []int64{-300, 300, 0} {
					c.want(c.exchange(c.build("query", query, func(s *signing) { s.ts += d })), "order_not_found")
				}
				for _, d := range []int64{-301, 301, -86400} {
					refused(t, c.exchange(c.build("query", query, func(s *signing) { s.ts += d })), 401, "sign_invalid", true)
				}
			})
			t.Run("timestamps stay on real time when the banks' clock moves", func(t *testing.T) {
				e := newEnv(t)
				c := e.banks[code]
				e.advance(24 * time.Hour)
				a := c.exchange(c.build("query", query))
				c.want(a, "order_not_found")
				if ts := a.Timestamp; ts != base.Unix() {
					t.Errorf("answer stamped %d, want real time %d", ts, base.Unix())
				}
				bankNow := e.sim.Now().Unix()
				refused(t, c.exchange(c.build("query", query, func(s *signing) { s.ts = bankNow })), 401, "sign_invalid", true)
				e.advance(-48 * time.Hour)
				c.want(c.exchange(c.build("query", query)), "order_not_found")
			})
			t.Run("unknown merchant", func(t *testing.T) {
				// json-hmac cannot sign for an unknown merchant; form-rsa signs with the bank key.
				refused(t, c.exchange(c.build("query", query, func(s *signing) { s.merchantNo = "NOBODY" })), 401, "merchant_unknown", c.form)
			})
			t.Run("short nonce", func(t *testing.T) {
				refused(t, c.exchange(c.build("query", query, func(s *signing) { s.nonce = "short" })), 400, "bad_request", true)
			})
			t.Run("malformed body under a valid signature", func(t *testing.T) {
				w := c.build("query", query)
				if c.form {
					w.form.Set("amount", "12x")
					w.form.Set("sign", rsaSign(t, c.key, canonical(w.form)))
					w.body = []byte(w.form.Encode())
				} else {
					w.body = []byte(`[1,2]`)
					ts, nonce := w.header.Get("X-Timestamp"), w.header.Get("X-Nonce")
					w.header.Set("X-Signature", hmacHex(c.secret, "POST\n"+w.path+"\n"+ts+"\n"+nonce+"\n"+string(w.body)))
				}
				c.want(c.exchange(w), "bad_request")
			})
			if c.form {
				t.Run("sign_type other than RSA2", func(t *testing.T) {
					w := c.build("query", query)
					w.form.Set("sign_type", "RSA")
					w.form.Set("sign", rsaSign(t, c.key, canonical(w.form)))
					w.body = []byte(w.form.Encode())
					refused(t, c.exchange(w), 400, "bad_request", true)
				})
				t.Run("repeated field", func(t *testing.T) {
					w := c.build("query", query)
					w.body = append(w.body, "&order_no=Z"...)
					refused(t, c.exchange(w), 400, "bad_request", true)
				})
				t.Run("no merchant_no", func(t *testing.T) {
					w := c.build("query", query)
					w.form.Del("merchant_no")
					w.body = []byte(w.form.Encode())
					refused(t, c.exchange(w), 400, "bad_request", true)
				})
			} else {
				t.Run("no X-Merchant-No", func(t *testing.T) {
					w := c.build("query", query)
					w.header.Del("X-Merchant-No")
					refused(t, c.exchange(w), 400, "bad_request", false)
				})
				t.Run("signature not hex", func(t *testing.T) {
					w := c.build("query", query)
					w.header.Set("X-Signature", "zz")
					refused(t, c.exchange(w), 401, "sign_invalid", true)
				})
				t.Run("timestamp not a number", func(t *testing.T) {
					w := c.build("query", query)
					w.header.Set("X-Timestamp", "yesterday")
					refused(t, c.exchange(w), 400, "bad_request", true)
				})
			}
		})
	}
	t.Run("unknown bank or operation", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		for _, p := range []string{"/banks/BOC/charge", "/banks/ICBC/capture"} {
			if st, _ := e.try("POST", p, `{}`); st != http.StatusNotFound {
				t.Errorf("%s: %d", p, st)
			}
		}
	})
}

func TestConcurrentCharges(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *sim.Config) { c.Now = nil })) // the real clock
	c := e.banks["ICBC"]
	const cards, perCard, balance = 8, 25, 10_000
	type card struct {
		a   sim.Account
		agr string
	}
	cs := make([]card, cards)
	for i := range cs {
		cs[i].a = e.openAccount("ICBC", "debit", balance)
		cs[i].agr = c.bind(cs[i].a)
	}
	type outcome struct {
		card   int
		order  string
		amount int64
		ans    answer
	}
	results := make([]outcome, cards*perCard)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := i % cards
			amount := int64(300 + (i*37)%400) // 25 charges of ~500 against 10 000: some decline
			order := fmt.Sprintf("C-%d", i)
			results[i] = outcome{k, order, amount, c.charge(order, cs[k].agr, amount)}
		}()
	}
	// Meanwhile, 20 concurrent sends of one order debit it once. Its own
	// card: on a busy one, the card's daily cap of failed debits (the
	// declines above) could refuse it first.
	sameCard := e.openAccount("ICBC", "debit", balance)
	sameAgr := c.bind(sameCard)
	same := make([]answer, 20)
	for i := range same {
		wg.Add(1)
		go func() {
			defer wg.Done()
			same[i] = c.charge("SAME", sameAgr, 7)
		}()
	}
	wg.Wait()

	debited := make([]int64, cards)
	successes := make([]int, cards)
	txns := map[string]bool{}
	for _, r := range results {
		switch r.ans.Code {
		case "0000":
			debited[r.card] += r.amount
			successes[r.card]++
			if txns[r.ans.BankTxnNo] {
				t.Errorf("bank_txn_no %s answered twice", r.ans.BankTxnNo)
			}
			txns[r.ans.BankTxnNo] = true
		case "4001", "4005":
		default:
			t.Errorf("order %s: code %s (%s)", r.order, r.ans.Code, r.ans.Message)
		}
		if q := c.query(r.order); q.Status != r.ans.Status || q.BankTxnNo != r.ans.BankTxnNo {
			t.Errorf("order %s answered %s, queried %s", r.order, r.ans.Status, q.Status)
		}
	}
	for i := range same {
		if same[i].Code != "0000" || same[i].BankTxnNo != same[0].BankTxnNo {
			t.Errorf("send %d of one order: %+v, first %+v", i, same[i], same[0])
		}
	}
	if l := e.ledger(sameCard.CardNumber); len(l) != 1 || l[0].Amount != 7 || e.account(sameCard.CardNumber).Balance != balance-7 {
		t.Errorf("one order sent 20 times: %d ledger entries, balance %d; want one debit of 7", len(l), e.account(sameCard.CardNumber).Balance)
	}
	all := 1
	for k, cd := range cs {
		v := e.account(cd.a.CardNumber)
		l := e.ledger(cd.a.CardNumber)
		var sum int64
		for _, x := range l {
			sum += x.Amount
		}
		if v.Balance < 0 || balance-v.Balance != debited[k] || sum != debited[k] || len(l) != successes[k] {
			t.Errorf("card %d: balance %d, answers debited %d in %d, ledger %d in %d", k, v.Balance, debited[k], successes[k], sum, len(l))
		}
		if successes[k] == perCard {
			t.Errorf("card %d: every charge succeeded; the test wants some declines", k)
		}
		all += len(l)
	}
	var ledger []ledgerEntry
	e.do("GET", "/sim/ledger", nil, http.StatusOK, &ledger)
	if len(ledger) != all {
		t.Errorf("whole ledger %d entries, per card %d", len(ledger), all)
	}
}

func TestLogsHoldNoSensitiveValues(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var secrets, exact []string
	for _, code := range []string{"ICBC", "CCB", "CMB"} {
		c := e.banks[code]
		a := e.openAccount(code, "credit", 1000, func(a *sim.Account) { a.CVV2, a.Expiry = "947", "0631" })
		secrets = append(secrets, a.CardNumber, a.CardNumber[6:len(a.CardNumber)-4], a.IDNumber, a.Phone)
		exact = append(exact, a.CVV2, a.Expiry)
		if c.secret != nil {
			secrets = append(secrets, string(c.secret))
		}
		ap := c.bindApply(a)
		otp := e.latestCode(a.Phone)
		exact = append(exact, otp)
		c.call("bind_confirm", fields{BindRef: ap.BindRef, OTP: otherCode(otp)})
		c.want(c.call("bind_confirm", fields{BindRef: ap.BindRef, OTP: otp}), "success")
		c.bindApply(a, func(f *fields) { f.CVV2 = "111" })
		c.bindApply(a, func(f *fields) { f.CardNo = newCardNumber(code, "debit") })
		e.do("POST", "/carrier/sms", map[string]string{"to": a.Phone, "text": "代扣验证码 731946"}, http.StatusAccepted, nil)
		exact = append(exact, "731946")
		if s := fmt.Sprint(a) + fmt.Sprintf("%+v %#v", a, a); strings.Contains(s, a.CardNumber) || strings.Contains(s, a.IDNumber) {
			t.Errorf("Account formats with card data: %s", s)
		}
	}
	rcv := newReceiver(t, -1)
	cmb := e.banks["CMB"]
	a := e.openAccount("CMB", "debit", 100)
	cmb.chargeAsync(e.orderNo(), cmb.bind(a), 1, rcv.url)
	waitFor(t, "the callback to be abandoned", func() bool { return strings.Contains(e.logs.String(), "callback abandoned") })

	lines := e.logs.lines()
	masked := false
	for _, line := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		var walk func(v any)
		walk = func(v any) {
			switch v := v.(type) {
			case string:
				for _, s := range secrets {
					if strings.Contains(v, s) {
						t.Errorf("log line reveals a sensitive value: %s", line)
					}
				}
				for _, s := range exact {
					if v == s {
						t.Errorf("log line holds a code or card detail: %s", line)
					}
				}
				if strings.Contains(v, "验证码") {
					t.Errorf("log line holds a text: %s", line)
				}
				if strings.Contains(v, "******") {
					masked = true
				}
			case map[string]any:
				for _, x := range v {
					walk(x)
				}
			}
		}
		walk(rec)
	}
	if !masked || len(lines) < 20 {
		t.Errorf("expected masked cards among %d debug lines", len(lines))
	}
}
