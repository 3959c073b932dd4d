// Package internal holds cross-cutting infrastructure only: the database pool
// and migrations (db), the audit trail (audit), sensitive value types
// (sensitive), the local stack's processes (devstack, pgcluster, devvault)
// and the test environment (testenv). Webhooks, SMS sending, the clock and
// ids join as the domain work needs them.
package internal
