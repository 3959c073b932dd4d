package testenv

import (
	"context"
	"sync"
	"testing"
	"time"
)

// Concurrently runs fn(ctx, i) for i in [0, n) at once, under a context
// that ends after limit, and fails t for each call that returned an error
// (a call still waiting when the limit passes fails with the context's
// error): for tests that a burst of calls cannot starve or deadlock.
func Concurrently(t testing.TB, n int, limit time.Duration, fn func(ctx context.Context, i int) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = fn(ctx, i) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("call %d of %d: %v", i+1, n, err)
		}
	}
}
