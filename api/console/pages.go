package console

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/opsview"
	"github.com/quickpay/quickpay/internal/sensitive"
	"github.com/quickpay/quickpay/vaultkeys"
)

// Views is the console's read model (*opsview.Reader).
type Views interface {
	Overview(ctx context.Context, day time.Time, loc *time.Location) (opsview.Overview, error)
	Search(ctx context.Context, q string) ([]opsview.Hit, error)
	CardsByFingerprints(ctx context.Context, fps [][]byte) ([]opsview.Card, error)

	Merchant(ctx context.Context, id string) (opsview.Merchant, error)
	Member(ctx context.Context, id string) (opsview.Member, error)
	Card(ctx context.Context, id string) (opsview.Card, error)
	Binding(ctx context.Context, id string) (opsview.Binding, error)
	Mandate(ctx context.Context, id string) (opsview.Mandate, error)
	Charge(ctx context.Context, id string) (opsview.ChargeDetail, error)
	Refund(ctx context.Context, id string) (opsview.Refund, error)
	Event(ctx context.Context, id string) (opsview.EventDetail, error)

	Merchants(ctx context.Context, p opsview.Page) ([]opsview.Merchant, string, error)
	Cards(ctx context.Context, f opsview.CardFilter, p opsview.Page) ([]opsview.Card, string, error)
	Mandates(ctx context.Context, f opsview.MandateFilter, p opsview.Page) ([]opsview.Mandate, string, error)
	Charges(ctx context.Context, f opsview.ChargeFilter, p opsview.Page) ([]opsview.Charge, string, error)
	Refunds(ctx context.Context, f opsview.RefundFilter, p opsview.Page) ([]opsview.Refund, string, error)
	Events(ctx context.Context, f opsview.EventFilter, p opsview.Page) ([]opsview.Event, string, error)
	UnknownAttempts(ctx context.Context, p opsview.Page) ([]opsview.Attempt, string, error)
	Mismatches(ctx context.Context, f opsview.MismatchFilter, p opsview.Page) ([]opsview.Mismatch, string, error)
	Backlog(ctx context.Context, p opsview.Page) ([]opsview.Undelivered, string, error)
	Audit(ctx context.Context, f opsview.AuditFilter, p opsview.Page) ([]opsview.AuditEntry, string, error)
}

// --- Overview ---

type overviewView struct {
	opsview.Overview
	Keys []vaultkeys.KeyInfo
}

// overview shows today's figures (in Config.Location), each linking to
// its list, and the key versions.
func (c *Console) overview(ec echo.Context) error {
	ctx := ec.Request().Context()
	o, err := c.overviewCache.get(ctx, c)
	if err != nil {
		return c.fault(ec, err)
	}
	keys, err := c.cfg.Vault.List(ctx)
	if err != nil {
		return c.fault(ec, err)
	}
	return c.render(ec, http.StatusOK, "overview", "Overview", overviewView{Overview: o, Keys: keys})
}

// overviewCache keeps the overview's figures for Config.OverviewTTL:
// they aggregate a whole day's charges (100,000 rows on a busy day),
// which costs tens of milliseconds, and operators reload the page. Once
// today's figures have been read, a view never waits for the database:
// figures older than OverviewTTL are shown while one read in the
// background renews them (the page says when its figures were read). Only
// the first view of a day (or after start) reads while it waits; one such
// read runs at a time, and those that wait take its result.
type overviewCache struct {
	mu         sync.Mutex
	o          opsview.Overview
	day        string // the day o is of, in Config.Location
	read       time.Time
	refreshing bool
}

// overviewRefreshTimeout bounds a background read of the overview.
const overviewRefreshTimeout = 30 * time.Second

