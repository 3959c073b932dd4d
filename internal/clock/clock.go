// Package clock is the injectable time source: production uses System; tests
// use a Fake they move by hand, so months of schedules run in seconds.
package clock

import (
	"sync"
	"time"
)

// Clock says what time it is.
type Clock interface {
	Now() time.Time
}

// System is the real clock.
type System struct{}

// Now implements Clock.
func (System) Now() time.Time { return time.Now() }

// Fake is a clock that moves only when told. Safe for concurrent use.
type Fake struct {
	mu  sync.Mutex
	now time.Time
}

// NewFake starts a fake clock at t.
func NewFake(t time.Time) *Fake { return &Fake{now: t} }

// Now implements Clock.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Advance moves the clock forward by d.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

// Set moves the clock to t.
func (f *Fake) Set(t time.Time) {
	f.mu.Lock()
	f.now = t
	f.mu.Unlock()
}

// From is a running clock that reads t at its start: the real clock moved
// by a fixed offset. `charges run-due --as-of` runs on one to act as of a
// later instant.
type From struct{ offset time.Duration }

// StartingAt returns a clock that reads t now and runs on from there.
func StartingAt(t time.Time) From { return From{offset: time.Until(t)} }

// Now implements Clock.
func (f From) Now() time.Time { return time.Now().Add(f.offset) }
