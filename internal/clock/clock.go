// Package clock is the time source of outrider's loops: the system clock
// when outrider runs, and Fake, which a test drives.
package clock

import "time"

// Clock tells the time and waits; the loops that schedule work take one.
type Clock interface {
	Now() time.Time
	// After waits like time.After.
	After(d time.Duration) <-chan time.Time
}

// Real is the system clock.
type Real struct{}

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// After returns time.After(d).
func (Real) After(d time.Duration) <-chan time.Time { return time.After(d) }
