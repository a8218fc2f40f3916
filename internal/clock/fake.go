package clock

import (
	"slices"
	"sync"
	"time"
)

// bound is how long NextWait waits for a call of After; it only turns a
// hang into a failure.
const bound = 10 * time.Second

// TB is the part of testing.TB that Fake uses to fail a test.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Fake is a Clock that moves only when the test moves it. Every call of
// After is recorded as a Wait, which the test takes in order with
// NextWait to learn that a goroutine is waiting, and for how long.
type Fake struct {
	bound time.Duration // how long NextWait waits

	mu      sync.Mutex
	now     time.Time
	hold    bool
	stopped bool
	pending []*Wait       // not ended yet
	untaken []*Wait       // not returned by NextWait or TakeWait yet, in call order
	called  chan struct{} // closed and replaced by each call of After
}

// Wait is one call of After.
type Wait struct {
	// D is the duration After was asked for.
	D time.Duration
	// At is when the wait is due: the time of the call plus D.
	At time.Time

	ch    chan time.Time
	ended bool // guarded by the Fake's mu
}

// NewFake returns a Fake that reads now.
func NewFake(now time.Time) *Fake {
	return &Fake{bound: bound, now: now, called: make(chan struct{})}
}

// HoldWaits makes every later wait last until Release or Stop ends it:
// Advance then only moves the time.
func (f *Fake) HoldWaits() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hold = true
}

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// After records a Wait of d. A wait of d <= 0, or one after Stop, ends at
// once.
func (f *Fake) After(d time.Duration) <-chan time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := &Wait{D: d, At: f.now.Add(d), ch: make(chan time.Time, 1)}
	if f.stopped {
		f.end(w)
		return w.ch
	}
	f.untaken = append(f.untaken, w)
	close(f.called)
	f.called = make(chan struct{})
	if d <= 0 {
		f.end(w)
	} else {
		f.pending = append(f.pending, w)
	}
	return w.ch
}

// Advance moves the clock on by d and ends the waits that are due, unless
// HoldWaits was called.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	f.endDue()
}

// Release moves the clock on by w.D and ends w (and, unless HoldWaits was
// called, every other wait then due).
func (f *Fake) Release(w *Wait) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(w.D)
	f.end(w)
	f.endDue()
}

// Stop ends every wait, pending or to come, so that nothing left waiting
// holds up the end of a test.
func (f *Fake) Stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopped = true
	for _, w := range f.pending {
		f.end(w)
	}
	f.pending = nil
}

// TakeWait returns, without waiting, the first Wait not taken yet that
// match accepts (any Wait when match is nil), and takes it.
func (f *Fake) TakeWait(match func(*Wait) bool) (*Wait, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w, _ := f.take(match)
	return w, w != nil
}

// NextWait waits until some goroutine has called After, and returns the
// first Wait not taken yet. It fails t if none comes within 10s.
func (f *Fake) NextWait(t TB) *Wait {
	t.Helper()
	return f.NextWaitFunc(t, nil)
}

// NextWaitFunc is NextWait for the first Wait that match accepts; the
// others stay for later.
func (f *Fake) NextWaitFunc(t TB, match func(*Wait) bool) *Wait {
	t.Helper()
	timeout := time.After(f.bound)
	for {
		f.mu.Lock()
		w, called := f.take(match)
		f.mu.Unlock()
		if w != nil {
			return w
		}
		select {
		case <-called:
		case <-timeout:
			t.Fatalf("no goroutine waited on the fake clock within %s", f.bound)
			return nil
		}
	}
}

// take removes the first untaken Wait that match accepts; when there is
// none it returns the channel the next call of After closes. f.mu is held.
func (f *Fake) take(match func(*Wait) bool) (*Wait, <-chan struct{}) {
	for i, w := range f.untaken {
		if match == nil || match(w) {
			f.untaken = slices.Delete(f.untaken, i, i+1)
			return w, nil
		}
	}
	return nil, f.called
}

// endDue ends the pending waits that are due, unless waits are held, and
// forgets the ended ones. f.mu is held.
func (f *Fake) endDue() {
	kept := f.pending[:0]
	for _, w := range f.pending {
		if !w.ended && (f.hold || w.At.After(f.now)) {
			kept = append(kept, w)
			continue
		}
		f.end(w)
	}
	clear(f.pending[len(kept):])
	f.pending = kept
}

// end sends the time to w once. f.mu is held.
func (f *Fake) end(w *Wait) {
	if w.ended {
		return
	}
	w.ended = true
	w.ch <- f.now
}
