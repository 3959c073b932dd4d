package simclient

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestConnectPlatformRefusesAnUnknownDialect: a bank of a dialect the
// client does not know gets no channel settings and no registration; it is
// not connected as json-hmac.
func TestConnectPlatformRefusesAnUnknownDialect(t *testing.T) {
	var registered atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("GET /sim/banks", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`[{"code":"XB","name":"X","dialect":"soap-xml","async":false,"bins":[]}]`))
	})
	mux.HandleFunc("POST /sim/merchants", func(w http.ResponseWriter, _ *http.Request) {
		registered.Add(1)
		w.WriteHeader(http.StatusCreated)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	channels, err := NewClient(srv.URL).ConnectPlatform(context.Background(),
		func(string) string { return "M1" },
		func(context.Context, string) (string, error) { return "", nil })
	if err == nil || !strings.Contains(err.Error(), `"soap-xml"`) {
		t.Fatalf("ConnectPlatform = %v, %v; want an error naming dialect soap-xml", channels, err)
	}
	if n := registered.Load(); n != 0 {
		t.Errorf("%d merchants registered at a bank of an unknown dialect", n)
	}
}
