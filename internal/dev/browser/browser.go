// Package browser drives Debian's headless Chromium over the DevTools
// protocol (github.com/chromedp/chromedp) for tests of the pages quickpay
// serves to people: one browser per test, a tab per flow.
//
// A Tab emulates a phone (Phone: 390×844 CSS pixels at device pixel ratio
// 3, touch, a mobile user agent), sends the Accept-Language it is given,
// runs with JavaScript on or off, and records what the page reported: the
// console, the browser's log and uncaught exceptions (Messages), Content
// Security Policy violations (CSPViolations: the browser's log entries
// about the policy, which it writes with JavaScript off too, and, with
// JavaScript on, the document's securitypolicyviolation events), and the
// bytes every response took on the wire (Transfers).
//
// Chromium is found at Config.ExecPath (/usr/bin/chromium). When it is
// missing, Start fails the test with a message saying to run `make deps`:
// a browser test never skips silently.
//
// # Concurrency
//
// A Browser may open tabs from several goroutines; a Tab runs one action at
// a time (chromedp's rule: the actions of one tab share it). The records of
// a Tab are filled on chromedp's message loop, before the reply to a later
// command is read, so after Do returns they hold every event the page sent
// before that action ended.
package browser

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// DefaultExecPath is where Debian's chromium package puts its launcher.
const DefaultExecPath = "/usr/bin/chromium"

// Config chooses the browser a test starts.
type Config struct {
	// ExecPath is the Chromium binary. Defaults to DefaultExecPath.
	ExecPath string
	// Timeout bounds each Tab.Do and Tab.Run. Defaults to 30s.
	Timeout time.Duration
}

// Viewport is the emulated screen of a tab, in CSS pixels.
type Viewport struct {
	Width, Height int64
	// Scale is the device pixel ratio: screenshots are Width×Scale pixels wide.
	Scale  float64
	Mobile bool
	// UserAgent replaces the browser's when not empty.
	UserAgent string
}

// Phone is a 6.1" phone held upright (an iPhone 12–15's CSS viewport) with
// Chromium's Android user agent: the device quickpay's cardholders use.
var Phone = Viewport{
	Width: 390, Height: 844, Scale: 3, Mobile: true,
	UserAgent: "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Mobile Safari/537.36",
}

// TabConfig chooses how a tab presents itself.
type TabConfig struct {
	// NoScript turns JavaScript off in the tab (the page must work as plain
	// HTML forms). The zero value runs scripts.
	NoScript bool
	// Language is the tab's list of languages, most wanted first: it sends
	// them as Accept-Language, with the q-values the browser adds ("zh-CN,zh"
	// is sent as "zh-CN,zh;q=0.9"). Defaults to "zh-CN,zh".
	Language string
	// Viewport defaults to Phone.
	Viewport Viewport
}

// Browser is one headless Chromium process.
type Browser struct {
	ctx     context.Context // the browser's first tab: its context owns the process
	timeout time.Duration
}

