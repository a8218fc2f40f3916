package clock

import (
	"fmt"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// ended reports whether ch holds a time, and which.
func ended(ch <-chan time.Time) (time.Time, bool) {
	select {
	case at := <-ch:
		return at, true
	default:
		return time.Time{}, false
	}
}

func TestFakeAdvance(t *testing.T) {
	f := NewFake(t0)
	short, long := f.After(time.Second), f.After(3*time.Second)
	f.Advance(999 * time.Millisecond)
	if _, ok := ended(short); ok {
		t.Fatalf("a 1s wait ended after 999ms")
	}
	f.Advance(time.Millisecond)
	if at, ok := ended(short); !ok || !at.Equal(t0.Add(time.Second)) {
		t.Errorf("1s wait after 1s: ended %t at %s, want ended at %s", ok, at, t0.Add(time.Second))
	}
	if _, ok := ended(long); ok {
		t.Errorf("a 3s wait ended after 1s")
	}
	f.Advance(5 * time.Second)
	if at, ok := ended(long); !ok || !at.Equal(t0.Add(6*time.Second)) {
		t.Errorf("3s wait after 6s: ended %t at %s, want ended at %s", ok, at, t0.Add(6*time.Second))
	}
	if got := f.Now(); !got.Equal(t0.Add(6 * time.Second)) {
		t.Errorf("Now = %s, want %s", got, t0.Add(6*time.Second))
	}
}

func TestFakeNonPositiveWaitEndsAtOnce(t *testing.T) {
	f := NewFake(t0)
	if at, ok := ended(f.After(0)); !ok || !at.Equal(t0) {
		t.Errorf("After(0): ended %t at %s, want ended at %s", ok, at, t0)
	}
	if w := f.NextWait(t); w.D != 0 {
		t.Errorf("NextWait().D = %s, want 0: every call is recorded", w.D)
	}
}

func TestFakeNextWait(t *testing.T) {
	f := NewFake(t0)
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-f.After(2 * time.Second)
		<-f.After(5 * time.Second)
	}()
	w := f.NextWait(t)
	if w.D != 2*time.Second || !w.At.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("first wait = %s due %s, want 2s due %s", w.D, w.At, t0.Add(2*time.Second))
	}
	if w, ok := f.TakeWait(nil); ok {
		t.Fatalf("TakeWait found %s before the goroutine asked for it", w.D)
	}
	f.Advance(w.D)
	w = f.NextWait(t)
	if w.D != 5*time.Second || !w.At.Equal(t0.Add(7*time.Second)) {
		t.Fatalf("second wait = %s due %s, want 5s due %s", w.D, w.At, t0.Add(7*time.Second))
	}
	f.Advance(w.D)
	select {
	case <-done:
	case <-time.After(bound):
		t.Fatal("the goroutine still waits after both waits ended")
	}
}

func TestFakeNextWaitFunc(t *testing.T) {
	f := NewFake(t0)
	f.After(time.Hour)
	f.After(time.Second)
	f.After(time.Minute)
	notHour := func(w *Wait) bool { return w.D != time.Hour }
	for _, want := range []time.Duration{time.Second, time.Minute} {
		if w := f.NextWaitFunc(t, notHour); w.D != want {
			t.Errorf("NextWaitFunc = %s, want %s", w.D, want)
		}
	}
	if w, ok := f.TakeWait(notHour); ok {
		t.Errorf("TakeWait found %s, want nothing left but the hour", w.D)
	}
	if w := f.NextWait(t); w.D != time.Hour {
		t.Errorf("NextWait = %s, want the hour left behind", w.D)
	}
}

// fatalT records Fatalf instead of stopping the test.
type fatalT struct{ msg string }

func (*fatalT) Helper() {}
func (f *fatalT) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
}

func TestFakeNextWaitFails(t *testing.T) {
	ft := &fatalT{}
	f := NewFake(t0)
	f.bound = time.Millisecond
	if w := f.NextWait(ft); w != nil || ft.msg != "no goroutine waited on the fake clock within 1ms" {
		t.Errorf("NextWait with no caller = %v, failed with %q; want nil and a failure", w, ft.msg)
	}
}

func TestFakeHoldWaits(t *testing.T) {
	f := NewFake(t0)
	f.HoldWaits()
	a, b := f.After(time.Second), f.After(2*time.Second)
	wa, wb := f.NextWait(t), f.NextWait(t)
	f.Advance(time.Hour)
	if _, ok := ended(a); ok {
		t.Fatalf("a held wait ended on Advance")
	}
	f.Release(wb)
	want := t0.Add(time.Hour + 2*time.Second)
	if at, ok := ended(b); !ok || !at.Equal(want) {
		t.Errorf("released wait: ended %t at %s, want ended at %s", ok, at, want)
	}
	if _, ok := ended(a); ok {
		t.Errorf("releasing one wait ended another")
	}
	f.Release(wa)
	if _, ok := ended(a); !ok {
		t.Errorf("released wait did not end")
	}
	f.Release(wa)
	if got, want := f.Now(), t0.Add(time.Hour+4*time.Second); !got.Equal(want) {
		t.Errorf("Now = %s, want %s", got, want)
	}
}

func TestFakeStop(t *testing.T) {
	f := NewFake(t0)
	f.HoldWaits()
	before := f.After(time.Minute)
	f.Stop()
	if _, ok := ended(before); !ok {
		t.Errorf("a pending wait did not end on Stop")
	}
	if _, ok := ended(f.After(time.Minute)); !ok {
		t.Errorf("a wait after Stop did not end at once")
	}
}

func TestFakeBound(t *testing.T) {
	if got := NewFake(t0).bound; got != 10*time.Second {
		t.Errorf("NextWait bound = %s, want 10s", got)
	}
}

func TestRealClock(t *testing.T) {
	var c Clock = Real{}
	before := time.Now()
	<-c.After(time.Millisecond)
	if d := c.Now().Sub(before); d < time.Millisecond {
		t.Errorf("Real.After(1ms) returned after %s", d)
	}
}
