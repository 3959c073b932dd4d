package mandate

import (
	"fmt"
	"sync"
	"time"
)

// bankZone is the banks' day: the per-card failure cap counts in it.
var bankZone = mustZone("Asia/Shanghai")

func mustZone(name string) *time.Location {
	l, err := time.LoadLocation(name)
	if err != nil {
		panic(err)
	}
	return l
}

func bankDay(t time.Time) time.Time {
	y, m, d := t.In(bankZone).Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// nextBankDay returns the instant the bank day after t's begins.
func nextBankDay(t time.Time) time.Time {
	y, m, d := t.In(bankZone).Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, bankZone).UTC()
}

// Interval is a schedule's kind: monthly or weekly. The set is closed:
// the mandates table's CHECK mirrors it (migration 005), and every switch
// over it fails loudly on another value. A new kind is added here, in
// checkShape, After, onOrAfter, Period, amountText and that CHECK.
type Interval string

// Schedule intervals.
const (
	IntervalMonth Interval = "month"
	IntervalWeek  Interval = "week"
)

// DefaultTimezone is a schedule's zone when none is given.
const DefaultTimezone = "Asia/Shanghai"

// maxScheduleCharges caps Schedule.MaxCharges: 100 years of monthly charges.
const maxScheduleCharges = 1200

// maxStartYear is the last year a schedule may start in: its first period
// and the one after stay within year 9999, whose keys have four digits.
const maxStartYear = 9998

// A date is a time.Time at 00:00 UTC naming a calendar day, which is what
// pgx returns for a Postgres `date`. Dates compare with Before, After and
// Equal; their calendar day is read in UTC.

// DateOf returns the date y-m-d at 00:00 UTC. Out-of-range values
// normalize as in time.Date (DateOf(2027, 2, 29) is 2027-03-01).
func DateOf(y int, m time.Month, d int) time.Time {
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// ParseDate parses "2006-01-02" into a date. It rejects any other layout
// and days that do not exist (2027-02-29).
func ParseDate(s string) (time.Time, error) {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("date must be YYYY-MM-DD: %w", err)
	}
	return t, nil
}

// Schedule says on which dates a mandate charges. Charge dates are calendar
// dates; Timezone only decides when a date begins (DueAt, DateAt).
//
// A monthly schedule (IntervalMonth) on day D charges on day D of each
// month. In a month with fewer than D days it charges on that month's last
// day: Feb 28 (Feb 29 in a leap year), the 30th in a 30-day month. It never
// moves a charge into the next month, and the anchor stays D, so the month
// after a short month goes back to D: day 31 charges Jan 31, Feb 28,
// Mar 31, Apr 30, May 31; day 30 charges Jan 30, Feb 28 (29), Mar 30; day 29
// charges Jan 29, Feb 28 (29 in a leap year), Mar 29. A monthly period's key
// is its charge date's "YYYY-MM".
//
// A weekly schedule (IntervalWeek) charges on the ISO weekday Weekday of
// each ISO 8601 week (Monday to Sunday). A weekly period's key is the ISO
// week of its charge date, "YYYY-Www" (time.ISOWeek), whose year can differ
// from the date's: 2027-01-01, a Friday, is in 2026-W53.
//
// The first charge is the first charge date on or after StartDate; none is
// after EndDate. MaxCharges is stored here but counted by the caller.
type Schedule struct {
	Interval   Interval  // IntervalMonth or IntervalWeek
	DayOfMonth int       // month: 1–31; week: 0
	Weekday    int       // week: 1 (Monday) … 7 (Sunday), ISO 8601; month: 0
	StartDate  time.Time // a date; the first charge is on or after it
	EndDate    time.Time // a date, inclusive; zero: none
	MaxCharges int       // 0: none (counted by the caller, not here)
	Timezone   string    // IANA name; "" means DefaultTimezone
}

