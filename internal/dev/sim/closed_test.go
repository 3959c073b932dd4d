package sim

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A value outside one of banksim's closed sets fails where it is met; it
// never behaves as a value banksim knows (a third dialect as json-hmac, a
// new status as active).
func TestClosedSetsFailLoudly(t *testing.T) {
	wantPanic := func(t *testing.T, what string, f func()) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Errorf("%s did not panic", what)
			}
		}()
		f()
	}

	t.Run("a bank of an unknown dialect is refused at New", func(t *testing.T) {
		err := (&bank{code: "XB", dialect: "soap-xml"}).setUp(nil)
		if err == nil || !strings.Contains(err.Error(), `"soap-xml"`) {
			t.Errorf("setUp = %v, want it to refuse dialect soap-xml", err)
		}
	})
	t.Run("an unknown dialect has no codes", func(t *testing.T) {
		wantPanic(t, "code in dialect soap-xml", func() { rSuccess.code("soap-xml") })
	})
	t.Run("an unknown account status or card type panics where a rule reads it", func(t *testing.T) {
		wantPanic(t, "statusRefusal(dormant)", func() { statusRefusal("dormant") })
		wantPanic(t, "needsCardAuth(prepaid)", func() { needsCardAuth("prepaid") })
	})
	t.Run("a bank whose dialect changed under it neither registers nor answers", func(t *testing.T) {
		s, err := New(Config{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		s.banks["ICBC"].dialect = "soap-xml"
		err = s.RegisterMerchant(Merchant{BankCode: "ICBC", MerchantNo: "M1", HMACSecret: "0123456789abcdef"})
		if err == nil || !strings.Contains(err.Error(), `"soap-xml"`) {
			t.Errorf("RegisterMerchant = %v, want it to refuse dialect soap-xml", err)
		}
		req := httptest.NewRequest(http.MethodPost, "/banks/ICBC/query", strings.NewReader(`{"order_no":"O1"}`))
		wantPanic(t, "a request to a soap-xml bank", func() { s.Handler().ServeHTTP(httptest.NewRecorder(), req) })
	})
}
