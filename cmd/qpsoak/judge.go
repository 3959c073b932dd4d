package main

import (
	"fmt"
	"sort"

	"github.com/quickpay/quickpay/api/client"
	"github.com/quickpay/quickpay/internal/dev/simclient"
)

// View is quickpay's side of the books as its merchant API shows them: every
// charge (with its attempts' order numbers), refund and event of the soak's
// merchant.
type View struct {
	Charges []client.Charge `json:"charges"`
	Refunds []client.Refund `json:"refunds"`
	Events  []client.Event  `json:"events"`
	// Deliveries are what the merchant's webhook endpoint received.
	Deliveries Deliveries `json:"deliveries"`
}

// Deliveries are the webhook deliveries the soak's endpoint received.
type Deliveries struct {
	// Received counts, by event id, the deliveries whose signature held.
	Received map[string]int `json:"received"`
	// BadSignatures counts deliveries whose Quickpay-Signature did not
	// verify against the endpoint's secret.
	BadSignatures int `json:"bad_signatures"`
}

// Violation kinds: each is money the bank and quickpay disagree on, or work
// left unfinished after settling.
const (
	// An order number the bank debited twice, or a refund number it
	// refunded twice.
	KindDoubleMovement = "double_movement"
	// One charge debited by more than one of its attempts.
	KindChargeDebitedTwice = "charge_debited_twice"
	// A bank movement quickpay reports failed or does not know.
	KindMovementMissing = "movement_missing"
	// A success in quickpay with no bank movement behind it.
	KindPhantomSuccess = "phantom_success"
	// A movement of another amount than quickpay's (a held charge excepted:
	// that is how quickpay reports it).
	KindAmountDiffers = "amount_differs"
	// Refunds of a charge above its amount, at the bank or in quickpay.
	KindRefundOverCharge = "refund_over_charge"
	// A charge or one of its attempts processing or unknown, a refund
	// pending.
	KindLeftOpen = "left_open"
	// A settled charge or refund without its event in the feed, or with
	// more than one.
	KindEventMissing = "event_missing"
	// Two charges of one mandate for one period: the mandate would be
	// charged twice however each charge went.
	KindDuplicateCharge = "duplicate_charge"
	// An event of the feed the merchant's endpoint never received.
	KindEventUndelivered = "event_undelivered"
	// A delivery the merchant could not trust: an event the feed does not
	// hold, or a signature that does not verify.
	KindDeliveryUntrusted = "delivery_untrusted"
)

// Violation is one disagreement; Ref names the order number, refund or
// charge it is about. No card data: ledger entries carry card numbers, and
// a violation never copies one.
type Violation struct {
	Kind   string `json:"kind"`
	Ref    string `json:"ref"`
	Detail string `json:"detail"`
}

func (v Violation) String() string { return v.Kind + " " + v.Ref + ": " + v.Detail }

