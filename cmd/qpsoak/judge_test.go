package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quickpay/quickpay/api/client"
	"github.com/quickpay/quickpay/internal/dev/simclient"
)

// books is a small clean set: charge ch_ok succeeded on its second attempt
// (the first failed at the bank) and was partly refunded; ch_failed was
// declined; every settled one has its event, and every event reached the
// merchant's endpoint.
func books() ([]simclient.LedgerEntry, View) {
	t0 := time.Date(2026, 1, 31, 10, 0, 0, 0, time.UTC)
	ledger := []simclient.LedgerEntry{
		{Type: simclient.EntryDebit, OrderNo: "QC2", Amount: 10_000, BankTxnNo: "T1", At: t0, CardNumber: "6222020000000000001"},
		{Type: simclient.EntryRefund, OrderNo: "QR1", RefundOf: "QC2", Amount: 4_000, BankTxnNo: "T2", At: t0.Add(time.Minute)},
	}
	v := View{
		Charges: []client.Charge{
			{Id: "ch_ok", MandateId: "mdt_a", Period: "2026-01", Amount: 10_000, AmountRefunded: 4_000,
				Status: client.ChargeStatusSucceeded, BankReference: ptr("T1"),
				Attempts: []client.ChargeAttempt{
					{OrderNo: "QC1", Amount: 10_000, Status: client.ChargeAttemptStatusFailed},
					{OrderNo: "QC2", Amount: 10_000, Status: client.ChargeAttemptStatusSucceeded},
				}},
			{Id: "ch_failed", MandateId: "mdt_b", Period: "2026-01", Amount: 5_000, Status: client.ChargeStatusFailed,
				Attempts: []client.ChargeAttempt{{OrderNo: "QC3", Amount: 5_000, Status: client.ChargeAttemptStatusFailed}}},
		},
		Refunds: []client.Refund{
			{Id: "rf_ok", ChargeId: "ch_ok", Amount: 4_000, Status: client.RefundStatusSucceeded, BankReference: ptr("T2")},
			{Id: "rf_declined", ChargeId: "ch_ok", Amount: 1_000, Status: client.RefundStatusFailed},
		},
		Events: []client.Event{
			{Id: "ev1", Type: client.ChargeSucceeded, Data: map[string]any{"charge_id": "ch_ok"}},
			{Id: "ev2", Type: client.ChargeFailed, Data: map[string]any{"charge_id": "ch_failed"}},
			{Id: "ev3", Type: client.RefundSucceeded, Data: map[string]any{"id": "rf_ok"}},
			{Id: "ev4", Type: client.RefundFailed, Data: map[string]any{"id": "rf_declined"}},
		},
		// ev2 was delivered twice: deliveries come at least once.
		Deliveries: Deliveries{Received: map[string]int{"ev1": 1, "ev2": 2, "ev3": 1, "ev4": 1}},
	}
	return ledger, v
}

func ptr[T any](v T) *T { return &v }

// delivered adds evs to the feed, each received once by the endpoint.
func (v *View) delivered(evs ...client.Event) {
	for _, e := range evs {
		v.Events = append(v.Events, e)
		v.Deliveries.Received[e.Id]++
	}
}

