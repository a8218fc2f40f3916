// Package register keeps the app registered in Consul while outrider runs.
//
// A Registrar registers the app through the local Consul agent with a TTL
// check, heartbeats that check with the probe's verdict (like Consul's own
// CheckTTL), registers again in place when Consul has lost the instance,
// backs off while Consul is unreachable, and deregisters on an orderly stop.
// It never gives up and never stops the process because of Consul.
package register

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outrider-sidecar/outrider/internal/clock"
	"github.com/outrider-sidecar/outrider/probe"
)

// Service is the instance to register: the app, never outrider itself.
type Service struct {
	ID      string
	Name    string
	Tags    []string
	Meta    map[string]string
	Address string
	Port    int
	// TTL is the check's time to live; heartbeats go at a third of it.
	TTL time.Duration
	// DeregisterCriticalAfter makes Consul reap the instance once outrider
	// has stopped heartbeating it that long (outrider died): it is set on
	// the liveness check only, so an unhealthy app is never reaped.
	DeregisterCriticalAfter time.Duration
}

// CheckID is the ID of the TTL check that mirrors the app's probe, of the
// service serviceID.
func CheckID(serviceID string) string { return "service:" + serviceID }

// AliveCheckID is the ID of the TTL check that says outrider is running
// beside the instance: passing at every heartbeat, and the one that makes
// Consul reap the instance when outrider dies.
func AliveCheckID(serviceID string) string { return "service:" + serviceID + ":outrider" }

// Clock is the registrar's time source; tests pass a fake one.
type Clock = clock.Clock

// Options tunes a Registrar; the zero value of each field picks a default.
type Options struct {
	// ConsulAddr names the Consul agent in messages and /status.
	ConsulAddr string
	Log        *slog.Logger
	// Registerer receives the outrider_consul_* metrics.
	Registerer prometheus.Registerer
	// OnRegistered is told, on every change, whether outrider knows the
	// instance to be registered, and why. cmd/agent feeds readiness with it.
	OnRegistered func(ok bool, reason string)
	Clock        Clock
	// Rand returns a number in [0, 1) for the backoff jitter.
	Rand func() float64
	// BackoffBase and BackoffMax bound the retry delay while Consul fails.
	// BackoffBase defaults to 500ms; BackoffMax, when 0, is the heartbeat
	// interval and follows a reload of the TTL.
	BackoffBase, BackoffMax time.Duration
	// CallTimeout bounds one request to Consul; default 5s.
	CallTimeout time.Duration
	// StopTimeout bounds the deregistration when Run's context ends; default 5s.
	StopTimeout time.Duration
}

// Registrar registers one service and keeps its TTL check in step with the
// probe. Create it with New and run it with Run.
//
// Each of its jobs is a small type of its own: the TTL check (check.go),
// the link to Consul and its backoff (link.go), maintenance mode
// (maintenance.go) and the readiness condition (condition.go); the
// Registrar holds the registration itself and sequences the requests.
type Registrar struct {
	agent       Agent
	addr        string
	id          string // the service ID, which never changes
	log         *slog.Logger
	clock       Clock
	callTimeout time.Duration
	stopTimeout time.Duration
	backoffMax  time.Duration // 0: follow the TTL
	m           *metrics

	check *check
	link  *link
	maint *maintenance
	cond  *condition

	// op serialises the requests that depend on what Consul holds (a
	// heartbeat, a registration, maintenance, deregistration); it is a
	// channel so that waiting for it honours a context.
	op chan struct{}
	// kick wakes Run when there is new work (maintenance, a new config).
	kick chan struct{}

	mu       sync.Mutex
	svc      Service
	accepted Service // the last registration Consul took
	// gen counts the changes of svc, and sending is gen as it was when
	// the registration in flight took svc: a reload in between is still
	// to be sent once that registration is answered.
	gen, sending uint64
	pending      string // registration reason to send, "" when none
	registered   bool
	mayHold      bool // Consul took a registration, or may have (see notTaken)
	deregistered bool
	// deregisterTimedOut is set when Consul did not answer a
	// deregistration in time (the drain's): the stop does not wait as
	// long again for an agent that hangs.
	deregisterTimedOut bool
	stopped            bool
	cancelStep         context.CancelFunc // cancels the step or maintenance call in flight
}

