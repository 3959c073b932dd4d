package mandate_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/quickpay/quickpay/mandate"
)

// date parses a literal "2006-01-02" for a test.
func date(t *testing.T, s string) time.Time {
	t.Helper()
	d, err := mandate.ParseDate(s)
	if err != nil {
		t.Fatalf("ParseDate(%q): %v", s, err)
	}
	return d
}

func monthly(t *testing.T, day int, start, end string) mandate.Schedule {
	t.Helper()
	s := mandate.Schedule{Interval: mandate.IntervalMonth, DayOfMonth: day, StartDate: date(t, start)}
	if end != "" {
		s.EndDate = date(t, end)
	}
	return s
}

func weekly(t *testing.T, weekday int, start, end string) mandate.Schedule {
	t.Helper()
	s := mandate.Schedule{Interval: mandate.IntervalWeek, Weekday: weekday, StartDate: date(t, start)}
	if end != "" {
		s.EndDate = date(t, end)
	}
	return s
}

// walk returns the schedule's periods from First through After, at most
// limit of them.
func walk(t *testing.T, s mandate.Schedule, limit int) []mandate.Period {
	t.Helper()
	var ps []mandate.Period
	p, ok := s.First()
	for ok && len(ps) < limit {
		ps = append(ps, p)
		p, ok = s.After(p)
	}
	return ps
}

func dates(ps []mandate.Period) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Date.Format(time.RFC3339)[:10]
		if !p.Date.Equal(mandate.DateOf(p.Date.Year(), p.Date.Month(), p.Date.Day())) || p.Date.Location() != time.UTC {
			out[i] += " (not a date)"
		}
	}
	return out
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// fieldOf returns the Field of err's *FieldError, failing the test if err
// is not one or does not match ErrInvalid.
func fieldOf(t *testing.T, err error) string {
	t.Helper()
	var fe *mandate.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T) is not a *FieldError", err, err)
	}
	if !errors.Is(err, mandate.ErrInvalid) {
		t.Errorf("errors.Is(%v, ErrInvalid) is false", err)
	}
	return fe.Field
}

func TestScheduleMonthEnd(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		day   int
		start string
		want  []string
	}{
		{"day 31 in a common year", 31, "2027-01-01", []string{
			"2027-01-31", "2027-02-28", "2027-03-31", "2027-04-30", "2027-05-31", "2027-06-30",
			"2027-07-31", "2027-08-31", "2027-09-30", "2027-10-31", "2027-11-30", "2027-12-31"}},
		{"day 30 in a common year", 30, "2027-01-01", []string{
			"2027-01-30", "2027-02-28", "2027-03-30", "2027-04-30", "2027-05-30", "2027-06-30",
			"2027-07-30", "2027-08-30", "2027-09-30", "2027-10-30", "2027-11-30", "2027-12-30"}},
		{"day 29 in a common year", 29, "2027-01-01", []string{
			"2027-01-29", "2027-02-28", "2027-03-29", "2027-04-29", "2027-05-29", "2027-06-29",
			"2027-07-29", "2027-08-29", "2027-09-29", "2027-10-29", "2027-11-29", "2027-12-29"}},
		{"day 31 in a leap year", 31, "2028-01-01", []string{
			"2028-01-31", "2028-02-29", "2028-03-31", "2028-04-30", "2028-05-31", "2028-06-30",
			"2028-07-31", "2028-08-31", "2028-09-30", "2028-10-31", "2028-11-30", "2028-12-31"}},
		{"day 30 in a leap year", 30, "2028-01-01", []string{
			"2028-01-30", "2028-02-29", "2028-03-30", "2028-04-30", "2028-05-30", "2028-06-30",
			"2028-07-30", "2028-08-30", "2028-09-30", "2028-10-30", "2028-11-30", "2028-12-30"}},
		{"day 29 in a leap year", 29, "2028-01-01", []string{
			"2028-01-29", "2028-02-29", "2028-03-29", "2028-04-29", "2028-05-29", "2028-06-29",
			"2028-07-29", "2028-08-29", "2028-09-29", "2028-10-29", "2028-11-29", "2028-12-29"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := monthly(t, tt.day, tt.start, "")
			ps := walk(t, s, 12)
			if got := dates(ps); !equalStrings(got, tt.want) {
				t.Fatalf("dates:\n got %v\nwant %v", got, tt.want)
			}
			for _, p := range ps {
				if want := p.Date.Format("2006-01"); p.Key != want {
					t.Errorf("period %s: key %q, want %q", p.Date.Format(time.DateOnly), p.Key, want)
				}
				back, err := s.Period(p.Key)
				if err != nil || back.Key != p.Key || !back.Date.Equal(p.Date) {
					t.Errorf("Period(%q) = %v, %v; want %v", p.Key, back, err, p)
				}
			}
		})
	}
}

