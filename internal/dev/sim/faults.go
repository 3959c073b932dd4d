package sim

import (
	"errors"
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// FaultMode is how a Fault makes an operation misbehave.
type FaultMode string

// Fault modes (POST /sim/faults). AddFault refuses any other.
const (
	FaultTimeout      FaultMode = "timeout"
	FaultError        FaultMode = "error"
	FaultProcessing   FaultMode = "processing"
	FaultDecline      FaultMode = "decline"
	FaultDropResponse FaultMode = "drop_response"
	// FaultAmount makes a charge debit, and every answer about it (the
	// charge's, query, callback, statement, ledger) name, another amount
	// than the one sent: Fault.Amount, or the sent amount plus 1 fen. A
	// bank's error quickpay must hold for operators, never book.
	FaultAmount FaultMode = "amount"
)

// Fault makes the next Count requests of one operation at one bank
// misbehave. Count 0 means until the faults are cleared.
type Fault struct {
	ID        int64     `json:"id"`
	BankCode  string    `json:"bank_code"`
	Operation string    `json:"operation"`
	Mode      FaultMode `json:"mode"`
	Code      string    `json:"code,omitempty"`
	Count     int       `json:"count"`
	Apply     bool      `json:"apply,omitempty"`
	// Amount (mode amount) is the fen the bank debits instead of the sent
	// amount; 0: the sent amount plus 1.
	Amount int64 `json:"amount,omitempty"`

	op     operation
	reason reason
}

// faultSet holds the armed faults, oldest first. n lets the request path
// skip the lock when none is armed.
type faultSet struct {
	mu     sync.Mutex
	list   []*Fault
	n      atomic.Int32
	nextID int64
}

// AddFault arms a fault and returns it with its ID. Code names the decline
// (a reason name such as "insufficient_funds" or the bank's own code);
// "processing" applies to charge and refund only, "amount" to charge only; Count 0 lasts until ClearFaults
// (POST /sim/faults turns an absent count into 1). It fails for an unknown
// bank, operation or mode, a decline without a known code, "processing" or
// "amount" on another operation, or a negative Count.
func (s *Sim) AddFault(f Fault) (Fault, error) {
	b := s.banks[f.BankCode]
	if b == nil {
		return Fault{}, errors.New("bank_code: unknown bank")
	}
	op, ok := parseOp(f.Operation)
	if !ok {
		return Fault{}, errors.New("operation: want one of bind_apply, bind_resend, bind_confirm, charge, query, unbind, statement, refund")
	}
	f.op = op
	switch f.Mode {
	case FaultTimeout, FaultError, FaultDropResponse:
	case FaultProcessing:
		if op != opCharge && op != opRefund {
			return Fault{}, errors.New("mode processing: charge and refund only")
		}
	case FaultAmount:
		if op != opCharge {
			return Fault{}, errors.New("mode amount: charge only")
		}
		if f.Amount < 0 {
			return Fault{}, errors.New("amount: want positive fen, or 0 for the sent amount plus 1")
		}
	case FaultDecline:
		r, ok := parseReason(f.Code)
		if !ok {
			return Fault{}, errors.New("code: want a result reason (e.g. insufficient_funds) or a bank code (e.g. 4001)")
		}
		f.reason = r
	default:
		return Fault{}, errors.New("mode: want timeout, error, processing, decline, drop_response or amount")
	}
	if f.Count < 0 {
		return Fault{}, errors.New("count: want 0 (until cleared) or more")
	}
	fs := &s.faults
	fs.mu.Lock()
	fs.nextID++
	f.ID = fs.nextID
	fs.list = append(fs.list, &f)
	fs.n.Store(int32(len(fs.list)))
	fs.mu.Unlock()
	s.log.Info("fault armed", "bank", f.BankCode, "op", f.Operation, "mode", f.Mode, "count", f.Count)
	return f, nil
}

// ClearFaults disarms the faults of a bank and operation; empty strings
// match all.
func (s *Sim) ClearFaults(bankCode, operation string) {
	fs := &s.faults
	fs.mu.Lock()
	kept := fs.list[:0]
	for _, f := range fs.list {
		if (bankCode != "" && f.BankCode != bankCode) || (operation != "" && f.Operation != operation) {
			kept = append(kept, f)
		}
	}
	clear(fs.list[len(kept):])
	fs.list = kept
	fs.n.Store(int32(len(kept)))
	fs.mu.Unlock()
	s.log.Info("faults cleared", "bank", bankCode, "op", operation)
}

func (fs *faultSet) snapshot() []Fault {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	out := make([]Fault, len(fs.list))
	for i, f := range fs.list {
		out[i] = *f
	}
	return out
}

// take consumes one use of the oldest fault armed for bank and op.
func (fs *faultSet) take(bankCode string, op operation) (Fault, bool) {
	if fs.n.Load() == 0 {
		return Fault{}, false
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for i, f := range fs.list {
		if f.BankCode != bankCode || f.op != op {
			continue
		}
		used := *f
		if f.Count > 0 {
			f.Count--
			if f.Count == 0 {
				fs.list = slices.Delete(fs.list, i, i+1)
				fs.n.Store(int32(len(fs.list)))
			}
		}
		return used, true
	}
	return Fault{}, false
}

// nonceCache remembers request nonces per bank and merchant for at least
// nonceWindow, in bounded memory: each shard keeps a current and a previous
// generation of hashed nonces and starts a new generation every
// nonceWindow, or early when the current one is full (only under more than
// nonceShards*nonceGenCap requests per window, when the oldest are
// forgotten sooner).
type nonceCache struct {
	seed   maphash.Seed
	shards [nonceShards]nonceShard
}

const (
	nonceWindow = 10 * time.Minute
	nonceShards = 32
	nonceGenCap = 1 << 16
)

type nonceShard struct {
	mu        sync.Mutex
	cur, prev map[uint64]struct{}
	curStart  time.Time
}

func (c *nonceCache) init(seed maphash.Seed) { c.seed = seed }

// add records a nonce and reports whether it was fresh.
func (c *nonceCache) add(bankCode, merchantNo, nonce string, now time.Time) bool {
	var h maphash.Hash
	h.SetSeed(c.seed)
	_, _ = h.WriteString(bankCode)
	_ = h.WriteByte(0)
	_, _ = h.WriteString(merchantNo)
	_ = h.WriteByte(0)
	_, _ = h.WriteString(nonce)
	k := h.Sum64()
	sh := &c.shards[k%nonceShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	age := now.Sub(sh.curStart)
	switch {
	case sh.cur == nil || age >= 2*nonceWindow:
		sh.prev, sh.cur, sh.curStart = nil, make(map[uint64]struct{}), now
	case age >= nonceWindow || len(sh.cur) >= nonceGenCap:
		sh.prev, sh.cur, sh.curStart = sh.cur, make(map[uint64]struct{}, len(sh.cur)), now
	case age < 0: // the clock was set back: restart the window, forget nothing
		sh.curStart = now
	}
	if _, seen := sh.cur[k]; seen {
		return false
	}
	if _, seen := sh.prev[k]; seen {
		return false
	}
	sh.cur[k] = struct{}{}
	return true
}