// Start launches Chromium for the test and ends it at the test's cleanup.
// It fails the test when Chromium is missing or does not start.
func Start(t testing.TB, cfg Config) *Browser {
	t.Helper()
	if cfg.ExecPath == "" {
		cfg.ExecPath = DefaultExecPath
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	if _, err := os.Stat(cfg.ExecPath); err != nil {
		t.Fatalf("browser: no Chromium at %s (%v): run `make deps` (Debian: apt-get install chromium) and run again", cfg.ExecPath, err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(cfg.ExecPath),
		chromedp.UserDataDir(t.TempDir()),
		// No account sign-in, translate bar or component downloads: the
		// browser talks to the test's servers only.
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("no-pings", true),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// The first Do starts the process under the context it is given: a
	// context with a deadline would end the browser with it.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("browser: start %s: %v (run `make deps` if Chromium is not installed)", cfg.ExecPath, err)
	}
	return &Browser{ctx: ctx, timeout: cfg.Timeout}
}

// Message is one thing the page or the browser wrote to the console.
type Message struct {
	// Kind is "console" (a console API call), "log" (the browser's log),
	// "exception" (uncaught) or "csp" (a securitypolicyviolation event).
	Kind string
	// Level is the console call's type or the log entry's level ("error", …).
	Level string
	Text  string
	URL   string
}

func (m Message) String() string {
	s := m.Kind + " " + m.Level + ": " + m.Text
	if m.URL != "" {
		s += " (" + m.URL + ")"
	}
	return s
}

// Transfer is one response the tab received.
type Transfer struct {
	URL      string
	MIMEType string
	Type     network.ResourceType
	Status   int64
	// Bytes is what the response took on the wire, headers included
	// (DevTools' "transferred"); Body is its body as sent (compressed, when
	// the server compressed it).
	Bytes, Body int64
}

// Tab is one page of the browser.
type Tab struct {
	ctx     context.Context
	timeout time.Duration

	mu        sync.Mutex
	messages  []Message
	responses map[network.RequestID]*Transfer
	done      []network.RequestID // finished responses, in order
}

// cspBinding is the name of the function the page calls with each
// securitypolicyviolation event (Runtime.addBinding: a call from the page
// becomes a Runtime.bindingCalled event, with no network and no console).
const cspBinding = "__quickpayCSPViolation"

// cspListener runs in each document before its own scripts. DevTools
// scripts are not subject to the page's CSP.
const cspListener = `document.addEventListener("securitypolicyviolation", function (e) {
  window.` + cspBinding + `(e.violatedDirective + " blocked " + (e.blockedURI || "inline") + " at " + e.sourceFile + ":" + e.lineNumber);
});`

// NewTab opens a tab with cfg and closes it at the test's cleanup.
func (b *Browser) NewTab(t testing.TB, cfg TabConfig) *Tab {
	t.Helper()
	if cfg.Language == "" {
		cfg.Language = "zh-CN,zh"
	}
	if cfg.Viewport == (Viewport{}) {
		cfg.Viewport = Phone
	}
	tab := &Tab{timeout: b.timeout, responses: map[network.RequestID]*Transfer{}}
	ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithListener(tab.record))
	t.Cleanup(cancel)
	tab.ctx = ctx
	// The first Do opens the tab under the context it is given (see Start).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("browser: open tab: %v", err)
	}
	v := cfg.Viewport
	ua := v.UserAgent
	setup := []chromedp.Action[chromedp.Void]{
		chromedp.Func(func(ctx context.Context, tt *chromedp.Target) error {
			if ua == "" {
				// Keep the browser's own agent: read it to send it back with
				// the language.
				got, err := chromedp.Evaluate[string]("navigator.userAgent")(ctx, tt)
				if err != nil {
					return fmt.Errorf("read user agent: %w", err)
				}
				ua = strings.Replace(got, "HeadlessChrome", "Chrome", 1)
			}
			if _, err := cdp.Call(ctx, tt, emulation.SetUserAgentOverride, emulation.SetUserAgentOverrideParams{
				UserAgent: ua, AcceptLanguage: cfg.Language,
			}); err != nil {
				return fmt.Errorf("user agent: %w", err)
			}
			if _, err := cdp.Call(ctx, tt, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{
				Width: v.Width, Height: v.Height, DeviceScaleFactor: v.Scale, Mobile: v.Mobile,
			}); err != nil {
				return fmt.Errorf("viewport: %w", err)
			}
			if _, err := cdp.Call(ctx, tt, emulation.SetTouchEmulationEnabled, emulation.SetTouchEmulationEnabledParams{Enabled: v.Mobile}); err != nil {
				return fmt.Errorf("touch: %w", err)
			}
			if _, err := cdp.Call(ctx, tt, runtime.AddBinding, runtime.AddBindingParams{Name: cspBinding}); err != nil {
				return fmt.Errorf("csp binding: %w", err)
			}
			if _, err := cdp.Call(ctx, tt, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: cspListener}); err != nil {
				return fmt.Errorf("csp listener: %w", err)
			}
			if _, err := cdp.Call(ctx, tt, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: cfg.NoScript}); err != nil {
				return fmt.Errorf("script execution: %w", err)
			}
			return nil
		}),
	}
	if err := tab.Do(setup...); err != nil {
		t.Fatalf("browser: open tab: %v", err)
	}
	return tab
}

