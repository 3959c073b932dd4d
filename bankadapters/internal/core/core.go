// Package core implements the Bank operations once, over a Codec that knows
// a dialect's encoding and signatures and a table of its codes. The dialect
// packages (jsonhmac, formrsa) supply those two and nothing else of the
// operations, so the operations cannot drift apart.
package core

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/bankadapters/internal/wire"
	"github.com/quickpay/quickpay/internal/sensitive"
)

// Codec is a dialect: how a request is encoded and signed, and how an
// answer is verified and read.
type Codec interface {
	// Encode returns a signed request for the fields; it is called again for
	// every attempt, so each gets its own timestamp and nonce.
	Encode(ctx context.Context, path string, fields map[string]string) (wire.Request, error)
	// Decode verifies the answer's signature and returns its fields, with
	// the result code under "code" and the message under "message".
	Decode(resp *wire.Response) (map[string]string, error)
	// Entries reads a statement's entries field.
	Entries(raw string) ([]bankadapters.StatementEntry, error)
}

// Adapter is one bank over one codec.
type Adapter struct {
	Code, BaseURL string
	Caller        *wire.Caller
	Codec         Codec
	Codes         map[string]bankadapters.CodeClass // the dialect's codes
	Success       string                            // its success code
	OrderNotFound string                            // its "no such order" code
}

func (a *Adapter) call(ctx context.Context, op string, idempotent bool, fields map[string]string) (map[string]string, error) {
	path := "/banks/" + a.Code + "/" + op
	resp, err := a.Caller.Do(ctx, a.BaseURL, op, idempotent, func(actx context.Context) (wire.Request, error) {
		return a.Codec.Encode(actx, path, fields)
	})
	if err != nil {
		return nil, a.unavailable(op, err)
	}
	ans, err := a.Codec.Decode(resp)
	if err != nil {
		return nil, a.unavailable(op, fmt.Errorf("HTTP %d: %w", resp.Status, err))
	}
	if ans["code"] == "" {
		return nil, a.unavailable(op, fmt.Errorf("HTTP %d: answer has no result code", resp.Status))
	}
	return ans, nil
}

func (a *Adapter) unavailable(op string, err error) error {
	return &bankadapters.Error{Bank: a.Code, Op: op, Outcome: bankadapters.OutcomeUnavailable, Err: err}
}

func (a *Adapter) refusal(op string, ans map[string]string) error {
	c, ok := a.Codes[ans["code"]]
	if !ok || c.Outcome == bankadapters.OutcomeSuccess {
		c = bankadapters.CodeClass{Outcome: bankadapters.OutcomeUnavailable}
	}
	return &bankadapters.Error{Bank: a.Code, Op: op, Outcome: c.Outcome, Field: c.Field, Reason: c.Reason,
		Code: ans["code"], Message: ans["message"]}
}

// BindApply implements bankadapters.Bank.
func (a *Adapter) BindApply(ctx context.Context, req bankadapters.BindRequest) (bankadapters.BindSession, error) {
	ans, err := a.call(ctx, "bind_apply", false, map[string]string{
		"request_no":  req.RequestNo,
		"card_no":     req.CardNumber.Reveal(),
		"holder_name": req.HolderName,
		"id_type":     "01",
		"id_no":       req.IDNumber.Reveal(),
		"phone":       req.Phone,
		"expiry":      req.Expiry.Reveal(),
		"cvv2":        req.CVV2.Reveal(),
	})
	if err != nil {
		return bankadapters.BindSession{}, err
	}
	if ans["code"] != a.Success || ans["bind_ref"] == "" {
		return bankadapters.BindSession{}, a.refusal("bind_apply", ans)
	}
	return bankadapters.BindSession{BindRef: ans["bind_ref"]}, nil
}

// BindResend implements bankadapters.Bank.
func (a *Adapter) BindResend(ctx context.Context, bindRef string) error {
	ans, err := a.call(ctx, "bind_resend", false, map[string]string{"bind_ref": bindRef})
	if err != nil {
		return err
	}
	if ans["code"] != a.Success {
		return a.refusal("bind_resend", ans)
	}
	return nil
}

