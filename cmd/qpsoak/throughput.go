package main

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/quickpay/quickpay/api/client"
)

// runThroughput measures charges/s of one serve instance and of two, in
// one run on one stack: each phase binds n cards with one mandate each
// (due today), claims them with `charges run-due --no-wait` (claim and
// enqueue only) and times until serve's workers have every answer. Phase
// one runs with the second instance stopped.
func runThroughput(ctx context.Context, dir string, say func(string, ...any), n int, rescue time.Duration, seed uint64) (string, error) {
	s, err := newSoak(ctx, dir, say, seed, 2, rescue)
	if err != nil {
		return "", err
	}
	defer s.st.close()
	all := s.st.clients
	rate := map[int]float64{}
	for _, instances := range []int{1, 2} {
		if instances == 1 {
			s.st.serves[1].p.stop()
			s.st.clients = all[:1]
		} else {
			if err := s.st.startServe(ctx, s.st.serves[1]); err != nil {
				return "", err
			}
			s.st.clients = all
		}
		say("%d instance(s): binding %d cards with a mandate each", instances, n)
		if err := s.mandates(ctx, n); err != nil {
			return "", err
		}
		start := time.Now()
		out, err := s.st.quickpay(ctx, "charges", "run-due", "--no-wait")
		if err != nil {
			return "", err
		}
		if m := claimedRE.FindSubmatch(out); m == nil || string(m[1]) != strconv.Itoa(n) {
			return "", fmt.Errorf("%d instance(s): run-due claimed other than the %d charges due: %s", instances, n, out)
		}
		for {
			open, err := s.countCharges(ctx, client.ListChargesParamsStatusProcessing)
			if err != nil {
				return "", err
			}
			if open == 0 {
				break
			}
			if time.Since(start) > 10*time.Minute {
				return "", fmt.Errorf("%d instance(s): charges still processing after 10m", instances)
			}
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
		el := time.Since(start)
		rate[instances] = float64(n) / el.Seconds()
		say("%d instance(s): %d charges answered in %s (%.1f/s)", instances, n, el.Round(time.Millisecond), rate[instances])
	}
	return fmt.Sprintf("throughput charges=%d one_instance=%.1f/s two_instances=%.1f/s ratio=%.2f",
		n, rate[1], rate[2], rate[2]/rate[1]), nil
}

// countCharges counts the charges in status st, up to one page (100).
func (s *soak) countCharges(ctx context.Context, st client.ListChargesParamsStatus) (int, error) {
	n := 0
	err := s.call(ctx, func(c *client.Client) error {
		limit := client.ListLimit(100)
		r, err := c.ListChargesWithResponse(ctx, &client.ListChargesParams{Status: &st, Limit: &limit})
		if err != nil {
			return err
		}
		n = len(r.JSON200.Data)
		return nil
	})
	return n, err
}

// claimedRE reads the claimed count from run-due's line.
var claimedRE = regexp.MustCompile(`(\d+) charges claimed`)

// mandates binds n cards with one mandate each, four at a time.
func (s *soak) mandates(ctx context.Context, n int) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	made, failed := 0, 0
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if made >= n || failed > n/10+5 || ctx.Err() != nil {
					mu.Unlock()
					return
				}
				made++ // taken; given back on failure
				mu.Unlock()
				card, err := s.bind(ctx)
				if err == nil {
					err = s.mandate(ctx, card, 2)
				}
				if err != nil {
					s.say("binding or mandate failed: %v", err)
					mu.Lock()
					made--
					failed++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if made < n {
		return fmt.Errorf("%d of %d mandates made; %d bindings or mandates failed", made, n, failed)
	}
	return nil
}
