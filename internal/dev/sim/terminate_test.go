package sim_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/quickpay/quickpay/internal/dev/sim"
)

// notifyTo registers c's merchant again, same credentials, with notify_url.
func (e *env) notifyTo(c *bankClient, notifyURL string) {
	e.t.Helper()
	m := sim.Merchant{BankCode: c.code, MerchantNo: c.merchantNo, NotifyURL: notifyURL}
	if c.form {
		m.PublicKeyPEM = publicPEM(e.t, &c.key.PublicKey)
	} else {
		m.HMACSecret = string(c.secret)
	}
	e.do("POST", "/sim/merchants", m, http.StatusCreated, nil)
}

type terminated struct {
	BankCode    string `json:"bank_code"`
	MerchantNo  string `json:"merchant_no"`
	AgreementNo string `json:"agreement_no"`
}

// terminate posts /sim/agreements/terminate and returns what it ended.
func (e *env) terminate(card, merchantNo string) []terminated {
	e.t.Helper()
	var out struct {
		Terminated []terminated `json:"terminated"`
	}
	e.do("POST", "/sim/agreements/terminate", map[string]string{"card_number": card, "merchant_no": merchantNo}, http.StatusOK, &out)
	if out.Terminated == nil {
		e.t.Fatal("terminate answered no terminated list")
	}
	return out.Terminated
}

type terminationNotice struct {
	Type        string `json:"type"`
	AgreementNo string `json:"agreement_no"`
	At          string `json:"at"`
	nonce       string
}