func (oc *overviewCache) get(ctx context.Context, c *Console) (opsview.Overview, error) {
	now := c.cfg.Now()
	day := now.In(c.cfg.Location).Format(time.DateOnly)
	oc.mu.Lock()
	defer oc.mu.Unlock()
	if c.cfg.OverviewTTL > 0 && oc.day == day {
		if now.Sub(oc.read) >= c.cfg.OverviewTTL && !oc.refreshing {
			oc.refreshing = true
			go oc.refresh(c, now, day)
		}
		return oc.o, nil
	}
	o, err := c.cfg.Views.Overview(ctx, now, c.cfg.Location)
	if err != nil {
		return opsview.Overview{}, err
	}
	oc.o, oc.day, oc.read = o, day, now
	return o, nil
}

// refresh reads the overview of day as of now, outside any request, and
// keeps it unless a newer read landed meanwhile. A failed read is logged;
// the figures shown stay those of the last good read, with its time.
func (oc *overviewCache) refresh(c *Console, now time.Time, day string) {
	ctx, cancel := context.WithTimeout(context.Background(), overviewRefreshTimeout)
	defer cancel()
	o, err := c.cfg.Views.Overview(ctx, now, c.cfg.Location)
	oc.mu.Lock()
	defer oc.mu.Unlock()
	oc.refreshing = false
	if err != nil {
		c.log.Error("console: overview refresh", "err", err)
		return
	}
	if oc.day == day && now.After(oc.read) {
		oc.o, oc.read = o, now
	}
}

// --- Search ---

type searchView struct {
	Query string
	Hits  []opsview.Hit
}

// maxQuery bounds what the search box looks up.
const maxQuery = 100

// search finds an id, an order number or a bank reference (a POST: what
// is typed stays out of URLs, browser history and logs). One hit opens
// its page.
func (c *Console) search(ec echo.Context) error {
	q := strings.TrimSpace(ec.Request().PostForm.Get("q"))
	if looksLikeCardNumber(q) {
		// Never looked up as text, never shown back.
		return c.render(ec, http.StatusOK, "search", "Search", searchView{})
	}
	if len(q) > maxQuery {
		q = q[:maxQuery]
	}
	hits, err := c.cfg.Views.Search(ec.Request().Context(), q)
	if err != nil {
		return c.fault(ec, err)
	}
	if len(hits) == 1 {
		if to := idPath(hits[0].ID); to != "" {
			return ec.Redirect(http.StatusSeeOther, to)
		}
	}
	return c.render(ec, http.StatusOK, "search", "Search", searchView{Query: q, Hits: hits})
}

