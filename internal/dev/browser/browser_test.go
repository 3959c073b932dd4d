package browser

import (
	"bytes"
	"fmt"
	"html"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/chromedp"
)

const strictCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// pages serves a clean page and one that breaks its own CSP twice (an
// inline script and an image from another origin), both under strictCSP.
func pages(t *testing.T) *httptest.Server {
	t.Helper()
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("the CSP let the page load %s from another origin", r.URL)
	}))
	t.Cleanup(other.Close)
	mux := http.NewServeMux()
	page := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Security-Policy", strictCSP)
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprintf(w, `<!doctype html><html><head><meta charset="utf-8"><title>t</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/app.css"><script src="/app.js" defer></script></head>
<body><h1>绑定银行卡</h1><p id="js">off</p><p id="lang">%s</p>%s</body></html>`,
				html.EscapeString(r.Header.Get("Accept-Language")), body)
		}
	}
	mux.HandleFunc("GET /clean", page(""))
	mux.HandleFunc("GET /violating", page(`<script>document.getElementById("js").textContent = "inline";</script>
<img id="img" alt="" src="`+other.URL+`/pixel.png">`))
	mux.HandleFunc("GET /app.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		fmt.Fprint(w, `document.getElementById("js").textContent = "on"; console.log("app ready");`)
	})
	mux.HandleFunc("GET /app.css", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/css")
		fmt.Fprint(w, `body { font: 16px sans-serif; margin: 16px }`)
	})
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestHarness(t *testing.T) {
	t.Parallel()
	srv := pages(t)
	b := Start(t, Config{})

	open := func(t *testing.T, cfg TabConfig, path string) *Tab {
		t.Helper()
		tab := b.NewTab(t, cfg)
		if err := tab.Do(chromedp.Navigate(srv.URL + path)); err != nil {
			t.Fatalf("navigate %s: %v", path, err)
		}
		return tab
	}
	text := func(t *testing.T, tab *Tab, id string) string {
		t.Helper()
		s, err := Run(tab, chromedp.TextContent(chromedp.ID(id)))
		if err != nil {
			t.Fatalf("text of #%s: %v", id, err)
		}
		return s
	}
	hasMessage := func(tab *Tab, text string) bool {
		for _, m := range tab.Messages() {
			if strings.Contains(m.Text, text) {
				return true
			}
		}
		return false
	}

	t.Run("a clean page reports nothing", func(t *testing.T) {
		tab := open(t, TabConfig{}, "/clean")
		if got := text(t, tab, "js"); got != "on" {
			t.Errorf("#js = %q, want the script's %q", got, "on")
		}
		if !hasMessage(tab, "app ready") {
			t.Errorf("the console was not recorded: %v", tab.Messages())
		}
		if p := tab.Problems(); len(p) != 0 {
			t.Errorf("problems on a clean page: %v", p)
		}
	})

	t.Run("violations are reported with script on", func(t *testing.T) {
		tab := open(t, TabConfig{}, "/violating")
		if got := text(t, tab, "js"); got != "on" {
			t.Errorf("#js = %q: the inline script ran", got)
		}
		// Each violation is reported twice: by the browser's log and by the
		// document's event.
		seen := map[string]bool{}
		for _, v := range tab.CSPViolations() {
			switch {
			case strings.Contains(v.Text, "inline"):
				seen[v.Kind+" inline script"] = true
			case strings.Contains(v.Text, "pixel.png"):
				seen[v.Kind+" image"] = true
			}
		}
		for _, want := range []string{"log inline script", "csp inline script", "log image", "csp image"} {
			if !seen[want] {
				t.Errorf("no %s violation in %v", want, tab.CSPViolations())
			}
		}
	})

	t.Run("script off runs no script and still reports violations", func(t *testing.T) {
		tab := open(t, TabConfig{NoScript: true}, "/violating")
		if got := text(t, tab, "js"); got != "off" {
			t.Errorf("#js = %q with script off", got)
		}
		if hasMessage(tab, "app ready") {
			t.Error("app.js ran with script off")
		}
		img := false
		for _, v := range tab.CSPViolations() {
			img = img || strings.Contains(v.Text, "pixel.png")
			if v.Kind == "csp" {
				t.Errorf("a securitypolicyviolation event with script off: %v", v)
			}
		}
		if !img {
			t.Errorf("the browser's log did not report the image: %v", tab.Messages())
		}
	})

	t.Run("phone viewport and language", func(t *testing.T) {
		tab := open(t, TabConfig{Language: "en-US,en"}, "/clean")
		if got := text(t, tab, "lang"); got != "en-US,en;q=0.9" {
			t.Errorf("Accept-Language = %q", got)
		}
		got, err := Run(tab, chromedp.Evaluate[[]float64](`[innerWidth, innerHeight, devicePixelRatio, navigator.maxTouchPoints > 0 ? 1 : 0]`))
		if err != nil {
			t.Fatal(err)
		}
		if want := []float64{390, 844, 3, 1}; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("width, height, ratio, touch = %v, want %v", got, want)
		}
		ua, err := Run(tab, chromedp.Evaluate[string](`navigator.userAgent`))
		if err != nil || !strings.Contains(ua, "Mobile") {
			t.Errorf("user agent %q (%v) is not a phone's", ua, err)
		}
		zh := open(t, TabConfig{}, "/clean")
		if got := text(t, zh, "lang"); got != "zh-CN,zh;q=0.9" {
			t.Errorf("default Accept-Language = %q", got)
		}
	})

	t.Run("transfers are counted", func(t *testing.T) {
		tab := open(t, TabConfig{}, "/clean")
		seen := map[string]int64{}
		for _, tr := range tab.Transfers() {
			seen[strings.TrimPrefix(tr.URL, srv.URL)] = tr.Bytes
		}
		for _, path := range []string{"/clean", "/app.js", "/app.css"} {
			if seen[path] <= 0 {
				t.Errorf("no bytes recorded for %s: %v", path, tab.Transfers())
			}
		}
		tab.ResetRecords()
		if len(tab.Transfers()) != 0 || len(tab.Messages()) != 0 {
			t.Error("ResetRecords kept records")
		}
	})

	t.Run("a screenshot is a phone-sized PNG", func(t *testing.T) {
		tab := open(t, TabConfig{}, "/clean")
		path := filepath.Join(t.TempDir(), "shots", "clean.png")
		if err := tab.Screenshot(path); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := png.DecodeConfig(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("not a PNG: %v", err)
		}
		if cfg.Width != 390*3 || cfg.Height < 844*3 {
			t.Errorf("screenshot is %d×%d, want 1170 wide and at least 2532 high", cfg.Width, cfg.Height)
		}
	})
}

// fatalRecorder stands in for a test to see Start fail it.
type fatalRecorder struct {
	testing.TB
	mu  sync.Mutex
	msg string
}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.msg = fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}

func TestStartWithoutChromiumFails(t *testing.T) {
	t.Parallel()
	f := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Start(f, Config{ExecPath: filepath.Join(t.TempDir(), "no-chromium")})
		t.Error("Start returned without a browser")
	}()
	<-done
	f.mu.Lock()
	defer f.mu.Unlock()
	if !strings.Contains(f.msg, "make deps") {
		t.Errorf("Start's failure %q does not say to run make deps", f.msg)
	}
}
