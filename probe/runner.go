package probe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outrider-sidecar/outrider/internal/clock"
)

// Schedule is when a Runner probes and how it judges, with the meaning of
// the kubelet probe fields of the same names.
type Schedule struct {
	// InitialDelay is the wait before the first probe.
	InitialDelay time.Duration
	// Period is the time from the start of one probe to the next.
	Period time.Duration
	// Timeout is one probe's limit.
	Timeout time.Duration
	// FailureThreshold is how many failures in a row make the app unhealthy.
	FailureThreshold int
	// SuccessThreshold is how many successes in a row make it healthy.
	SuccessThreshold int
}

// check says what is wrong with s, if anything.
func (s Schedule) check() error {
	var errs []error
	if s.InitialDelay < 0 {
		errs = append(errs, fmt.Errorf("initial delay %s is negative", s.InitialDelay))
	}
	if s.Period <= 0 {
		errs = append(errs, fmt.Errorf("period %s is not positive", s.Period))
	}
	if s.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("timeout %s is not positive", s.Timeout))
	}
	if s.FailureThreshold < 1 {
		errs = append(errs, fmt.Errorf("failure threshold %d is less than 1", s.FailureThreshold))
	}
	if s.SuccessThreshold < 1 {
		errs = append(errs, fmt.Errorf("success threshold %d is less than 1", s.SuccessThreshold))
	}
	return errors.Join(errs...)
}

// Clock is the time source a Runner schedules probes with; tests pass a
// fake one. A probe's own timeout is always real time.
type Clock = clock.Clock

// Option changes how NewRunner builds a Runner.
type Option func(*Runner)

// WithClock makes the Runner schedule its probes by c.
func WithClock(c Clock) Option { return func(r *Runner) { r.clock = c } }

// WithProber makes the Runner probe with p instead of the prober for the
// spec's kind.
func WithProber(p Prober) Option {
	return func(r *Runner) { r.probe, r.release, r.custom = p, func() {}, true }
}

// Runner probes the app on a Schedule, one probe at a time, and keeps the
// verdict of the threshold state machine. It is an actor: Run owns its
// only goroutine.
type Runner struct {
	log     *slog.Logger
	clock   Clock
	custom  bool // the prober came from WithProber and outlives a Reconfigure
	metrics *metrics
	ran     atomic.Bool
	// reconf wakes Run when Reconfigure left a new setup.
	reconf chan struct{}

	// spec, sched, probe and release change only in Run's goroutine,
	// under mu; Run reads them without it.
	spec    Spec
	sched   Schedule
	probe   Prober
	release func()

	mu       sync.Mutex
	pending  *setup // from Reconfigure, taken by Run before its next probe
	machine  *thresholds
	last     Result
	lastAt   time.Time
	subs     []chan Verdict
	watchers []chan Verdict
	watched  string // the output last handed to watchers
}

// setup is a spec and schedule with the prober for it.
type setup struct {
	spec    Spec
	sched   Schedule
	probe   Prober
	release func()
}

