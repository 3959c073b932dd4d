package hosted

import (
	"fmt"
	"strconv"
	"time"

	"github.com/quickpay/quickpay/mandate"
)

// termsView is a mandate's terms as the consent step shows them.
type termsView struct {
	Payee       string
	Description string
	Variable    bool   // the amount is a maximum
	Amount      string // ¥ and yuan, from fen
	Schedule    string
	FirstDate   string
	EndDate     string
	MaxCharges  int
	NoticeDays  int
}

// yuan formats fen as "¥12.34".
func yuan(fen int64) string {
	return "¥" + strconv.FormatInt(fen/100, 10) + "." + fmt.Sprintf("%02d", fen%100)
}

func (p *Page) schedule(r *req, s mandate.Schedule) string {
	switch s.Interval {
	case mandate.IntervalMonth:
		return fmt.Sprintf(texts[r.lang]["monthly"], s.DayOfMonth)
	case mandate.IntervalWeek:
		day := ""
		if s.Weekday >= 1 && s.Weekday <= 7 {
			day = weekdays[r.lang][s.Weekday]
		}
		return fmt.Sprintf(texts[r.lang]["weekly"], day)
	default:
		return string(s.Interval)
	}
}

func date(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.DateOnly)
}

// terms is the view of terms with the amount of their type.
func (p *Page) terms(r *req, t mandate.AmountType, amount, maxAmount int64, s mandate.Schedule) termsView {
	v := termsView{Payee: r.name, Schedule: p.schedule(r, s), EndDate: date(s.EndDate), MaxCharges: s.MaxCharges}
	switch t {
	case mandate.AmountVariable:
		v.Variable, v.Amount = true, yuan(maxAmount)
	default:
		v.Amount = yuan(amount)
	}
	return v
}

// mandateTerms are the terms of a created mandate.
func (p *Page) mandateTerms(r *req, m mandate.Mandate) termsView {
	v := p.terms(r, m.AmountType, m.Amount, m.MaxAmount, m.Schedule)
	v.Description, v.NoticeDays, v.FirstDate = m.Description, m.NoticeDays, date(m.NextChargeDate)
	return v
}

// inputTerms are the terms of a mandate not yet created, with the first
// charge date it would have if created at now.
func (p *Page) inputTerms(r *req, in mandate.CreateInput, now time.Time) termsView {
	v := p.terms(r, in.AmountType, in.Amount, in.MaxAmount, in.Schedule)
	v.Description, v.NoticeDays = in.Description, in.NoticeDays
	s := in.Schedule
	if s.Timezone == "" {
		s.Timezone = mandate.DefaultTimezone
	}
	if _, err := s.Location(); err == nil {
		if first, ok := s.FirstOnOrAfter(s.DateAt(now)); ok {
			v.FirstDate = date(first.Date)
		}
	}
	return v
}
