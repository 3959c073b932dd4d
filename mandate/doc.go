// Package mandate will hold withholding mandates, their schedules, charges
// and retries, and the River workers that execute due charges exactly once
// per (mandate, period), with their Postgres store.
package mandate