func TestScheduleFirst(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		s        mandate.Schedule
		wantDate string
		wantKey  string
	}{
		{"start after the day charges next month", monthly(t, 5, "2027-03-10", ""), "2027-04-05", "2027-04"},
		{"start on the day charges that day", monthly(t, 5, "2027-03-05", ""), "2027-03-05", "2027-03"},
		{"start before the day charges that month", monthly(t, 20, "2027-03-05", ""), "2027-03-20", "2027-03"},
		{"start after the day in december charges next january", monthly(t, 5, "2027-12-06", ""), "2028-01-05", "2028-01"},
		{"start on a short month's last day charges that day", monthly(t, 31, "2027-02-28", ""), "2027-02-28", "2027-02"},
		{"start on the 30th of a 30-day month charges that day", monthly(t, 31, "2027-04-30", ""), "2027-04-30", "2027-04"},
		{"weekly start before the weekday charges that week", weekly(t, 3, "2027-01-04", ""), "2027-01-06", "2027-W01"},
		{"weekly start after the weekday charges next week", weekly(t, 3, "2027-01-01", ""), "2027-01-06", "2027-W01"},
		{"weekly start on the weekday keys the iso year", weekly(t, 5, "2027-01-01", ""), "2027-01-01", "2026-W53"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, ok := tt.s.First()
			if !ok {
				t.Fatal("First: no period")
			}
			if got := p.Date.Format(time.RFC3339); got != tt.wantDate+"T00:00:00Z" {
				t.Errorf("date %s, want %s", got, tt.wantDate)
			}
			if p.Key != tt.wantKey {
				t.Errorf("key %q, want %q", p.Key, tt.wantKey)
			}
		})
	}
}

func TestScheduleEndDate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		s    mandate.Schedule
		want []string
	}{
		{"end on a charge date includes it", monthly(t, 15, "2027-01-01", "2027-03-15"),
			[]string{"2027-01-15", "2027-02-15", "2027-03-15"}},
		{"end the day before a charge date cuts it", monthly(t, 15, "2027-01-01", "2027-03-14"),
			[]string{"2027-01-15", "2027-02-15"}},
		{"end on a clamped month-end includes it", monthly(t, 31, "2027-01-01", "2027-02-28"),
			[]string{"2027-01-31", "2027-02-28"}},
		{"end equal to start on a charge date is one charge", monthly(t, 1, "2027-01-01", "2027-01-01"),
			[]string{"2027-01-01"}},
		{"weekly end on a charge date includes it", weekly(t, 3, "2027-01-01", "2027-01-20"),
			[]string{"2027-01-06", "2027-01-13", "2027-01-20"}},
		{"weekly end before a charge date cuts it", weekly(t, 3, "2027-01-01", "2027-01-19"),
			[]string{"2027-01-06", "2027-01-13"}},
		{"end before the first charge date leaves none", monthly(t, 15, "2027-01-16", "2027-02-14"),
			nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ps := walk(t, tt.s, 100)
			if got := dates(ps); !equalStrings(got, tt.want) {
				t.Fatalf("dates:\n got %v\nwant %v", got, tt.want)
			}
			if len(ps) == 0 {
				return
			}
			last := ps[len(ps)-1]
			if p, ok := tt.s.After(last); ok {
				t.Errorf("After(last %s) = %v, want none past end_date", last.Key, p)
			}
		})
	}
}

