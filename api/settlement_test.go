package api_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quickpay/quickpay/api"
	"github.com/quickpay/quickpay/api/apitest"
	"github.com/quickpay/quickpay/internal/ids"
	"github.com/quickpay/quickpay/mandate"
)

// TestSettlementFiles serves GET /v1/settlement_files/{date} over the real
// API (auth, scopes, the error table, the document): 404 not_ready before
// the day is written, then each merchant's CSV as an attachment, its own
// rows only, with merchant text quoted and kept from running as a
// formula.
//
// The day's movements are written with SQL, and so are the banks' final
// reconciliations of it: a reconciliation works every merchant's attempts
// at a bank, and this package's tests run side by side (the mandate
// package's tests write days through banksim's statements).
func TestSettlementFiles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := newTestServer(t, serverOptions{})
	auth, err := api.NewAuth(api.AuthConfig{Merchants: srv.merchants, Vault: srv.Vault})
	if err != nil {
		t.Fatal(err)
	}
	e := api.New(api.Config{Pool: srv.Pool, HSM: srv.HSM, Secrets: srv.Secrets, Auth: auth,
		Areas: []api.Area{&api.Settlement{Files: srv.mandates}}})
	hs := httptest.NewServer(e)
	t.Cleanup(hs.Close)
	c := apitest.NewClient(t, hs.URL)
	tenant := func(scopes ...string) (string, *apitest.Client) {
		m, secret, err := srv.merchants.Create(ctx, "settlement "+strings.Join(scopes, "+"), scopes)
		if err != nil {
			t.Fatal(err)
		}
		return m.ID, c.WithToken(c.Token(t, m.ClientID, secret))
	}
	a, ca := tenant("withhold")
	b, cb := tenant("withhold")
	_, cBind := tenant("bind")

	day := settlementDay(t, srv)
	path := "/v1/settlement_files/" + day.Format(time.DateOnly)
	formula := `=HYPERLINK("http://x.example","pay, now")`
	charge1 := settlementMovement(t, srv, a, day, 9, formula, 12_345, 0)
	charge2 := settlementMovement(t, srv, a, day, 10, "rent 2020-01", 20_000, 5_000)
	other := settlementMovement(t, srv, b, day, 11, "other merchant", 777, 0)

	t.Run("not ready before the day is written", func(t *testing.T) {
		ca.Get(t, path).WantError(t, http.StatusNotFound, "not_ready")
	})
	t.Run("the date is a day", func(t *testing.T) {
		for _, bad := range []string{"2020-1-5", "20200105", "2020-02-30", "yesterday"} {
			if r := ca.Get(t, "/v1/settlement_files/"+bad); r.WantError(t, http.StatusUnprocessableEntity, "validation_failed") &&
				r.APIError().Field != "date" {
				t.Errorf("%s: field %q, want date", bad, r.APIError().Field)
			}
		}
	})
	t.Run("scope withhold", func(t *testing.T) {
		cBind.Get(t, path).WantError(t, http.StatusForbidden, "insufficient_scope")
		c.Get(t, path).WantError(t, http.StatusUnauthorized, "unauthorized")
	})

	for _, code := range srv.Banks.Codes() {
		if _, err := srv.Pool.Exec(ctx, `INSERT INTO reconciliation_runs (bank_code, bank_day, entries, matched, settled,
			mismatches, final) VALUES ($1, $2, 0, 0, 0, 0, true)`, code, day); err != nil {
			t.Fatal(err)
		}
	}
	if run, err := srv.mandates.WriteSettlementFiles(ctx, day); err != nil || len(run.Written) != 1 || len(run.Reconciliations) != 0 {
		t.Fatalf("write %s: %+v, %v", day.Format(time.DateOnly), run, err)
	}

	t.Run("the merchant's file", func(t *testing.T) {
		r := ca.Get(t, path)
		if !r.WantStatus(t, http.StatusOK) {
			return
		}
		if ct := r.Header.Get("Content-Type"); ct != "text/csv; charset=utf-8" {
			t.Errorf("Content-Type %q", ct)
		}
		if cd, want := r.Header.Get("Content-Disposition"), "attachment; filename=quickpay-"+a+"-"+day.Format(time.DateOnly)+".csv"; cd != want {
			t.Errorf("Content-Disposition %q, want %q", cd, want)
		}
		recs := readCSV(t, r.Body)
		want := [][]string{mandate.SettlementHeader,
			charge1.row("charge"), charge2.row("charge"), charge2.row("refund"),
			{"total", "", "", "", "", "", "", "", "", "27345", "CNY", ""}}
		if !slices.EqualFunc(recs, want, slices.Equal) {
			t.Errorf("file\n%q\nwant\n%q", recs, want)
		}
		if !bytes.Contains(r.Body, []byte(`"'=HYPERLINK(""http://x.example"",""pay, now"")"`)) {
			t.Errorf("the formula reference is not quoted and made inert:\n%s", r.Body)
		}
	})
	t.Run("another merchant's file holds only its own", func(t *testing.T) {
		r := cb.Get(t, path)
		if !r.WantStatus(t, http.StatusOK) {
			return
		}
		want := [][]string{mandate.SettlementHeader, other.row("charge"), {"total", "", "", "", "", "", "", "", "", "777", "CNY", ""}}
		if recs := readCSV(t, r.Body); !slices.EqualFunc(recs, want, slices.Equal) {
			t.Errorf("file\n%q\nwant\n%q", recs, want)
		}
	})
	t.Run("a merchant without movements has an empty file", func(t *testing.T) {
		_, cc := tenant("withhold")
		r := cc.Get(t, path)
		want := [][]string{mandate.SettlementHeader, {"total", "", "", "", "", "", "", "", "", "0", "CNY", ""}}
		if r.WantStatus(t, http.StatusOK) && !slices.EqualFunc(readCSV(t, r.Body), want, slices.Equal) {
			t.Errorf("file %q", r.Body)
		}
	})
	t.Run("the next day is not ready", func(t *testing.T) {
		ca.Get(t, "/v1/settlement_files/"+day.AddDate(0, 0, 1).Format(time.DateOnly)).WantError(t, http.StatusNotFound, "not_ready")
	})
}

