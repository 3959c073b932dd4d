package console

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/quickpay/quickpay/api/pagekit"
	"github.com/quickpay/quickpay/internal/operators"
	"github.com/quickpay/quickpay/internal/opsview"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// parsePages parses the page templates by name (templates/<name>.html),
// each with layout.html. They are embedded: an error is a build defect,
// which the package's tests catch.
func parsePages(funcs template.FuncMap) map[string]*template.Template {
	layout := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html"))
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		panic(err)
	}
	out := map[string]*template.Template{}
	for _, n := range names {
		name := strings.TrimSuffix(path.Base(n), ".html")
		if name == "layout" {
			continue
		}
		out[name] = template.Must(template.Must(layout.Clone()).ParseFS(templateFS, n))
	}
	return out
}

// funcs are the templates' helpers; times show in Config.Location.
func (c *Console) funcs() template.FuncMap {
	return template.FuncMap{
		"money": money,
		"when": func(t time.Time) string {
			if t.IsZero() {
				return "—"
			}
			return t.In(c.cfg.Location).Format("2006-01-02 15:04:05")
		},
		"age": func(t time.Time) string {
			if t.IsZero() {
				return "—"
			}
			return roughly(c.cfg.Now().Sub(t))
		},
		"round":       roughly,
		"idpath":      idPath,
		"deref":       deref,
		"lastUnknown": lastUnknown,
		"list":        func(s ...string) []string { return s },
	}
}

// roughly says how long d is as a person reads an age: "3 days", "5h 12m",
// "4m 09s", "12s".
func roughly(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + " days"
	case d >= time.Hour:
		return fmt.Sprintf("%dh %02dm", int64(d/time.Hour), int64(d%time.Hour/time.Minute))
	case d >= time.Minute:
		return fmt.Sprintf("%dm %02ds", int64(d/time.Minute), int64(d%time.Minute/time.Second))
	default:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
}

// deref is what an optional field (*time.Time, *int64) points at; the
// templates call it only under an {{if}} of the pointer.
func deref(p any) any {
	v := reflect.ValueOf(p)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return nil
	}
	return v.Elem().Interface()
}

// lastUnknown reports whether a charge's latest attempt waits on the
// bank's answer (unknown): SettleByQuery can settle it.
func lastUnknown(attempts []opsview.Attempt) bool {
	if len(attempts) == 0 {
		return false
	}
	// A processing attempt belongs to its charge job (SettleByQuery
	// refuses it): only an unknown one is offered.
	return attempts[len(attempts)-1].Status == "unknown"
}

// money formats fen as yuan: 1234 → "¥12.34".
func money(fen int64, currency ...string) string {
	sign := ""
	if fen < 0 {
		sign, fen = "-", -fen
	}
	sym := "¥"
	if len(currency) > 0 && currency[0] != "" && currency[0] != "CNY" {
		sym = currency[0] + " "
	}
	return fmt.Sprintf("%s%s%d.%02d", sign, sym, fen/100, fen%100)
}

// parseYuan reads an amount the operator typed in yuan with at most two
// decimals ("12.34", "12.3", "12") as fen. No float is involved.
func parseYuan(s string) (int64, error) {
	s = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(s), "¥"))
	whole, frac, dot := strings.Cut(s, ".")
	if whole == "" || len(whole) > 12 || (dot && (frac == "" || len(frac) > 2)) {
		return 0, errors.New("amount must be yuan with at most two decimals, such as 12.34")
	}
	for _, part := range []string{whole, frac} {
		for _, r := range part {
			if r < '0' || r > '9' {
				return 0, errors.New("amount must be yuan with at most two decimals, such as 12.34")
			}
		}
	}
	y, _ := strconv.ParseInt(whole, 10, 64)
	f := int64(0)
	if frac != "" {
		f, _ = strconv.ParseInt(frac, 10, 64)
		if len(frac) == 1 {
			f *= 10
		}
	}
	fen := y*100 + f
	if fen <= 0 {
		return 0, errors.New("amount must be more than zero")
	}
	return fen, nil
}

// idPath is the console page of an object by its id's prefix, "" for an
// id the console has no page for.
func idPath(id string) string {
	prefix, _, ok := strings.Cut(id, "_")
	if !ok {
		return ""
	}
	switch prefix {
	case "mch":
		return "/merchants/" + id
	case "mem":
		return "/members/" + id
	case "card":
		return "/cards/" + id
	case "bnd":
		return "/bindings/" + id
	case "mdt":
		return "/mandates/" + id
	case "chg":
		return "/charges/" + id
	case "rfd":
		return "/refunds/" + id
	case "evt":
		return "/events/" + id
	default:
		return ""
	}
}

// view is what every page template gets.
type view struct {
	Title   string
	Session *operators.Session
	CSRF    string
	Data    any
}

// Can reports whether the page's operator holds role (templates show
// actions by it; the handlers check it again).
func (v view) Can(role string) bool {
	return v.Session != nil && v.Session.Operator.Role.AtLeast(operators.Role(role))
}

// render writes page name with data.
func (c *Console) render(ec echo.Context, status int, name, title string, data any) error {
	t, ok := c.pages[name]
	if !ok {
		return fmt.Errorf("console: no template %q", name)
	}
	v := view{Title: title, Data: data}
	if s, ok := sessionOf(ec); ok {
		v.Session, v.CSRF = &s, s.CSRFToken
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", v); err != nil {
		return fmt.Errorf("console: render %s: %w", name, err)
	}
	return ec.HTMLBlob(status, buf.Bytes())
}

type statusView struct {
	Status  int
	Heading string
	Text    string
	Back    string // a link onward; the overview when empty
}

// status answers a page saying what happened.
func (c *Console) status(ec echo.Context, code int, heading, text string) error {
	return c.render(ec, code, "status", heading, statusView{Status: code, Heading: heading, Text: text})
}

// fault logs err with the request id and answers a page without it.
func (c *Console) fault(ec echo.Context, err error) error {
	c.log.ErrorContext(ec.Request().Context(), "console fault", "request_id", requestID(ec), "route", ec.Path(), "err", err)
	return c.status(ec, http.StatusInternalServerError, "Something went wrong",
		"The console could not do this. Request id "+requestID(ec)+" names it in the logs.")
}

// errorHandler answers what no handler answered (404, 405) and errors
// handlers returned.
func (c *Console) errorHandler(err error, ec echo.Context) {
	if ec.Response().Committed {
		return
	}
	var he *echo.HTTPError
	if errors.As(err, &he) && he.Code < 500 {
		pagekit.SetHeaders(ec.Response().Header(), CSP)
		_ = c.status(ec, he.Code, http.StatusText(he.Code), "There is no such page here.")
		return
	}
	_ = c.fault(ec, err)
}