// New returns a registrar for svc that talks to the local Consul agent
// through agent, in production client.Agent() of a client built from
// consul.DefaultConfig(), which reads the CONSUL_* variables as the Consul
// CLI does (address, ACL token or token file, TLS).
func New(agent Agent, svc Service, o Options) (*Registrar, error) {
	if svc.ID == "" || svc.Name == "" {
		return nil, fmt.Errorf("register: service needs an ID and a name, got ID %q name %q", svc.ID, svc.Name)
	}
	if svc.TTL <= 0 {
		return nil, fmt.Errorf("register: service %q has TTL %s, want more than 0", svc.ID, svc.TTL)
	}
	if o.ConsulAddr == "" {
		o.ConsulAddr = "the local agent"
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Rand == nil {
		o.Rand = rand.Float64
	}
	if o.OnRegistered == nil {
		o.OnRegistered = func(bool, string) {}
	}
	if o.BackoffBase <= 0 {
		o.BackoffBase = 500 * time.Millisecond
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = 5 * time.Second
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = 5 * time.Second
	}
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	m, err := newMetrics(o.Registerer)
	if err != nil {
		return nil, err
	}
	r := &Registrar{
		agent:       agent,
		addr:        o.ConsulAddr,
		id:          svc.ID,
		log:         o.Log,
		clock:       o.Clock,
		callTimeout: o.CallTimeout,
		stopTimeout: o.StopTimeout,
		backoffMax:  o.BackoffMax,
		m:           m,
		check:       &check{},
		link:        newLink(o.BackoffBase, o.Rand),
		maint:       &maintenance{},
		cond:        &condition{notify: o.OnRegistered},
		op:          make(chan struct{}, 1),
		kick:        make(chan struct{}, 1),
		svc:         cloneService(svc),
		pending:     reasonStart,
	}
	r.cond.update(false, "not registered yet")
	return r, nil
}

// interval is the time between heartbeats: a third of the TTL, as
// Consul's documentation advises.
func (r *Registrar) interval() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.svc.TTL / 3
}

// retryMax is the longest wait between two attempts while Consul fails:
// the heartbeat interval of the shorter of the TTL Consul holds and the
// one a reload is about to send, so that no check expires between two
// attempts, whatever the reload changed.
func (r *Registrar) retryMax() time.Duration {
	if r.backoffMax > 0 {
		return r.backoffMax
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	ttl := r.svc.TTL
	if r.accepted.TTL > 0 {
		ttl = min(ttl, r.accepted.TTL)
	}
	return ttl / 3
}

// Run registers the service, then heartbeats its check until ctx ends,
// when it deregisters (bounded by the stop timeout) and returns. A change
// of health is sent at once; every heartbeat carries the latest verdict's
// output, so a new output with the same health costs no extra request.
// Consul errors never make it return; verdicts may be nil.
func (r *Registrar) Run(ctx context.Context, verdicts <-chan probe.Verdict) error {
	var timer <-chan time.Time
	due := true
	for ctx.Err() == nil {
		if due {
			timer, due = r.clock.After(r.step(ctx)), false
		}
		select {
		case <-ctx.Done():
		case v, ok := <-verdicts:
			if !ok {
				verdicts = nil
				continue
			}
			due = r.check.set(v)
		case <-r.kick:
			due = true
		case <-timer:
			due = true
		}
	}
	r.mu.Lock()
	hung := r.deregisterTimedOut && !r.deregistered
	r.mu.Unlock()
	if hung {
		// The drain's deregistration already waited its timeout; a second
		// wait would come after the app stopped, outside the stop budget
		// the platform gives (docs/shutdown.md).
		r.log.Error("not deregistering again on stop: consul did not answer the drain's deregistration in time; consul reaps the instance after deregister_critical_after",
			"service_id", r.id)
		return nil
	}
	stop, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.stopTimeout)
	defer cancel()
	if err := r.Deregister(stop); err != nil {
		r.log.Error("could not deregister from consul on stop; "+LeftBehind(err),
			"service_id", r.id, "err", err)
	}
	return nil
}