// settlementDay is a past day after every day written in the package's
// database (days are written in order).
func settlementDay(t *testing.T, srv *testServer) time.Time {
	t.Helper()
	var next *time.Time
	if err := srv.Pool.QueryRow(context.Background(), `SELECT max(bank_day) + 1 FROM settlement_days`).Scan(&next); err != nil {
		t.Fatal(err)
	}
	if next == nil {
		return mandate.DateOf(2020, 1, 6)
	}
	return *next
}

// settled is a charge (and maybe a refund of it) written with SQL.
type settled struct {
	chargeID, refundID, mandateID, memberID, reference, orderNo, refundNo string
	amount, refunded                                                      int64
	at                                                                    time.Time
}

// row is the charge's or the refund's line in the file.
func (s settled) row(kind string) []string {
	ref := s.reference
	if strings.HasPrefix(ref, "=") {
		ref = "'" + ref
	}
	at := s.at.In(time.FixedZone("", 8*3600)).Format(time.RFC3339)
	if kind == "refund" {
		at = s.at.Add(time.Second).In(time.FixedZone("", 8*3600)).Format(time.RFC3339)
		return []string{"refund", s.refundID, s.chargeID, s.mandateID, s.memberID, ref, "ICBC", s.refundNo,
			"R" + s.refundNo, strconv.FormatInt(s.refunded, 10), "CNY", at}
	}
	return []string{"charge", s.chargeID, s.chargeID, s.mandateID, s.memberID, ref, "ICBC", s.orderNo,
		"T" + s.orderNo, strconv.FormatInt(s.amount, 10), "CNY", at}
}

