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
func WithProber(p Prober) Option { return func(r *Runner) { r.probe, r.release = p, func() {} } }

// Runner probes the app on a Schedule, one probe at a time, and keeps the
// verdict of the threshold state machine. It is an actor: Run owns its
// only goroutine.
type Runner struct {
	spec    Spec
	sched   Schedule
	log     *slog.Logger
	clock   Clock
	probe   Prober
	release func()
	metrics *metrics
	ran     atomic.Bool

	mu      sync.Mutex
	machine *thresholds
	last    Result
	lastAt  time.Time
	subs    []chan Verdict
}

// NewRunner returns a Runner of spec on sched, logging to log and
// registering its metrics with reg (none when reg is nil).
func NewRunner(spec Spec, sched Schedule, log *slog.Logger, reg prometheus.Registerer, opts ...Option) (*Runner, error) {
	if err := sched.check(); err != nil {
		return nil, fmt.Errorf("probe schedule: %w", err)
	}
	r := &Runner{spec: spec, sched: sched, log: log, clock: clock.Real{}}
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
	defer r.release()
	r.log.Info("probing the app", "probe", r.spec.String(), "initial_delay", r.sched.InitialDelay.String(),
		"period", r.sched.Period.String(), "timeout", r.sched.Timeout.String(),
		"failure_threshold", r.sched.FailureThreshold, "success_threshold", r.sched.SuccessThreshold)
	if !r.sleep(ctx, r.sched.InitialDelay) {
		return nil
	}
	period := r.sched.Period
	next := r.clock.Now()
	for {
		r.probeOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		now := r.clock.Now()
		next = next.Add(period)
		if next.Before(now) {
			next = next.Add((now.Sub(next) + period - 1) / period * period)
		}
		if !r.sleep(ctx, next.Sub(now)) {
			return nil
		}
	}
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
	pctx, cancel := context.WithTimeout(ctx, r.sched.Timeout)
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
		r.publish(v)
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

// publish hands v to every subscriber; r.mu is held.
func (r *Runner) publish(v Verdict) {
	for _, ch := range r.subs {
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
