package sim_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quickpay/quickpay/internal/dev/sim"
)

func newJSONLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// syncBanks are the banks whose charges answer at once, one per dialect.
var syncBanks = []string{"ICBC", "CCB"}

func TestBanksAreListedAsDocumented(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var banks []struct {
		Code    string `json:"code"`
		Name    string `json:"name"`
		Dialect string `json:"dialect"`
		Async   bool   `json:"async"`
		BINs    []struct {
			Prefix   string `json:"prefix"`
			CardType string `json:"card_type"`
			Length   int    `json:"length"`
		} `json:"bins"`
		PublicKeyPEM string `json:"public_key_pem"`
	}
	e.do("GET", "/sim/banks", nil, http.StatusOK, &banks)
	type binRow struct {
		prefix, typ string
		n           int
	}
	want := map[string]struct {
		dialect string
		async   bool
		bins    []binRow
	}{
		"ICBC": {"json-hmac", false, []binRow{{"622202", "debit", 19}, {"427020", "credit", 16}}},
		"CCB":  {"form-rsa", false, []binRow{{"621700", "debit", 19}, {"436742", "credit", 16}}},
		"CMB":  {"json-hmac", true, []binRow{{"622588", "debit", 16}, {"439225", "credit", 16}}},
	}
	if len(banks) != len(want) {
		t.Fatalf("%d banks listed, want %d", len(banks), len(want))
	}
	for _, b := range banks {
		w, ok := want[b.Code]
		if !ok {
			t.Fatalf("unexpected bank %s", b.Code)
		}
		if b.Dialect != w.dialect || b.Async != w.async || b.Name == "" {
			t.Errorf("%s: dialect %s async %v name %q", b.Code, b.Dialect, b.Async, b.Name)
		}
		var got []binRow
		for _, x := range b.BINs {
			got = append(got, binRow{x.Prefix, x.CardType, x.Length})
		}
		if len(got) != len(w.bins) || got[0] != w.bins[0] || got[1] != w.bins[1] {
			t.Errorf("%s: bins %v, want %v", b.Code, got, w.bins)
		}
		if (b.PublicKeyPEM != "") != (w.dialect == "form-rsa") {
			t.Errorf("%s: public key published %v", b.Code, b.PublicKeyPEM != "")
		}
	}
	bk, _ := testKeys(t)
	if got := e.bankPublicKey("CCB"); !got.Equal(&bk.PublicKey) {
		t.Error("CCB publishes a key other than its configured one")
	}
	if k, err := e.sim.BankPublicKey("CCB"); err != nil || !k.Equal(&bk.PublicKey) {
		t.Errorf("BankPublicKey(CCB) = %v, %v", k, err)
	}
	if _, err := e.sim.BankPublicKey("ICBC"); err == nil {
		t.Error("BankPublicKey(ICBC) gave a key to an HMAC bank")
	}
	var health struct{ Status string }
	e.do("GET", "/healthz", nil, http.StatusOK, &health)
	if health.Status != "ok" {
		t.Errorf("healthz %q", health.Status)
	}
}

