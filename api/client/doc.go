// Package client is the Go client of quickpay's merchant API.
//
// Its two halves:
//
//   - quickpay.gen.go, generated from api/openapi.yaml by oapi-codegen
//     (`go generate ./api/client`; TestGeneratedIsFresh fails when it is
//     stale): the types of every request and answer, and [Raw] and
//     [ClientWithResponses], one method per route;
//   - a thin hand-written layer: [Client], which fetches and refreshes
//     access tokens, puts an Idempotency-Key on every POST, retries what
//     is safe to retry and turns every answer that is not 2xx into an
//     [*Error]; iterators over every list; and [VerifyWebhook] for the
//     Quickpay-Signature of webhook deliveries.
package client
