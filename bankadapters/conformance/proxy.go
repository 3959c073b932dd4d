package conformance

import (
	"bytes"
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