func TestNewGeneratesBankKeyWhenNoneGiven(t *testing.T) {
	t.Parallel()
	s, err := sim.New(sim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k, err := s.BankPublicKey("CCB")
	if err != nil || k.N.BitLen() != 2048 {
		t.Fatalf("generated CCB key: %v, %v", k, err)
	}
	if _, err := sim.New(sim.Config{BankKeys: map[string]*rsa.PrivateKey{"ICBC": bankKeyOnly(t)}}); err == nil {
		t.Error("New accepted an RSA key for a json-hmac bank")
	}
	if _, err := sim.New(sim.Config{BankKeys: map[string]*rsa.PrivateKey{"CCB": bankKeyOnly(t)},
		Merchants: []sim.Merchant{{BankCode: "ICBC", MerchantNo: "M", HMACSecret: "short"}}}); err == nil {
		t.Error("New accepted a merchant with a short secret")
	}
}

func bankKeyOnly(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, _ := testKeys(t)
	return k
}

func TestBindChargeQueryStatementUnbind(t *testing.T) {
	t.Parallel()
	for _, code := range syncBanks {
		for _, typ := range []string{"debit", "credit"} {
			t.Run(code+" "+typ, func(t *testing.T) {
				t.Parallel()
				e := newEnv(t)
				c := e.banks[code]
				acct := e.openAccount(code, typ, 10_000)

				ap := c.bindApply(acct)
				c.want(ap, "success")
				if ap.BindRef == "" {
					t.Fatal("no bind_ref")
				}
				texts := e.texts(acct.Phone)
				if len(texts) != 1 {
					t.Fatalf("%d texts after bind_apply, want 1", len(texts))
				}
				tx := texts[0]
				bankName := map[string]string{"ICBC": "中国工商银行", "CCB": "中国建设银行"}[code]
				if !regexp.MustCompile(`^\d{6}$`).MatchString(tx.Code) || tx.To != acct.Phone ||
					!strings.HasPrefix(tx.Text, "【"+bankName+"】验证码"+tx.Code+"，5分钟内有效") || !tx.SentAt.Equal(base) {
					t.Fatalf("text %+v", tx)
				}
				conf := c.call("bind_confirm", fields{BindRef: ap.BindRef, OTP: tx.Code})
				c.want(conf, "success")
				agr := conf.AgreementNo
				v := e.account(acct.CardNumber)
				if len(v.Agreements) != 1 || v.Agreements[0].AgreementNo != agr || v.Agreements[0].MerchantNo != c.merchantNo ||
					v.Agreements[0].Status != "active" {
					t.Fatalf("agreements %+v", v.Agreements)
				}

				order := e.orderNo()
				ch := c.charge(order, agr, 1234)
				c.want(ch, "success")
				if ch.Status != "SUCCESS" || ch.OrderNo != order || ch.BankTxnNo == "" {
					t.Fatalf("charge %+v", ch)
				}
				q := c.query(order)
				c.want(q, "success")
				if q.Status != "SUCCESS" || q.ResultCode != c.codeOf("success") || q.Amount != 1234 ||
					q.BankTxnNo != ch.BankTxnNo || q.OrderNo != order || q.Type != "debit" || q.RefundOf != "" {
					t.Fatalf("query %+v", q)
				}
				if at, err := time.Parse(time.RFC3339, q.FinishedAt); err != nil || !at.Equal(base) {
					t.Errorf("finished_at %q, want %s", q.FinishedAt, base.Format(time.RFC3339))
				}
				if v := e.account(acct.CardNumber); v.Balance != 10_000-1234 || v.DebitedToday != 1234 {
					t.Errorf("balance %d debited %d after charge", v.Balance, v.DebitedToday)
				}
				l := e.ledger(acct.CardNumber)
				if len(l) != 1 || l[0].Type != "debit" || l[0].RefundOf != "" || l[0].OrderNo != order || l[0].Amount != 1234 || l[0].AgreementNo != agr ||
					l[0].BankTxnNo != ch.BankTxnNo || l[0].BankCode != code || l[0].CardNumber != acct.CardNumber {
					t.Fatalf("ledger %+v", l)
				}

				st := c.call("statement", fields{Date: "2025-03-10"})
				c.want(st, "success")
				if len(st.Entries) != 1 || st.Entries[0] != debitEntry(order, agr, 1234, ch.BankTxnNo, q.FinishedAt) {
					t.Fatalf("statement %+v", st.Entries)
				}
				st = c.call("statement", fields{Date: "2025-03-09"})
				c.want(st, "success")
				if len(st.Entries) != 0 {
					t.Fatalf("statement of the day before: %+v", st.Entries)
				}
				c.want(c.call("statement", fields{Date: "10/03/2025"}), "bad_request")

				c.want(c.call("unbind", fields{AgreementNo: agr}), "success")
				if v := e.account(acct.CardNumber); v.Agreements[0].Status != "terminated" {
					t.Errorf("agreement %s after unbind", v.Agreements[0].Status)
				}
				c.want(c.charge(e.orderNo(), agr, 1), "agreement_invalid")
				c.want(c.call("unbind", fields{AgreementNo: agr}), "success")
				c.want(c.call("unbind", fields{AgreementNo: "NO-SUCH-AGREEMENT"}), "success")

				// Unbound, the card can bind again, under a new agreement.
				agr2 := c.bind(acct)
				if agr2 == agr {
					t.Fatal("rebinding reused the terminated agreement number")
				}
				c.want(c.charge(e.orderNo(), agr2, 1), "success")
			})
		}
	}
}

func TestBindApplyRules(t *testing.T) {
	t.Parallel()
	type tc struct {
		name  string
		typ   string
		acct  func(*sim.Account)
		req   func(*fields, sim.Account)
		want  string
		noSMS bool
	}
	cases := []tc{
		{name: "unknown card", req: func(f *fields, a sim.Account) { f.CardNo = newCardNumber(a.BankCode, "debit") },
			want: "card_not_found", noSMS: true},
		{name: "another bank's card", req: func(f *fields, a sim.Account) {
			f.CardNo = map[string]string{"ICBC": "6217000000000000001", "CCB": "6222020000000000001"}[a.BankCode]
		}, want: "card_not_found", noSMS: true},
		{name: "name, id and phone wrong: name is checked first", req: func(f *fields, _ sim.Account) {
			f.HolderName, f.IDNo, f.Phone = "李四", "110101198001010000", "13000000000"
		}, want: "name_mismatch", noSMS: true},
		{name: "id and phone wrong: id before phone", req: func(f *fields, _ sim.Account) {
			f.IDNo, f.Phone = "110101198001010000", "13000000000"
		}, want: "id_mismatch", noSMS: true},
		{name: "phone wrong", req: func(f *fields, _ sim.Account) { f.Phone = "13000000000" }, want: "phone_mismatch", noSMS: true},
		{name: "credit card with wrong cvv2", typ: "credit", req: func(f *fields, _ sim.Account) { f.CVV2 = "999" },
			want: "card_auth_mismatch", noSMS: true},
		{name: "credit card with wrong expiry", typ: "credit", req: func(f *fields, _ sim.Account) { f.Expiry = "1131" },
			want: "card_auth_mismatch", noSMS: true},
		{name: "credit card without expiry and cvv2", typ: "credit", req: func(f *fields, _ sim.Account) { f.Expiry, f.CVV2 = "", "" },
			want: "card_auth_mismatch", noSMS: true},
		{name: "elements are checked before expiry", typ: "credit", req: func(f *fields, _ sim.Account) {
			f.Phone, f.CVV2 = "13000000000", "999"
		}, want: "phone_mismatch", noSMS: true},
		{name: "frozen card", acct: func(a *sim.Account) { a.Status = "frozen" }, want: "card_frozen", noSMS: true},
		{name: "closed card", acct: func(a *sim.Account) { a.Status = "closed" }, want: "card_closed", noSMS: true},
		{name: "id type other than resident ID", req: func(f *fields, _ sim.Account) { f.IDType = "02" }, want: "bad_request", noSMS: true},
		{name: "no request_no", req: func(f *fields, _ sim.Account) { f.RequestNo = "" }, want: "bad_request", noSMS: true},
		{name: "debit card ignores expiry and cvv2", req: func(f *fields, _ sim.Account) { f.Expiry, f.CVV2 = "0199", "000" },
			want: "success"},
		{name: "id number check letter in lower case", acct: func(a *sim.Account) { a.IDNumber = "11010119900307451X" },
			req: func(f *fields, _ sim.Account) { f.IDNo = "11010119900307451x" }, want: "success"},
		{name: "credit card with all elements", typ: "credit", want: "success"},
	}
	for _, code := range syncBanks {
		e := newEnv(t)
		c := e.banks[code]
		for _, tc := range cases {
			t.Run(code+" "+tc.name, func(t *testing.T) {
				typ := tc.typ
				if typ == "" {
					typ = "debit"
				}
				mods := []func(*sim.Account){}
				if tc.acct != nil {
					mods = append(mods, tc.acct)
				}
				acct := e.openAccount(code, typ, 100, mods...)
				ap := c.bindApply(acct, func(f *fields) {
					if tc.req != nil {
						tc.req(f, acct)
					}
				})
				c.want(ap, tc.want)
				n := len(e.texts(acct.Phone)) + len(e.texts("13000000000"))
				if tc.noSMS && n != 0 {
					t.Errorf("%d texts sent after %s", n, tc.want)
				}
				if !tc.noSMS && n != 1 {
					t.Errorf("%d texts sent after success, want 1", n)
				}
			})
		}
	}
}

func TestBindSessionsAndOTP(t *testing.T) {
	t.Parallel()
	for _, code := range syncBanks {
		t.Run(code, func(t *testing.T) {
			t.Parallel()
			// Each case gets its own env: several move the clock.
			run := func(name string, f func(t *testing.T, e *env, c *bankClient, a sim.Account)) {
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					e := newEnv(t)
					f(t, e, e.banks[code], e.openAccount(code, "debit", 1000))
				})
			}
			run("wrong code then right", func(t *testing.T, e *env, c *bankClient, a sim.Account) {
				ap := c.bindApply(a)
				code := e.latestCode(a.Phone)
				wrong := otherCode(code)
				r := c.call("bind_confirm", fields{BindRef: ap.BindRef, OTP: wrong})
				c.want(r, "otp_incorrect")
				if !strings.Contains(r.Message, "4 tries left") {
					t.Errorf("message %q does not say 4 tries left", r.Message)
				}
				c.want(c.call("bind_confirm", fields{BindRef: ap.BindRef, OTP: code}), "success")
			})
			run("fifth wrong code kills the session", func(t *testing.T, e *env, c *bankClient, a sim.Account) {
				ap := c.bindApply(a)
				code := e.latestCode(a.Phone)
				for i := range 4 {
					if r := c.call("bind_confirm", fields{BindRef: ap.BindRef, OTP: otherCode(code)}); r.Code != c.codeOf("otp_incorrect") {
						t.Fatalf("wrong code %d: %s", i+1, r.Code)
					}
				}
				c.want(c.call("bind_confirm", fields{BindRef: ap.BindRef, OTP: otherCode(code)}), "otp_locked")
				c.want(c.call("bind_confirm", fields{BindRef: ap.BindRef, OTP: code}), "otp_locked")
				c.want(c.call("bind_resend", fields{BindRef: ap.BindRef}), "otp_locked")
				if len(e.account(a.CardNumber).Agreements) != 0 {
					t.Error("a locked session made an agreement")
				}
			})
			run("non-numeric code counts as wrong", func(t *testing.T, e *env, c *bankClient, a sim.Account) {
				ap := c.bindApply(a)
				c.want(c.call("bind_confirm", fields{BindRef: ap.BindRef, OTP: "abc"}), "otp_incorrect")
			})
			run("code valid until 5 minutes", func(t *testing.T, e *env, c *bankClient, a sim.Account) {
				ap := c.bindApply(a)
				e.advance(5 * time.Minute)
				c.want(c.call("bind_confirm", fields{BindRef: ap.BindRef, OTP: e.latestCode(a.Phone)}), "success")
			})
			run("code expired after 5 minutes", func(t *testing.T, e *env, c *bankClient, a sim.Account) {
				ap := c.bindApply(a)
				e.advance(5*time.Minute + time.Second)
				c.want(c.call("bind_confirm", fields{BindRef: ap.BindRef, OTP: e.latestCode(a.Phone)}), "otp_expired")
			})
			run("resend replaces the code and renews its validity", func(t *testing.T, e *env, c *bankClient, a sim.Account) {
				ap := c.bindApply(a)
				old := e.latestCode(a.Phone)
				e.advance(4 * time.Minute)
				fresh := old
				for i := 0; fresh == old && i < 5; i++ { // codes are random: they may repeat
					c.want(c.call("bind_resend", fields{BindRef: ap.BindRef}), "success")
					fresh = e.latestCode(a.Phone)
				}
				if fresh == old {
					t.Fatal("five resends gave the same code")
				}
				if n := len(e.texts(a.Phone)); n < 2 {
					t.Fatalf("%d texts after resend", n)
				}
				c.want(c.call("bind_confirm", fields{BindRef: ap.BindRef, OTP: old}), "otp_incorrect")
				e.advance(4 * time.Minute) // 8 minutes after the first code, 4 after the fresh one
				c.want(c.call("bind_confirm", fields{BindRef: ap.BindRef, OTP: fresh}), "success")
			})
			run("wrong tries count across resends", func(t *testing.T, e *env, c *bankClient, a sim.Account) {
				ap := c.bindApply(a)
				for range 4 {
					c.call("bind_confirm", fields{BindRef: ap.BindRef, OTP: otherCode(e.latestCode(a.Phone))})
				}
				c.want(c.call("bind_resend", fields{BindRef: ap.BindRef}), "success")
				c.want(c.call("bind_confirm", fields{BindRef: ap.BindRef, OTP: otherCode(e.latestCode(a.Phone))}), "otp_locked")
			})
			run("confirmed session answers only a repeat of its confirm", func(t *testing.T, e *env, c *bankClient, a sim.Account) {
				ap := c.bindApply(a)
				code := e.latestCode(a.Phone)
				first := c.call("bind_confirm", fields{BindRef: ap.BindRef, OTP: code})
				c.want(first, "success")
				again := c.call("bind_confirm", fields{BindRef: ap.BindRef, OTP: code})
				c.want(again, "success")
				if again.AgreementNo != first.AgreementNo {
					t.Errorf("the repeat answered agreement %s, the first %s", again.AgreementNo, first.AgreementNo)
				}
				c.want(c.call("bind_confirm", fields{BindRef: ap.BindRef, OTP: otherCode(code)}), "bind_session_unknown")
				c.want(c.call("bind_resend", fields{BindRef: ap.BindRef}), "bind_session_unknown")
			})
			run("unknown bind_ref", func(t *testing.T, e *env, c *bankClient, a sim.Account) {
				c.want(c.call("bind_confirm", fields{BindRef: "NOPE", OTP: "123456"}), "bind_session_unknown")
				c.want(c.call("bind_resend", fields{BindRef: "NOPE"}), "bind_session_unknown")
			})
			run("another merchant's bind_ref is unknown", func(t *testing.T, e *env, c *bankClient, a sim.Account) {
				ap := c.bindApply(a)
				other := e.client(code, "OTHER")
				c2 := other.call("bind_confirm", fields{BindRef: ap.BindRef, OTP: e.latestCode(a.Phone)})
				other.want(c2, "bind_session_unknown")
			})
			run("repeated request_no answers the same bind_ref without a second text", func(t *testing.T, e *env, c *bankClient, a sim.Account) {
				first := c.bindApply(a, func(f *fields) { f.RequestNo = "REQ-SAME" })
				again := c.bindApply(a, func(f *fields) { f.RequestNo = "REQ-SAME" })
				c.want(again, "success")
				if again.BindRef != first.BindRef {
					t.Errorf("repeat answered bind_ref %s, first %s", again.BindRef, first.BindRef)
				}
				if n := len(e.texts(a.Phone)); n != 1 {
					t.Errorf("%d texts, want 1", n)
				}
				b := e.openAccount(code, "debit", 0)
				c.want(c.bindApply(b, func(f *fields) { f.RequestNo = "REQ-SAME" }), "bad_request")
			})
			run("bound card answers already bound and sends no text", func(t *testing.T, e *env, c *bankClient, a sim.Account) {
				c.bind(a)
				c.want(c.bindApply(a), "already_bound")
				if n := len(e.texts(a.Phone)); n != 1 {
					t.Errorf("%d texts, want only the first bind's", n)
				}
			})
			run("two open sessions: the second confirm answers already bound", func(t *testing.T, e *env, c *bankClient, a sim.Account) {
				s1 := c.bindApply(a)
				code1 := e.latestCode(a.Phone)
				s2 := c.bindApply(a)
				code2 := e.latestCode(a.Phone)
				c.want(c.call("bind_confirm", fields{BindRef: s1.BindRef, OTP: code1}), "success")
				c.want(c.call("bind_confirm", fields{BindRef: s2.BindRef, OTP: code2}), "already_bound")
				if n := len(e.account(a.CardNumber).Agreements); n != 1 {
					t.Errorf("%d agreements, want 1", n)
				}
			})
			run("another merchant binds the same card", func(t *testing.T, e *env, c *bankClient, a sim.Account) {
				c.bind(a)
				other := e.client(code, "OTHER")
				other.bind(a)
				if n := len(e.account(a.CardNumber).Agreements); n != 2 {
					t.Errorf("%d agreements, want 2", n)
				}
			})
			run("card frozen between apply and confirm", func(t *testing.T, e *env, c *bankClient, a sim.Account) {
				ap := c.bindApply(a)
				a.Status = "frozen"
				e.do("POST", "/sim/accounts", a, http.StatusCreated, nil)
				c.want(c.call("bind_confirm", fields{BindRef: ap.BindRef, OTP: e.latestCode(a.Phone)}), "card_frozen")
			})
		})
	}
}

