package api

import (
	"context"
	"log/slog"
	"mime"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/quickpay/quickpay/mandate"
)

// SettlementFiles gives a merchant's settlement files; *mandate.Service
// is one.
type SettlementFiles interface {
	// SettlementFile returns the merchant's file of a bank day. Errors:
	// mandate.ErrSettlementNotReady.
	SettlementFile(ctx context.Context, merchantID string, day time.Time) (*mandate.SettlementFile, error)
}

var _ SettlementFiles = (*mandate.Service)(nil)

// Settlement is the area of the merchants' settlement files (对账文件,
// scope "withhold"):
//
//	GET /v1/settlement_files/{date} → 200 text/csv (attachment quickpay-{merchant}-{date}.csv)
//
// date is a bank day, YYYY-MM-DD (Asia/Shanghai); anything else is 422
// validation_failed naming date. A day whose files are not written yet
// answers 404 not_ready. The file streams from the database as it is
// read; an error past the first byte cannot become an error answer, so it
// aborts the response: the client sees a broken transfer, and a file
// without its closing total row is never whole.
type Settlement struct {
	Files SettlementFiles
	// Logger records a stream that failed after its first byte. Defaults
	// to slog.Default().
	Logger *slog.Logger
}

var _ Area = (*Settlement)(nil)

// ErrSettlementNotReady answers a day whose files are not written yet.
var ErrSettlementNotReady = NewError(http.StatusNotFound, "not_ready",
	"the day's settlement files are not ready: its bank statements are not all final and reconciled yet")

// Routes implements Area.
func (a *Settlement) Routes(v1 *echo.Group) {
	if a.Files == nil {
		panic("api: Settlement needs Files")
	}
	v1.GET("/settlement_files/:date", a.get, RequireScope("withhold"))
}

// Errors implements Area.
func (a *Settlement) Errors() map[error]*Error {
	return map[error]*Error{
		mandate.ErrSettlementNotReady: ErrSettlementNotReady,
		// A day before the first day written never has files.
		mandate.ErrSettlementBeforeFirstDay: ErrSettlementNotReady,
	}
}

func (a *Settlement) get(c echo.Context) error {
	day, err := mandate.ParseDate(c.Param("date"))
	if err != nil {
		return Validation(http.StatusUnprocessableEntity, "date", "date must be a day, YYYY-MM-DD")
	}
	ctx := c.Request().Context()
	f, err := a.Files.SettlementFile(ctx, MerchantID(c), day)
	if err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, "text/csv; charset=utf-8")
	h.Set(echo.HeaderContentDisposition, mime.FormatMediaType("attachment", map[string]string{"filename": f.Name()}))
	h.Set("Cache-Control", "no-store")
	c.Response().WriteHeader(http.StatusOK)
	if err := f.WriteCSV(ctx, c.Response()); err != nil {
		if ctx.Err() != nil {
			return nil // the client went away
		}
		log := a.Logger
		if log == nil {
			log = slog.Default()
		}
		log.Error("settlement file stream", "request_id", c.Response().Header().Get(echo.HeaderXRequestID),
			"day", day.Format(time.DateOnly), "err", err)
		panic(http.ErrAbortHandler) // net/http drops the connection; echo's Recover passes it on
	}
	return nil
}
