package idempotency_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/quickpay/quickpay/api/idempotency"
	"github.com/quickpay/quickpay/internal/dev/testenv"
)

// BenchmarkRequestHash is the cost the keyed fingerprint adds to a POST
// with an Idempotency-Key: one HMAC in the HSM (SoftHSM2 here) over a bind
// body of the usual size, run from GOMAXPROCS goroutines as a server's
// requests would.
//
//	go test -run '^$' -bench RequestHash -benchtime 2s ./api/idempotency/
func BenchmarkRequestHash(b *testing.B) {
	pool := testenv.Pool(b)
	v := newVaultOn(b, pool, testenv.HSM(b, 8))
	store, err := idempotency.New(idempotency.Config{Pool: pool, Hasher: v})
	if err != nil {
		b.Fatal(err)
	}
	body := []byte(`{"external_user_id":"user-5f2c9a","holder_name":"张三","id_number":"11010119900307451X",` +
		`"card_number":"6222021234567890128","phone":"13800138000","expiry":"1231","cvv2":"208"}`)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := store.NewRequest(ctx, "mch_bench", "bind-1", http.MethodPost, "/v1/bindings", body); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
