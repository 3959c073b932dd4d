package mandate_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/quickpay/quickpay/mandate"
)

// FuzzParseDate: what ParseDate accepts is a date (00:00 UTC) that formats
// back to exactly the input; anything else is an error, never a panic.
func FuzzParseDate(f *testing.F) {
	for _, s := range []string{"2027-01-31", "2028-02-29", "2027-02-29", "0000-01-01", "9999-12-31",
		"2027-1-31", "2027-01-31T00:00:00Z", " 2027-01-31", "+2027-01-31", "2027-13-01", "2027-00-10",
		"２０２７-01-31", "", "2027-01-3\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := mandate.ParseDate(s)
		if err != nil {
			return
		}
		if d.Location() != time.UTC || d.Hour() != 0 || d.Minute() != 0 || d.Second() != 0 || d.Nanosecond() != 0 {
			t.Fatalf("ParseDate(%q) = %v, not a date", s, d)
		}
		if got := d.Format(time.DateOnly); got != s {
			t.Fatalf("ParseDate(%q) formats back as %q", s, got)
		}
	})
}

// FuzzSchedule builds schedules from arbitrary fields and period keys.
// Properties: Validate and Period refuse with *FieldError (matching
// ErrInvalid), never a panic; a valid schedule's First is within its
// dates and is what Period of its own key answers; a period key Period
// accepts is the key of the date it returns (the key round-trips), that
// date is on the schedule's day (month: day_of_month or the month's last
// day; week: the ISO weekday) and within start and end; After moves
// strictly forward.
func FuzzSchedule(f *testing.F) {
	f.Add(true, 31, 0, "2027-01-31", "", 0, "", "2027-02")
	f.Add(true, 29, 0, "2027-01-01", "2028-12-31", 12, "Asia/Shanghai", "2028-02")
	f.Add(false, 0, 5, "2026-12-28", "", 0, "UTC", "2026-W53")
	f.Add(false, 0, 7, "2027-01-01", "2027-01-03", 1, "America/New_York", "2027-W53")
	f.Add(true, 0, 0, "", "", -1, "Local", "2027-1")
	f.Add(false, 3, 8, "2027-02-29", "2026-01-01", 1201, "../../etc/passwd", "0000-W01")
	f.Add(true, 15, 0, "0001-01-01", "9999-12-31", 0, "", "9999-12")
	f.Fuzz(func(t *testing.T, monthly bool, dom, weekday int, start, end string, maxCharges int, tz, key string) {
		s := mandate.Schedule{Interval: mandate.IntervalWeek, DayOfMonth: dom, Weekday: weekday,
			MaxCharges: maxCharges, Timezone: tz}
		if monthly {
			s.Interval = mandate.IntervalMonth
		}
		s.StartDate, _ = mandate.ParseDate(start)
		s.EndDate, _ = mandate.ParseDate(end)

		keyOf := func(d time.Time) string {
			if monthly {
				return fmt.Sprintf("%04d-%02d", d.Year(), int(d.Month()))
			}
			y, w := d.ISOWeek()
			return fmt.Sprintf("%04d-W%02d", y, w)
		}
		onDay := func(d time.Time) bool {
			if monthly {
				last := time.Date(d.Year(), d.Month()+1, 0, 0, 0, 0, 0, time.UTC).Day()
				return d.Day() == min(dom, last)
			}
			return (int(d.Weekday())+6)%7+1 == weekday
		}
		inRange := func(d time.Time) bool {
			return !d.Before(s.StartDate) && (s.EndDate.IsZero() || !d.After(s.EndDate))
		}

		if p, err := s.Period(key); err != nil {
			var fe *mandate.FieldError
			if !errors.As(err, &fe) || !errors.Is(err, mandate.ErrInvalid) {
				t.Fatalf("Period(%q) error %T %v, want a *FieldError", key, err, err)
			}
		} else if p.Key != key || keyOf(p.Date) != key || !onDay(p.Date) ||
			(!s.StartDate.IsZero() && !inRange(p.Date)) {
			t.Fatalf("Period(%q) = %s %v: not that period's charge date", key, p.Key, p.Date)
		}

		if err := s.Validate(); err != nil {
			var fe *mandate.FieldError
			if !errors.As(err, &fe) || !errors.Is(err, mandate.ErrInvalid) {
				t.Fatalf("Validate error %T %v, want a *FieldError", err, err)
			}
			return
		}
		first, ok := s.First()
		if !ok || !inRange(first.Date) || !onDay(first.Date) || first.Key != keyOf(first.Date) {
			t.Fatalf("First of a valid schedule = %+v, %v", first, ok)
		}
		if p, err := s.Period(first.Key); err != nil || !p.Date.Equal(first.Date) {
			t.Fatalf("Period(%q) = %+v, %v; want First %v", first.Key, p, err, first.Date)
		}
		if next, ok := s.After(first); ok && (!next.Date.After(first.Date) || next.Key == first.Key || !inRange(next.Date)) {
			t.Fatalf("After(%+v) = %+v", first, next)
		}
		_ = s.DueAt(first.Date) // panics only for a zone Validate refused
	})
}
