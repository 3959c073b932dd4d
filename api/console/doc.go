// Package console is the operator console: server-rendered pages for the
// institution's staff, on a listener of its own (DESIGN.md "Operator
// console"; docs/console.md says what operators can do).
//
// It is an echo/v4 handler, as the API and the hosted page are: the same
// request ids, middleware and error flow. Templates and the stylesheet
// are embedded; no page carries a script, every form and link works
// without one, and nothing is loaded from another origin (CSP). River's
// UI is mounted at JobsPath with a CSP of its own (JobsCSP).
//
// # Requests
//
// A request without a live operator session (operators.Store.Session)
// is sent to the login page. Every POST carries the session's CSRF token,
// checked before the handler runs; the login form carries a pre-session
// token of its own. Actions check the operator's role on their
// confirmation page and on their POST. Searches are POSTs, so that what
// is typed never enters a URL or a log; a card number is read into
// sensitive.PAN and fingerprinted in the HSM, never shown back.
//
// # Audit
//
// The console writes its own audit rows (record): console.view for every
// page that shows member or card data, console.<verb> for every action
// with its outcome, each naming the operator and the request id. They are
// written after the domain call they describe, which audits its own side
// in its own transaction.
//
// # Reads
//
// Every page reads through Views (internal/opsview): keyset pages of at
// most Config.PageSize rows, details by id, whichever merchant they
// belong to. The overview's figures are kept for Config.OverviewTTL and
// then renewed in the background while the kept ones are shown.
package console
