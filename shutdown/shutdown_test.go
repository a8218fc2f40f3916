package shutdown

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outrider-sidecar/outrider/internal/clock"
)

// steps records the calls the sequence makes, in order.
type steps struct {
	mu    sync.Mutex
	calls []string
}

func (s *steps) add(call string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, call)
}

func (s *steps) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.calls...)
}

type fakeRegistry struct {
	steps      *steps
	err        error
	neverTaken bool
}

func (f *fakeRegistry) Deregister(ctx context.Context) error {
	f.steps.add("deregister")
	return f.err
}

func (f *fakeRegistry) NeverTaken() bool { return f.neverTaken }

// fakeTraffic drains at once unless hold is set; then it waits for hold
// or its deadline, and reports the cut.
type fakeTraffic struct {
	steps    *steps
	finished int
	hold     chan struct{}
	deadline time.Duration // the deadline's distance seen by Drain
	answered uint64
}

// Answered counts 10 more requests at each call: the delay saw 10.
func (f *fakeTraffic) Answered() uint64 {
	f.answered += 10
	return f.answered
}

func (f *fakeTraffic) Drain(ctx context.Context) (Drained, error) {
	f.steps.add("drain")
	if dl, ok := ctx.Deadline(); ok {
		f.deadline = time.Until(dl)
	}
	if f.hold == nil {
		return Drained{Finished: f.finished}, nil
	}
	select {
	case <-f.hold:
		return Drained{Finished: f.finished}, nil
	case <-ctx.Done():
		return Drained{Finished: f.finished, Cut: 2, TunnelsCut: 1}, errors.New("2 requests still in flight and 1 tunnels open")
	}
}

type fixture struct {
	seq     *Sequence
	clock   *clock.Fake
	steps   *steps
	reg     *prometheus.Registry
	traffic *fakeTraffic
}

func newFixture(t *testing.T, tweak func(*Options)) *fixture {
	t.Helper()
	f := &fixture{clock: clock.NewFake(time.Unix(1000, 0)), steps: &steps{}, reg: prometheus.NewRegistry()}
	f.traffic = &fakeTraffic{steps: f.steps, finished: 7}
	o := Options{
		Registry:   &fakeRegistry{steps: f.steps},
		Traffic:    f.traffic,
		Delay:      5 * time.Second,
		Timeout:    25 * time.Second,
		OnDraining: func() { f.steps.add("not ready") },
		Registerer: f.reg,
		Clock:      f.clock,
	}
	if tweak != nil {
		tweak(&o)
	}
	seq, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	f.seq = seq
	return f
}

// passDelay waits for the sequence to wait its delay, checks its length,
// and lets it pass.
func (f *fixture) passDelay(t *testing.T, want time.Duration) {
	t.Helper()
	w := f.clock.NextWait(t)
	if w.D != want {
		t.Errorf("delay: got %s, want %s", w.D, want)
	}
	if got := f.steps.list(); strings.Join(got, ",") != "not ready,deregister" {
		t.Errorf("steps before the delay: got %v, want [not ready deregister]", got)
	}
	f.clock.Advance(w.D)
}

func waitDone(t *testing.T, s *Sequence) Report {
	t.Helper()
	select {
	case <-s.Done():
		return s.Report()
	case <-time.After(10 * time.Second):
		t.Fatal("the drain did not end")
		return Report{}
	}
}

func TestSequenceOrder(t *testing.T) {
	f := newFixture(t, nil)
	f.seq.Start("SIGTERM")
	f.passDelay(t, 5*time.Second)
	rep := waitDone(t, f.seq)
	if got := f.steps.list(); strings.Join(got, ",") != "not ready,deregister,drain" {
		t.Errorf("steps: got %v, want [not ready deregister drain]", got)
	}
	if f.traffic.deadline <= 24*time.Second || f.traffic.deadline > 25*time.Second {
		t.Errorf("drain deadline: got %s away, want OUTRIDER_DRAIN_TIMEOUT (25s)", f.traffic.deadline)
	}
	want := Report{Trigger: "SIGTERM", Started: time.Unix(1000, 0), DurationSeconds: 5, Deregistered: true,
		DelaySeconds: 5, RequestsDuringDelay: 10, RequestsFinished: 7}
	if rep != want {
		t.Errorf("report:\n got %+v\nwant %+v", rep, want)
	}
	if got := testutil.ToFloat64(f.seq.m.draining); got != 1 {
		t.Errorf("outrider_draining: got %v, want 1", got)
	}
	if got := testutil.ToFloat64(f.seq.m.duration); got != 5 {
		t.Errorf("outrider_drain_duration_seconds: got %v, want 5", got)
	}
}

