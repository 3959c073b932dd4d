package console

import (
	"context"

	"github.com/quickpay/quickpay/api/idempotency"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/merchants"
	"github.com/quickpay/quickpay/internal/operators"
	"github.com/quickpay/quickpay/mandate"
	"github.com/quickpay/quickpay/vaultkeys"
)

// What the console needs of the packages it calls; cmd/quickpay asserts
// the real types satisfy each.

// Operators logs operators in and out and finds their sessions
// (*operators.Store).
type Operators interface {
	Login(ctx context.Context, name, password, code, source string) (operators.Session, string, error)
	Session(ctx context.Context, token string) (operators.Session, error)
	PeekSession(ctx context.Context, token string) (operators.Session, error)
	Logout(ctx context.Context, token string) error
}

// Merchants are the admin's merchant actions (*merchants.Store). Create
// audits under merchants.WithActor's actor.
type Merchants interface {
	Create(ctx context.Context, name string, scopes []string) (merchants.Merchant, string, error)
	Disable(ctx context.Context, id, actor string) error
	Enable(ctx context.Context, id, actor string) error
	RotateSecret(ctx context.Context, id, actor string) (string, error)
}

// Mandates are the operator's money actions on mandates and charges
// (*mandate.Service).
type Mandates interface {
	CreateRefund(ctx context.Context, merchantID, chargeID string, in mandate.RefundInput) (mandate.Refund, error)
	Cancel(ctx context.Context, merchantID, id string) (mandate.Mandate, error)
	SettleByQuery(ctx context.Context, merchantID, chargeID, actor string) (mandate.Charge, error)
}

// Bindings releases a bank agreement (*binding.Service).
type Bindings interface {
	ReleaseAgreement(ctx context.Context, merchantID, bindingID, actor string) (binding.Binding, error)
}

// Webhooks redelivers an event (*webhooks.Service).
type Webhooks interface {
	Redeliver(ctx context.Context, merchantID, eventID, actor string) error
}

// Vault fingerprints a typed card number in the HSM and lists the key
// versions (*vaultkeys.Vault).
type Vault interface {
	Fingerprints(ctx context.Context, domain string, value []byte) ([][]byte, error)
	List(ctx context.Context) ([]vaultkeys.KeyInfo, error)
}

// OnceKeys keeps the one-time keys of refund forms (*idempotency.Store):
// a form submitted twice claims its key twice, and the second claim finds
// the first's answer.
type OnceKeys interface {
	NewRequest(ctx context.Context, merchantID, key, method, path string, body []byte) (idempotency.Request, error)
	Claim(ctx context.Context, r idempotency.Request) (idempotency.Claim, error)
	Save(ctx context.Context, r idempotency.Request, c idempotency.Claim, resp idempotency.Response) (bool, error)
	Release(ctx context.Context, r idempotency.Request, c idempotency.Claim) error
}
