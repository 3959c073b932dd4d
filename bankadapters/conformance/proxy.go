package conformance

import (
	"bytes"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
)

// tamperProxy is a man in the middle between an adapter and banksim: a
// reverse proxy that rewrites the request or the answer body of one bank
// operation in transit and leaves everything else (headers, signatures)
// as it was.
type tamperProxy struct {
	URL      string
	op       string
	request  func([]byte) ([]byte, bool) // nil: pass through
	answer   func([]byte) ([]byte, bool)
	requests atomic.Int32 // request bodies altered
	answers  atomic.Int32 // answer bodies altered or replaced

	// replayFrom: the first answer to that operation passes and is kept;
	// every later answer to op is replaced by it, status, signature
	// headers and all.
	replayFrom string
	mu         sync.Mutex
	recorded   *http.Response
	body       []byte
}

// newTamperProxy starts a proxy to target that alters op's bodies with
// request and answer (either may be nil). Each returns the new body and
// whether it changed anything.
func newTamperProxy(t *testing.T, target, op string, request, answer func([]byte) ([]byte, bool)) *tamperProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatalf("banksim URL: %v", err)
	}
	p := &tamperProxy{op: op, request: request, answer: answer}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			if p.request == nil || path.Base(pr.In.URL.Path) != p.op || pr.Out.Body == nil {
				return
			}
			body, err := io.ReadAll(pr.Out.Body)
			_ = pr.Out.Body.Close()
			if err != nil {
				body = nil
			}
			if nb, changed := p.request(body); changed {
				body = nb
				p.requests.Add(1)
			}
			pr.Out.Body = io.NopCloser(bytes.NewReader(body))
			pr.Out.ContentLength = int64(len(body))
			pr.Out.Header.Del("Content-Length")
		},
		ModifyResponse: func(resp *http.Response) error {
			op := path.Base(resp.Request.URL.Path)
			if p.replayFrom != "" && (op == p.op || op == p.replayFrom) {
				return p.replayAnswer(resp, op)
			}
			if p.answer == nil || op != p.op {
				return nil
			}
			body, err := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if err != nil {
				return err
			}
			if nb, changed := p.answer(body); changed {
				body = nb
				p.answers.Add(1)
			}
			resp.Body = io.NopCloser(bytes.NewReader(body))
			resp.ContentLength = int64(len(body))
			resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
			return nil
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

// newReplayProxy starts a proxy to target that keeps the first genuine,
// signed answer to operation from and answers every later call of op with
// it (from may be op: the first call's answer is kept).
func newReplayProxy(t *testing.T, target, from, op string) *tamperProxy {
	t.Helper()
	p := newTamperProxy(t, target, op, nil, nil)
	p.replayFrom = from
	return p
}

func (p *tamperProxy) replayAnswer(resp *http.Response, op string) error {
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.recorded == nil && op == p.replayFrom:
		p.recorded, p.body = &http.Response{StatusCode: resp.StatusCode, Header: resp.Header.Clone()}, body
	case p.recorded != nil && op == p.op:
		resp.StatusCode, resp.Status = p.recorded.StatusCode, ""
		resp.Header = p.recorded.Header.Clone()
		body = p.body
		p.answers.Add(1)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return nil
}

// setField sets one field of a bank body in dialect's encoding (a JSON
// object, or a form), adding it if absent. numeric writes a JSON number.
// It reports false when the body is not of that encoding.
func setField(dialect string, body []byte, key, value string, numeric bool) ([]byte, bool) {
	if dialect == DialectFormRSA {
		v, err := url.ParseQuery(string(body))
		if err != nil {
			return body, false
		}
		if v.Get(key) == value {
			return body, false
		}
		v.Set(key, value)
		return []byte(v.Encode()), true
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
		return body, false
	}
	raw := json.RawMessage(value)
	if !numeric {
		raw, _ = json.Marshal(value)
	}
	if bytes.Equal(obj[key], raw) {
		return body, false
	}
	obj[key] = raw
	out, err := json.Marshal(obj)
	if err != nil {
		return body, false
	}
	return out, true
}

// fieldOf reads one field of a bank body, "" if absent.
func fieldOf(dialect string, body []byte, key string) string {
	if dialect == DialectFormRSA {
		v, err := url.ParseQuery(string(body))
		if err != nil {
			return ""
		}
		return v.Get(key)
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(body, &obj) != nil {
		return ""
	}
	var s string
	if json.Unmarshal(obj[key], &s) == nil {
		return s
	}
	return string(obj[key])
}

// codeField is the name of the result-code field of an answer.
func codeField(dialect string) string {
	if dialect == DialectFormRSA {
		return "ret_code"
	}
	return "code"
}

// forgeCharge rewrites a charge answer to claim status with reason's code.
func forgeCharge(dialect, status, reason string) func([]byte) ([]byte, bool) {
	return func(body []byte) ([]byte, bool) {
		b1, c1 := setField(dialect, body, "status", status, false)
		b2, c2 := setField(dialect, b1, codeField(dialect), dialectCode(dialect, reason), false)
		return b2, c1 || c2
	}
}

// reasonCodes are the codes of docs/banksim.md "Result codes" the suite
// checks adapters report: reason → json-hmac code, form-rsa ret_code.
var reasonCodes = map[string][2]string{
	"success":            {"0000", "SUCCESS"},
	"processing":         {"0001", "PROCESSING"},
	"sign_invalid":       {"1001", "E_SIGN"},
	"id_mismatch":        {"2002", "E_IDNO"},
	"card_frozen":        {"2007", "E_FROZEN"},
	"insufficient_funds": {"4001", "E_BALANCE"},
	"single_limit":       {"4002", "E_SINGLE_LIMIT"},
	"daily_limit":        {"4003", "E_DAY_LIMIT"},
	"agreement_invalid":  {"4004", "E_PROTOCOL"},
	"try_tomorrow":       {"4005", "E_RETRY_TOMORROW"},
	"order_conflict":     {"4007", "E_ORDER_CONFLICT"},
}

// dialectCode is reason's code in dialect.
func dialectCode(dialect, reason string) string {
	c, ok := reasonCodes[reason]
	if !ok {
		panic("conformance: no code for reason " + reason)
	}
	if dialect == DialectFormRSA {
		return c[1]
	}
	return c[0]
}