// otherCode is a 6-digit code different from code.
func otherCode(code string) string {
	if code == "000000" {
		return "000001"
	}
	return "000000"
}

func TestChargeRules(t *testing.T) {
	t.Parallel()
	type step struct {
		amount int64
		order  string // "" = a fresh order number
		agr    string // "" = the card's agreement
		want   string
	}
	cases := []struct {
		name     string
		balance  int64
		acct     func(*sim.Account)
		setup    func(e *env, a sim.Account) // after binding
		steps    []step
		balAfter int64
		failed   int
	}{
		{name: "at the single limit, then over it", balance: 10_000, acct: func(a *sim.Account) { a.SingleLimit = 1000 },
			steps: []step{{amount: 1000, want: "success"}, {amount: 1001, want: "single_limit"}}, balAfter: 9000, failed: 1},
		{name: "daily limit counts the day's debits", balance: 10_000, acct: func(a *sim.Account) { a.DailyLimit = 1500 },
			steps:    []step{{amount: 1000, want: "success"}, {amount: 501, want: "daily_limit"}, {amount: 500, want: "success"}},
			balAfter: 8500, failed: 1},
		{name: "insufficient funds", balance: 500,
			steps: []step{{amount: 501, want: "insufficient_funds"}, {amount: 500, want: "success"}}, failed: 1},
		{name: "single limit is checked before balance", balance: 10, acct: func(a *sim.Account) { a.SingleLimit = 100 },
			steps: []step{{amount: 101, want: "single_limit"}}, balAfter: 10, failed: 1},
		{name: "frozen card", balance: 1000, setup: setStatus("frozen"),
			steps: []step{{amount: 1, want: "card_frozen"}}, balAfter: 1000},
		{name: "closed card", balance: 1000, setup: setStatus("closed"),
			steps: []step{{amount: 1, want: "card_closed"}}, balAfter: 1000},
		{name: "unknown agreement", balance: 1000,
			steps: []step{{amount: 1, agr: "NO-SUCH", want: "agreement_invalid"}}, balAfter: 1000},
		{name: "three failed debits: try tomorrow, even a payable amount", balance: 100,
			steps: []step{{amount: 200, want: "insufficient_funds"}, {amount: 200, want: "insufficient_funds"},
				{amount: 200, want: "insufficient_funds"}, {amount: 50, want: "try_tomorrow"}, {amount: 50, want: "try_tomorrow"}},
			balAfter: 100, failed: 3},
		{name: "repeat of a success answers it again and debits once", balance: 1000,
			steps: []step{{amount: 300, order: "A", want: "success"}, {amount: 300, order: "A", want: "success"}}, balAfter: 700},
		{name: "repeat of a failure answers it again and is not another failure", balance: 100,
			steps: []step{{amount: 200, order: "A", want: "insufficient_funds"}, {amount: 200, order: "A", want: "insufficient_funds"},
				{amount: 200, order: "A", want: "insufficient_funds"}, {amount: 200, order: "A", want: "insufficient_funds"},
				{amount: 50, want: "success"}},
			balAfter: 50, failed: 1},
		{name: "same order number, other amount: conflict", balance: 1000,
			steps: []step{{amount: 300, order: "A", want: "success"}, {amount: 301, order: "A", want: "order_conflict"}}, balAfter: 700},
		{name: "same order number, other agreement: conflict", balance: 1000,
			steps:    []step{{amount: 300, order: "A", want: "success"}, {amount: 300, order: "A", agr: "OTHER-AGR", want: "order_conflict"}},
			balAfter: 700},
		{name: "a declined order number does not block the next", balance: 1000,
			steps:    []step{{amount: 300, order: "A", agr: "NO-SUCH", want: "agreement_invalid"}, {amount: 300, order: "B", want: "success"}},
			balAfter: 700},
	}
	for _, code := range syncBanks {
		for _, tc := range cases {
			t.Run(code+" "+tc.name, func(t *testing.T) {
				t.Parallel()
				e := newEnv(t)
				c := e.banks[code]
				var mods []func(*sim.Account)
				if tc.acct != nil {
					mods = append(mods, tc.acct)
				}
				a := e.openAccount(code, "debit", tc.balance, mods...)
				agr := c.bind(a)
				if tc.setup != nil {
					tc.setup(e, a)
				}
				answers := map[string]answer{}
				for i, st := range tc.steps {
					order := st.order
					if order == "" {
						order = e.orderNo()
					} else {
						order += "-" + a.CardNumber
					}
					ag := agr
					if st.agr != "" {
						ag = st.agr
					}
					r := c.charge(order, ag, st.amount)
					if r.Code != c.codeOf(st.want) {
						t.Fatalf("step %d: code %s (%s), want %s", i+1, r.Code, r.Message, st.want)
					}
					wantStatus := map[string]string{"success": "SUCCESS"}[st.want]
					if wantStatus == "" {
						wantStatus = "FAILED"
					}
					if st.want != "order_conflict" && (r.Status != wantStatus || r.OrderNo != order || r.BankTxnNo == "") {
						t.Fatalf("step %d: %+v", i+1, r)
					}
					if prev, ok := answers[order]; ok && st.want != "order_conflict" && prev.BankTxnNo != r.BankTxnNo {
						t.Errorf("step %d: repeat answered bank_txn_no %s, first %s", i+1, r.BankTxnNo, prev.BankTxnNo)
					}
					if _, ok := answers[order]; !ok {
						answers[order] = r
					}
				}
				v := e.account(a.CardNumber)
				if v.Balance != tc.balAfter || v.FailedDebitsToday != tc.failed {
					t.Errorf("balance %d failed %d, want %d and %d", v.Balance, v.FailedDebitsToday, tc.balAfter, tc.failed)
				}
				var sum int64
				for _, l := range e.ledger(a.CardNumber) {
					sum += l.Amount
				}
				if sum != tc.balance-tc.balAfter {
					t.Errorf("ledger sums to %d, balance moved by %d", sum, tc.balance-tc.balAfter)
				}
			})
		}
	}
}