// Judge compares the bank's ledger with quickpay's view after settling and
// returns every violation, sorted by kind and ref; none means the books
// agree. It is a pure function of its inputs.
func Judge(ledger []simclient.LedgerEntry, v View) []Violation {
	var out []Violation
	add := func(kind, ref, format string, args ...any) {
		out = append(out, Violation{Kind: kind, Ref: ref, Detail: fmt.Sprintf(format, args...)})
	}

	// quickpay's side, indexed.
	type attemptOf struct {
		charge *client.Charge
		status client.ChargeAttemptStatus
	}
	byOrder := map[string]attemptOf{}
	byChargeID := map[string]*client.Charge{}
	for i := range v.Charges {
		c := &v.Charges[i]
		byChargeID[c.Id] = c
		for _, a := range c.Attempts {
			byOrder[a.OrderNo] = attemptOf{c, a.Status}
		}
	}
	refundByTxn := map[string]*client.Refund{}
	for i := range v.Refunds {
		r := &v.Refunds[i]
		if r.Status == client.RefundStatusSucceeded && r.BankReference != nil {
			refundByTxn[*r.BankReference] = r
		}
	}

	// The bank's side: every movement once, known to quickpay as what it is.
	debitsOf := map[string][]simclient.LedgerEntry{} // charge id → its debits
	refundsOf := map[string]int64{}                  // debit order number → fen refunded at the bank
	seen := map[string]int{}                         // type/order number → movements
	refundedTxn := map[string]bool{}                 // the bank's refunds' txn numbers
	for _, e := range ledgerSorted(ledger) {
		key := e.Type + "/" + e.OrderNo
		seen[key]++
		if seen[key] == 2 {
			add(KindDoubleMovement, e.OrderNo, "the bank made a second %s under one number", e.Type)
		}
		switch e.Type {
		case simclient.EntryDebit:
			a, ok := byOrder[e.OrderNo]
			if !ok {
				add(KindMovementMissing, e.OrderNo, "a debit of %d fen that no charge attempt names", e.Amount)
				continue
			}
			debitsOf[a.charge.Id] = append(debitsOf[a.charge.Id], e)
			switch a.charge.Status {
			case client.ChargeStatusSucceeded:
				if e.Amount != a.charge.Amount {
					add(KindAmountDiffers, e.OrderNo, "the bank debited %d fen for charge %s of %d", e.Amount, a.charge.Id, a.charge.Amount)
				}
			case client.ChargeStatusHeld:
				// Reported: the bank named another amount and operators hold it.
			default:
				add(KindMovementMissing, e.OrderNo, "the bank debited %d fen; charge %s is %s (attempt %s)",
					e.Amount, a.charge.Id, a.charge.Status, a.status)
			}
		case simclient.EntryRefund:
			refundedTxn[e.BankTxnNo] = true
			refundsOf[e.RefundOf] += e.Amount
			r, ok := refundByTxn[e.BankTxnNo]
			if !ok {
				add(KindMovementMissing, e.OrderNo, "the bank refunded %d fen of %s; quickpay has no succeeded refund with its bank reference",
					e.Amount, e.RefundOf)
				continue
			}
			if r.Amount != e.Amount {
				add(KindAmountDiffers, e.OrderNo, "the bank refunded %d fen for refund %s of %d", e.Amount, r.Id, r.Amount)
			}
			if a, ok := byOrder[e.RefundOf]; !ok || a.charge.Id != r.ChargeId {
				add(KindMovementMissing, e.OrderNo, "the bank refunded debit %s, which is not refund %s's charge %s", e.RefundOf, r.Id, r.ChargeId)
			}
		default:
			add(KindMovementMissing, e.OrderNo, "a ledger entry of type %q", e.Type)
		}
	}
	for order, fen := range refundsOf {
		if a, ok := byOrder[order]; ok && fen > a.charge.Amount {
			add(KindRefundOverCharge, order, "the bank refunded %d fen of charge %s of %d", fen, a.charge.Id, a.charge.Amount)
		}
	}

	// One charge per mandate and period.
	periods := map[string]string{}
	for _, c := range v.Charges {
		k := c.MandateId + "/" + c.Period
		if first, ok := periods[k]; ok {
			add(KindDuplicateCharge, c.Id, "mandate %s has charge %s for period %s already", c.MandateId, first, c.Period)
			continue
		}
		periods[k] = c.Id
	}

	// Every charge: at most one debit, one behind each success, none left open.
	for i := range v.Charges {
		c := &v.Charges[i]
		debits := debitsOf[c.Id]
		if len(debits) > 1 {
			add(KindChargeDebitedTwice, c.Id, "%d debits for one charge", len(debits))
		}
		switch c.Status {
		case client.ChargeStatusSucceeded, client.ChargeStatusHeld:
			if len(debits) == 0 {
				add(KindPhantomSuccess, c.Id, "charge is %s; the bank debited none of its %d attempts", c.Status, len(c.Attempts))
			}
			if c.Status == client.ChargeStatusSucceeded && (c.BankReference == nil || !debitedUnder(debits, *c.BankReference)) {
				add(KindPhantomSuccess, c.Id, "charge's bank reference is no debit of its attempts in the ledger")
			}
		case client.ChargeStatusProcessing, client.ChargeStatusUnknown:
			add(KindLeftOpen, c.Id, "charge is still %s", c.Status)
		}
		for _, a := range c.Attempts {
			if a.Status == client.ChargeAttemptStatusProcessing || a.Status == client.ChargeAttemptStatusUnknown {
				add(KindLeftOpen, a.OrderNo, "attempt of charge %s (%s) is still %s", c.Id, c.Status, a.Status)
			}
		}
		if c.AmountRefunded > c.Amount {
			add(KindRefundOverCharge, c.Id, "quickpay shows %d fen refunded of %d", c.AmountRefunded, c.Amount)
		}
	}

	// Every refund: a movement behind each success, none pending, never
	// more than the charge.
	refunded := map[string]int64{}
	for i := range v.Refunds {
		r := &v.Refunds[i]
		switch r.Status {
		case client.RefundStatusSucceeded:
			refunded[r.ChargeId] += r.Amount
			if r.BankReference == nil || !refundedTxn[*r.BankReference] {
				add(KindPhantomSuccess, r.Id, "refund succeeded; the bank's ledger has no refund with its bank reference")
			}
		case client.RefundStatusPending:
			add(KindLeftOpen, r.Id, "refund is still pending")
		}
	}
	for id, fen := range refunded {
		c, ok := byChargeID[id]
		if !ok {
			add(KindMovementMissing, id, "succeeded refunds of %d fen name a charge quickpay does not list", fen)
			continue
		}
		if fen > c.Amount {
			add(KindRefundOverCharge, id, "quickpay's succeeded refunds total %d fen of a charge of %d", fen, c.Amount)
		}
	}

	// Every settled charge and refund has its event.
	evented := map[string]int{}
	for _, e := range v.Events {
		var id any
		switch e.Type {
		case client.ChargeSucceeded, client.ChargeFailed:
			id = e.Data["charge_id"]
		case client.RefundSucceeded, client.RefundFailed:
			id = e.Data["id"]
		default:
			continue
		}
		if s, ok := id.(string); ok {
			evented[string(e.Type)+"/"+s]++
		}
	}
	for _, c := range v.Charges {
		var want client.EventType
		switch c.Status {
		case client.ChargeStatusSucceeded:
			want = client.ChargeSucceeded
		case client.ChargeStatusFailed:
			want = client.ChargeFailed
		default:
			continue
		}
		switch n := evented[string(want)+"/"+c.Id]; {
		case n == 0:
			add(KindEventMissing, c.Id, "charge is %s; no %s event", c.Status, want)
		case n > 1 && want == client.ChargeSucceeded:
			add(KindEventMissing, c.Id, "%d %s events for one charge", n, want)
		}
	}
	for _, r := range v.Refunds {
		var want client.EventType
		switch r.Status {
		case client.RefundStatusSucceeded:
			want = client.RefundSucceeded
		case client.RefundStatusFailed:
			want = client.RefundFailed
		default:
			continue
		}
		switch n := evented[string(want)+"/"+r.Id]; {
		case n == 0:
			add(KindEventMissing, r.Id, "refund is %s; no %s event", r.Status, want)
		case n > 1 && want == client.RefundSucceeded:
			add(KindEventMissing, r.Id, "%d %s events for one refund", n, want)
		}
	}

	// Every event reached the merchant's endpoint (at least once), signed,
	// and nothing else did.
	inFeed := map[string]bool{}
	for _, e := range v.Events {
		inFeed[e.Id] = true
		if v.Deliveries.Received[e.Id] == 0 {
			add(KindEventUndelivered, e.Id, "the endpoint never received this %s event", e.Type)
		}
	}
	for id, n := range v.Deliveries.Received {
		if !inFeed[id] {
			add(KindDeliveryUntrusted, id, "the endpoint received %d deliveries of an event the feed does not hold", n)
		}
	}
	if n := v.Deliveries.BadSignatures; n > 0 {
		add(KindDeliveryUntrusted, "signature", "%d deliveries whose signature did not verify", n)
	}

	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Kind != out[j].Kind {
			return out[i].Kind < out[j].Kind
		}
		return out[i].Ref < out[j].Ref
	})
	return out
}

// ledgerSorted is the ledger in the bank's order (by time, then order
// number), so that "second" in a violation means the later movement.
func ledgerSorted(ledger []simclient.LedgerEntry) []simclient.LedgerEntry {
	l := append([]simclient.LedgerEntry(nil), ledger...)
	sort.SliceStable(l, func(i, j int) bool {
		if !l[i].At.Equal(l[j].At) {
			return l[i].At.Before(l[j].At)
		}
		return l[i].OrderNo < l[j].OrderNo
	})
	return l
}

// debitedUnder reports whether one of debits (a charge's own) carries the
// bank reference ref.
func debitedUnder(debits []simclient.LedgerEntry, ref string) bool {
	for _, e := range debits {
		if e.BankTxnNo == ref {
			return true
		}
	}
	return false
}