// Validate checks the schedule. Errors are *FieldError (matching
// ErrInvalid) naming "schedule.interval", "schedule.day_of_month",
// "schedule.weekday", "schedule.start_date", "schedule.end_date",
// "schedule.max_charges" or "schedule.timezone", the first rule broken in
// that order:
//   - interval is "month" or "week";
//   - month needs day_of_month 1–31 and no weekday (0);
//     week needs weekday 1–7 and no day_of_month (0);
//   - start_date is set and is a date (00:00 UTC) from 0001-01-01 to
//     9998-12-31, so that every period key has a four-digit year that
//     Period reads back (a weekly schedule from 0000-01-01 gave "-001-W52");
//   - end_date is zero, or a date not before start_date;
//   - max_charges is 0 (none) to 1200;
//   - timezone is empty (DefaultTimezone) or loads with time.LoadLocation,
//     and is not "Local";
//   - at least one charge date lies between start_date and end_date, else
//     "schedule.end_date".
func (s Schedule) Validate() error {
	if err := s.checkShape(); err != nil {
		return err
	}
	if s.StartDate.IsZero() {
		return &FieldError{Field: "schedule.start_date", Message: "is required"}
	}
	if !isDate(s.StartDate) {
		return &FieldError{Field: "schedule.start_date", Message: "must be a date (00:00 UTC)"}
	}
	if y := s.StartDate.Year(); y < 1 || y > maxStartYear {
		return &FieldError{Field: "schedule.start_date", Message: fmt.Sprintf("must be from 0001-01-01 to %04d-12-31", maxStartYear)}
	}
	if !s.EndDate.IsZero() {
		if !isDate(s.EndDate) {
			return &FieldError{Field: "schedule.end_date", Message: "must be a date (00:00 UTC)"}
		}
		if s.EndDate.Before(s.StartDate) {
			return &FieldError{Field: "schedule.end_date", Message: "must not be before start_date"}
		}
	}
	if s.MaxCharges < 0 || s.MaxCharges > maxScheduleCharges {
		return &FieldError{Field: "schedule.max_charges", Message: fmt.Sprintf("must be 0 (none) to %d", maxScheduleCharges)}
	}
	if _, err := s.Location(); err != nil {
		return err
	}
	if _, ok := s.First(); !ok {
		return &FieldError{Field: "schedule.end_date", Message: "no charge date between start_date and end_date"}
	}
	return nil
}

// checkShape checks the interval and its day; the methods that compute
// dates need them and answer nothing for a schedule that fails it.
func (s Schedule) checkShape() error {
	switch s.Interval {
	case IntervalMonth:
		if s.DayOfMonth < 1 || s.DayOfMonth > 31 {
			return &FieldError{Field: "schedule.day_of_month", Message: "must be 1–31 for a monthly schedule"}
		}
		if s.Weekday != 0 {
			return &FieldError{Field: "schedule.weekday", Message: "must be absent for a monthly schedule"}
		}
	case IntervalWeek:
		if s.Weekday < 1 || s.Weekday > 7 {
			return &FieldError{Field: "schedule.weekday", Message: "must be 1 (Monday) to 7 (Sunday) for a weekly schedule"}
		}
		if s.DayOfMonth != 0 {
			return &FieldError{Field: "schedule.day_of_month", Message: "must be absent for a weekly schedule"}
		}
	default:
		return &FieldError{Field: "schedule.interval", Message: `must be "month" or "week"`}
	}
	return nil
}

// Location returns the schedule's zone: DefaultTimezone when Timezone is
// empty. Errors: *FieldError "schedule.timezone" for a name that does not
// load or is "Local" (the server's zone, which a mandate must not depend
// on); a plain error if DefaultTimezone itself does not load (no tzdata).
func (s Schedule) Location() (*time.Location, error) {
	if s.Timezone == "" {
		loc, err := loadZone(DefaultTimezone)
		if err != nil {
			return nil, fmt.Errorf("load default time zone %s: %w", DefaultTimezone, err)
		}
		return loc, nil
	}
	if s.Timezone == "Local" {
		return nil, &FieldError{Field: "schedule.timezone", Message: "must be an IANA time zone name, not Local"}
	}
	loc, err := loadZone(s.Timezone)
	if err != nil {
		return nil, &FieldError{Field: "schedule.timezone", Message: "is not a known IANA time zone"}
	}
	return loc, nil
}

