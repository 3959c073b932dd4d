// Package internal holds cross-cutting infrastructure only. It imports no
// domain package (binding, mandate), nothing under api and nothing under cmd;
// TestLayers keeps it so.
//
//   - db: the pool, the one transaction helper and the embedded migrations
//   - audit: the append-only audit trail
//   - sensitive: values that redact themselves
//   - clock, ids: injected time and prefixed ids
//   - limits: the abuse limits' counters, shared by every instance
//   - merchants: the tenants (credentials, scopes, request ceilings, webhook
//     endpoint); every table carries merchant_id and every layer above needs
//     the tenant, so it sits below them
//   - webhooks: the events outbox and its deliveries, which binding, mandate
//     and api all write to inside their own transactions
//   - sms: the carrier that sends quickpay's own texts
//   - dev: the local stack and the test harness together (devstack,
//     pgcluster, devvault, the bank simulator sim and its simclient, testenv)
package internal
