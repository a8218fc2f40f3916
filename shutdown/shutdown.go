// Package shutdown runs outrider's drain sequence: take the instance out
// of the registry, keep serving while clients notice, then stop taking
// traffic and wait for what is in flight. It runs at most once per process,
// whatever triggers it (preStop, a signal, wrap mode); every trigger joins
// the same run and gets its report.
package shutdown

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outrider-sidecar/outrider/internal/clock"
)

// Registry is the part of the registrar the sequence needs.
type Registry interface {
	// Deregister sets the instance's check critical and removes it.
	Deregister(ctx context.Context) error
	// NeverTaken reports, once Deregister has returned nil, whether the
	// registry never took the instance, so that there was nothing to
	// remove.
	NeverTaken() bool
}

// Traffic is the part of the proxy the sequence needs.
type Traffic interface {
	// Drain stops accepting, finishes what is in flight until ctx ends,
	// cuts the rest, and reports what it did.
	Drain(ctx context.Context) (Drained, error)
	// Answered is the number of requests answered so far.
	Answered() uint64
}

// Drained is what the traffic drain came to.
type Drained struct {
	// Finished is the requests answered while draining.
	Finished int
	// Cut is the requests still in flight at the deadline.
	Cut int
	// TunnelsCut is the upgraded (WebSocket) tunnels closed at the deadline.
	TunnelsCut int
}

// Options configures a Sequence. Registry and Traffic are nil when the
// registry or the proxy is off.
type Options struct {
	Registry Registry
	Traffic  Traffic
	// Delay is how long new requests are still served after deregistering.
	Delay time.Duration
	// Timeout bounds the wait for requests in flight.
	Timeout time.Duration
	// DeregisterTimeout bounds the call to the registry (default 5s): a
	// registry that does not answer must not hold the drain.
	DeregisterTimeout time.Duration
	// OnDraining is called once, first: it takes the instance out of
	// readiness.
	OnDraining func()
	Log        *slog.Logger
	Registerer prometheus.Registerer
	// Clock times the delay; nil is the real clock.
	Clock clock.Clock
}

// Report is how a drain went, as logged and answered by /prestop.
type Report struct {
	// Trigger names what started the drain: "prestop", "SIGTERM", …
	Trigger         string    `json:"trigger"`
	Started         time.Time `json:"started"`
	DurationSeconds float64   `json:"duration_seconds"`
	// Deregistered is true when the registry confirmed the removal.
	Deregistered bool `json:"deregistered"`
	// NothingToDeregister is true when there is no registry
	// (OUTRIDER_REGISTRY=none), or the registry never took the instance
	// (Consul unreachable or refusing it since the start): nothing was
	// removed, and Deregistered is false.
	NothingToDeregister bool `json:"nothing_to_deregister,omitempty"`
	// DelaySeconds is how long requests were served after deregistering.
	DelaySeconds float64 `json:"delay_seconds"`
	// RequestsDuringDelay is the requests answered during the delay: the
	// clients that had not yet seen the instance leave.
	RequestsDuringDelay int `json:"requests_during_delay"`
	// RequestsFinished is the requests in flight when the proxy stopped
	// accepting, and answered then.
	RequestsFinished int `json:"requests_finished"`
	// RequestsCut counts requests and tunnels still open at the timeout.
	RequestsCut int `json:"requests_cut"`
	TunnelsCut  int `json:"tunnels_cut"`
	// Aborted says the drain was cut short (a second signal).
	Aborted bool `json:"aborted"`
	// Error is empty when every step succeeded and nothing was cut.
	Error string `json:"error,omitempty"`
}

// OK reports whether the drain finished everything it had to.
func (r Report) OK() bool { return r.Error == "" }

// ErrAborted is wrapped in the report's error when Abort cut the drain short.
var ErrAborted = errors.New("drain cut short")

// Sequence is the drain sequence of one process. Create it with New.
type Sequence struct {
	o     Options
	clock clock.Clock
	m     metrics

	mu      sync.Mutex
	delay   time.Duration // for a drain not started yet
	timeout time.Duration
	started bool
	// ran holds the delay and timeout the drain started with; SetTimings
	// does not change a drain under way.
	ran     struct{ delay, timeout time.Duration }
	abort   context.CancelFunc
	aborted string
	// notReady is closed once OnDraining has returned: every Start waits
	// for it, not only the one that called OnDraining.
	notReady chan struct{}
	done     chan struct{}
	report   Report
}

// New returns a sequence that has not started.
func New(o Options) (*Sequence, error) {
	if o.DeregisterTimeout <= 0 {
		o.DeregisterTimeout = 5 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.OnDraining == nil {
		o.OnDraining = func() {}
	}
	c := o.Clock
	if c == nil {
		c = clock.Real{}
	}
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	m, err := newMetrics(o.Registerer)
	if err != nil {
		return nil, fmt.Errorf("shutdown: register metrics: %w", err)
	}
	return &Sequence{o: o, clock: c, m: m, delay: o.Delay, timeout: o.Timeout,
		notReady: make(chan struct{}), done: make(chan struct{})}, nil
}

// SetTimings changes the delay and timeout of a drain that has not started
// (a reloaded configuration); a drain under way keeps its own.
func (s *Sequence) SetTimings(delay, timeout time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay, s.timeout = delay, timeout
}

// Timings returns the delay and timeout of the drain: those it started
// with once it has, else those it would start with now.
func (s *Sequence) Timings() (delay, timeout time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return s.ran.delay, s.ran.timeout
	}
	return s.delay, s.timeout
}