// verifyNotice checks a termination notice's signature in c's dialect and
// decodes it.
func (c *bankClient) verifyNotice(t *testing.T, d delivery) terminationNotice {
	t.Helper()
	if c.form {
		v, err := url.ParseQuery(string(d.body))
		if err != nil {
			t.Fatalf("notice is not a form: %q", d.body)
		}
		if err := rsaVerify(c.bankPub, canonical(v), v.Get("sign")); err != nil || v.Get("sign_type") != "RSA2" {
			t.Fatalf("notice signature: %v", err)
		}
		if v.Get("merchant_no") != c.merchantNo || v.Get("timestamp") == "" || len(v.Get("nonce")) < 16 ||
			d.header.Get("Content-Type") != "application/x-www-form-urlencoded" {
			t.Errorf("notice envelope %v", v)
		}
		return terminationNotice{v.Get("type"), v.Get("agreement_no"), v.Get("at"), v.Get("nonce")}
	}
	h := d.header
	want := hmacHex(c.secret, "CALLBACK\n"+h.Get("X-Timestamp")+"\n"+h.Get("X-Nonce")+"\n"+string(d.body))
	if h.Get("X-Signature") != want {
		t.Fatal("notice signature does not verify")
	}
	if h.Get("X-Merchant-No") != c.merchantNo || h.Get("Content-Type") != "application/json" {
		t.Errorf("notice headers %v", h)
	}
	var n terminationNotice
	dec := json.NewDecoder(strings.NewReader(string(d.body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&n); err != nil {
		t.Fatalf("notice body %q: %v", d.body, err)
	}
	n.nonce = h.Get("X-Nonce")
	return n
}

func TestCardholderTerminatesAgreements(t *testing.T) {
	t.Parallel()
	for _, code := range []string{"ICBC", "CCB", "CMB"} {
		t.Run(code, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			c := e.banks[code]
			other := e.client(code, "OTHER") // no notify_url
			rcv := newReceiver(t, 0)
			e.notifyTo(c, rcv.url)
			a := e.openAccount(code, "debit", 10_000)
			agr, agrOther := c.bind(a), other.bind(a)

			e.advance(time.Hour)
			got := e.terminate(a.CardNumber, c.merchantNo)
			if len(got) != 1 || got[0] != (terminated{code, c.merchantNo, agr}) {
				t.Fatalf("terminated %+v", got)
			}
			n := c.verifyNotice(t, rcv.next(t))
			if n.Type != "agreement_terminated" || n.AgreementNo != agr || n.At != base.Add(time.Hour).Format(time.RFC3339) {
				t.Errorf("notice %+v", n)
			}
			v := e.account(a.CardNumber)
			status := map[string]string{}
			for _, ag := range v.Agreements {
				status[ag.AgreementNo] = ag.Status
			}
			if status[agr] != "terminated" || status[agrOther] != "active" {
				t.Errorf("agreements %+v", v.Agreements)
			}
			// Later charges on it answer "agreement invalid" (at CMB, in the callback).
			charges := newReceiver(t, 0)
			ch := c.call("charge", fields{OrderNo: e.orderNo(), AgreementNo: agr, Amount: 1, Currency: "CNY", NotifyURL: charges.url})
			if code == "CMB" {
				c.want(ch, "processing")
				if cb := c.verifyCallback(t, charges.next(t)); cb.ResultCode != "4004" {
					t.Errorf("charge on a terminated agreement: %+v", cb)
				}
			} else {
				c.want(ch, "agreement_invalid")
			}
			if got := e.terminate(a.CardNumber, c.merchantNo); len(got) != 0 {
				t.Errorf("terminated again: %+v", got)
			}

			// Without merchant_no every live agreement of the card ends.
			agr2 := c.bind(a)
			got = e.terminate(a.CardNumber, "")
			if len(got) != 2 || got[0].AgreementNo != agrOther || got[1] != (terminated{code, c.merchantNo, agr2}) {
				t.Fatalf("terminated %+v", got)
			}
			if n := c.verifyNotice(t, rcv.next(t)); n.AgreementNo != agr2 {
				t.Errorf("notice %+v", n)
			}
			if st := e.account(a.CardNumber); len(st.Agreements) != 3 || st.Agreements[0].Status != "terminated" ||
				st.Agreements[1].Status != "terminated" || st.Agreements[2].Status != "terminated" {
				t.Errorf("agreements %+v", st.Agreements)
			}
			// The card binds again.
			c.bind(a)
		})
	}
}

func TestTerminationNoticesAreRetried(t *testing.T) {
	t.Parallel()
	for _, code := range syncBanks {
		t.Run(code, func(t *testing.T) {
			t.Parallel()
			t.Run("until answered 2xx", func(t *testing.T) {
				t.Parallel()
				e := newEnv(t)
				c := e.banks[code]
				rcv := newReceiver(t, 2)
				e.notifyTo(c, rcv.url)
				a := e.openAccount(code, "debit", 0)
				agr := c.bind(a)
				e.terminate(a.CardNumber, "")
				nonces := map[string]bool{}
				for i := range 3 {
					n := c.verifyNotice(t, rcv.next(t))
					if n.AgreementNo != agr || n.Type != "agreement_terminated" {
						t.Errorf("delivery %d: %+v", i+1, n)
					}
					nonces[n.nonce] = true
				}
				if len(nonces) != 3 {
					t.Errorf("retries reused nonces: %v", nonces)
				}
				waitFor(t, "delivery log", func() bool { return strings.Contains(e.logs.String(), `"callback delivered"`) })
				if n := rcv.count.Load(); n != 3 {
					t.Errorf("%d deliveries, want 3", n)
				}
			})
			t.Run("abandoned after 5 retries", func(t *testing.T) {
				t.Parallel()
				e := newEnv(t)
				c := e.banks[code]
				rcv := newReceiver(t, -1)
				e.notifyTo(c, rcv.url)
				a := e.openAccount(code, "debit", 0)
				c.bind(a)
				e.terminate(a.CardNumber, c.merchantNo)
				waitFor(t, "the notice to be abandoned", func() bool { return strings.Contains(e.logs.String(), `"callback abandoned"`) })
				if n := rcv.count.Load(); n != 6 {
					t.Errorf("%d deliveries, want 6 (the first and 5 retries)", n)
				}
			})
		})
	}
}

func TestTerminateControl(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for body, want := range map[string]int{
		`{"card_number":"6222029999999999999"}`:           http.StatusNotFound,
		`{"merchant_no":"M-ICBC"}`:                        http.StatusBadRequest,
		`{"card_number":"6222029999999999999","why":"x"}`: http.StatusBadRequest,
		`not json`: http.StatusBadRequest,
	} {
		if st, raw := e.try("POST", "/sim/agreements/terminate", body); st != want {
			t.Errorf("%s: %d %s, want %d", body, st, raw, want)
		}
	}
	// A card without live agreements: nothing to end.
	a := e.openAccount("ICBC", "debit", 0)
	if got := e.terminate(a.CardNumber, ""); len(got) != 0 {
		t.Errorf("terminated %+v", got)
	}
	for _, u := range []string{"not a url", "ftp://example.com/x", "/relative"} {
		m := sim.Merchant{BankCode: "ICBC", MerchantNo: "N", HMACSecret: "0123456789abcdef", NotifyURL: u}
		if st, raw := e.try("POST", "/sim/merchants", m); st != http.StatusBadRequest {
			t.Errorf("notify_url %q: %d %s", u, st, raw)
		}
	}
}