func TestScheduleWeekly(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		s         mandate.Schedule
		count     int
		first     string
		firstKey  string
		last      string
		lastKey   string
		wantWkday time.Weekday
	}{
		{"wednesdays of 2027", weekly(t, 3, "2027-01-01", "2027-12-31"),
			52, "2027-01-06", "2027-W01", "2027-12-29", "2027-W52", time.Wednesday},
		{"sundays of 2027 start in the last iso week of 2026", weekly(t, 7, "2027-01-01", "2027-12-31"),
			52, "2027-01-03", "2026-W53", "2027-12-26", "2027-W51", time.Sunday},
		{"mondays of 2027", weekly(t, 1, "2027-01-01", "2027-12-31"),
			52, "2027-01-04", "2027-W01", "2027-12-27", "2027-W52", time.Monday},
		{"thursdays of 2026 reach week 53", weekly(t, 4, "2026-01-01", "2026-12-31"),
			53, "2026-01-01", "2026-W01", "2026-12-31", "2026-W53", time.Thursday},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ps := walk(t, tt.s, 60)
			if len(ps) != tt.count {
				t.Fatalf("%d periods, want %d", len(ps), tt.count)
			}
			first, last := ps[0], ps[len(ps)-1]
			if d := first.Date.Format(time.DateOnly); d != tt.first || first.Key != tt.firstKey {
				t.Errorf("first %s %s, want %s %s", d, first.Key, tt.first, tt.firstKey)
			}
			if d := last.Date.Format(time.DateOnly); d != tt.last || last.Key != tt.lastKey {
				t.Errorf("last %s %s, want %s %s", d, last.Key, tt.last, tt.lastKey)
			}
			seen := map[string]bool{}
			for i, p := range ps {
				if p.Date.Weekday() != tt.wantWkday {
					t.Errorf("%s is a %s, want %s", p.Date.Format(time.DateOnly), p.Date.Weekday(), tt.wantWkday)
				}
				if i > 0 && p.Date.Sub(ps[i-1].Date) != 7*24*time.Hour {
					t.Errorf("%s is %s after the previous charge, want 7 days", p.Date.Format(time.DateOnly), p.Date.Sub(ps[i-1].Date))
				}
				if seen[p.Key] {
					t.Errorf("key %s repeated", p.Key)
				}
				seen[p.Key] = true
				y, w := p.Date.ISOWeek()
				if want := fmt.Sprintf("%04d-W%02d", y, w); p.Key != want {
					t.Errorf("%s: key %q, want ISO week %q", p.Date.Format(time.DateOnly), p.Key, want)
				}
				back, err := tt.s.Period(p.Key)
				if err != nil || !back.Date.Equal(p.Date) {
					t.Errorf("Period(%q) = %v, %v; want date %s", p.Key, back, err, p.Date.Format(time.DateOnly))
				}
			}
		})
	}
}

func TestSchedulePeriod(t *testing.T) {
	t.Parallel()
	month31 := monthly(t, 31, "2027-01-01", "")
	bounded := monthly(t, 10, "2027-01-01", "2027-03-31")
	wed := weekly(t, 3, "2027-01-01", "")
	thu2026 := weekly(t, 4, "2026-01-01", "")
	good := []struct {
		name string
		s    mandate.Schedule
		key  string
		want string
	}{
		{"month key on a long month", month31, "2027-03", "2027-03-31"},
		{"month key on february clamps", month31, "2027-02", "2027-02-28"},
		{"month key on a leap february clamps to the 29th", month31, "2028-02", "2028-02-29"},
		{"month key in a later year", month31, "2031-11", "2031-11-30"},
		{"month key equal to end month", bounded, "2027-03", "2027-03-10"},
		{"week key", wed, "2027-W05", "2027-02-03"},
		{"week key 53 in a year that has it", thu2026, "2026-W53", "2026-12-31"},
		{"week key on sunday", weekly(t, 7, "2027-01-01", ""), "2027-W01", "2027-01-10"},
	}
	for _, tt := range good {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := tt.s.Period(tt.key)
			if err != nil {
				t.Fatalf("Period(%q): %v", tt.key, err)
			}
			if got := p.Date.Format(time.RFC3339); got != tt.want+"T00:00:00Z" || p.Key != tt.key {
				t.Errorf("Period(%q) = %s %s, want %s %s", tt.key, p.Key, got, tt.key, tt.want)
			}
		})
	}
	bad := []struct {
		name string
		s    mandate.Schedule
		key  string
	}{
		{"month 13", month31, "2027-13"},
		{"month 00", month31, "2027-00"},
		{"one-digit month", month31, "2027-1"},
		{"not a key", month31, "abc"},
		{"empty", month31, ""},
		{"signed month", month31, "2027--1"},
		{"trailing text", month31, "2027-01x"},
		{"week key on a monthly schedule", month31, "2027-W05"},
		{"month key on a weekly schedule", wed, "2027-02"},
		{"week 54", wed, "2027-W54"},
		{"week 00", wed, "2027-W00"},
		{"week 53 in a year of 52 weeks", wed, "2027-W53"},
		{"one-digit week", wed, "2027-W5"},
		{"lower-case w", wed, "2027-w05"},
		{"month before start", month31, "2026-12"},
		{"month after end", bounded, "2027-04"},
		{"week before start", wed, "2026-W53"},
		{"week whose charge date is before a mid-week start", weekly(t, 1, "2027-01-05", ""), "2027-W01"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := tt.s.Period(tt.key)
			if err == nil {
				t.Fatalf("Period(%q) = %v, want an error", tt.key, p)
			}
			if f := fieldOf(t, err); f != "period" {
				t.Errorf("field %q, want period", f)
			}
		})
	}
}