// NewRunner returns a Runner of spec on sched, logging to log and
// registering its metrics with reg (none when reg is nil).
func NewRunner(spec Spec, sched Schedule, log *slog.Logger, reg prometheus.Registerer, opts ...Option) (*Runner, error) {
	if err := sched.check(); err != nil {
		return nil, fmt.Errorf("probe schedule: %w", err)
	}
	r := &Runner{spec: spec, sched: sched, log: log, clock: clock.Real{}, reconf: make(chan struct{}, 1)}
	for _, o := range opts {
		o(r)
	}
	if r.probe == nil {
		p, release, err := newProber(spec.Kind)
		if err != nil {
			return nil, fmt.Errorf("probe %q: %w", spec.String(), err)
		}
		r.probe, r.release = p, release
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.machine = newThresholds(sched.FailureThreshold, sched.SuccessThreshold, r.clock.Now())
	m, err := newMetrics(reg)
	if err != nil {
		r.release()
		return nil, fmt.Errorf("probe metrics: %w", err)
	}
	r.metrics = m
	return r, nil
}

// Run probes until ctx is done, then returns nil. A probe never overlaps
// the previous one: a probe that overruns its period skips the slots it
// missed. Run may be called once.
func (r *Runner) Run(ctx context.Context) error {
	if !r.ran.CompareAndSwap(false, true) {
		return errors.New("probe runner: Run called twice")
	}
	defer func() {
		r.release()
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.pending != nil {
			r.pending.release()
		}
	}()
	r.logSetup("probing the app", true)
	if !r.sleep(ctx, r.sched.InitialDelay) {
		return nil
	}
	slot := r.clock.Now() // when the latest probe was due
	for {
		r.adopt()
		r.probeOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var ok bool
		if slot, ok = r.waitNextSlot(ctx, slot); !ok {
			return nil
		}
	}
}

// waitNextSlot waits for the slot a period after slot, skipping the slots
// a slow probe missed, and returns it; false means ctx ended first. A new
// period from Reconfigure counts from slot.
func (r *Runner) waitNextSlot(ctx context.Context, slot time.Time) (time.Time, bool) {
	for {
		now := r.clock.Now()
		period := r.sched.Period
		next := slot.Add(period)
		if next.Before(now) {
			next = next.Add((now.Sub(next) + period - 1) / period * period)
		}
		d := next.Sub(now)
		if d <= 0 {
			return next, ctx.Err() == nil
		}
		select {
		case <-ctx.Done():
			return next, false
		case <-r.clock.After(d):
			return next, true
		case <-r.reconf:
			r.adopt()
		}
	}
}

// adopt takes the setup Reconfigure left, if any, and releases the old
// prober. Only Run's goroutine calls it.
func (r *Runner) adopt() {
	r.mu.Lock()
	p := r.pending
	r.pending = nil
	if p == nil {
		r.mu.Unlock()
		return
	}
	old := r.release
	r.spec, r.sched, r.probe, r.release = p.spec, p.sched, p.probe, p.release
	r.machine.failureThreshold, r.machine.successThreshold = p.sched.FailureThreshold, p.sched.SuccessThreshold
	r.mu.Unlock()
	old()
	r.logSetup("probing the app with a new setup", false)
}

func (r *Runner) logSetup(msg string, initial bool) {
	args := []any{"probe", r.spec.String(), "period", r.sched.Period.String(), "timeout", r.sched.Timeout.String(),
		"failure_threshold", r.sched.FailureThreshold, "success_threshold", r.sched.SuccessThreshold}
	if initial {
		args = append(args, "initial_delay", r.sched.InitialDelay.String())
	}
	r.log.Info(msg, args...)
}

// Reconfigure makes the Runner probe spec on sched from its next probe on.
// The verdict and the results in a row are kept, so the app neither flaps
// nor misses a probe; a probe in flight finishes with the old setup, and a
// new period counts from the latest probe. The initial delay is not used
// again.
func (r *Runner) Reconfigure(spec Spec, sched Schedule) error {
	if err := sched.check(); err != nil {
		return fmt.Errorf("probe schedule: %w", err)
	}
	next := &setup{spec: spec, sched: sched}
	r.mu.Lock()
	custom, p, release := r.custom, r.probe, func() {}
	r.mu.Unlock()
	if !custom {
		var err error
		if p, release, err = newProber(spec.Kind); err != nil {
			return fmt.Errorf("probe %q: %w", spec.String(), err)
		}
	}
	next.probe, next.release = p, release
	r.mu.Lock()
	if r.pending != nil {
		r.pending.release()
	}
	r.pending = next
	r.mu.Unlock()
	select {
	case r.reconf <- struct{}{}:
	default:
	}
	return nil
}

// sleep waits d on the clock; false means ctx ended first.
func (r *Runner) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	select {
	case <-ctx.Done():
		return false
	case <-r.clock.After(d):
		return true
	}
}