// zones caches loaded time zones by name. time.LoadLocation reads the zone
// file on every call, and a run dates every due mandate; a *time.Location
// is immutable, so the cache holds no state that could change under a
// caller.
var zones sync.Map

func loadZone(name string) (*time.Location, error) {
	if loc, ok := zones.Load(name); ok {
		return loc.(*time.Location), nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, err
	}
	zones.Store(name, loc)
	return loc, nil
}

// Period is one charging period: its key and its charge date.
type Period struct {
	Key  string    // month: "2027-01"; week: ISO 8601 week "2027-W05"
	Date time.Time // the charge date, a date
}

// First returns the first period, whose Date is on or after StartDate and
// not after EndDate (if set). It returns false if there is none, or if the
// interval, day_of_month, weekday or start_date is invalid.
func (s Schedule) First() (Period, bool) {
	return s.FirstOnOrAfter(s.StartDate)
}

// After returns the period after p (the next month or ISO week after the
// one p's Date is in). It returns false past EndDate, or for a schedule
// First rejects. A result before StartDate is never returned: for a p before
// the schedule's start, After is First.
func (s Schedule) After(p Period) (Period, bool) {
	y, m, d := p.Date.UTC().Date()
	day := DateOf(y, m, d)
	var next time.Time
	switch s.Interval {
	case IntervalWeek:
		next = day.AddDate(0, 0, 8-isoWeekday(day)) // next Monday
	case IntervalMonth:
		next = DateOf(y, m+1, 1)
	default:
		return Period{}, false // not a schedule First accepts (checkShape)
	}
	return s.FirstOnOrAfter(next)
}

// FirstOnOrAfter returns the first period whose Date is on or after the
// later of d and StartDate, and not after EndDate (if set); d is a date,
// its time of day is ignored. Use it to resume: periods before d are not
// returned. It returns false if there is none, or for a schedule First
// rejects.
func (s Schedule) FirstOnOrAfter(d time.Time) (Period, bool) {
	if s.checkShape() != nil || s.StartDate.IsZero() {
		return Period{}, false
	}
	y, m, dd := d.UTC().Date()
	from := DateOf(y, m, dd)
	if from.Before(s.StartDate) {
		from = s.StartDate
	}
	p := s.onOrAfter(from)
	if !s.EndDate.IsZero() && p.Date.After(s.EndDate) {
		return Period{}, false
	}
	return p, true
}

// onOrAfter returns the period with the first charge date on or after the
// date from, ignoring StartDate and EndDate. The shape must be valid.
func (s Schedule) onOrAfter(from time.Time) Period {
	y, m, _ := from.Date()
	switch s.Interval {
	case IntervalWeek:
		date := from.AddDate(0, 0, (s.Weekday-isoWeekday(from)+7)%7)
		return Period{Key: weekKey(date), Date: date}
	case IntervalMonth:
		date := s.monthDate(y, m)
		if date.Before(from) {
			date = s.monthDate(y, m+1)
		}
		return Period{Key: fmt.Sprintf("%04d-%02d", date.Year(), int(date.Month())), Date: date}
	default:
		panic(fmt.Sprintf("mandate: schedule interval %q passed checkShape", s.Interval))
	}
}

// monthDate is the charge date in month m of year y (m may be 13: January
// of y+1): day DayOfMonth, or the month's last day if it is shorter.
func (s Schedule) monthDate(y int, m time.Month) time.Time {
	first := DateOf(y, m, 1)
	last := first.AddDate(0, 1, -1).Day()
	return first.AddDate(0, 0, min(s.DayOfMonth, last)-1)
}

