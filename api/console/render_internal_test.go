package console

import (
	"testing"
	"time"
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
		"//evil.example/x": "/", "/\\evil.example": "/", "https://evil.example/": "/", "charges": "/", "/a\r\nSet-Cookie: x": "/"} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}
