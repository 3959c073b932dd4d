package idempotency

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/quickpay/quickpay/api"
)

// Header names.
const (
	HeaderKey      = "Idempotency-Key"
	HeaderReplayed = "Idempotent-Replayed"
)

// API errors the middleware answers.
var (
	ErrKeyReused = api.NewError(http.StatusUnprocessableEntity, "idempotency_key_reused",
		"this Idempotency-Key was used for a different request")
	ErrKeyInUse = api.NewError(http.StatusConflict, "idempotency_key_in_use",
		"a request with this Idempotency-Key is still being processed; retry later")
	errKeyInvalid = api.Validation(http.StatusBadRequest, HeaderKey,
		"Idempotency-Key must be 1 to 255 printable ASCII characters")
)

// saveTimeout bounds saving or releasing a claim after the handler ran; it
// runs detached from the request's cancellation, since a client that hung
// up must still leave its key in a consistent state.
const saveTimeout = 5 * time.Second

// Middleware applies the Idempotency-Key contract (see the package doc) to
// POST requests. merchantID names the tenant the key belongs to
// (api.MerchantID); the middleware must run after authentication.
func (s *Store) Middleware(merchantID func(echo.Context) string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			if req.Method != http.MethodPost {
				return next(c)
			}
			values, present := req.Header[http.CanonicalHeaderKey(HeaderKey)]
			if !present {
				return next(c)
			}
			if len(values) != 1 || !validKey(values[0]) {
				return errKeyInvalid
			}
			merchant := merchantID(c)
			if merchant == "" {
				// Mounted outside authentication: refuse rather than drop the guarantee.
				return errors.New("idempotency: no authenticated merchant on the request")
			}
			body, err := api.Body(c)
			if err != nil {
				return err
			}
			r, err := s.NewRequest(req.Context(), merchant, values[0], req.Method, req.URL.Path, body)
			if err != nil {
				return err
			}
			claim, err := s.await(req.Context(), r)
			if err != nil {
				return err
			}
			if !claim.Owned {
				if claim.Response == nil {
					return errors.New("idempotency: done key without a saved answer")
				}
				if claim.Response.Sealed {
					if s.cfg.Sealer == nil {
						return errors.New("idempotency: a sealed answer and no Sealer to open it")
					}
					body, err := s.cfg.Sealer.OpenAnswer(req.Context(), r.MerchantID, claim.Response.Body, answerAAD(r))
					if err != nil {
						return fmt.Errorf("idempotency: open sealed answer: %w", err)
					}
					claim.Response.Body = body
				}
				return replay(c, claim.Response)
			}
			return s.run(c, next, r, claim)
		}
	}
}