// BindConfirm implements bankadapters.Bank.
func (a *Adapter) BindConfirm(ctx context.Context, bindRef string, otp sensitive.OTP) (string, error) {
	ans, err := a.call(ctx, "bind_confirm", false, map[string]string{"bind_ref": bindRef, "otp": otp.Reveal()})
	if err != nil {
		return "", err
	}
	if ans["code"] != a.Success || ans["agreement_no"] == "" {
		return "", a.refusal("bind_confirm", ans)
	}
	return ans["agreement_no"], nil
}

// Charge implements bankadapters.Bank. It is sent once: a lost answer is an
// unknown result for the caller to settle by Query on the same order.
func (a *Adapter) Charge(ctx context.Context, req bankadapters.ChargeRequest) (bankadapters.ChargeResult, error) {
	if err := bankadapters.ValidateCharge(req); err != nil {
		return bankadapters.ChargeResult{}, err
	}
	ans, err := a.call(ctx, "charge", false, map[string]string{
		"order_no": req.OrderNo, "agreement_no": req.AgreementNo, "amount": strconv.FormatInt(req.Amount, 10),
		"currency": req.Currency, "description": req.Description, "notify_url": req.NotifyURL,
	})
	if err != nil {
		return bankadapters.UnknownResult(req, err), nil
	}
	// A signed answer that does not name this order (another operation's,
	// replayed) says nothing about this debit.
	if ans["order_no"] != req.OrderNo {
		return bankadapters.UnknownResult(req, fmt.Errorf("answer does not name this order")), nil
	}
	return a.Result(req.OrderNo, req.Amount, ans["code"], ans), nil
}

// Result reads a debit's outcome from its code and the answer's fields.
func (a *Adapter) Result(orderNo string, amount int64, code string, ans map[string]string) bankadapters.ChargeResult {
	r := bankadapters.ChargeResult{OrderNo: orderNo, Amount: amount, BankTxnNo: ans["bank_txn_no"]}
	if n, err := strconv.ParseInt(ans["amount"], 10, 64); err == nil && n > 0 {
		r.Amount = n
	}
	if t, err := time.Parse(time.RFC3339, ans["finished_at"]); err == nil {
		r.FinishedAt = t
	}
	return bankadapters.Classify(r, a.Codes, code, ans["status"])
}

// Query implements bankadapters.Bank.
func (a *Adapter) Query(ctx context.Context, orderNo string) (bankadapters.ChargeResult, error) {
	ans, err := a.call(ctx, "query", true, map[string]string{"order_no": orderNo})
	if err != nil {
		return bankadapters.ChargeResult{}, err
	}
	switch {
	case ans["code"] == a.OrderNotFound:
		return bankadapters.ChargeResult{}, fmt.Errorf("%s query: %w", a.Code, bankadapters.ErrOrderNotFound)
	case ans["code"] != a.Success:
		return bankadapters.ChargeResult{}, a.refusal("query", ans)
	case ans["order_no"] != orderNo:
		return bankadapters.ChargeResult{}, a.unavailable("query", errors.New("answer names another order"))
	}
	switch ans["type"] {
	case "", typeDebit: // a bank that does not say the type answers of debits
	case typeRefund:
		return bankadapters.ChargeResult{}, a.unavailable("query", errors.New("the order number is a refund's, not a debit's"))
	default:
		return bankadapters.ChargeResult{}, a.unavailable("query", errors.New("answer is of an unknown type"))
	}
	return a.Result(orderNo, 0, ans["result_code"], ans), nil
}

// Unbind implements bankadapters.Bank.
func (a *Adapter) Unbind(ctx context.Context, agreementNo string) error {
	ans, err := a.call(ctx, "unbind", true, map[string]string{"agreement_no": agreementNo})
	if err != nil {
		return err
	}
	if ans["code"] != a.Success {
		return a.refusal("unbind", ans)
	}
	return nil
}