func TestJudge(t *testing.T) {
	tests := []struct {
		name   string
		change func(l *[]simclient.LedgerEntry, v *View)
		want   []Violation // kind and ref; Detail is not compared
	}{
		{name: "clean books", change: func(*[]simclient.LedgerEntry, *View) {}},
		{name: "an order number debited twice", change: func(l *[]simclient.LedgerEntry, _ *View) {
			e := (*l)[0]
			e.BankTxnNo, e.At = "T9", e.At.Add(time.Second)
			*l = append(*l, e)
		}, want: []Violation{{Kind: KindChargeDebitedTwice, Ref: "ch_ok"}, {Kind: KindDoubleMovement, Ref: "QC2"}}},
		{name: "a refund number refunded twice", change: func(l *[]simclient.LedgerEntry, _ *View) {
			e := (*l)[1]
			e.BankTxnNo, e.At = "T9", e.At.Add(time.Second)
			*l = append(*l, e)
		}, want: []Violation{{Kind: KindDoubleMovement, Ref: "QR1"}, {Kind: KindMovementMissing, Ref: "QR1"}}},
		{name: "two attempts of one charge both debited", change: func(l *[]simclient.LedgerEntry, _ *View) {
			*l = append(*l, simclient.LedgerEntry{Type: simclient.EntryDebit, OrderNo: "QC1", Amount: 10_000, BankTxnNo: "T0"})
		}, want: []Violation{{Kind: KindChargeDebitedTwice, Ref: "ch_ok"}}},
		{name: "a debit on a charge quickpay reports failed", change: func(l *[]simclient.LedgerEntry, _ *View) {
			*l = append(*l, simclient.LedgerEntry{Type: simclient.EntryDebit, OrderNo: "QC3", Amount: 5_000, BankTxnNo: "T5"})
		}, want: []Violation{{Kind: KindMovementMissing, Ref: "QC3"}}},
		{name: "a debit no attempt names", change: func(l *[]simclient.LedgerEntry, _ *View) {
			*l = append(*l, simclient.LedgerEntry{Type: simclient.EntryDebit, OrderNo: "QCX", Amount: 5_000, BankTxnNo: "T5"})
		}, want: []Violation{{Kind: KindMovementMissing, Ref: "QCX"}}},
		{name: "a bank refund quickpay calls failed", change: func(l *[]simclient.LedgerEntry, _ *View) {
			*l = append(*l, simclient.LedgerEntry{Type: simclient.EntryRefund, OrderNo: "QR2", RefundOf: "QC2", Amount: 1_000, BankTxnNo: "T6"})
		}, want: []Violation{{Kind: KindMovementMissing, Ref: "QR2"}}},
		{name: "a success without a debit", change: func(l *[]simclient.LedgerEntry, _ *View) {
			*l = slices.Delete(*l, 0, 1)
		}, want: []Violation{{Kind: KindPhantomSuccess, Ref: "ch_ok"}, {Kind: KindPhantomSuccess, Ref: "ch_ok"}}},
		{name: "a succeeded charge whose bank reference is another's", change: func(_ *[]simclient.LedgerEntry, v *View) {
			v.Charges[0].BankReference = ptr("T2")
		}, want: []Violation{{Kind: KindPhantomSuccess, Ref: "ch_ok"}}},
		{name: "a refund success without a movement", change: func(l *[]simclient.LedgerEntry, _ *View) {
			*l = (*l)[:1]
		}, want: []Violation{{Kind: KindPhantomSuccess, Ref: "rf_ok"}}},
		{name: "a held charge without a debit", change: func(l *[]simclient.LedgerEntry, v *View) {
			v.Charges[1].Status = client.ChargeStatusHeld
		}, want: []Violation{{Kind: KindPhantomSuccess, Ref: "ch_failed"}}},
		{name: "a held charge with its debit of another amount is reported", change: func(l *[]simclient.LedgerEntry, v *View) {
			v.Charges[1].Status = client.ChargeStatusHeld
			*l = append(*l, simclient.LedgerEntry{Type: simclient.EntryDebit, OrderNo: "QC3", Amount: 5_001, BankTxnNo: "T7"})
		}},
		{name: "a debit of another amount", change: func(l *[]simclient.LedgerEntry, _ *View) {
			(*l)[0].Amount = 10_001
		}, want: []Violation{{Kind: KindAmountDiffers, Ref: "QC2"}}},
		{name: "bank refunds above the charge", change: func(l *[]simclient.LedgerEntry, v *View) {
			(*l)[1].Amount = 10_001
			v.Refunds[0].Amount = 10_001
		}, want: []Violation{{Kind: KindRefundOverCharge, Ref: "QC2"}, {Kind: KindRefundOverCharge, Ref: "ch_ok"}}},
		{name: "quickpay shows more refunded than charged", change: func(_ *[]simclient.LedgerEntry, v *View) {
			v.Charges[0].AmountRefunded = 10_001
		}, want: []Violation{{Kind: KindRefundOverCharge, Ref: "ch_ok"}}},
		{name: "a charge left processing and one unknown", change: func(_ *[]simclient.LedgerEntry, v *View) {
			v.Charges[1].Status = client.ChargeStatusUnknown
			v.Charges = append(v.Charges, client.Charge{Id: "ch_proc", Amount: 1, Status: client.ChargeStatusProcessing})
		}, want: []Violation{{Kind: KindLeftOpen, Ref: "ch_failed"}, {Kind: KindLeftOpen, Ref: "ch_proc"}}},
		{name: "an attempt left unknown under a settled charge", change: func(_ *[]simclient.LedgerEntry, v *View) {
			v.Charges[0].Attempts[0].Status = client.ChargeAttemptStatusUnknown
		}, want: []Violation{{Kind: KindLeftOpen, Ref: "QC1"}}},
		{name: "a refund left pending", change: func(_ *[]simclient.LedgerEntry, v *View) {
			v.Refunds[1].Status = client.RefundStatusPending
		}, want: []Violation{{Kind: KindLeftOpen, Ref: "rf_declined"}}},
		{name: "settled without events", change: func(_ *[]simclient.LedgerEntry, v *View) {
			v.Events = v.Events[2:3]
			v.Deliveries.Received = map[string]int{"ev3": 1}
		}, want: []Violation{{Kind: KindEventMissing, Ref: "ch_failed"}, {Kind: KindEventMissing, Ref: "ch_ok"},
			{Kind: KindEventMissing, Ref: "rf_declined"}}},
		{name: "an event of the wrong outcome does not count", change: func(_ *[]simclient.LedgerEntry, v *View) {
			v.Events[0].Type = client.ChargeFailed
		}, want: []Violation{{Kind: KindEventMissing, Ref: "ch_ok"}}},
		{name: "a succeeded charge whose bank reference is another charge's debit", change: func(l *[]simclient.LedgerEntry, v *View) {
			*l = append(*l, simclient.LedgerEntry{Type: simclient.EntryDebit, OrderNo: "QC4", Amount: 7_000, BankTxnNo: "T4"})
			v.Charges = append(v.Charges, client.Charge{Id: "ch_two", MandateId: "mdt_c", Period: "2026-01", Amount: 7_000,
				Status: client.ChargeStatusSucceeded, BankReference: ptr("T4"),
				Attempts: []client.ChargeAttempt{{OrderNo: "QC4", Amount: 7_000, Status: client.ChargeAttemptStatusSucceeded}}})
			v.delivered(client.Event{Id: "ev5", Type: client.ChargeSucceeded, Data: map[string]any{"charge_id": "ch_two"}})
			v.Charges[0].BankReference = ptr("T4")
		}, want: []Violation{{Kind: KindPhantomSuccess, Ref: "ch_ok"}}},
		{name: "two charges of one mandate for one period", change: func(_ *[]simclient.LedgerEntry, v *View) {
			v.Charges = append(v.Charges, client.Charge{Id: "ch_dup", MandateId: "mdt_a", Period: "2026-01", Amount: 10_000,
				Status: client.ChargeStatusFailed})
			v.delivered(client.Event{Id: "ev5", Type: client.ChargeFailed, Data: map[string]any{"charge_id": "ch_dup"}})
		}, want: []Violation{{Kind: KindDuplicateCharge, Ref: "ch_dup"}}},
		{name: "one success evented twice", change: func(_ *[]simclient.LedgerEntry, v *View) {
			v.delivered(client.Event{Id: "ev5", Type: client.ChargeSucceeded, Data: map[string]any{"charge_id": "ch_ok"}},
				client.Event{Id: "ev6", Type: client.RefundSucceeded, Data: map[string]any{"id": "rf_ok"}})
		}, want: []Violation{{Kind: KindEventMissing, Ref: "ch_ok"}, {Kind: KindEventMissing, Ref: "rf_ok"}}},
		{name: "an event never delivered", change: func(_ *[]simclient.LedgerEntry, v *View) {
			delete(v.Deliveries.Received, "ev3")
		}, want: []Violation{{Kind: KindEventUndelivered, Ref: "ev3"}}},
		{name: "a delivery of an event the feed does not hold", change: func(_ *[]simclient.LedgerEntry, v *View) {
			v.Deliveries.Received["ev9"] = 1
		}, want: []Violation{{Kind: KindDeliveryUntrusted, Ref: "ev9"}}},
		{name: "a delivery whose signature did not verify", change: func(_ *[]simclient.LedgerEntry, v *View) {
			v.Deliveries.BadSignatures = 1
		}, want: []Violation{{Kind: KindDeliveryUntrusted, Ref: "signature"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ledger, v := books()
			tt.change(&ledger, &v)
			got := Judge(ledger, v)
			var kinds []Violation
			for _, g := range got {
				if g.Detail == "" {
					t.Errorf("violation %s %s has no detail", g.Kind, g.Ref)
				}
				kinds = append(kinds, Violation{Kind: g.Kind, Ref: g.Ref})
			}
			if !slices.Equal(kinds, tt.want) {
				t.Errorf("Judge = %v\nwant kinds and refs %v", got, tt.want)
			}
		})
	}
}

// TestJudgeNamesNoCard: a violation about a ledger entry never carries the
// entry's card number.
func TestJudgeNamesNoCard(t *testing.T) {
	ledger, v := books()
	ledger[0].OrderNo = "QCX" // unknown to quickpay: reported with its entry's details
	got := Judge(ledger, v)
	if len(got) == 0 {
		t.Fatal("no violation for an unknown debit")
	}
	for _, g := range got {
		for _, s := range []string{g.Kind, g.Ref, g.Detail} {
			if strings.Contains(s, ledger[0].CardNumber) {
				t.Errorf("violation %s %s holds the card number", g.Kind, g.Ref)
			}
		}
	}
}

// TestScanForSecrets: a file holding a bound card or ID number in clear is
// a violation naming the file; masked numbers and other digits are not.
func TestScanForSecrets(t *testing.T) {
	dir := t.TempDir()
	const pan, id = "6222021234567890128", "11010119900307123X"
	files := map[string]string{
		"logs/clean.log": `{"card":"622202*********0128","order":"QC123456789012345678"}`,
		"logs/pan.log":   `{"card":"` + pan + `"}`,
		"pg/base/16384":  "\x00\x01" + id + "\x00",
		"bin/quickpay":   pan, // the binaries are not evidence
		"figures.json":   `{"charges":1234567890123456}`,
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := scanForSecrets(dir, map[string]bool{pan: true, id: true})
	if err != nil {
		t.Fatal(err)
	}
	var refs []string
	for _, v := range got {
		if v.Kind != KindSecretInClear || strings.Contains(v.Detail, pan) || strings.Contains(v.Detail, id) {
			t.Errorf("violation %+v", v)
		}
		refs = append(refs, v.Ref)
	}
	if want := []string{"logs/pan.log", "pg/base/16384"}; !slices.Equal(refs, want) {
		t.Errorf("files with secrets = %v, want %v", refs, want)
	}
}
