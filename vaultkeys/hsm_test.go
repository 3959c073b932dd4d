package vaultkeys_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/quickpay/quickpay/internal/sensitive"
	"github.com/quickpay/quickpay/vaultkeys"
)

func TestSessionsRecoverAfterCloseAllSessions(t *testing.T) {
	ctx := context.Background()
	v := newVault(t, nil, 4)
	h := v.HSM()
	before := h.Stats()

	stop := make(chan struct{})
	var ops, fails atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	// C_CloseAllSessions while another thread is inside a call on one of
	// those sessions, or on a key copy the keeper session owns, is a
	// use-after-free in SoftHSM2 (CI saw it crash the test binary). A
	// process only loses its sessions under it when it calls that itself,
	// so the workers pause for the call: every session, the keeper and its
	// key copies, and the login are still gone when they resume.
	var gate sync.RWMutex
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				aad := []byte(fmt.Sprintf("g%d-%d", g, i))
				gate.RLock()
				ct, err := v.Encrypt(ctx, []byte(panA), aad)
				if err == nil {
					_, err = v.Decrypt(ctx, ct, aad, access)
				}
				gate.RUnlock()
				ops.Add(1)
				if err != nil {
					fails.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	waitFor(t, func() bool { return ops.Load() > 50 })
	// Pull every session, and with them the login, out from under the pool.
	gate.Lock()
	err := h.P11().CloseAllSessions(h.Slot())
	gate.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	mark := ops.Load()
	waitFor(t, func() bool { return ops.Load() > mark+200 })
	close(stop)
	wg.Wait()

	if n := fails.Load(); n > 0 {
		t.Fatalf("%d of %d operations failed after C_CloseAllSessions; first: %v", n, ops.Load(), firstErr.Load())
	}
	after := h.Stats()
	if after.Discarded <= before.Discarded {
		t.Errorf("no broken session was discarded (stats %+v)", after)
	}
	if after.Logins <= before.Logins {
		t.Errorf("the pool did not log in again (stats %+v)", after)
	}
	if after.Idle > after.PoolCapacity || after.InUse != 0 {
		t.Errorf("pool out of bounds after the run: %+v", after)
	}
}

func TestPoolWaitEndsWithContext(t *testing.T) {
	v := newVault(t, nil, 1)
	h := v.HSM()
	held, release := make(chan struct{}), make(chan struct{})
	go func() {
		_ = h.Do(context.Background(), func(pkcs11.SessionHandle) error {
			close(held)
			<-release
			return nil
		})
	}()
	<-held
	defer close(release)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := v.Encrypt(ctx, []byte(panA), nil)
		done <- err
	}()
	waitFor(t, func() bool { return h.Stats().Waits > 0 })
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("waiting Encrypt returned %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("pool wait did not end when its context was cancelled")
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if _, err := v.Fingerprint(ctx2, vaultkeys.DomainPAN, []byte(panA)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting Fingerprint returned %v, want deadline exceeded", err)
	}
}

func TestConcurrentTokenize(t *testing.T) {
	ctx := context.Background()
	v := newVault(t, nil, 8)
	const goroutines, each = 64, 10
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*each)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if r := recover(); r != nil {
					errs <- fmt.Errorf("panic: %v", r)
				}
			}()
			for i := range each {
				pan := fmt.Sprintf("622202%013d", g*100+i)
				aad := []byte(fmt.Sprintf("card_%d_%d", g, i))
				tok, err := v.TokenizePAN(ctx, sensitive.NewPAN(pan), aad)
				if err != nil {
					errs <- err
					return
				}
				got, err := v.DetokenizePAN(ctx, tok.Ciphertext, aad, access)
				if err != nil {
					errs <- err
					return
				}
				if got.Reveal() != pan {
					errs <- errors.New("round trip changed a PAN")
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s := v.HSM().Stats(); s.Idle > s.PoolCapacity {
		t.Errorf("pool holds %d idle sessions, capacity %d", s.Idle, s.PoolCapacity)
	}
}

// TestLogsNeverContainThePAN captures everything logged while tokenizing,
// detokenizing and failing, including the errors themselves.
func TestLogsNeverContainThePAN(t *testing.T) {
	ctx := context.Background()
	var buf bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewJSONHandler(lockedWriter{&buf, &mu}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	prev := slog.Default()
	slog.SetDefault(log)
	t.Cleanup(func() { slog.SetDefault(prev) })

	v := newVault(t, nil, 2)
	pan := sensitive.NewPAN(panA)
	tok, err := v.TokenizePAN(ctx, pan, []byte("card_log"))
	log.Info("tokenized", "pan", pan, "token", tok.Masked, "err", err)
	got, err := v.DetokenizePAN(ctx, tok.Ciphertext, []byte("card_log"), access)
	log.Info("detokenized", "pan", got, "err", err)
	_, err = v.DetokenizePAN(ctx, tok.Ciphertext, []byte("wrong"), access)
	log.Error("detokenize failed", "err", err, "pan", got)
	_, err = v.TokenizePAN(ctx, sensitive.NewPAN(panA[:8]), nil)
	log.Error("tokenize failed", "err", err)
	log.Info("whole token", "tok", tok)

	mu.Lock()
	out := buf.String()
	mu.Unlock()
	if !strings.Contains(out, "detokenize failed") {
		t.Fatal("log capture is not working")
	}
	for _, s := range []string{panA, panA[6:15], panA[:8]} {
		if strings.Contains(out, s) {
			t.Fatalf("logs contain PAN digits %q:\n%s", s, out)
		}
	}
}

type lockedWriter struct {
	b  *bytes.Buffer
	mu *sync.Mutex
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// waitFor polls cond until it holds or 30s pass.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWorkingCopiesStayInTheHSM: keys created with CKA_MODIFIABLE false
// (keys.go) cannot be copied into session objects (SoftHSM2 answers
// CKR_ATTRIBUTE_READ_ONLY), so they are used in place: no copy is made,
// and the token still holds exactly one object per label.
func TestWorkingCopiesStayInTheHSM(t *testing.T) {
	ctx := context.Background()
	v := newVault(t, nil, 2)
	h := v.HSM()
	if _, err := v.TokenizePAN(ctx, sensitive.NewPAN(panA), []byte("aad")); err != nil {
		t.Fatal(err)
	}
	if got := h.Stats().Copies; got != 0 {
		t.Fatalf("working copies after a tokenization = %d, want 0 (the keys are not modifiable)", got)
	}
	for _, purpose := range []vaultkeys.Purpose{vaultkeys.PurposeData, vaultkeys.PurposeFP} {
		pol, err := v.Policy(ctx, purpose)
		if err != nil {
			t.Fatal(err)
		}
		label := vaultkeys.Label(purpose, pol.Current)
		find := func(s pkcs11.SessionHandle, tmpl ...*pkcs11.Attribute) []pkcs11.ObjectHandle {
			p := h.P11()
			if err := p.FindObjectsInit(s, tmpl); err != nil {
				t.Fatal(err)
			}
			objs, _, err := p.FindObjects(s, 8)
			_ = p.FindObjectsFinal(s)
			if err != nil {
				t.Fatal(err)
			}
			return objs
		}
		err = h.Do(ctx, func(s pkcs11.SessionHandle) error {
			if n := len(find(s, pkcs11.NewAttribute(pkcs11.CKA_LABEL, label))); n != 1 {
				t.Errorf("%s: %d objects with the key's label, want 1 (the token key)", label, n)
			}
			if n := len(find(s, pkcs11.NewAttribute(pkcs11.CKA_LABEL, label+" (working copy)"))); n != 0 {
				t.Errorf("%s: %d working copies, want 0", label, n)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