func TestScheduleFirstOnOrAfter(t *testing.T) {
	t.Parallel()
	tenth := monthly(t, 10, "2027-01-01", "")
	tests := []struct {
		name string
		s    mandate.Schedule
		from string
		want string // "" for none
	}{
		{"resume after two paused periods skips them", tenth, "2027-03-20", "2027-04-10"},
		{"resume on a charge date charges that day", tenth, "2027-04-10", "2027-04-10"},
		{"resume the day after a charge date waits a month", tenth, "2027-04-11", "2027-05-10"},
		{"a date before start gives the first period", tenth, "2026-06-01", "2027-01-10"},
		{"a date past end gives none", monthly(t, 10, "2027-01-01", "2027-06-30"), "2027-06-11", ""},
		{"month end on the clamped day", monthly(t, 31, "2027-01-01", ""), "2027-02-28", "2027-02-28"},
		{"month end after the clamped day", monthly(t, 31, "2027-01-01", ""), "2027-03-01", "2027-03-31"},
		{"weekly resume mid-week waits for the next weekday", weekly(t, 3, "2027-01-01", ""), "2027-02-04", "2027-02-10"},
		{"weekly resume on the weekday charges that day", weekly(t, 3, "2027-01-01", ""), "2027-02-10", "2027-02-10"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, ok := tt.s.FirstOnOrAfter(date(t, tt.from))
			if tt.want == "" {
				if ok {
					t.Fatalf("FirstOnOrAfter(%s) = %v, want none", tt.from, p)
				}
				return
			}
			if !ok {
				t.Fatalf("FirstOnOrAfter(%s): none, want %s", tt.from, tt.want)
			}
			if got := p.Date.Format(time.DateOnly); got != tt.want {
				t.Errorf("FirstOnOrAfter(%s) = %s, want %s", tt.from, got, tt.want)
			}
		})
	}
	t.Run("after a back period resumes forward", func(t *testing.T) {
		t.Parallel()
		// After is relative to its argument; a resumer uses FirstOnOrAfter
		// so as not to pick up February.
		jan, _ := tenth.Period("2027-01")
		if p, ok := tenth.After(jan); !ok || p.Key != "2027-02" {
			t.Errorf("After(2027-01) = %v, %v; want 2027-02", p, ok)
		}
		if p, ok := tenth.FirstOnOrAfter(date(t, "2027-03-20")); !ok || p.Key != "2027-04" {
			t.Errorf("FirstOnOrAfter(2027-03-20) = %v, %v; want 2027-04", p, ok)
		}
	})
}