func setStatus(s string) func(*env, sim.Account) {
	return func(e *env, a sim.Account) {
		e.t.Helper()
		a.Status = s
		e.do("POST", "/sim/accounts", a, http.StatusCreated, nil)
	}
}

func TestChargeDaysRollOver(t *testing.T) {
	t.Parallel()
	for _, code := range syncBanks {
		t.Run(code, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			c := e.banks[code]
			a := e.openAccount(code, "debit", 100, func(a *sim.Account) { a.DailyLimit = 80 })
			agr := c.bind(a)
			c.want(c.charge(e.orderNo(), agr, 60), "success")
			c.want(c.charge(e.orderNo(), agr, 30), "daily_limit")
			c.want(c.charge(e.orderNo(), agr, 90), "daily_limit")
			c.want(c.charge(e.orderNo(), agr, 90), "daily_limit")
			c.want(c.charge(e.orderNo(), agr, 10), "try_tomorrow")
			// 10:00 → 23:59:59 is still the same day in Shanghai.
			e.advance(13*time.Hour + 59*time.Minute + 59*time.Second)
			c.want(c.charge(e.orderNo(), agr, 10), "try_tomorrow")
			e.advance(time.Second)
			c.want(c.charge(e.orderNo(), agr, 30), "success")
			v := e.account(a.CardNumber)
			if v.Balance != 10 || v.DebitedToday != 30 || v.FailedDebitsToday != 0 {
				t.Errorf("next day: balance %d debited %d failed %d", v.Balance, v.DebitedToday, v.FailedDebitsToday)
			}
			st := c.call("statement", fields{Date: "2025-03-11"})
			c.want(st, "success")
			if len(st.Entries) != 1 || st.Entries[0].Amount != 30 {
				t.Errorf("statement of the 11th: %+v", st.Entries)
			}
		})
	}
}