// TestStartLeavesReadinessFirst: when Start returns, the instance is out of
// readiness and outrider_draining is 1, so POST /drain's 202 is never
// followed by a /ready that still says 200.
func TestStartLeavesReadinessFirst(t *testing.T) {
	for range 50 {
		f := newFixture(t, nil)
		f.seq.Start("drain")
		if got := f.steps.list(); len(got) == 0 || got[0] != "not ready" {
			t.Fatalf("steps when Start returned: got %v, want [not ready] first", got)
		}
		if got := testutil.ToFloat64(f.seq.m.draining); got != 1 {
			t.Fatalf("outrider_draining when Start returned: got %v, want 1", got)
		}
		f.passDelay(t, 5*time.Second)
		waitDone(t, f.seq)
	}
}

// TestEveryStartLeavesReadinessFirst: callers racing the one that starts
// the drain return only once the instance is out of readiness too, so a
// second POST /drain's 202 is not followed by a /ready that says 200.
func TestEveryStartLeavesReadinessFirst(t *testing.T) {
	var notReady sync.WaitGroup
	notReady.Add(1)
	release := make(chan struct{})
	var out atomic.Bool
	var f *fixture
	f = newFixture(t, func(o *Options) {
		o.OnDraining = func() {
			notReady.Done()
			<-release // readiness is slow to change
			out.Store(true)
			f.steps.add("not ready")
		}
	})
	go f.seq.Start("drain")
	notReady.Wait() // the first caller is in OnDraining
	const callers = 20
	returned := make(chan bool, callers)
	for range callers {
		go func() {
			f.seq.Start("drain")
			returned <- out.Load()
		}()
	}
	select {
	case <-returned:
		t.Fatal("a Start returned while the first caller was still taking the instance out of readiness")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	for range callers {
		if !<-returned {
			t.Fatal("a Start returned before the instance was out of readiness")
		}
	}
	f.passDelay(t, 5*time.Second)
	waitDone(t, f.seq)
}

func TestTriggersJoinOneDrain(t *testing.T) {
	f := newFixture(t, nil)
	const callers = 5
	reports := make(chan Report, callers)
	for i := range callers {
		trigger := []string{"prestop", "SIGTERM"}[i%2]
		go func() {
			rep, err := f.seq.Run(context.Background(), trigger)
			if err != nil {
				t.Errorf("Run: %v", err)
			}
			reports <- rep
		}()
	}
	f.passDelay(t, 5*time.Second)
	first := <-reports
	for range callers - 1 {
		if rep := <-reports; rep != first {
			t.Errorf("reports differ: %+v and %+v", rep, first)
		}
	}
	if got := f.steps.list(); strings.Join(got, ",") != "not ready,deregister,drain" {
		t.Errorf("steps: got %v, want each once", got)
	}
}

func TestRunCallerGivesUp(t *testing.T) {
	f := newFixture(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.seq.Run(ctx, "prestop"); !errors.Is(err, context.Canceled) {
		t.Errorf("Run with a cancelled context: got %v, want context.Canceled", err)
	}
	// The drain goes on without the caller.
	f.passDelay(t, 5*time.Second)
	if rep := waitDone(t, f.seq); !rep.OK() || rep.Trigger != "prestop" {
		t.Errorf("report: got %+v, want a whole drain triggered by prestop", rep)
	}
}

func TestSequenceProblems(t *testing.T) {
	tests := []struct {
		name    string
		tweak   func(*Options)
		hold    bool
		abort   bool
		want    Report
		wantErr []string
		steps   string
	}{
		{
			name: "registry down: still serves the delay and drains",
			tweak: func(o *Options) {
				o.Registry = &fakeRegistry{steps: o.Registry.(*fakeRegistry).steps, err: errors.New("connection refused")}
			},
			want: Report{Trigger: "t", Started: time.Unix(1000, 0), DurationSeconds: 5, DelaySeconds: 5,
				RequestsDuringDelay: 10, RequestsFinished: 7},
			wantErr: []string{"deregister: connection refused"},
			steps:   "not ready,deregister,drain",
		},
		{
			name: "registry never took the instance: nothing to deregister, not deregistered",
			tweak: func(o *Options) {
				o.Registry = &fakeRegistry{steps: o.Registry.(*fakeRegistry).steps, neverTaken: true}
			},
			want: Report{Trigger: "t", Started: time.Unix(1000, 0), DurationSeconds: 5, DelaySeconds: 5, NothingToDeregister: true,
				RequestsDuringDelay: 10, RequestsFinished: 7},
			steps: "not ready,deregister,drain",
		},
		{
			name:  "proxy off: deregisters and waits the delay",
			tweak: func(o *Options) { o.Traffic = nil },
			want:  Report{Trigger: "t", Started: time.Unix(1000, 0), DurationSeconds: 5, DelaySeconds: 5, Deregistered: true},
			steps: "not ready,deregister",
		},
		{
			name:  "no registry: nothing to deregister, not deregistered",
			tweak: func(o *Options) { o.Registry = nil },
			want: Report{Trigger: "t", Started: time.Unix(1000, 0), DurationSeconds: 5, DelaySeconds: 5, NothingToDeregister: true,
				RequestsDuringDelay: 10, RequestsFinished: 7},
			steps: "not ready,drain",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.tweak)
			f.seq.Start("t")
			w := f.clock.NextWait(t)
			f.clock.Advance(w.D)
			rep := waitDone(t, f.seq)
			gotErr := rep.Error
			rep.Error = ""
			if rep != tt.want {
				t.Errorf("report:\n got %+v\nwant %+v", rep, tt.want)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(gotErr, want) {
					t.Errorf("error: got %q, want it to contain %q", gotErr, want)
				}
			}
			if len(tt.wantErr) == 0 && gotErr != "" {
				t.Errorf("error: got %q, want none", gotErr)
			}
			if got := strings.Join(f.steps.list(), ","); got != tt.steps {
				t.Errorf("steps: got %s, want %s", got, tt.steps)
			}
		})
	}
}