// step does what is due now — register, heartbeat, repair, apply
// maintenance — and returns how long to wait before the next step.
func (r *Registrar) step(ctx context.Context) time.Duration {
	if !r.lock(ctx) {
		return 0
	}
	defer r.unlock()

	// Deregister cancels a step in flight rather than wait for its
	// requests to time out.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.mu.Lock()
	stopped, reason := r.stopped, r.pending
	r.cancelStep = cancel
	r.mu.Unlock()
	if stopped {
		return time.Hour
	}
	// regErr is a reload's registration that failed while Consul holds
	// the last one it took: heartbeats go on, and it is sent again.
	var regErr error
	if reason != "" {
		err := r.register(ctx, reason)
		switch {
		case err == nil:
		case reason == reasonConfig && classify(err) == linkRejected:
			// Consul refused the reloaded settings and still holds the
			// last ones it took: keep those, and keep heartbeating them.
			r.rejected(err)
		case reason == reasonConfig:
			// Consul failed to answer (a 5xx, a timeout): the instance it
			// holds must not let its checks expire meanwhile.
			regErr = err
		case errors.As(err, new(*idHeldError)):
			return r.heldBack(err)
		default:
			return r.fail(ctx, "register", err)
		}
	}
	err := r.heartbeat(ctx)
	if isNotFound(err) {
		r.m.heartbeats.WithLabelValues("missing").Inc()
		r.lost(err)
		if err := r.register(ctx, reasonRepair); err != nil {
			return r.fail(ctx, "register", err)
		}
		err = r.heartbeat(ctx)
	}
	if err != nil {
		if ctx.Err() == nil {
			r.m.heartbeats.WithLabelValues("error").Inc()
		}
		return r.fail(ctx, "heartbeat", err)
	}
	r.m.heartbeats.WithLabelValues("ok").Inc()
	if regErr != nil && r.pendingReason() == reasonConfig {
		// Sent again after the backoff, which is never longer than the
		// heartbeat interval.
		return r.fail(ctx, "register", regErr)
	}
	r.succeeded()
	err = r.applyMaintenance(ctx)
	if err != nil && !isNotFound(err) && ctx.Err() == nil && !r.maint.failing {
		r.log.Warn("could not apply maintenance mode in consul; retrying at every heartbeat",
			"service_id", r.id, "err", err)
	}
	r.maint.failing = err != nil
	return r.interval()
}

// pendingReason is the registration still to send, "" for none.
func (r *Registrar) pendingReason() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pending
}