func TestChargeValidationAndQuery(t *testing.T) {
	t.Parallel()
	for _, code := range syncBanks {
		t.Run(code, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			c := e.banks[code]
			a := e.openAccount(code, "debit", 1000)
			agr := c.bind(a)
			bad := []fields{
				{OrderNo: "O1", AgreementNo: agr, Amount: 100, Currency: "USD"},
				{OrderNo: "O2", AgreementNo: agr, Amount: 0, Currency: "CNY"},
				{OrderNo: "O3", AgreementNo: agr, Amount: -5, Currency: "CNY"},
				{OrderNo: "O4", Amount: 100, Currency: "CNY"},
				{OrderNo: "O5", AgreementNo: agr, Amount: 100, Currency: "CNY", NotifyURL: "not a url"},
				{OrderNo: "has space", AgreementNo: agr, Amount: 100, Currency: "CNY"},
				{AgreementNo: agr, Amount: 100, Currency: "CNY"},
			}
			for i, f := range bad {
				c.want(c.call("charge", f), "bad_request")
				if f.OrderNo != "" && f.OrderNo != "has space" {
					c.want(c.query(f.OrderNo), "order_not_found")
				}
				_ = i
			}
			if v := e.account(a.CardNumber); v.Balance != 1000 || v.FailedDebitsToday != 0 {
				t.Errorf("malformed charges moved the account: %+v", v)
			}
			q := c.query("NEVER-SENT")
			c.want(q, "order_not_found")
			if q.OrderNo != "NEVER-SENT" || q.Status != "" {
				t.Errorf("unknown order query %+v", q)
			}
			c.want(c.call("query", fields{}), "bad_request")

			// A failed order is queryable with its decline as result_code.
			order := e.orderNo()
			c.want(c.charge(order, agr, 5000), "insufficient_funds")
			q = c.query(order)
			c.want(q, "success")
			if q.Status != "FAILED" || q.ResultCode != c.codeOf("insufficient_funds") || q.Amount != 5000 || q.FinishedAt == "" {
				t.Errorf("failed order query %+v", q)
			}
			// Another merchant cannot see or charge this merchant's orders and agreements.
			other := e.client(code, "OTHER")
			other.want(other.query(order), "order_not_found")
			other.want(other.charge(e.orderNo(), agr, 1), "agreement_invalid")
			other.want(other.call("unbind", fields{AgreementNo: agr}), "success")
			c.want(c.charge(e.orderNo(), agr, 1), "success")
		})
	}
}

