package api_test

import (
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/quickpay/quickpay/internal/testenv"
)

// scanPackageForLeaks runs after every test of the package has passed
// (TestMain). It scans a pg_dump of the package's database, and every log
// line any of its tests captured or wrote through slog.Default, for every
// card number, ID number, CVV2 and expiry of every banksim account the
// tests opened and every code those banksims texted (bank codes, and the
// consent codes quickpay sent through the carrier). TestE2E's own scan
// also covers the values it made up for refusals, which no bank holds.
func scanPackageForLeaks() error {
	values := map[string]string{}
	for _, s := range testenv.Sims() {
		maps.Copy(values, s.Sensitive())
	}
	dump, err := testenv.Dump()
	if err != nil {
		return fmt.Errorf("leak scan: %w", err)
	}
	var logs strings.Builder
	logBufs.Lock()
	for _, l := range logBufs.all {
		logs.WriteString(l.String())
	}
	logBufs.Unlock()

	kinds := map[string]int{}
	for _, k := range values {
		kinds[k]++
	}
	var errs []error
	for _, k := range []string{"PAN", "ID number", "CVV2", "expiry", "OTP"} {
		if kinds[k] == 0 {
			errs = append(errs, fmt.Errorf("leak scan: no %s to look for: it would prove nothing", k))
		}
	}
	for where, hay := range map[string]string{"pg_dump": dump, "logs": logs.String()} {
		lower := strings.ToLower(hay)
		for v, kind := range values {
			if kind == "OTP" {
				// Six digits are searched where a leak would put them, as
				// for CVV2 and expiry: across the whole package, a code
				// standing alone is bound to meet an equal amount or count.
				if form, ok := shortLeak(lower, v); ok {
					errs = append(errs, fmt.Errorf("%s: a code (%s) found %s", where, describe(v), form))
				}
				continue
			}
			if form, ok := leak(hay, lower, kind, v); ok {
				errs = append(errs, fmt.Errorf("%s: %s (%s) found %s", where, kind, describe(v), form))
			}
		}
	}
	fmt.Printf("leak scan: %d KiB of pg_dump and %d KiB of logs for %v\n", len(dump)>>10, logs.Len()>>10, kinds)
	return errors.Join(errs...)
}