// looksLikeCardNumber reports whether q is 13 to 19 digits (spaces
// aside): a card number typed into the wrong box. Order numbers start
// with letters; bank references this long are not all digits at the
// banks quickpay speaks to.
func looksLikeCardNumber(q string) bool {
	// Written as people write card numbers: in groups, with spaces,
	// dashes or dots between them.
	d := strings.NewReplacer(" ", "", "-", "", ".", "").Replace(q)
	if len(d) < 13 || len(d) > 19 {
		return false
	}
	for _, r := range d {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// --- Find a card by number ---

type findView struct {
	Searched bool
	Error    string
	Cards    []opsview.Card
}

func (c *Console) findCardPage(ec echo.Context) error {
	return c.render(ec, http.StatusOK, "find_card", "Find a card", findView{})
}

// findCard fingerprints the typed card number in the HSM (under every
// fingerprint key version) and shows the cards that hold it, masked. The
// number is wrapped in sensitive.PAN as soon as it is read: it is never
// logged, echoed or stored. The view is audited (console.view, subject
// each card found, or "card_search" when none).
func (c *Console) findCard(ec echo.Context) error {
	ctx := ec.Request().Context()
	pan := sensitive.NewPAN(strings.ReplaceAll(strings.TrimSpace(ec.Request().PostForm.Get("card_number")), " ", ""))
	ec.Request().PostForm.Del("card_number")
	if !looksLikeCardNumber(pan.Reveal()) {
		return c.render(ec, http.StatusUnprocessableEntity, "find_card", "Find a card",
			findView{Error: "A card number is 13 to 19 digits."})
	}
	fps, err := c.cfg.Vault.Fingerprints(ctx, binding.DomainPAN, []byte(pan.Reveal()))
	if err != nil {
		return c.fault(ec, err)
	}
	cards, err := c.cfg.Views.CardsByFingerprints(ctx, fps)
	if err != nil {
		return c.fault(ec, err)
	}
	if len(cards) == 0 {
		if err := c.record(ec, "", "console.view", "card_search", map[string]any{"route": ec.Path(), "found": 0}); err != nil {
			return c.fault(ec, err)
		}
	}
	for _, k := range cards {
		if err := c.viewed(ec, k.MerchantID, k.ID); err != nil {
			return c.fault(ec, err)
		}
	}
	return c.render(ec, http.StatusOK, "find_card", "Find a card", findView{Searched: true, Cards: cards})
}

// --- Lists ---

// listView is one page of a list: its rows, its filters as typed, and
// the link to the next page ("" on the last).
type listView[T any] struct {
	Rows    []T
	Filters url.Values
	Next    string
	Extra   any
}

// page reads the request's page cursor.
func (c *Console) page(ec echo.Context) opsview.Page {
	return opsview.Page{After: ec.QueryParam("after"), Limit: c.cfg.PageSize}
}

// nextLink is the list's link to the page after next, keeping filters.
func nextLink(path string, filters url.Values, next string) string {
	if next == "" {
		return ""
	}
	q := url.Values{}
	for k, v := range filters {
		if len(v) > 0 && v[0] != "" {
			q.Set(k, v[0])
		}
	}
	q.Set("after", next)
	return path + "?" + q.Encode()
}

// filters reads the named query parameters.
func filters(ec echo.Context, names ...string) url.Values {
	f := url.Values{}
	for _, n := range names {
		if v := strings.TrimSpace(ec.QueryParam(n)); v != "" {
			f.Set(n, v)
		}
	}
	return f
}

// listPage renders one page of a list read by read.
func listPage[T any](c *Console, ec echo.Context, name, title string, f url.Values,
	read func(opsview.Page) ([]T, string, error)) error {
	rows, next, err := read(c.page(ec))
	switch {
	case errors.Is(err, opsview.ErrBadCursor):
		return c.status(ec, http.StatusBadRequest, "Bad page link", "The page link is not one this list made.")
	case err != nil:
		return c.fault(ec, err)
	}
	return c.render(ec, http.StatusOK, name, title, listView[T]{Rows: rows, Filters: f, Next: nextLink(ec.Path(), f, next)})
}

func (c *Console) merchantList(ec echo.Context) error {
	ctx := ec.Request().Context()
	return listPage(c, ec, "merchants", "Merchants", url.Values{}, func(p opsview.Page) ([]opsview.Merchant, string, error) {
		return c.cfg.Views.Merchants(ctx, p)
	})
}

// cardList lists cards (by merchant, member, status). Its rows show the
// masked number: the page is audited as a view of card data.
func (c *Console) cardList(ec echo.Context) error {
	ctx := ec.Request().Context()
	f := filters(ec, "merchant", "member", "status")
	cf := opsview.CardFilter{MerchantID: f.Get("merchant"), MemberID: f.Get("member"), Status: f.Get("status")}
	subject := "cards"
	if cf.MemberID != "" {
		subject = cf.MemberID
	}
	if err := c.record(ec, cf.MerchantID, "console.view", subject, map[string]any{"route": ec.Path(), "filters": f.Encode()}); err != nil {
		return c.fault(ec, err)
	}
	return listPage(c, ec, "cards", "Cards", f, func(p opsview.Page) ([]opsview.Card, string, error) {
		return c.cfg.Views.Cards(ctx, cf, p)
	})
}

func (c *Console) mandateList(ec echo.Context) error {
	ctx := ec.Request().Context()
	f := filters(ec, "merchant", "member", "card", "status")
	mf := opsview.MandateFilter{MerchantID: f.Get("merchant"), MemberID: f.Get("member"), CardID: f.Get("card"), Status: f.Get("status")}
	return listPage(c, ec, "mandates", "Mandates", f, func(p opsview.Page) ([]opsview.Mandate, string, error) {
		return c.cfg.Views.Mandates(ctx, mf, p)
	})
}

func (c *Console) chargeList(ec echo.Context) error {
	ctx := ec.Request().Context()
	f := filters(ec, "merchant", "mandate", "status", "bank", "day")
	cf := opsview.ChargeFilter{MerchantID: f.Get("merchant"), MandateID: f.Get("mandate"), Status: f.Get("status"), Bank: f.Get("bank")}
	if d := f.Get("day"); d != "" {
		day, err := time.Parse(time.DateOnly, d)
		if err != nil {
			return c.status(ec, http.StatusBadRequest, "Bad filter", "The day must read like 2026-12-07.")
		}
		cf.Day = day
	}
	return listPage(c, ec, "charges", "Charges", f, func(p opsview.Page) ([]opsview.Charge, string, error) {
		return c.cfg.Views.Charges(ctx, cf, p)
	})
}

func (c *Console) refundList(ec echo.Context) error {
	ctx := ec.Request().Context()
	f := filters(ec, "merchant", "charge", "status")
	rf := opsview.RefundFilter{MerchantID: f.Get("merchant"), ChargeID: f.Get("charge"), Status: f.Get("status")}
	return listPage(c, ec, "refunds", "Refunds", f, func(p opsview.Page) ([]opsview.Refund, string, error) {
		return c.cfg.Views.Refunds(ctx, rf, p)
	})
}

func (c *Console) eventList(ec echo.Context) error {
	ctx := ec.Request().Context()
	f := filters(ec, "merchant", "type")
	ef := opsview.EventFilter{MerchantID: f.Get("merchant"), Type: f.Get("type")}
	return listPage(c, ec, "events", "Events", f, func(p opsview.Page) ([]opsview.Event, string, error) {
		return c.cfg.Views.Events(ctx, ef, p)
	})
}

func (c *Console) unknownList(ec echo.Context) error {
	ctx := ec.Request().Context()
	return listPage(c, ec, "unknown", "Unknown attempts", url.Values{}, func(p opsview.Page) ([]opsview.Attempt, string, error) {
		return c.cfg.Views.UnknownAttempts(ctx, p)
	})
}

func (c *Console) mismatchList(ec echo.Context) error {
	ctx := ec.Request().Context()
	f := filters(ec, "bank", "open")
	mf := opsview.MismatchFilter{Bank: f.Get("bank"), OpenOnly: f.Get("open") == "1"}
	return listPage(c, ec, "mismatches", "Reconciliation mismatches", f, func(p opsview.Page) ([]opsview.Mismatch, string, error) {
		return c.cfg.Views.Mismatches(ctx, mf, p)
	})
}

func (c *Console) backlogList(ec echo.Context) error {
	ctx := ec.Request().Context()
	return listPage(c, ec, "backlog", "Webhook backlog", url.Values{}, func(p opsview.Page) ([]opsview.Undelivered, string, error) {
		return c.cfg.Views.Backlog(ctx, p)
	})
}

// auditTimeLayout is how the audit filter's from/to read (a
// datetime-local field), in Config.Location.
const auditTimeLayout = "2006-01-02T15:04"

func (c *Console) auditList(ec echo.Context) error {
	ctx := ec.Request().Context()
	f := filters(ec, "actor", "action", "subject", "merchant", "from", "to")
	af := opsview.AuditFilter{Actor: f.Get("actor"), Action: f.Get("action"), Subject: f.Get("subject"), MerchantID: f.Get("merchant")}
	for name, dst := range map[string]*time.Time{"from": &af.From, "to": &af.To} {
		if v := f.Get(name); v != "" {
			t, err := time.ParseInLocation(auditTimeLayout, v, c.cfg.Location)
			if err != nil {
				return c.status(ec, http.StatusBadRequest, "Bad filter", "From and to must read like 2026-12-07T14:05.")
			}
			*dst = t
		}
	}
	return listPage(c, ec, "audit", "Audit trail", f, func(p opsview.Page) ([]opsview.AuditEntry, string, error) {
		return c.cfg.Views.Audit(ctx, af, p)
	})
}