func TestScheduleDueAtDateAt(t *testing.T) {
	t.Parallel()
	due := []struct {
		name string
		tz   string
		date string
		want string
	}{
		{"default zone is shanghai", "", "2027-01-31", "2027-01-30T16:00:00Z"},
		{"shanghai", "Asia/Shanghai", "2027-01-31", "2027-01-30T16:00:00Z"},
		{"new york in winter", "America/New_York", "2027-01-31", "2027-01-31T05:00:00Z"},
		{"new york in summer", "America/New_York", "2027-07-01", "2027-07-01T04:00:00Z"},
		{"utc", "UTC", "2027-01-31", "2027-01-31T00:00:00Z"},
	}
	for _, tt := range due {
		t.Run("due at midnight in "+tt.name, func(t *testing.T) {
			t.Parallel()
			s := monthly(t, 1, "2027-01-01", "")
			s.Timezone = tt.tz
			d := date(t, tt.date)
			got := s.DueAt(d)
			if g := got.Format(time.RFC3339); g != tt.want {
				t.Errorf("DueAt(%s) = %s, want %s", tt.date, g, tt.want)
			}
			if back := s.DateAt(got); !back.Equal(d) {
				t.Errorf("DateAt(DueAt(%s)) = %s", tt.date, back.Format(time.RFC3339))
			}
		})
	}
	at := []struct {
		name string
		tz   string
		t    string
		want string
	}{
		{"shanghai midnight starts the day", "", "2027-01-30T16:00:00Z", "2027-01-31"},
		{"shanghai second before midnight is the day before", "", "2027-01-30T15:59:59Z", "2027-01-30"},
		{"new york midnight starts the day", "America/New_York", "2027-01-31T05:00:00Z", "2027-01-31"},
		{"new york second before midnight is the day before", "America/New_York", "2027-01-31T04:59:59Z", "2027-01-30"},
		{"new york late evening is a day behind utc", "America/New_York", "2027-07-02T02:00:00Z", "2027-07-01"},
	}
	for _, tt := range at {
		t.Run("date at: "+tt.name, func(t *testing.T) {
			t.Parallel()
			s := monthly(t, 1, "2027-01-01", "")
			s.Timezone = tt.tz
			in, err := time.Parse(time.RFC3339, tt.t)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.DateAt(in).Format(time.RFC3339); got != tt.want+"T00:00:00Z" {
				t.Errorf("DateAt(%s) = %s, want %s", tt.t, got, tt.want)
			}
		})
	}
}

func TestScheduleLocation(t *testing.T) {
	t.Parallel()
	t.Run("empty is the default zone", func(t *testing.T) {
		t.Parallel()
		loc, err := mandate.Schedule{}.Location()
		if err != nil || loc.String() != mandate.DefaultTimezone {
			t.Errorf("Location() = %v, %v; want %s", loc, err, mandate.DefaultTimezone)
		}
	})
	t.Run("named zone loads", func(t *testing.T) {
		t.Parallel()
		loc, err := mandate.Schedule{Timezone: "America/New_York"}.Location()
		if err != nil || loc.String() != "America/New_York" {
			t.Errorf("Location() = %v, %v; want America/New_York", loc, err)
		}
	})
	for _, tz := range []string{"Mars/Olympus_Mons", "Local", "../etc/passwd"} {
		t.Run("rejects "+tz, func(t *testing.T) {
			t.Parallel()
			_, err := mandate.Schedule{Timezone: tz}.Location()
			if err == nil {
				t.Fatal("no error")
			}
			if f := fieldOf(t, err); f != "schedule.timezone" {
				t.Errorf("field %q, want schedule.timezone", f)
			}
		})
	}
}

