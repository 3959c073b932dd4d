package conformance

import "github.com/quickpay/quickpay/internal/dev/simclient"

// The banksim control types, under the names the suite has always used.
type (
	Client       = simclient.Client
	Account      = simclient.Account
	AccountState = simclient.AccountState
	Agreement    = simclient.Agreement
	SMS          = simclient.SMS
	Fault        = simclient.Fault
	LedgerEntry  = simclient.LedgerEntry
	Merchant     = simclient.Merchant
	BankInfo     = simclient.BankInfo
	BIN          = simclient.BIN
	Terminated   = simclient.Terminated
)

// Ledger entry types.
const (
	EntryDebit  = simclient.EntryDebit
	EntryRefund = simclient.EntryRefund
)

// NewClient returns a control client for the banksim at baseURL.
func NewClient(baseURL string) *Client { return simclient.NewClient(baseURL) }

// Fault modes.
const (
	FaultTimeout      = simclient.FaultTimeout
	FaultError        = simclient.FaultError
	FaultProcessing   = simclient.FaultProcessing
	FaultDecline      = simclient.FaultDecline
	FaultDropResponse = simclient.FaultDropResponse
)