func TestStatementHoldsOnlyThisMerchantsSuccessfulDebits(t *testing.T) {
	t.Parallel()
	for _, code := range syncBanks {
		t.Run(code, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			c := e.banks[code]
			other := e.client(code, "OTHER")
			a := e.openAccount(code, "debit", 10_000)
			b := e.openAccount(code, "debit", 10_000)
			agrA, agrB := c.bind(a), c.bind(b)
			agrO := other.bind(a)
			c.want(c.charge("S1", agrA, 100), "success")
			c.want(c.charge("S2", agrB, 200), "success")
			c.want(c.charge("S3", agrB, 999_999), "insufficient_funds")
			other.want(other.charge("S4", agrO, 400), "success")
			e.advance(24 * time.Hour)
			c.want(c.charge("S5", agrA, 500), "success")
			st := c.call("statement", fields{Date: "2025-03-10"})
			c.want(st, "success")
			if len(st.Entries) != 2 || st.Entries[0].OrderNo != "S1" || st.Entries[1].OrderNo != "S2" ||
				st.Entries[1].AgreementNo != agrB || st.Entries[1].Amount != 200 {
				t.Fatalf("statement %+v", st.Entries)
			}
			if !strings.HasPrefix(st.Entries[0].FinishedAt, "2025-03-10T10:00:00+08:00") {
				t.Errorf("finished_at %q", st.Entries[0].FinishedAt)
			}
			so := other.call("statement", fields{Date: "2025-03-10"})
			if len(so.Entries) != 1 || so.Entries[0].OrderNo != "S4" {
				t.Fatalf("other merchant's statement %+v", so.Entries)
			}
		})
	}
}