// Refund implements bankadapters.Bank. It is sent once: a lost answer, or
// one that names another refund, is an unknown result for the caller to
// settle by QueryRefund on the same refund number.
func (a *Adapter) Refund(ctx context.Context, req bankadapters.RefundRequest) (bankadapters.RefundResult, error) {
	if err := bankadapters.ValidateRefund(req); err != nil {
		return bankadapters.RefundResult{}, err
	}
	ans, err := a.call(ctx, "refund", false, map[string]string{
		"refund_no": req.RefundNo, "order_no": req.OrderNo, "amount": strconv.FormatInt(req.Amount, 10),
		"currency": req.Currency, "notify_url": req.NotifyURL,
	})
	if err != nil {
		return bankadapters.UnknownRefund(req, err), nil
	}
	// A signed answer of another refund (or of another operation, which
	// names none) says nothing about this one. A refusal for other terms
	// (order_conflict) names only the refund number.
	if ans["refund_no"] != req.RefundNo || (ans["order_no"] != "" && ans["order_no"] != req.OrderNo) {
		return bankadapters.UnknownRefund(req, errors.New("answer does not name this refund")), nil
	}
	r := a.RefundResult(req.RefundNo, req.Amount, ans["code"], ans)
	r.OrderNo = req.OrderNo
	return r, nil
}

// RefundResult reads a refund's outcome from its code and the answer's
// fields; a refund number's query answer and a refund callback name the
// debit under refund_of.
func (a *Adapter) RefundResult(refundNo string, amount int64, code string, ans map[string]string) bankadapters.RefundResult {
	r := bankadapters.RefundResult{RefundNo: refundNo, OrderNo: ans["refund_of"], Amount: amount, BankTxnNo: ans["bank_txn_no"]}
	if n, err := strconv.ParseInt(ans["amount"], 10, 64); err == nil && n > 0 {
		r.Amount = n
	}
	if t, err := time.Parse(time.RFC3339, ans["finished_at"]); err == nil {
		r.FinishedAt = t
	}
	return bankadapters.ClassifyRefund(r, a.Codes, code, ans["status"])
}

// QueryRefund implements bankadapters.Bank: the bank's query, asked of a
// refund number. An answer that is not a refund's or names another number
// is bank_unavailable.
func (a *Adapter) QueryRefund(ctx context.Context, refundNo string) (bankadapters.RefundResult, error) {
	ans, err := a.call(ctx, "query", true, map[string]string{"order_no": refundNo})
	if err != nil {
		return bankadapters.RefundResult{}, err
	}
	switch {
	case ans["code"] == a.OrderNotFound:
		return bankadapters.RefundResult{}, fmt.Errorf("%s query refund: %w", a.Code, bankadapters.ErrOrderNotFound)
	case ans["code"] != a.Success:
		return bankadapters.RefundResult{}, a.refusal("query", ans)
	case ans["order_no"] != refundNo:
		return bankadapters.RefundResult{}, a.unavailable("query", errors.New("answer names another refund"))
	case ans["type"] != typeRefund:
		return bankadapters.RefundResult{}, a.unavailable("query", errors.New("answer is not a refund's"))
	}
	return a.RefundResult(refundNo, 0, ans["result_code"], ans), nil
}

// Statement implements bankadapters.Statementer.
func (a *Adapter) Statement(ctx context.Context, date time.Time) (bankadapters.Statement, error) {
	ans, err := a.call(ctx, "statement", true, map[string]string{"date": date.Format(time.DateOnly)})
	if err != nil {
		return bankadapters.Statement{}, err
	}
	if ans["code"] != a.Success {
		return bankadapters.Statement{}, a.refusal("statement", ans)
	}
	entries, err := a.Codec.Entries(ans["entries"])
	if err != nil {
		return bankadapters.Statement{}, a.unavailable("statement", err)
	}
	var final bool
	switch ans["final"] {
	case "true":
		final = true
	case "false", "": // a bank that does not say is not final
	default:
		return bankadapters.Statement{}, a.unavailable("statement", errors.New("final is neither true nor false"))
	}
	return bankadapters.Statement{Entries: entries, Final: final}, nil
}
