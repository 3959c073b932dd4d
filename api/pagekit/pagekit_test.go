package pagekit

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"testing/fstest"

	"github.com/labstack/echo/v4"
)

func TestSecrets(t *testing.T) {
	a, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	if a == b || !ValidSecret(a) || !ValidSecret(b) {
		t.Fatalf("NewSecret gave %q and %q", a, b)
	}
	for _, s := range []string{"", "short", a + "x", a[:len(a)-1], "!!" + a[2:]} {
		if ValidSecret(s) {
			t.Errorf("ValidSecret(%q) = true", s)
		}
	}
}

func TestAssetsAndHeaders(t *testing.T) {
	e := echo.New()
	fsys := fstest.MapFS{"static/app.css": {Data: []byte("body{}")}, "secret.txt": {Data: []byte("x")}}
	e.GET("/assets/:file", Assets(fsys, "static"), Headers("default-src 'none'"))
	for path, want := range map[string]int{"/assets/app.css": http.StatusOK, "/assets/nope.css": http.StatusNotFound,
		"/assets/..%2fsecret.txt": http.StatusNotFound} { // nothing outside dir
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != want {
			t.Errorf("GET %s: %d, want %d", path, rec.Code, want)
		}
		if got := rec.Header().Get("Content-Security-Policy"); got != "default-src 'none'" {
			t.Errorf("GET %s: CSP %q", path, got)
		}
		if rec.Header().Get("X-Frame-Options") != "DENY" || rec.Header().Get("Cache-Control") != "no-store" {
			t.Errorf("GET %s: headers %v", path, rec.Header())
		}
	}
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/assets/app.css", nil))
	if ct := rec.Header().Get("Content-Type"); ct != "text/css; charset=utf-8" || rec.Body.String() != "body{}" {
		t.Errorf("app.css: %q, %q", ct, rec.Body.String())
	}
}
