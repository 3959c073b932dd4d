package binding

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/quickpay/quickpay/internal/audit"
	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/webhooks"
)

// unit is one binding operation's unit of work: its transaction (or, for
// writes that need none, a batch on the pool), the statements that close
// it, its audit rows, its events, the error to answer once it has
// committed, and what to do at the bank after the commit.
//
// Every write of the package's rows goes through a unit's batch or its
// transaction, and every audit row through its collector: the rows the
// unit writes itself (audit) and those the vault writes for a decryption
// under u.ctx land in the same statement.
type unit struct {
	s      *Service
	ctx    context.Context // carries the audit collector
	tx     pgx.Tx          // nil for a batch unit (batch)
	batch  pgx.Batch
	rows   *audit.Collector
	events []webhooks.Pending
	ended  []endedCard
	// answer is returned once the unit has committed: a refusal whose
	// state change must stay (a wrong code counted, a binding failed).
	answer error
	// release is an agreement the bank made that quickpay refused: it is
	// ended at the bank once the refusal has committed (releaseAgreement).
	release *refusedAgreement
}

type endedCard struct {
	merchantID, cardID string
	status             CardStatus
}

type refusedAgreement struct {
	b           bindingRow
	agreementNo string
	why         error
}

// inTx runs fn as one unit in a transaction: fn reads and queues, the unit
// sends what it queued in one round trip, and the transaction commits.
// It returns the transaction's error, or else the unit's answer.
func (s *Service) inTx(ctx context.Context, fn func(u *unit) error) error {
	var answer error
	var release *refusedAgreement
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		cctx, rows := audit.WithCollector(ctx)
		u := &unit{s: s, ctx: cctx, tx: tx, rows: rows}
		if err := fn(u); err != nil {
			return err
		}
		answer, release = u.answer, u.release
		return u.flush()
	})
	if err != nil {
		return err
	}
	if release != nil {
		s.releaseAgreement(ctx, *release)
	}
	return answer
}

// inBatch runs fn as one unit whose writes are a single batch on the pool
// (one round trip, one implicit transaction): for writes that read
// nothing back and emit no event. Errors: the batch's.
func (s *Service) inBatch(ctx context.Context, fn func(u *unit)) error {
	cctx, rows := audit.WithCollector(ctx)
	u := &unit{s: s, ctx: cctx, rows: rows}
	fn(u)
	if len(u.events) > 0 || len(u.ended) > 0 || u.release != nil {
		panic("binding: a batch unit cannot emit events, end cards or release agreements")
	}
	return u.flush()
}

// audit holds an audit row of the operation, written with its closing
// statements.
func (u *unit) audit(merchantID, action, subject, outcome string, details map[string]any) {
	d := map[string]any{"outcome": outcome}
	for k, v := range details {
		d[k] = v
	}
	// Under the unit's collector only marshalling details can fail, and
	// they are ids, codes and outcomes.
	if err := audit.Write(u.ctx, nil, audit.Entry{MerchantID: merchantID, Actor: actor(merchantID), Action: action,
		Subject: subject, Details: d}); err != nil {
		panic(fmt.Sprintf("binding: audit row %s: %v", action, err))
	}
}

// emit holds an event, written with the change it reports.
func (u *unit) emit(e webhooks.Pending) { u.events = append(u.events, e) }

// refuse sets the error answered after commit.
func (u *unit) refuse(err error) { u.answer = err }

// save writes the binding's mutable fields and releases its claim.
func (u *unit) save(b bindingRow, bankFailure string) {
	queueUpdateBinding(&u.batch, b, bankFailure, u.s.now())
}

// fail ends the binding in status (failed or expired) with code, answers
// why after commit, and emits binding.failed for a failed one.
func (u *unit) fail(b bindingRow, status Status, code, bankFailure string, why error) Binding {
	b.Status, b.FailureCode = status, code
	if b.ExternalUserID != "" {
		// An implicit binding names a member only once bound (the bindings
		// CHECK); a failed one keeps its external user id alone.
		b.MemberID = ""
	}
	u.save(b, bankFailure)
	switch status {
	case StatusFailed:
		u.emit(bindingEvent(b, webhooks.EventBindingFailed))
	case StatusExpired:
	default:
		panic(fmt.Sprintf("binding: fail to status %q", status))
	}
	u.refuse(why)
	return b.Binding
}

// bind marks the binding bound to the card, audits and emits it.
func (u *unit) bind(b bindingRow, memberID, cardID string, details map[string]any) Binding {
	b.Status, b.MemberID, b.CardID = StatusBound, memberID, cardID
	u.save(b, "")
	d := map[string]any{"card": cardID, "member": memberID}
	for k, v := range details {
		d[k] = v
	}
	u.audit(b.MerchantID, "bind.bound", b.ID, audit.OutcomeOK, d)
	u.emit(bindingEvent(b, webhooks.EventBindingBound))
	return b.Binding
}

// endCard sets the card's new status, releasing any claim on it; the
// card's mandates end with it (Config.CardEnded) in the same transaction.
func (u *unit) endCard(c Card, status CardStatus) {
	queueSetCardStatus(&u.batch, c.MerchantID, c.ID, status, u.s.now())
	u.ended = append(u.ended, endedCard{c.MerchantID, c.ID, status})
}

// flush sends the unit's closing statements in one round trip: what it
// queued, its audit rows, and its events; then the events' deliveries and
// the ended cards' consequences, in the same transaction.
func (u *unit) flush() error {
	u.rows.Queue(&u.batch)
	if u.tx == nil {
		if u.batch.Len() == 0 {
			return nil
		}
		return u.s.pool.SendBatch(u.ctx, &u.batch).Close()
	}
	deliver, err := u.s.emit(&u.batch, u.events)
	if err != nil {
		return err
	}
	if err := u.tx.SendBatch(u.ctx, &u.batch).Close(); err != nil {
		return err
	}
	if err := deliver(u.ctx, u.tx); err != nil {
		return err
	}
	for _, e := range u.ended {
		if err := u.s.ended(u.ctx, u.tx, e.merchantID, e.cardID, string(e.status)); err != nil {
			return err
		}
	}
	return nil
}
