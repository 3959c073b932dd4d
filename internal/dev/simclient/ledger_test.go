package simclient

import (
	"fmt"
	"strings"
	"testing"
)

// TestLedgerEntryHidesTheCard: a ledger printed in a failure message shows
// the card masked, never its number or the agreement's.
func TestLedgerEntryHidesTheCard(t *testing.T) {
	e := LedgerEntry{BankCode: "ICBC", CardNumber: "6222028445780970884", AgreementNo: "ICBCA202701010000000002",
		OrderNo: "QP1", Amount: 5100}
	for _, s := range []string{fmt.Sprintf("%v", e), fmt.Sprintf("%+v", []LedgerEntry{e})} {
		if strings.Contains(s, e.CardNumber) || strings.Contains(s, e.AgreementNo) || !strings.Contains(s, "622202*********0884") {
			t.Error("a printed entry shows its card or agreement number, or not the masked card")
		}
	}
}