func TestScheduleValidate(t *testing.T) {
	t.Parallel()
	base := func(t *testing.T) mandate.Schedule { return monthly(t, 31, "2027-01-01", "") }
	tests := []struct {
		name  string
		edit  func(t *testing.T, s *mandate.Schedule)
		field string // "" for valid
	}{
		{"monthly is valid", func(t *testing.T, s *mandate.Schedule) {}, ""},
		{"weekly is valid", func(t *testing.T, s *mandate.Schedule) { *s = weekly(t, 7, "2027-01-01", "") }, ""},
		{"end on the only charge date is valid", func(t *testing.T, s *mandate.Schedule) { s.EndDate = date(t, "2027-01-31") }, ""},
		{"max charges 1200 is valid", func(t *testing.T, s *mandate.Schedule) { s.MaxCharges = 1200 }, ""},
		{"named timezone is valid", func(t *testing.T, s *mandate.Schedule) { s.Timezone = "America/New_York" }, ""},
		{"empty interval", func(t *testing.T, s *mandate.Schedule) { s.Interval = "" }, "schedule.interval"},
		{"unknown interval", func(t *testing.T, s *mandate.Schedule) { s.Interval = "year" }, "schedule.interval"},
		{"monthly day 0", func(t *testing.T, s *mandate.Schedule) { s.DayOfMonth = 0 }, "schedule.day_of_month"},
		{"monthly day 32", func(t *testing.T, s *mandate.Schedule) { s.DayOfMonth = 32 }, "schedule.day_of_month"},
		{"monthly with a weekday", func(t *testing.T, s *mandate.Schedule) { s.Weekday = 3 }, "schedule.weekday"},
		{"weekly weekday 0", func(t *testing.T, s *mandate.Schedule) { *s = weekly(t, 0, "2027-01-01", "") }, "schedule.weekday"},
		{"weekly weekday 8", func(t *testing.T, s *mandate.Schedule) { *s = weekly(t, 8, "2027-01-01", "") }, "schedule.weekday"},
		{"weekly with a day of month", func(t *testing.T, s *mandate.Schedule) {
			*s = weekly(t, 3, "2027-01-01", "")
			s.DayOfMonth = 5
		}, "schedule.day_of_month"},
		{"no start date", func(t *testing.T, s *mandate.Schedule) { s.StartDate = time.Time{} }, "schedule.start_date"},
		{"start date with a time of day", func(t *testing.T, s *mandate.Schedule) {
			s.StartDate = s.StartDate.Add(8 * time.Hour)
		}, "schedule.start_date"},
		{"start date at midnight in shanghai", func(t *testing.T, s *mandate.Schedule) {
			s.StartDate = time.Date(2027, 1, 1, 0, 0, 0, 0, time.FixedZone("CST", 8*3600))
		}, "schedule.start_date"},
		{"end date with a time of day", func(t *testing.T, s *mandate.Schedule) {
			s.EndDate = date(t, "2027-06-30").Add(time.Hour)
		}, "schedule.end_date"},
		{"end date before start date", func(t *testing.T, s *mandate.Schedule) { s.EndDate = date(t, "2026-12-31") }, "schedule.end_date"},
		{"end date before the first charge date", func(t *testing.T, s *mandate.Schedule) { s.EndDate = date(t, "2027-01-30") }, "schedule.end_date"},
		{"negative max charges", func(t *testing.T, s *mandate.Schedule) { s.MaxCharges = -1 }, "schedule.max_charges"},
		{"max charges over 1200", func(t *testing.T, s *mandate.Schedule) { s.MaxCharges = 1201 }, "schedule.max_charges"},
		{"unknown timezone", func(t *testing.T, s *mandate.Schedule) { s.Timezone = "Mars/Olympus_Mons" }, "schedule.timezone"},
		{"local timezone", func(t *testing.T, s *mandate.Schedule) { s.Timezone = "Local" }, "schedule.timezone"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := base(t)
			tt.edit(t, &s)
			err := s.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate: nil, want %s", tt.field)
			}
			if f := fieldOf(t, err); f != tt.field {
				t.Errorf("field %q (%v), want %q", f, err, tt.field)
			}
		})
	}
}

func TestScheduleInvalidShapeHasNoPeriods(t *testing.T) {
	t.Parallel()
	for _, s := range []mandate.Schedule{
		{Interval: mandate.IntervalMonth, StartDate: mandate.DateOf(2027, 1, 1)},
		{Interval: mandate.IntervalWeek, Weekday: 9, StartDate: mandate.DateOf(2027, 1, 1)},
		{Interval: "year", DayOfMonth: 1, StartDate: mandate.DateOf(2027, 1, 1)},
		{Interval: mandate.IntervalMonth, DayOfMonth: 1}, // no start date
	} {
		t.Run(fmt.Sprintf("%s day %d weekday %d", s.Interval, s.DayOfMonth, s.Weekday), func(t *testing.T) {
			t.Parallel()
			if p, ok := s.First(); ok {
				t.Errorf("First() = %v, want none", p)
			}
		})
	}
}

func TestParseDate(t *testing.T) {
	t.Parallel()
	t.Run("a date is midnight utc", func(t *testing.T) {
		t.Parallel()
		d, err := mandate.ParseDate("2028-02-29")
		if err != nil {
			t.Fatal(err)
		}
		if got := d.Format(time.RFC3339); got != "2028-02-29T00:00:00Z" || d.Location() != time.UTC {
			t.Errorf("ParseDate = %s (%s)", got, d.Location())
		}
		if !d.Equal(mandate.DateOf(2028, time.February, 29)) {
			t.Errorf("ParseDate(2028-02-29) != DateOf(2028, 2, 29)")
		}
	})
	for _, s := range []string{"2027-02-29", "2027-2-28", "27-02-28", "", "2027-02-28T00:00:00Z", "2027/02/28"} {
		t.Run("rejects "+s, func(t *testing.T) {
			t.Parallel()
			if d, err := mandate.ParseDate(s); err == nil {
				t.Errorf("ParseDate(%q) = %s, want an error", s, d)
			}
		})
	}
}