func (r *Registrar) lock(ctx context.Context) bool {
	select {
	case r.op <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (r *Registrar) unlock() { <-r.op }

// fail records a failed request, logs when the state of the link to
// Consul changes, and returns the backoff before the next attempt.
func (r *Registrar) fail(ctx context.Context, op string, err error) time.Duration {
	if ctx.Err() != nil {
		return 0 // stopping: the error is ours, not Consul's
	}
	r.m.errors.WithLabelValues(op).Inc()
	c, wait := r.link.fail(err, r.clock.Now(), r.retryMax())

	r.mu.Lock()
	registered, repairing, name := r.registered, r.pending == reasonRepair, r.svc.Name
	r.mu.Unlock()
	switch {
	case registered:
		r.cond.update(true, fmt.Sprintf("registered in consul as %s; consul %s since %s, last error: %v",
			r.id, c.state, c.downSince.UTC().Format(time.RFC3339), err))
	case repairing:
		r.cond.update(false, fmt.Sprintf("consul lost the registration and registering again failed: %v", err))
	default:
		r.cond.update(false, fmt.Sprintf("not registered: consul %s: %v", c.state, err))
	}

	if c.state != c.prev {
		switch c.state {
		case linkDenied, linkUnknownToken:
			r.log.Error("consul refused outrider's ACL token; "+deniedHint(err)+"; retrying",
				"service", name, "service_id", r.id, "op", op, "err", err)
		case linkRejected:
			r.log.Error("consul rejected a request; retrying", "service_id", r.id, "op", op, "err", err)
		case linkUntrusted:
			r.log.Error("consul's TLS certificate did not verify; "+certHint(err)+"; retrying",
				"service_id", r.id, "op", op, "err", err)
		case linkTLSRefused:
			r.log.Error("consul refused the TLS handshake; "+tlsRefusedHint(err)+"; retrying",
				"service_id", r.id, "op", op, "err", err)
		case linkWrongScheme:
			r.log.Error("outrider and consul do not agree on TLS; "+schemeHint(err)+"; retrying",
				"service_id", r.id, "op", op, "err", err)
		default:
			r.log.Warn("consul unreachable; outrider keeps probing and serving and retries with backoff",
				"service_id", r.id, "op", op, "err", err)
		}
	}
	return wait
}

// heldBack records a first registration held back because another live
// instance holds the service ID, logs it once, and returns when to look
// again.
func (r *Registrar) heldBack(err error) time.Duration {
	r.m.errors.WithLabelValues("register").Inc()
	r.answered()
	r.link.note(err, r.clock.Now())
	reason := "not registered: " + err.Error()
	if r.cond.update(false, reason) {
		r.log.Error("not registering: the service ID is in use", "service_id", r.id, "err", err)
	}
	return r.interval()
}

// succeeded records a heartbeat Consul accepted: the instance is there.
func (r *Registrar) succeeded() {
	r.answered()
	r.mu.Lock()
	r.registered = true
	r.mu.Unlock()
	r.cond.update(true, "registered in consul as "+r.id)
}

// answered records that Consul answered, and logs the end of an outage.
func (r *Registrar) answered() {
	if c := r.link.succeed(); c.recovered() {
		r.log.Info("consul answers again", "service_id", r.id, "failed_attempts", c.failures,
			"outage_seconds", r.clock.Now().Sub(c.downSince).Seconds())
	}
}

// Update replaces the registration's tags, meta, address, port and check
// timing (a reloaded configuration) and registers again in place, with
// reason config: same ID, so the instance never leaves the catalog. The
// ID cannot change: that would be another instance.
func (r *Registrar) Update(svc Service) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if svc.ID != r.svc.ID {
		return fmt.Errorf("register: service ID cannot change from %q to %q without a restart", r.svc.ID, svc.ID)
	}
	if svc.TTL <= 0 {
		return fmt.Errorf("register: service %q has TTL %s, want more than 0", svc.ID, svc.TTL)
	}
	if sameService(svc, r.svc) {
		return nil
	}
	r.svc = cloneService(svc)
	r.gen++
	if r.pending == "" {
		r.pending = reasonConfig
	}
	r.wake()
	return nil
}

// Reregister registers the instance again in place with the same
// settings, with reason config, as Update does for new ones. The local
// Consul agent syncs the instance and its checks to the catalog with the
// ACL token they were registered with: after a new token, the old one
// deleted, the agent's updates (the probe's status, the deregistration on
// stop) would no longer reach the catalog until they are registered again
// with the new one. So would a change of its maintenance mode, which is
// set again under the new token when it is on.
func (r *Registrar) Reregister() {
	r.maint.tokenChanged()
	r.mu.Lock()
	r.gen++
	if r.pending == "" {
		r.pending = reasonConfig
	}
	r.mu.Unlock()
	r.wake()
}

func (r *Registrar) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}