func (r *Runner) probeOnce(ctx context.Context) {
	pctx, cancel := withTimeout(ctx, r.sched.Timeout)
	start := time.Now()
	res := r.probe(pctx, r.spec)
	cancel()
	if ctx.Err() != nil {
		return // stopping: the result says nothing about the app
	}
	if res.Duration == 0 {
		res.Duration = time.Since(start)
	}
	if !slices.Contains(outcomes, res.Outcome) {
		res = Result{Outcome: Error, Output: fmt.Sprintf("prober returned the unknown outcome %q: %s", res.Outcome, res.Output), Duration: res.Duration}
	}
	if res.Outcome != Success && res.Output == "" {
		res.Output = "probe " + string(res.Outcome)
	}
	r.metrics.observe(res)
	r.log.Debug("probed the app", "result", string(res.Outcome), "output", res.Output, "duration", res.Duration.String())

	r.mu.Lock()
	r.last, r.lastAt = res, r.clock.Now()
	v, changed := r.machine.observe(res, r.lastAt)
	inARow := r.machine.run
	if changed {
		publish(r.subs, v)
	}
	if changed || (r.machine.decided && v.Output != r.watched) {
		publish(r.watchers, v)
		r.watched = v.Output
	}
	r.mu.Unlock()

	r.metrics.setHealthy(v.Healthy)
	switch {
	case !changed:
	case v.Healthy:
		r.log.Info("app is healthy", "probe", r.spec.String(), "reason", v.Output, "successes_in_a_row", inARow)
	default:
		r.log.Warn("app is unhealthy", "probe", r.spec.String(), "reason", v.Output, "failures_in_a_row", inARow)
	}
}

// publish hands v to every channel of subs; r.mu is held.
func publish(subs []chan Verdict, v Verdict) {
	for _, ch := range subs {
		// Keep only the latest transition: a slow subscriber finds the
		// newest verdict, and never blocks the probes.
		select {
		case <-ch:
		default:
		}
		select {
		case ch <- v:
		default:
		}
	}
}

// Verdict returns the current verdict.
func (r *Runner) Verdict() Verdict {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.machine.verdict
}

// Subscribe returns a channel that holds the latest transition of the
// verdict: healthy to unhealthy, back, or the first time the app is found
// unhealthy. It never blocks the Runner; a reader that falls behind finds
// only the newest value. It may be called before Run, and is never closed.
func (r *Runner) Subscribe() <-chan Verdict {
	ch := make(chan Verdict, 1)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.subs = append(r.subs, ch)
	return ch
}

// Watch is Subscribe for readers that want the latest output too: the
// channel also receives the verdict when only its output changed (once a
// threshold has been reached at least once). The registrar uses it, so
// that the check's output is the latest probe's.
func (r *Runner) Watch() <-chan Verdict {
	ch := make(chan Verdict, 1)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.watchers = append(r.watchers, ch)
	return ch
}

// Status is a Runner's state for outrider's /status.
type Status struct {
	Probe    string         `json:"probe"`
	Healthy  bool           `json:"healthy"`
	Reason   string         `json:"reason"`
	Since    time.Time      `json:"since"`
	InARow   int            `json:"in_a_row"`
	Last     *LastResult    `json:"last,omitempty"`
	Schedule StatusSchedule `json:"schedule"`
}

// LastResult is the most recent probe's result in a Status.
type LastResult struct {
	Result          string    `json:"result"`
	Output          string    `json:"output"`
	DurationSeconds float64   `json:"duration_seconds"`
	At              time.Time `json:"at"`
}

// StatusSchedule is a Runner's Schedule in a Status.
type StatusSchedule struct {
	InitialDelay     string `json:"initial_delay"`
	Period           string `json:"period"`
	Timeout          string `json:"timeout"`
	FailureThreshold int    `json:"failure_threshold"`
	SuccessThreshold int    `json:"success_threshold"`
}

// Status returns the verdict, the last result and the schedule.
func (r *Runner) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	v := r.machine.verdict
	s := Status{
		Probe:   r.spec.String(),
		Healthy: v.Healthy,
		Reason:  v.Output,
		Since:   v.Since,
		InARow:  r.machine.run,
		Schedule: StatusSchedule{
			InitialDelay:     r.sched.InitialDelay.String(),
			Period:           r.sched.Period.String(),
			Timeout:          r.sched.Timeout.String(),
			FailureThreshold: r.sched.FailureThreshold,
			SuccessThreshold: r.sched.SuccessThreshold,
		},
	}
	if !r.lastAt.IsZero() {
		s.Last = &LastResult{
			Result:          string(r.last.Outcome),
			Output:          r.last.Output,
			DurationSeconds: r.last.Duration.Seconds(),
			At:              r.lastAt,
		}
	}
	return s
}
