package vaultkeys_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"

	"runtime"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/miekg/pkcs11"

	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/sensitive"
	"github.com/quickpay/quickpay/vaultkeys"
)

// Benchmarks for docs/benchmarks.md. Each runs at 1 goroutine and at 8
// (b.RunParallel with parallelism 8 / GOMAXPROCS), beside the raw
// miekg/pkcs11 loops on the same token in the same run, which are the
// baseline: what the HSM does with no pool, no policy lookup and no
// envelope.

var benchGoroutines = []int{1, 8}

func runAt(b *testing.B, goroutines int, op func(i int) error) {
	b.Helper()
	if goroutines == 1 {
		for i := 0; b.Loop(); i++ {
			if err := op(i); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	procs := max(1, goroutines/runtimeProcs())
	b.SetParallelism(procs)
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			if err := op(i); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkTokenize(b *testing.B) {
	v := newBenchVault(b)
	pan := sensitive.NewPAN(panA)
	aad := []byte("card_bench|mch_bench")
	for _, g := range benchGoroutines {
		b.Run(fmt.Sprintf("goroutines=%d", g), func(b *testing.B) {
			runAt(b, g, func(int) error {
				_, err := v.TokenizePAN(context.Background(), pan, aad)
				return err
			})
		})
	}
}

func BenchmarkEncrypt(b *testing.B) {
	v := newBenchVault(b)
	aad := []byte("card_bench|mch_bench")
	for _, g := range benchGoroutines {
		b.Run(fmt.Sprintf("goroutines=%d", g), func(b *testing.B) {
			runAt(b, g, func(int) error {
				_, err := v.Encrypt(context.Background(), []byte(panA), aad)
				return err
			})
		})
	}
}

func BenchmarkFingerprint(b *testing.B) {
	v := newBenchVault(b)
	for _, g := range benchGoroutines {
		b.Run(fmt.Sprintf("goroutines=%d", g), func(b *testing.B) {
			runAt(b, g, func(int) error {
				_, err := v.Fingerprint(context.Background(), vaultkeys.DomainPAN, []byte(panA))
				return err
			})
		})
	}
}

// BenchmarkRawAESGCM is the baseline: C_EncryptInit + C_Encrypt with
// AES-GCM on the same qp-data key, one session per goroutine, straight
// through miekg/pkcs11.
func BenchmarkRawAESGCM(b *testing.B) {
	benchRaw(b, false)
}

// BenchmarkRawAESGCMAndHMAC is the raw cost of what TokenizePAN asks of the
// HSM: one AES-GCM encryption and one HMAC-SHA256.
func BenchmarkRawAESGCMAndHMAC(b *testing.B) {
	benchRaw(b, true)
}

func benchRaw(b *testing.B, withHMAC bool) {
	v := newBenchVault(b)
	p, slot := v.HSM().P11(), v.HSM().Slot()
	ctx := context.Background()
	dataPol, err := v.Policy(ctx, vaultkeys.PurposeData)
	if err != nil {
		b.Fatal(err)
	}
	fpPol, err := v.Policy(ctx, vaultkeys.PurposeFP)
	if err != nil {
		b.Fatal(err)
	}
	aad := []byte("card_bench|mch_bench")
	msg := []byte(panA)

	type raw struct {
		s        pkcs11.SessionHandle
		aes, mac pkcs11.ObjectHandle
	}
	// The pool's sessions keep the token logged in; raw sessions share
	// that login, as PKCS#11 login is per application.
	open := func() raw {
		s, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
		if err != nil {
			b.Fatal(err)
		}
		find := func(label string) pkcs11.ObjectHandle {
			if err := p.FindObjectsInit(s, []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
				pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
			}); err != nil {
				b.Fatal(err)
			}
			objs, _, err := p.FindObjects(s, 1)
			_ = p.FindObjectsFinal(s)
			if err != nil || len(objs) != 1 {
				b.Fatalf("find %s: %v", label, err)
			}
			return objs[0]
		}
		return raw{s, find(vaultkeys.Label(vaultkeys.PurposeData, dataPol.Current)), find(vaultkeys.Label(vaultkeys.PurposeFP, fpPol.Current))}
	}
	once := func(r raw) error {
		iv := make([]byte, 12)
		if _, err := rand.Read(iv); err != nil {
			return err
		}
		params := pkcs11.NewGCMParams(iv, aad, 128)
		defer params.Free()
		if err := p.EncryptInit(r.s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}, r.aes); err != nil {
			return err
		}
		if _, err := p.Encrypt(r.s, msg); err != nil {
			return err
		}
		if !withHMAC {
			return nil
		}
		if err := p.SignInit(r.s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_SHA256_HMAC, nil)}, r.mac); err != nil {
			return err
		}
		_, err := p.Sign(r.s, append([]byte("pan\x00"), msg...))
		return err
	}

	for _, g := range benchGoroutines {
		b.Run(fmt.Sprintf("goroutines=%d", g), func(b *testing.B) {
			if g == 1 {
				r := open()
				defer p.CloseSession(r.s)
				for b.Loop() {
					if err := once(r); err != nil {
						b.Fatal(err)
					}
				}
				return
			}
			b.SetParallelism(max(1, g/runtimeProcs()))
			b.RunParallel(func(pb *testing.PB) {
				r := open()
				defer p.CloseSession(r.s)
				for pb.Next() {
					if err := once(r); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

func newBenchVault(b *testing.B) *vaultkeys.Vault {
	b.Helper()
	v, err := vaultkeys.New(vaultkeys.Config{Pool: testenvPool(b), HSM: testenvHSM(b, 8)})
	if err != nil {
		b.Fatal(err)
	}
	if err := v.Ensure(context.Background()); err != nil {
		b.Fatal(err)
	}
	return v
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }

func testenvPool(b *testing.B) *pgxpool.Pool { return testenv.Pool(b) }

func testenvHSM(b *testing.B, n int) *vaultkeys.HSM { return testenv.HSM(b, n) }
