package sim

import (
	"errors"
	"net/http"
)

// Terminated is an agreement a cardholder ended at the bank.
type Terminated struct {
	BankCode    string `json:"bank_code"`
	MerchantNo  string `json:"merchant_no"`
	AgreementNo string `json:"agreement_no"`
}

// ErrUnknownCard is TerminateAgreements' answer for a card no bank holds.
var ErrUnknownCard = errors.New("no such card")

// TerminateAgreements ends card's live agreements, as its holder would at
// the bank: all of them, or only merchantNo's when it is not empty. Later
// charges on them answer "agreement invalid". Each merchant registered with
// a notify URL is sent a signed agreement_terminated notice, retried like a
// callback. It returns the agreements ended, oldest first (none when none
// was live), or ErrUnknownCard.
func (s *Sim) TerminateAgreements(card, merchantNo string) ([]Terminated, error) {
	c := s.account(card)
	if c == nil {
		return nil, ErrUnknownCard
	}
	at := s.Now()
	out := []Terminated{}
	c.mu.Lock()
	for _, ag := range c.all {
		if !ag.live || (merchantNo != "" && ag.merchantNo != merchantNo) {
			continue
		}
		ag.live = false
		delete(c.live, ag.merchantNo)
		out = append(out, Terminated{BankCode: ag.bank.code, MerchantNo: ag.merchantNo, AgreementNo: ag.no})
	}
	c.mu.Unlock()
	for _, t := range out {
		s.log.Info("agreement terminated by the cardholder", "bank", t.BankCode, "merchant_no", t.MerchantNo,
			"card", maskPAN(card))
		m := s.merchant(c.bank, t.MerchantNo)
		if m == nil || m.notifyURL == "" {
			continue
		}
		n := notice{kind: "agreement_terminated"}
		n.add("type", "agreement_terminated", false)
		n.add("agreement_no", t.AgreementNo, false)
		n.add("at", bankTime(at), false)
		s.goBackground(func() { s.deliver(c.bank, t.MerchantNo, m.notifyURL, n) })
	}
	return out, nil
}

// servePostTerminate is POST /sim/agreements/terminate.
func (s *Sim) servePostTerminate(w http.ResponseWriter, r *http.Request) {
	var in struct {
		CardNumber string `json:"card_number"`
		MerchantNo string `json:"merchant_no"`
	}
	if !decodeControl(w, r, &in) {
		return
	}
	if in.CardNumber == "" {
		writeError(w, http.StatusBadRequest, "card_number: required")
		return
	}
	ended, err := s.TerminateAgreements(in.CardNumber, in.MerchantNo)
	if errors.Is(err, ErrUnknownCard) {
		writeError(w, http.StatusNotFound, "no such card")
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Terminated []Terminated `json:"terminated"`
	}{ended})
}