func TestAccountsControl(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	good := sim.Account{BankCode: "ICBC", CardNumber: newCardNumber("ICBC", "debit"), HolderName: "王五",
		IDNumber: "110101199003074514", Phone: "13900000001", Balance: 100}
	bad := map[string]func(*sim.Account){
		"unknown bank":          func(a *sim.Account) { a.BankCode = "BOC" },
		"another bank's BIN":    func(a *sim.Account) { a.BankCode = "CCB" },
		"wrong length":          func(a *sim.Account) { a.CardNumber += "1" },
		"letters in the card":   func(a *sim.Account) { a.CardNumber = "622202ABC0000000001" },
		"card type against BIN": func(a *sim.Account) { a.CardType = "credit" },
		"credit without cvv2": func(a *sim.Account) {
			a.CardNumber, a.CardType, a.Expiry = newCardNumber("ICBC", "credit"), "credit", "1230"
		},
		"credit with bad expiry": func(a *sim.Account) {
			a.CardNumber, a.CardType, a.Expiry, a.CVV2 = newCardNumber("ICBC", "credit"), "credit", "1330", "123"
		},
		"unknown status":   func(a *sim.Account) { a.Status = "dormant" },
		"negative balance": func(a *sim.Account) { a.Balance = -1 },
		"no holder name":   func(a *sim.Account) { a.HolderName = "" },
		"no phone":         func(a *sim.Account) { a.Phone = "" },
	}
	for name, mod := range bad {
		a := good
		mod(&a)
		if st, body := e.try("POST", "/sim/accounts", a); st != http.StatusBadRequest {
			t.Errorf("%s: status %d %s", name, st, body)
		}
	}
	if st, _ := e.try("POST", "/sim/accounts", `{"bank_code":"ICBC","card_number":"6222020000000000001","balanse":1}`); st != http.StatusBadRequest {
		t.Errorf("unknown field: status %d", st)
	}
	var v accountView
	e.do("POST", "/sim/accounts", good, http.StatusCreated, &v)
	if v.CardType != "debit" || v.Status != "active" || v.SingleLimit != 5_000_000 || v.DailyLimit != 20_000_000 ||
		v.Balance != 100 || v.CardNumber != good.CardNumber || v.Agreements == nil {
		t.Errorf("defaults: %+v", v)
	}
	if st, _ := e.try("GET", "/sim/accounts/6222029999999999999", nil); st != http.StatusNotFound {
		t.Errorf("unknown card: status %d", st)
	}

	// Replacing keeps agreements: a test can drain a bound card.
	c := e.banks["ICBC"]
	agr := c.bind(good)
	drained := good
	drained.Balance = 0
	e.do("POST", "/sim/accounts", drained, http.StatusCreated, nil)
	got := e.account(good.CardNumber)
	if got.Balance != 0 || len(got.Agreements) != 1 || got.Agreements[0].Status != "active" {
		t.Fatalf("after replace: %+v", got)
	}
	c.want(c.charge(e.orderNo(), agr, 1), "insufficient_funds")

	// Accounts and merchants given in Config exist from the start.
	s, err := sim.New(sim.Config{
		BankKeys:  map[string]*rsa.PrivateKey{"CCB": bankKeyOnly(t)},
		Accounts:  []sim.Account{good},
		Merchants: []sim.Merchant{{BankCode: "ICBC", MerchantNo: "CFG", HMACSecret: "0123456789abcdef"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := sim.New(sim.Config{BankKeys: map[string]*rsa.PrivateKey{"CCB": bankKeyOnly(t)},
		Accounts: []sim.Account{drained, {BankCode: "ICBC"}}}); err == nil {
		t.Error("New accepted an invalid account")
	}
}

func TestMerchantsControl(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	bad := []sim.Merchant{
		{BankCode: "BOC", MerchantNo: "M", HMACSecret: "0123456789abcdef"},
		{BankCode: "ICBC", MerchantNo: "", HMACSecret: "0123456789abcdef"},
		{BankCode: "ICBC", MerchantNo: "M", HMACSecret: "short"},
		{BankCode: "CCB", MerchantNo: "M", HMACSecret: "0123456789abcdef"},
		{BankCode: "CCB", MerchantNo: "M", PublicKeyPEM: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"},
		{BankCode: "CCB", MerchantNo: "M", PublicKeyPEM: publicPEM(t, &small.PublicKey)},
	}
	for i, m := range bad {
		if st, body := e.try("POST", "/sim/merchants", m); st != http.StatusBadRequest {
			t.Errorf("merchant %d: status %d %s", i, st, body)
		}
	}
	// Registering again replaces the credentials.
	c := e.banks["ICBC"]
	old := *c
	c.secret = []byte("a-brand-new-secret-0123456789")
	e.do("POST", "/sim/merchants", sim.Merchant{BankCode: "ICBC", MerchantNo: c.merchantNo, HMACSecret: string(c.secret)}, http.StatusCreated, nil)
	c.want(c.query("X"), "order_not_found")
	// The old secret is refused; the refusal is signed under the new one.
	st, hdr, raw, err := old.send(context.Background(), old.build("query", fields{OrderNo: "X"}))
	if err != nil {
		t.Fatal(err)
	}
	if st != http.StatusUnauthorized || !strings.Contains(string(raw), `"code":"1001"`) {
		t.Errorf("old secret: HTTP %d %s", st, raw)
	}
	if a := c.decode(st, hdr, raw); !a.Signed {
		t.Error("refusal not signed under the merchant's current secret")
	}
}

func TestClockControl(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var clk struct {
		Now time.Time `json:"now"`
	}
	e.do("GET", "/sim/clock", nil, http.StatusOK, &clk)
	if !clk.Now.Equal(base) {
		t.Fatalf("clock %s, want %s", clk.Now, base)
	}
	e.do("POST", "/sim/clock", map[string]string{"advance": "36h"}, http.StatusOK, &clk)
	if !clk.Now.Equal(base.Add(36 * time.Hour)) {
		t.Fatalf("after advance: %s", clk.Now)
	}
	target := time.Date(2025, 12, 31, 23, 0, 0, 0, time.UTC)
	e.do("POST", "/sim/clock", map[string]string{"now": target.Format(time.RFC3339)}, http.StatusOK, &clk)
	if !clk.Now.Equal(target) || !e.sim.Now().Equal(target) {
		t.Fatalf("after set: %s", clk.Now)
	}
	for _, body := range []string{`{}`, `{"now":"2025-01-01T00:00:00Z","advance":"1h"}`, `{"advance":"1 day"}`, `{"now":"yesterday"}`} {
		if st, _ := e.try("POST", "/sim/clock", body); st != http.StatusBadRequest {
			t.Errorf("%s: status %d", body, st)
		}
	}
}

func TestTestControlIsLoopbackOnly(t *testing.T) {
	t.Parallel()
	bk, _ := testKeys(t)
	for _, remote := range []bool{false, true} {
		s, err := sim.New(sim.Config{BankKeys: map[string]*rsa.PrivateKey{"CCB": bk}, RemoteControl: remote})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		h := s.Handler()
		serve := func(method, path, body, from string) int {
			r := httptest.NewRequest(method, path, strings.NewReader(body))
			r.RemoteAddr = from
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			return w.Code
		}
		control := []struct{ method, path, body string }{
			{"GET", "/sim/banks", ""}, {"POST", "/sim/merchants", `{}`}, {"POST", "/sim/accounts", `{}`},
			{"GET", "/sim/accounts/6222020000000000001", ""}, {"GET", "/sim/sms?phone=1", ""},
			{"POST", "/sim/faults", `{}`}, {"GET", "/sim/faults", ""}, {"DELETE", "/sim/faults", ""},
			{"GET", "/sim/ledger", ""}, {"GET", "/sim/clock", ""}, {"POST", "/sim/clock", `{}`},
			{"POST", "/sim/agreements/terminate", `{}`},
		}
		for _, from := range []string{"192.0.2.7:4000", "[2001:db8::1]:4000", "10.0.0.1:80"} {
			for _, c := range control {
				st := serve(c.method, c.path, c.body, from)
				if !remote && st != http.StatusForbidden {
					t.Errorf("%s %s from %s: %d, want 403", c.method, c.path, from, st)
				}
				if remote && st == http.StatusForbidden {
					t.Errorf("RemoteControl: %s %s from %s refused", c.method, c.path, from)
				}
			}
			// The carrier and the banks serve everyone.
			if st := serve("POST", "/carrier/sms", `{"to":"13900000000","text":"hi 1234"}`, from); st != http.StatusAccepted {
				t.Errorf("carrier from %s: %d", from, st)
			}
			if st := serve("POST", "/banks/ICBC/query", `{}`, from); st == http.StatusForbidden {
				t.Errorf("bank from %s: 403", from)
			}
		}
		for _, from := range []string{"127.0.0.1:5000", "[::1]:5000", "127.9.9.9:1"} {
			if st := serve("GET", "/sim/clock", "", from); st != http.StatusOK {
				t.Errorf("clock from %s: %d", from, st)
			}
		}
	}
}

func TestSMSInbox(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	codesFrom := []struct{ text, code string }{
		{"您的扣款验证码为 482913，10分钟内有效", "482913"},
		{"订单12已创建，确认码 5521", "5521"},
		{"编号123456789之后 7788", "7788"},
		{"no digits at all", ""},
		{"12345678", "12345678"},
	}
	for i, c := range codesFrom {
		phone := "1380000000" + string(rune('0'+i))
		var out struct {
			ID string `json:"id"`
		}
		e.do("POST", "/carrier/sms", map[string]string{"to": phone, "text": c.text}, http.StatusAccepted, &out)
		if !strings.HasPrefix(out.ID, "sms_") {
			t.Errorf("id %q", out.ID)
		}
		ts := e.texts(phone)
		if len(ts) != 1 || ts[0].Code != c.code || ts[0].Text != c.text || ts[0].To != phone || !ts[0].SentAt.Equal(base) {
			t.Errorf("%q: %+v, want code %q", c.text, ts, c.code)
		}
	}
	// Bank and carrier texts share the inbox, newest first.
	a := e.openAccount("ICBC", "debit", 0)
	e.banks["ICBC"].bindApply(a)
	e.advance(time.Minute)
	e.do("POST", "/carrier/sms", map[string]string{"to": a.Phone, "text": "quickpay 9999"}, http.StatusAccepted, nil)
	ts := e.texts(a.Phone)
	if len(ts) != 2 || ts[0].Code != "9999" || !strings.Contains(ts[1].Text, "中国工商银行") || !ts[0].SentAt.After(ts[1].SentAt) {
		t.Fatalf("inbox %+v", ts)
	}
	for _, body := range []string{`{"to":"1"}`, `{"text":"x"}`, `not json`} {
		if st, _ := e.try("POST", "/carrier/sms", body); st != http.StatusBadRequest {
			t.Errorf("%s: %d", body, st)
		}
	}
	if st, _ := e.try("GET", "/sim/sms", nil); st != http.StatusBadRequest {
		t.Errorf("sms without phone: %d", st)
	}
	// The inbox keeps the newest 200 texts per phone.
	for i := range 205 {
		e.do("POST", "/carrier/sms", map[string]string{"to": "flood", "text": "n " + itoa4(i)}, http.StatusAccepted, nil)
	}
	ts = e.texts("flood")
	if len(ts) != 200 || ts[0].Code != itoa4(204) || ts[199].Code != itoa4(5) {
		t.Errorf("flood: %d texts, newest %q, oldest %q", len(ts), ts[0].Code, ts[len(ts)-1].Code)
	}
}

// Sensitive counts a text's code as an OTP only where the text calls it a
// verification code: a pre-debit notice's first digits are a date's year,
// which quickpay rightly stores.
func TestSensitiveCodesAreVerificationCodes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.openAccount("ICBC", "debit", 0)
	e.banks["ICBC"].bindApply(a)
	bank := e.latestCode(a.Phone)
	texts := []struct {
		text, code string
		otp        bool
	}{
		{"【quickpay】验证码620417，5分钟内有效。您正在授权某商户代扣", "620417", true},
		{"您的扣款验证码为 482913，10分钟内有效", "482913", true},
		{"【quickpay】扣款提醒：电费将于2027-01-05从尾号1234的银行卡扣款¥12.00。", "2027", false},
		{"订单12已创建，确认码 5521", "5521", false},
	}
	for i, c := range texts {
		e.do("POST", "/carrier/sms", map[string]string{"to": "1390000000" + strconv.Itoa(i), "text": c.text}, http.StatusAccepted, nil)
	}
	got := e.sim.Sensitive()
	if got[bank] != "OTP" {
		t.Errorf("the bank's code is %q, want OTP", got[bank])
	}
	for _, c := range texts {
		if (got[c.code] == "OTP") != c.otp {
			t.Errorf("%q: code %s counted as an OTP: %v, want %v", c.text, c.code, got[c.code] == "OTP", c.otp)
		}
	}
}

func itoa4(i int) string { return strconv.Itoa(10000 + i) }
