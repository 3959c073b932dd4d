package mandate

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// SettlementHeader is a settlement file's first line (DESIGN.md
// "Settlement file").
var SettlementHeader = []string{"type", "id", "charge_id", "mandate_id", "member_id", "reference", "bank_code",
	"order_no", "bank_reference", "amount", "currency", "finished_at"}

// settlementFlushRows is how many rows a file's stream writes between
// flushes to its reader.
const settlementFlushRows = 1000

// SettlementFile is one merchant's settlement file of one written day.
type SettlementFile struct {
	MerchantID string
	Day        time.Time // a date
	WrittenAt  time.Time
	pool       *pgxpool.Pool
}

// SettlementFile returns the merchant's file of day. Every merchant has a
// file of every written day, if only a header and a total of 0. Errors:
// ErrSettlementNotReady.
func (s *Service) SettlementFile(ctx context.Context, merchantID string, day time.Time) (*SettlementFile, error) {
	d, err := s.SettlementDay(ctx, day)
	if err != nil {
		return nil, err
	}
	return &SettlementFile{MerchantID: merchantID, Day: day, WrittenAt: d.WrittenAt, pool: s.pool}, nil
}

// Name is the file's name: quickpay-{merchant id}-{YYYY-MM-DD}.csv.
func (f *SettlementFile) Name() string {
	return "quickpay-" + f.MerchantID + "-" + f.Day.Format(time.DateOnly) + ".csv"
}

// WriteCSV writes the file to w as it reads it from the database: the
// header, one row per movement (charges and refunds, amounts positive),
// and the total row `total,,,,,,,,,<net fen>,CNY,` (charges minus
// refunds). It holds one row at a time, whatever the file's size. If w has
// a Flush method (an http.ResponseWriter's), it is called every
// settlementFlushRows rows and at the end. finished_at is RFC 3339 in
// +08:00 (bank time). A reader that gets no total row did not get the
// whole file.
//
// Text that a spreadsheet would run as a formula (a cell starting with =,
// +, -, @, a tab or a carriage return: a merchant's reference, a bank's
// transaction number) is written with a leading apostrophe (OWASP "CSV
// Injection"); encoding/csv quotes commas, quotes and line breaks.
func (f *SettlementFile) WriteCSV(ctx context.Context, w io.Writer) error {
	flusher, _ := w.(interface{ Flush() })
	cw := csv.NewWriter(w)
	flush := func() error {
		cw.Flush()
		if err := cw.Error(); err != nil {
			return err
		}
		if flusher != nil {
			flusher.Flush()
		}
		return nil
	}
	if err := cw.Write(SettlementHeader); err != nil {
		return err
	}
	var net int64
	n := 0
	rec := make([]string, len(SettlementHeader))
	err := eachSettlementRow(ctx, f.pool, f.MerchantID, f.Day, func(r *settlementRow) error {
		switch r.kind {
		case MovementCharge:
			net += r.amount
		case MovementRefund:
			net -= r.amount
		default:
			return fmt.Errorf("settlement row %s: kind %q unknown", r.orderNo, r.kind)
		}
		rec[0], rec[1], rec[2], rec[3], rec[4] = string(r.kind), r.id, r.chargeID, r.mandateID, r.memberID
		rec[5], rec[6], rec[7], rec[8] = inertCell(r.reference), r.bankCode, r.orderNo, inertCell(r.bankReference)
		rec[9], rec[10], rec[11] = strconv.FormatInt(r.amount, 10), r.currency, r.finishedAt.In(bankZone).Format(time.RFC3339)
		if err := cw.Write(rec); err != nil {
			return err
		}
		if n++; n%settlementFlushRows == 0 {
			return flush()
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("settlement file %s of %s: %w", f.Day.Format(time.DateOnly), f.MerchantID, err)
	}
	if err := cw.Write([]string{"total", "", "", "", "", "", "", "", "", strconv.FormatInt(net, 10), "CNY", ""}); err != nil {
		return err
	}
	return flush()
}

// inertCell returns s as a spreadsheet shows it as text: with a leading
// apostrophe if its first character would start a formula.
func inertCell(s string) string {
	if s == "" {
		return s
	}
	switch s[0] {
	case '=', '+', '-', '@', '\t', '\r':
		return "'" + s
	}
	return s
}