// record runs on chromedp's message loop: it must return fast and call
// nothing in the browser.
func (tab *Tab) record(ev any) {
	tab.mu.Lock()
	defer tab.mu.Unlock()
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		tab.messages = append(tab.messages, Message{Kind: "console", Level: string(ev.Type), Text: argsText(ev.Args)})
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		text := d.Text
		if d.Exception != nil && d.Exception.Description != "" {
			text += " " + d.Exception.Description
		}
		tab.messages = append(tab.messages, Message{Kind: "exception", Level: "error", Text: text, URL: d.URL})
	case *log.EventEntryAdded:
		e := ev.Entry
		tab.messages = append(tab.messages, Message{Kind: "log", Level: string(e.Level), Text: string(e.Source) + ": " + e.Text, URL: e.URL})
	case *runtime.EventBindingCalled:
		if ev.Name == cspBinding {
			tab.messages = append(tab.messages, Message{Kind: "csp", Level: "error", Text: ev.Payload})
		}
	case *network.EventResponseReceived:
		r := ev.Response
		tab.responses[ev.RequestID] = &Transfer{URL: r.URL, MIMEType: r.MimeType, Type: ev.Type, Status: r.Status}
	case *network.EventLoadingFinished:
		if tr, ok := tab.responses[ev.RequestID]; ok {
			tr.Bytes, tr.Body = int64(ev.EncodedDataLength), int64(ev.EncodedBodyLength)
			tab.done = append(tab.done, ev.RequestID)
		}
	}
}

func argsText(args []*runtime.RemoteObject) string {
	parts := make([]string, 0, len(args))
	for _, a := range args {
		switch {
		case a.Type == runtime.RemoteObjectTypeString:
			var s string
			if err := json.Unmarshal(a.Value, &s); err == nil {
				parts = append(parts, s)
				continue
			}
			parts = append(parts, string(a.Value))
		case a.Description != "":
			parts = append(parts, a.Description)
		case len(a.Value) > 0:
			parts = append(parts, string(a.Value))
		default:
			parts = append(parts, string(a.Type))
		}
	}
	return strings.Join(parts, " ")
}

// Context is the tab's chromedp context, for chromedp.Run and friends.
func (tab *Tab) Context() context.Context { return tab.ctx }

// Do runs steps in the tab, in order, within the browser's timeout.
func (tab *Tab) Do(steps ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(tab.ctx, tab.timeout)
	defer cancel()
	return chromedp.Do(ctx, steps...)
}

// Run runs a in tab within the browser's timeout and returns its value.
func Run[T any](tab *Tab, a chromedp.Action[T]) (T, error) {
	ctx, cancel := context.WithTimeout(tab.ctx, tab.timeout)
	defer cancel()
	return chromedp.Run(ctx, a)
}

// Messages returns what the tab's pages wrote to the console so far.
func (tab *Tab) Messages() []Message {
	tab.mu.Lock()
	defer tab.mu.Unlock()
	return append([]Message(nil), tab.messages...)
}

// CSPViolations returns the messages that report a Content Security Policy
// violation: securitypolicyviolation events, and the browser's log entries
// naming the policy (Chromium 156: "… violates the following Content
// Security Policy directive …"; older ones: "Refused to …"), which it
// writes with JavaScript off too.
func (tab *Tab) CSPViolations() []Message {
	var out []Message
	for _, m := range tab.Messages() {
		if isCSP(m) {
			out = append(out, m)
		}
	}
	return out
}

func isCSP(m Message) bool {
	return m.Kind == "csp" || strings.Contains(m.Text, "Content Security Policy") || strings.Contains(m.Text, "Refused to")
}

// Problems returns the CSP violations, uncaught exceptions and console or
// log errors: what a clean page reports none of.
func (tab *Tab) Problems() []Message {
	var out []Message
	for _, m := range tab.Messages() {
		if isCSP(m) || m.Kind == "exception" || m.Level == "error" {
			out = append(out, m)
		}
	}
	return out
}

// Transfers returns the responses the tab finished receiving, in order.
func (tab *Tab) Transfers() []Transfer {
	tab.mu.Lock()
	defer tab.mu.Unlock()
	out := make([]Transfer, 0, len(tab.done))
	for _, id := range tab.done {
		out = append(out, *tab.responses[id])
	}
	return out
}

// ResetRecords forgets the messages and transfers recorded so far.
func (tab *Tab) ResetRecords() {
	tab.mu.Lock()
	defer tab.mu.Unlock()
	tab.messages, tab.done = nil, nil
	tab.responses = map[network.RequestID]*Transfer{}
}

// Screenshot writes a PNG of the whole page (beyond the viewport when it
// is longer) at the tab's device pixel ratio to path, creating its folder.
func (tab *Tab) Screenshot(path string) error {
	png, err := Run(tab, chromedp.FullScreenshot(100))
	if err != nil {
		return fmt.Errorf("screenshot %s: %w", path, err)
	}
	if len(png) < 8 || string(png[1:4]) != "PNG" {
		return errors.New("screenshot " + path + ": the browser sent no PNG")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("screenshot: %w", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		return fmt.Errorf("screenshot: %w", err)
	}
	return nil
}