// Start begins the drain unless it has begun, and returns a channel closed
// when it is done. trigger names the cause in the report. The instance is
// out of readiness when Start returns, whichever caller began the drain,
// so a caller answering "draining" is never contradicted by /ready.
func (s *Sequence) Start(trigger string) <-chan struct{} {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		<-s.notReady
		return s.done
	}
	s.started = true
	ctx, cancel := context.WithCancel(context.Background())
	s.abort = cancel
	s.ran.delay, s.ran.timeout = s.delay, s.timeout
	delay, timeout := s.ran.delay, s.ran.timeout
	s.mu.Unlock()

	s.m.draining.Set(1)
	s.o.Log.Info("drain started", "trigger", trigger, "delay", delay, "timeout", timeout)
	s.o.OnDraining()
	close(s.notReady)
	go s.run(ctx, trigger, delay, timeout)
	return s.done
}

// Run starts the drain unless it has begun, and waits for it to end or for
// ctx to end. Every caller gets the report of the one drain.
func (s *Sequence) Run(ctx context.Context, trigger string) (Report, error) {
	done := s.Start(trigger)
	select {
	case <-done:
		return s.Report(), nil
	case <-ctx.Done():
		return Report{}, fmt.Errorf("wait for the drain: %w", ctx.Err())
	}
}

// Started reports whether the drain has begun.
func (s *Sequence) Started() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.started
}

// Done returns a channel closed when the drain has ended.
func (s *Sequence) Done() <-chan struct{} { return s.done }

// Report returns the drain's report once it is done, else the zero Report.
func (s *Sequence) Report() Report {
	select {
	case <-s.done:
		return s.report
	default:
		return Report{}
	}
}

// Abort cuts a running drain short: the delay ends and whatever is still
// in flight is cut at once. reason goes into the report. It does nothing
// before Start or after the end.
func (s *Sequence) Abort(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.abort == nil || s.aborted != "" {
		return
	}
	s.aborted = reason
	s.abort()
}

func (s *Sequence) abortReason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.aborted
}

// run is the sequence after Start has taken the instance out of
// readiness; the Sequence owns its goroutine and Done tells when it ends.
func (s *Sequence) run(ctx context.Context, trigger string, delay, timeout time.Duration) {
	start := s.clock.Now()
	rep := Report{Trigger: trigger, Started: start}
	var errs []error

	// 1. Out of the registry: clients stop picking the instance.
	if s.o.Registry == nil {
		rep.NothingToDeregister = true
	} else {
		dctx, cancel := context.WithTimeout(ctx, s.o.DeregisterTimeout)
		err := s.o.Registry.Deregister(dctx)
		cancel()
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("deregister: %w", err))
		case s.o.Registry.NeverTaken():
			rep.NothingToDeregister = true
		default:
			rep.Deregistered = true
		}
	}

	// 2. Keep serving while clients and load balancers catch up.
	var answered uint64
	if s.o.Traffic != nil {
		answered = s.o.Traffic.Answered()
	}
	delayStart := s.clock.Now()
	select {
	case <-s.clock.After(delay):
	case <-ctx.Done():
	}
	rep.DelaySeconds = s.clock.Now().Sub(delayStart).Seconds()

	// 3–4. Stop taking traffic and wait for what is in flight.
	if s.o.Traffic != nil {
		rep.RequestsDuringDelay = int(s.o.Traffic.Answered() - answered)
		tctx, cancel := context.WithTimeout(ctx, timeout)
		d, err := s.o.Traffic.Drain(tctx)
		cancel()
		rep.RequestsFinished = d.Finished
		rep.RequestsCut = d.Cut + d.TunnelsCut
		rep.TunnelsCut = d.TunnelsCut
		if err != nil {
			errs = append(errs, err)
		}
	}
	if why := s.abortReason(); why != "" {
		rep.Aborted = true
		errs = append(errs, fmt.Errorf("%w: %s", ErrAborted, why))
	}
	if err := errors.Join(errs...); err != nil {
		rep.Error = err.Error()
	}
	rep.DurationSeconds = s.clock.Now().Sub(start).Seconds()

	s.m.duration.Set(rep.DurationSeconds)
	s.m.cut.Add(float64(rep.RequestsCut))
	s.m.finished.Add(float64(rep.RequestsFinished))
	attrs := []any{"trigger", trigger, "duration_seconds", rep.DurationSeconds,
		"deregistered", rep.Deregistered, "nothing_to_deregister", rep.NothingToDeregister,
		"requests_during_delay", rep.RequestsDuringDelay,
		"requests_finished", rep.RequestsFinished,
		"requests_cut", rep.RequestsCut, "tunnels_cut", rep.TunnelsCut}
	if rep.OK() {
		s.o.Log.Info("drain done", attrs...)
	} else {
		s.o.Log.Warn("drain done with problems", append(attrs, "err", rep.Error)...)
	}

	s.mu.Lock()
	s.report = rep
	s.mu.Unlock()
	close(s.done)
}