// settlementMovement writes, with SQL, a member, card and mandate of the
// merchant with a charge that succeeded at ICBC on day at hh:00 Shanghai
// (and, if refund is not 0, a refund of it a second later).
func settlementMovement(t *testing.T, srv *testServer, merchantID string, day time.Time, hh int, reference string,
	amount, refund int64) settled {
	t.Helper()
	ctx := context.Background()
	at := time.Date(day.Year(), day.Month(), day.Day(), hh, 0, 0, 0, time.FixedZone("", 8*3600)).UTC()
	s := settled{chargeID: ids.New("chg"), mandateID: ids.New("mdt"), memberID: ids.New("mem"), reference: reference,
		orderNo: "QP" + strings.ToUpper(ids.New("o")[2:]), amount: amount, refunded: refund, at: at}
	cardID, bindingID := ids.New("card"), ids.New("bnd")
	for _, st := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO members (id, merchant_id, external_id, kind, created_at) VALUES ($1, $2, $1, 'implicit', now())`,
			[]any{s.memberID, merchantID}},
		{`INSERT INTO bindings (id, merchant_id, external_user_id, status, bank_code, bank_name, card_type, masked_pan,
			last4, pan_ct, pan_fp, holder_name_ct, holder_name_fp, id_number_ct, id_number_fp, phone_ct, otp_expires_at,
			otp_last_sent_at) VALUES ($1, $2, 'settlement', 'bound', 'ICBC', 'ICBC', 'debit', '622202******0000', '0000',
			'\x00', '\x00', '\x00', '\x00', '\x00', '\x00', '\x00', now(), now())`, []any{bindingID, merchantID}},
		{`INSERT INTO cards (id, merchant_id, member_id, status, bank_code, bank_name, card_type, masked_pan, last4,
			pan_ct, pan_fp, agreement_ct, binding_id, created_at, updated_at) VALUES ($1, $2, $3, 'active', 'ICBC', 'ICBC',
			'debit', '622202******0000', '0000', '\x00', decode(md5($1), 'hex'), '\x00', $4, now(), now())`,
			[]any{cardID, merchantID, s.memberID, bindingID}},
		{`INSERT INTO mandates (id, merchant_id, member_id, card_id, reference, amount_type, amount, currency, interval,
			day_of_month, start_date, timezone, status, otp_expires_at, otp_last_sent_at, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, 'fixed', $6, 'CNY', 'month', 1, $7, 'Asia/Shanghai', 'active', now(), now(), now(), now())`,
			[]any{s.mandateID, merchantID, s.memberID, cardID, reference, amount, day}},
		{`INSERT INTO charges (id, merchant_id, mandate_id, card_id, period, charge_date, amount, currency, status,
			bank_reference, amount_refunded, amount_refund_held, created_at, updated_at)
			VALUES ($1, $2, $3, $4, 'p1', $5, $6, 'CNY', 'succeeded', 'T' || $7, $8, $8, $9, $9)`,
			[]any{s.chargeID, merchantID, s.mandateID, cardID, day, amount, s.orderNo, refund, at}},
		{`INSERT INTO charge_attempts (order_no, merchant_id, charge_id, card_id, seq, bank_code, amount, status,
			bank_txn_no, bank_day, created_at, finished_at)
			VALUES ($1, $2, $3, $4, 1, 'ICBC', $5, 'succeeded', 'T' || $1, $6, $7, $7)`,
			[]any{s.orderNo, merchantID, s.chargeID, cardID, amount, day, at}},
	} {
		if _, err := srv.Pool.Exec(ctx, st.sql, st.args...); err != nil {
			t.Fatal(err)
		}
	}
	if refund != 0 {
		s.refundID, s.refundNo = ids.New("rfd"), "QR"+strings.ToUpper(ids.New("o")[2:])
		if _, err := srv.Pool.Exec(ctx, `INSERT INTO refunds (id, merchant_id, charge_id, mandate_id, card_id, bank_code,
			order_no, refund_no, amount, currency, status, bank_reference, job_id, created_at, updated_at, finished_at)
			VALUES ($1, $2, $3, $4, $5, 'ICBC', $6, $7, $8, 'CNY', 'succeeded', 'R' || $7, 0, $9, $9, $9)`,
			s.refundID, merchantID, s.chargeID, s.mandateID, cardID, s.orderNo, s.refundNo, refund, at.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func readCSV(t *testing.T, body []byte) [][]string {
	t.Helper()
	recs, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
	if err != nil {
		t.Fatalf("the answer is not CSV: %v", err)
	}
	return recs
}