// await claims r's key, waiting up to InFlightWait while another request
// holds it. It returns an owned claim or a done one to replay.
func (s *Store) await(ctx context.Context, r Request) (Claim, error) {
	deadline := time.Now().Add(s.cfg.InFlightWait)
	pause := 10 * time.Millisecond
	waited := false
	for {
		claim, err := s.Claim(ctx, r)
		switch {
		case err != nil:
			return Claim{}, err
		case claim.Owned:
			return claim, nil
		case claim.Reused:
			return Claim{}, ErrKeyReused
		case claim.State == StateDone:
			return claim, nil
		}
		// In flight elsewhere: poll for its answer (or for its release).
		if !waited && s.onWait != nil {
			s.onWait()
		}
		waited = true
		left := time.Until(deadline)
		if left <= 0 {
			return Claim{}, ErrKeyInUse
		}
		t := time.NewTimer(min(pause, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return Claim{}, ctx.Err()
		case <-t.C:
		}
		pause = min(2*pause, 200*time.Millisecond)
	}
}

// run executes the handler under an owned claim, saves its answer, and only
// then sends it.
func (s *Store) run(c echo.Context, next echo.HandlerFunc, r Request, claim Claim) error {
	res := c.Response()
	orig := res.Writer
	rec := &recorder{header: orig.Header()}
	res.Writer = rec
	finished := false
	defer func() {
		res.Writer = orig
		if !finished {
			// The handler panicked: forget what it wrote, let a retry run it
			// again, and let the recover middleware answer.
			res.Committed, res.Status, res.Size = false, http.StatusOK, 0
			ctx, cancel := detached(c)
			defer cancel()
			if rerr := s.Release(ctx, r, claim); rerr != nil {
				s.cfg.Logger.Error("release idempotency key after panic", "err", rerr,
					"request_id", res.Header().Get(echo.HeaderXRequestID))
			}
		}
	}()

	if herr := next(c); herr != nil {
		// Render the error now, into the recorder, so that the answer the
		// client sees is the one saved.
		c.Error(herr)
	}
	finished = true
	res.Writer = orig

	status := res.Status
	if !res.Committed {
		status = http.StatusOK
	}
	ans := Response{Status: status, ContentType: rec.header.Get(echo.HeaderContentType), Body: rec.body.Bytes()}

	ctx, cancel := detached(c)
	defer cancel()
	keep := status < 500 && status != http.StatusTooManyRequests
	save := ans // what is saved: ans, or ans sealed
	if keep && api.AnswerSealed(c) {
		// Saved only encrypted; without a sealer, not at all (a retry runs
		// the handler again, as after a 5xx).
		keep = false
		if s.cfg.Sealer != nil {
			body, serr := s.cfg.Sealer.SealAnswer(ctx, ans.Body, answerAAD(r))
			if serr == nil {
				save.Body, save.Sealed, keep = body, true, true
			} else {
				s.cfg.Logger.Error("seal idempotent answer", "err", serr,
					"request_id", res.Header().Get(echo.HeaderXRequestID))
			}
		}
	}
	if !keep {
		if rerr := s.Release(ctx, r, claim); rerr != nil {
			s.cfg.Logger.Error("release idempotency key", "err", rerr,
				"request_id", res.Header().Get(echo.HeaderXRequestID))
		}
	} else {
		saved, serr := s.Save(ctx, r, claim, save)
		switch {
		case serr != nil:
			// The handler's work is done and its answer goes out; the key
			// stays in flight until StaleAfter, then a retry runs again.
			s.cfg.Logger.Error("save idempotent answer", "err", serr,
				"request_id", res.Header().Get(echo.HeaderXRequestID))
		case !saved:
			s.cfg.Logger.Warn("idempotency key was taken over while its handler ran; answer not saved",
				"request_id", res.Header().Get(echo.HeaderXRequestID))
		}
	}
	orig.WriteHeader(status)
	n, _ := orig.Write(ans.Body)
	res.Status, res.Committed, res.Size = status, true, int64(n)
	return nil
}

// replay writes a saved answer.
func replay(c echo.Context, ans *Response) error {
	h := c.Response().Header()
	h.Set(HeaderReplayed, "true")
	if ans.ContentType != "" {
		h.Set(echo.HeaderContentType, ans.ContentType)
	}
	c.Response().WriteHeader(ans.Status)
	_, err := c.Response().Write(ans.Body)
	return err
}

func detached(c echo.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(c.Request().Context()), saveTimeout)
}

// validKey: 1 to MaxKeyLength characters of printable ASCII.
func validKey(k string) bool {
	if len(k) == 0 || len(k) > MaxKeyLength {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// recorder buffers a handler's answer. Headers go straight to the real
// writer's map (they are sent with the status after the answer is saved).
type recorder struct {
	header http.Header
	body   bytes.Buffer
}

func (w *recorder) Header() http.Header         { return w.header }
func (w *recorder) WriteHeader(int)             {}
func (w *recorder) Write(b []byte) (int, error) { return w.body.Write(b) }

// Flush is a no-op: the answer is sent whole once saved.
func (w *recorder) Flush() {}