func TestDeadlineCutsAndCounts(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.Timeout = 50 * time.Millisecond })
	f.traffic.hold = make(chan struct{})
	f.seq.Start("SIGTERM")
	f.passDelay(t, 5*time.Second)
	rep := waitDone(t, f.seq)
	if rep.RequestsCut != 3 || rep.TunnelsCut != 1 || rep.OK() {
		t.Errorf("report: got %+v, want 3 cut (2 requests + 1 tunnel) and an error", rep)
	}
	if got := testutil.ToFloat64(f.seq.m.cut); got != 3 {
		t.Errorf("outrider_drain_requests_cut_total: got %v, want 3", got)
	}
}

func TestAbortCutsShort(t *testing.T) {
	f := newFixture(t, nil)
	f.traffic.hold = make(chan struct{})
	f.seq.Start("SIGTERM")
	f.clock.NextWait(t) // in the delay
	f.seq.Abort("second signal (SIGINT)")
	rep := waitDone(t, f.seq)
	if !rep.Aborted || !strings.Contains(rep.Error, "drain cut short: second signal (SIGINT)") {
		t.Errorf("report: got %+v, want aborted, naming the second signal", rep)
	}
	if rep.DelaySeconds != 0 {
		t.Errorf("delay served: got %vs, want 0 (cut short)", rep.DelaySeconds)
	}
	if got := strings.Join(f.steps.list(), ","); got != "not ready,deregister,drain" {
		t.Errorf("steps: got %s: the drain must still run, at once", got)
	}
}

// TestSetTimingsDuringADrain: timings set while a drain runs do not
// change it, nor the timings it reports.
func TestSetTimingsDuringADrain(t *testing.T) {
	f := newFixture(t, nil)
	f.seq.Start("prestop")
	w := f.clock.NextWait(t) // in the delay
	f.seq.SetTimings(2*time.Second, time.Second)
	if d, to := f.seq.Timings(); d != 5*time.Second || to != 25*time.Second {
		t.Errorf("Timings during the drain: got %s, %s; want the 5s, 25s it started with", d, to)
	}
	f.clock.Advance(w.D)
	waitDone(t, f.seq)
	if d, to := f.seq.Timings(); d != 5*time.Second || to != 25*time.Second {
		t.Errorf("Timings after the drain: got %s, %s; want the 5s, 25s it ran with", d, to)
	}
	if f.traffic.deadline <= time.Second {
		t.Errorf("drain deadline: got %s away, want the 25s timeout it started with", f.traffic.deadline)
	}
}

func TestSetTimings(t *testing.T) {
	f := newFixture(t, nil)
	f.seq.SetTimings(2*time.Second, time.Second)
	if d, to := f.seq.Timings(); d != 2*time.Second || to != time.Second {
		t.Errorf("Timings: got %s, %s", d, to)
	}
	f.seq.Start("prestop")
	f.passDelay(t, 2*time.Second)
	waitDone(t, f.seq)
	if f.traffic.deadline > time.Second {
		t.Errorf("drain deadline: got %s away, want at most the new timeout 1s", f.traffic.deadline)
	}
}