// Period parses a period key of the schedule's interval ("2027-01" monthly,
// "2027-W05" weekly) and returns the period with its charge date.
// Errors: *FieldError "period" if the key is malformed, of the other
// interval, names no such month or week (2027-W53), or its charge date is
// before StartDate or after EndDate; the *FieldError of Validate if the
// interval, day_of_month or weekday is invalid.
func (s Schedule) Period(key string) (Period, error) {
	if err := s.checkShape(); err != nil {
		return Period{}, err
	}
	var date time.Time
	switch s.Interval {
	case IntervalWeek:
		y, ok1 := digits(key, 0, 4)
		w, ok2 := digits(key, 6, 8)
		if len(key) != 8 || key[4:6] != "-W" || !ok1 || !ok2 || y < 1 || w < 1 || w > 53 {
			return Period{}, &FieldError{Field: "period", Message: "must be an ISO week YYYY-Www for a weekly schedule"}
		}
		jan4 := DateOf(y, 1, 4) // always in ISO week 1
		monday := jan4.AddDate(0, 0, 1-isoWeekday(jan4)+7*(w-1))
		if iy, iw := monday.ISOWeek(); iy != y || iw != w {
			return Period{}, &FieldError{Field: "period", Message: "names a week the year does not have"}
		}
		date = monday.AddDate(0, 0, s.Weekday-1)
	case IntervalMonth:
		y, ok1 := digits(key, 0, 4)
		m, ok2 := digits(key, 5, 7)
		if len(key) != 7 || key[4] != '-' || !ok1 || !ok2 || y < 1 || m < 1 || m > 12 {
			return Period{}, &FieldError{Field: "period", Message: "must be YYYY-MM for a monthly schedule"}
		}
		date = s.monthDate(y, time.Month(m))
	default:
		return Period{}, fmt.Errorf("mandate: schedule interval %q passed checkShape", s.Interval)
	}
	if !s.StartDate.IsZero() && date.Before(s.StartDate) {
		return Period{}, &FieldError{Field: "period", Message: "is before the schedule's start_date"}
	}
	if !s.EndDate.IsZero() && date.After(s.EndDate) {
		return Period{}, &FieldError{Field: "period", Message: "is after the schedule's end_date"}
	}
	return Period{Key: key, Date: date}, nil
}

// DueAt returns the instant date begins (00:00) in the schedule's zone, in
// UTC. A midnight that does not exist (a DST gap) normalizes as time.Date
// does. It panics if the zone does not load (see Location): validate a
// schedule before storing it.
func (s Schedule) DueAt(date time.Time) time.Time {
	loc := s.mustLocation()
	y, m, d := date.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, loc).UTC()
}

// DateAt returns the calendar date of instant t in the schedule's zone, as
// a date (00:00 UTC). It panics if the zone does not load, as DueAt.
func (s Schedule) DateAt(t time.Time) time.Time {
	y, m, d := t.In(s.mustLocation()).Date()
	return DateOf(y, m, d)
}

func (s Schedule) mustLocation() *time.Location {
	loc, err := s.Location()
	if err != nil {
		// A stored schedule was validated, so this is a missing tzdata or a
		// caller that skipped Validate: fail loudly rather than charge on
		// another zone's day.
		panic("mandate: schedule time zone: " + err.Error())
	}
	return loc
}

// isDate reports whether t is 00:00 UTC.
func isDate(t time.Time) bool {
	y, m, d := t.UTC().Date()
	return t.Equal(DateOf(y, m, d))
}

// isoWeekday is t's ISO 8601 weekday: 1 (Monday) … 7 (Sunday).
func isoWeekday(t time.Time) int {
	return (int(t.Weekday())+6)%7 + 1
}

func weekKey(date time.Time) string {
	y, w := date.ISOWeek()
	return fmt.Sprintf("%04d-W%02d", y, w)
}

// digits parses s[i:j] as ASCII decimal digits; false if s is too short or
// holds anything else (strconv.Atoi would take a sign).
func digits(s string, i, j int) (int, bool) {
	if len(s) < j {
		return 0, false
	}
	n := 0
	for _, c := range []byte(s[i:j]) {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}
