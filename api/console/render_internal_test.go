package console

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
)

func TestParseYuan(t *testing.T) {
	for in, want := range map[string]int64{"12.34": 1234, "12.3": 1230, "12": 1200, "0.01": 1, " ¥7.05 ": 705,
		"999999999999.99": 99999999999999} {
		got, err := parseYuan(in)
		if err != nil || got != want {
			t.Errorf("parseYuan(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "0.00", "1.234", "1.", ".5", "-1", "1e3", "12,34", "abc", "1 000", "1234567890123"} {
		if got, err := parseYuan(in); err == nil {
			t.Errorf("parseYuan(%q) = %d, want an error", in, got)
		}
	}
}

func TestMoney(t *testing.T) {
	for fen, want := range map[int64]string{0: "¥0.00", 1: "¥0.01", 1234: "¥12.34", -505: "-¥5.05", 100000: "¥1000.00"} {
		if got := money(fen); got != want {
			t.Errorf("money(%d) = %q, want %q", fen, got, want)
		}
	}
}

func TestRoughly(t *testing.T) {
	for d, want := range map[time.Duration]string{12 * time.Second: "12s", 4*time.Minute + 9*time.Second: "4m 09s",
		5*time.Hour + 12*time.Minute: "5h 12m", 290 * 24 * time.Hour: "290 days"} {
		if got := roughly(d); got != want {
			t.Errorf("roughly(%s) = %q, want %q", d, got, want)
		}
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{"/charges?status=failed": "/charges?status=failed", "/jobs/": "/jobs/", "": "/",
		"//evil.example/x": "/", "/\\evil.example": "/", "https://evil.example/": "/", "charges": "/", "/a\r\nSet-Cookie: x": "/",
		"/\t/evil.example": "/", "/\x00/x": "/", "/a\\b": "/", "/\x7f": "/"} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLooksLikeCardNumber(t *testing.T) {
	for q, want := range map[string]bool{"6222021234567890123": true, "6222 0212 3456 7890 123": true,
		"6222-0212-3456-7890": true, "6222.0212.3456.7890": true, "622202123456": false,
		"ICBCT20261207EPFRPK0000000004": false, "chg_abc": false, "62220212345678901234": false} {
		if got := looksLikeCardNumber(q); got != want {
			t.Errorf("looksLikeCardNumber(%q) = %v, want %v", q, got, want)
		}
	}
}

// TestDetachOutlivesTheRequest: an action's POST whose browser hung up
// runs on, under its own bound.
func TestDetachOutlivesTheRequest(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ec := echo.New().NewContext(httptest.NewRequest(http.MethodPost, "/charges/x/refund", nil).WithContext(ctx),
		httptest.NewRecorder())
	cancel() // the browser hung up
	var err error
	var deadline bool
	_ = detach(func(ec echo.Context) error {
		err = ec.Request().Context().Err()
		_, deadline = ec.Request().Context().Deadline()
		return nil
	})(ec)
	if err != nil || !deadline {
		t.Fatalf("the action saw %v (deadline %v); want a live context with a deadline", err, deadline)
	}
}
