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
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	consul "github.com/hashicorp/consul/api"
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
	// DeregisterCriticalAfter makes Consul reap the instance once its
	// check has been critical that long, which covers outrider dying.
	DeregisterCriticalAfter time.Duration
}

// CheckID is the ID of the TTL check of the service serviceID.
func CheckID(serviceID string) string { return "service:" + serviceID }

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
	// BackoffBase and BackoffMax bound the retry delay while Consul fails;
	// they default to 500ms and the heartbeat interval.
	BackoffBase, BackoffMax time.Duration
	// CallTimeout bounds one request to Consul; default 5s.
	CallTimeout time.Duration
	// StopTimeout bounds the deregistration when Run's context ends; default 5s.
	StopTimeout time.Duration
}

// ErrPending is wrapped by SetMaintenance when the change is recorded but
// Consul could not be told yet; the registrar applies it once it can.
var ErrPending = errors.New("recorded, consul not updated yet")

// Registration reasons, the values of outrider_consul_registrations_total{reason}.
const (
	reasonStart  = "start"
	reasonRepair = "repair"
	reasonConfig = "config"
)

// link is the state of outrider's conversation with Consul, logged once
// per change.
type link string

const (
	linkStarting    link = "starting"
	linkOK          link = "ok"
	linkUnreachable link = "unreachable"
	linkDenied      link = "denied"
	linkRejected    link = "rejected"
)

type maintenance struct {
	enabled bool
	reason  string
}

// Registrar registers one service and keeps its TTL check in step with the
// probe. Create it with New and run it with Run.
type Registrar struct {
	client      *consul.Client
	addr        string
	id          string // the service ID, which never changes
	log         *slog.Logger
	clock       Clock
	rand        func() float64
	onReg       func(bool, string)
	backoffBase time.Duration
	backoffMax  time.Duration
	callTimeout time.Duration
	stopTimeout time.Duration
	m           *metrics

	// op serialises the requests that depend on what Consul holds (a
	// heartbeat, a registration, maintenance, deregistration); it is a
	// channel so that waiting for it honours a context.
	op chan struct{}
	// kick wakes Run when there is new work (maintenance, a new config).
	kick chan struct{}

	mu              sync.Mutex
	svc             Service
	verdict         probe.Verdict
	haveVerdict     bool
	pending         string // registration reason to send, "" when none
	registered      bool
	deregistered    bool
	stopped         bool
	cancelStep      context.CancelFunc // cancels the step in flight
	maintFailing    bool               // logged once; only Run's steps use it
	maint           maintenance
	maintInConsul   maintenance
	maintKnown      bool
	link            link
	failures        int
	downSince       time.Time
	lastErr         string
	lastErrAt       time.Time
	lastBeat        time.Time
	lastCheckStatus string
	condOK          bool
	condReason      string
	condSet         bool
}

// New returns a registrar for svc that talks to the Consul agent through
// client. Build the client from consul.DefaultConfig(), which reads the
// CONSUL_* variables as the Consul CLI does (address, ACL token or token
// file, TLS).
func New(client *consul.Client, svc Service, o Options) (*Registrar, error) {
	if svc.ID == "" || svc.Name == "" {
		return nil, fmt.Errorf("register: service needs an ID and a name, got ID %q name %q", svc.ID, svc.Name)
	}
	if svc.TTL <= 0 {
		return nil, fmt.Errorf("register: service %q has TTL %s, want more than 0", svc.ID, svc.TTL)
	}
	if o.ConsulAddr == "" {
		o.ConsulAddr = "the local agent"
	}
	r := &Registrar{
		client:      client,
		addr:        o.ConsulAddr,
		id:          svc.ID,
		log:         o.Log,
		clock:       o.Clock,
		rand:        o.Rand,
		onReg:       o.OnRegistered,
		backoffBase: o.BackoffBase,
		backoffMax:  o.BackoffMax,
		callTimeout: o.CallTimeout,
		stopTimeout: o.StopTimeout,
		op:          make(chan struct{}, 1),
		kick:        make(chan struct{}, 1),
		svc:         cloneService(svc),
		pending:     reasonStart,
		link:        linkStarting,
		maintKnown:  true,
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.clock == nil {
		r.clock = clock.Real{}
	}
	if r.rand == nil {
		r.rand = rand.Float64
	}
	if r.onReg == nil {
		r.onReg = func(bool, string) {}
	}
	if r.backoffMax <= 0 {
		r.backoffMax = r.heartbeat()
	}
	if r.backoffBase <= 0 {
		r.backoffBase = min(500*time.Millisecond, r.backoffMax)
	}
	if r.callTimeout <= 0 {
		r.callTimeout = 5 * time.Second
	}
	if r.stopTimeout <= 0 {
		r.stopTimeout = 5 * time.Second
	}
	reg := o.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	r.m = m
	r.setCond(false, "not registered yet")
	return r, nil
}

// heartbeat is the interval between TTL updates: a third of the TTL, as
// Consul's documentation advises.
func (r *Registrar) heartbeat() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.svc.TTL / 3
}

// Run registers the service, then heartbeats its check with every verdict
// until ctx ends, when it deregisters (bounded by the stop timeout) and
// returns. Consul errors never make it return; verdicts may be nil.
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
			// A new output with the same health waits for the next heartbeat.
			due = r.setVerdict(v)
		case <-r.kick:
			due = true
		case <-timer:
			due = true
		}
	}
	stop, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.stopTimeout)
	defer cancel()
	if err := r.Deregister(stop); err != nil {
		r.log.Error("could not deregister from consul on stop; consul reaps the instance after deregister_critical_after",
			"service_id", r.id, "err", err)
	}
	return nil
}

// setVerdict records v and reports whether the health changed.
func (r *Registrar) setVerdict(v probe.Verdict) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	changed := !r.haveVerdict || r.verdict.Healthy != v.Healthy
	r.verdict, r.haveVerdict = v, true
	return changed
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
	if reason != "" {
		if err := r.register(ctx, reason); err != nil {
			return r.fail(ctx, "register", err)
		}
	}
	err := r.pushStatus(ctx)
	if isNotFound(err) {
		r.m.heartbeats.WithLabelValues("missing").Inc()
		r.lost(err)
		if err := r.register(ctx, reasonRepair); err != nil {
			return r.fail(ctx, "register", err)
		}
		err = r.pushStatus(ctx)
	}
	if err != nil {
		if ctx.Err() == nil {
			r.m.heartbeats.WithLabelValues("error").Inc()
		}
		return r.fail(ctx, "heartbeat", err)
	}
	r.m.heartbeats.WithLabelValues("ok").Inc()
	r.succeeded()
	err = r.applyMaintenance(ctx)
	if err != nil && !isNotFound(err) && ctx.Err() == nil && !r.maintFailing {
		r.log.Warn("could not apply maintenance mode in consul; retrying at every heartbeat",
			"service_id", r.id, "err", err)
	}
	r.maintFailing = err != nil
	return r.heartbeat()
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

// register sends the registration in place: same ID, never a deregister
// first, so an instance that is already there keeps its check state.
func (r *Registrar) register(ctx context.Context, reason string) error {
	r.mu.Lock()
	svc := cloneService(r.svc)
	status := r.checkStatusLocked()
	wasRegistered := r.registered
	r.mu.Unlock()

	reg := &consul.AgentServiceRegistration{
		ID:      svc.ID,
		Name:    svc.Name,
		Tags:    svc.Tags,
		Meta:    svc.Meta,
		Address: svc.Address,
		Port:    svc.Port,
		Check: &consul.AgentServiceCheck{
			CheckID: CheckID(svc.ID),
			Name:    "outrider probe",
			Notes:   "TTL check heartbeated by outrider: passing while the app's probe is healthy",
			TTL:     svc.TTL.String(),
			// Critical until the probe says healthy; on a repair, what the
			// probe says now, so a healthy app never flaps.
			Status:                         status,
			DeregisterCriticalServiceAfter: svc.DeregisterCriticalAfter.String(),
		},
	}
	cctx, cancel := context.WithTimeout(ctx, r.callTimeout)
	defer cancel()
	if err := r.client.Agent().ServiceRegisterOpts(reg, consul.ServiceRegisterOpts{}.WithContext(cctx)); err != nil {
		return fmt.Errorf("register service %q with consul at %s: %w", svc.ID, r.addr, err)
	}
	r.m.registrations.WithLabelValues(reason).Inc()
	r.m.registered.Set(1)

	r.mu.Lock()
	r.registered = true
	if r.pending == reason {
		r.pending = ""
	}
	// Consul keeps maintenance across an in-place registration but not
	// across a lost state: when it is wanted, send it again.
	r.maintKnown = !r.maint.enabled
	if r.maintKnown {
		r.maintInConsul = maintenance{}
	}
	r.setCondLocked(true, "registered in consul as "+svc.ID)
	r.mu.Unlock()

	switch {
	case reason == reasonRepair:
		r.log.Warn("registered again in consul", "service_id", svc.ID, "reason", reason)
	case !wasRegistered || reason == reasonConfig:
		r.log.Info("registered in consul", "service_id", svc.ID, "service", svc.Name,
			"address", svc.Address, "port", svc.Port, "reason", reason)
	}
	return nil
}

// pushStatus updates the TTL check with the current verdict.
func (r *Registrar) pushStatus(ctx context.Context) error {
	r.mu.Lock()
	id := r.svc.ID
	status := r.checkStatusLocked()
	output := r.outputLocked()
	r.mu.Unlock()

	cctx, cancel := context.WithTimeout(ctx, r.callTimeout)
	defer cancel()
	if err := r.client.Agent().UpdateTTLOpts(CheckID(id), output, status, (&consul.QueryOptions{}).WithContext(cctx)); err != nil {
		return fmt.Errorf("update check %q in consul at %s: %w", CheckID(id), r.addr, err)
	}
	r.mu.Lock()
	r.lastBeat = r.clock.Now()
	r.lastCheckStatus = status
	r.mu.Unlock()
	return nil
}

func (r *Registrar) checkStatusLocked() string {
	if r.haveVerdict && r.verdict.Healthy {
		return consul.HealthPassing
	}
	return consul.HealthCritical
}

func (r *Registrar) outputLocked() string {
	switch {
	case !r.haveVerdict:
		return "outrider: waiting for the first probe verdict"
	case r.verdict.Output != "":
		return r.verdict.Output
	case r.verdict.Healthy:
		return "outrider: probe healthy"
	default:
		return "outrider: probe unhealthy"
	}
}

// lost records that Consul no longer has the instance.
func (r *Registrar) lost(err error) {
	r.mu.Lock()
	r.registered = false
	r.pending = reasonRepair
	r.maintKnown = false
	r.mu.Unlock()
	r.m.registered.Set(0)
	r.log.Warn("consul lost the registration; registering again in place",
		"service_id", r.id, "err", err)
}

// fail records a failed request, logs when the state of the link to
// Consul changes, and returns the backoff before the next attempt.
func (r *Registrar) fail(ctx context.Context, op string, err error) time.Duration {
	if ctx.Err() != nil {
		return 0 // stopping: the error is ours, not Consul's
	}
	r.m.errors.WithLabelValues(op).Inc()
	state := classify(err)
	now := r.clock.Now()

	r.mu.Lock()
	prev := r.link
	r.failures++
	failures := r.failures
	if prev == linkOK || prev == linkStarting {
		r.downSince = now
	}
	r.link = state
	r.lastErr, r.lastErrAt = err.Error(), now
	switch {
	case r.registered:
		r.setCondLocked(true, fmt.Sprintf("registered in consul as %s; consul %s since %s, last error: %v",
			r.svc.ID, state, r.downSince.UTC().Format(time.RFC3339), err))
	case r.pending == reasonRepair:
		r.setCondLocked(false, fmt.Sprintf("consul lost the registration and registering again failed: %v", err))
	default:
		r.setCondLocked(false, fmt.Sprintf("not registered: consul %s: %v", state, err))
	}
	r.mu.Unlock()

	if state != prev {
		switch state {
		case linkDenied:
			r.mu.Lock()
			name := r.svc.Name
			r.mu.Unlock()
			r.log.Error("consul refused outrider's ACL token; set CONSUL_HTTP_TOKEN or CONSUL_HTTP_TOKEN_FILE to a token with service:write on the service; retrying",
				"service", name, "service_id", r.id, "op", op, "err", err)
		case linkRejected:
			r.log.Error("consul rejected a request; retrying", "service_id", r.id, "op", op, "err", err)
		default:
			r.log.Warn("consul unreachable; outrider keeps probing and serving and retries with backoff",
				"service_id", r.id, "op", op, "err", err)
		}
	}
	return backoff(failures, r.backoffBase, r.backoffMax, r.rand())
}

// succeeded records a heartbeat Consul accepted: the instance is there.
func (r *Registrar) succeeded() {
	now := r.clock.Now()
	r.mu.Lock()
	prev, failures, since := r.link, r.failures, r.downSince
	r.link, r.failures = linkOK, 0
	r.registered = true
	r.setCondLocked(true, "registered in consul as "+r.id)
	r.mu.Unlock()
	if prev != linkOK && prev != linkStarting {
		r.log.Info("consul answers again", "service_id", r.id, "failed_attempts", failures,
			"outage_seconds", now.Sub(since).Seconds())
	}
}

// backoff is the delay before retry number attempt (from 1): exponential
// from base, capped at max, with "equal jitter" (half fixed, half random)
// so that many sidecars do not retry in step. jitter is in [0, 1).
func backoff(attempt int, base, max time.Duration, jitter float64) time.Duration {
	d := max
	if attempt < 1 {
		attempt = 1
	}
	if attempt <= 32 {
		if exp := base << (attempt - 1); exp > 0 && exp < max {
			d = exp
		}
	}
	return d/2 + time.Duration(jitter*float64(d/2))
}

// classify sorts a Consul error into the state of the link.
func classify(err error) link {
	var se consul.StatusError
	if errors.As(err, &se) {
		switch {
		case se.Code == 401 || se.Code == 403:
			return linkDenied
		case se.Code >= 500:
			return linkUnreachable
		default:
			return linkRejected
		}
	}
	return linkUnreachable
}

// isNotFound reports whether Consul answered that the service or check is unknown.
func isNotFound(err error) bool {
	var se consul.StatusError
	return errors.As(err, &se) && se.Code == 404
}

// criticalTimeout bounds the check update that precedes a deregistration.
const criticalTimeout = 2 * time.Second

// Deregister sets the check critical, removes the service from Consul
// through the agent API (a catalog delete would be undone by the agent's
// anti-entropy) and stops every later heartbeat and repair. Calling it
// again is harmless.
func (r *Registrar) Deregister(ctx context.Context) error {
	// Stop repairs first, so that a step in flight cannot bring it back.
	r.mu.Lock()
	r.stopped = true
	if r.cancelStep != nil {
		r.cancelStep()
	}
	r.mu.Unlock()
	if !r.lock(ctx) {
		return fmt.Errorf("deregister service %q: %w", r.id, ctx.Err())
	}
	defer r.unlock()

	r.mu.Lock()
	done, id := r.deregistered, r.id
	r.mu.Unlock()
	if done {
		return nil
	}
	// Critical first: a watcher that reads the health before the
	// deregistration reaches it sees the instance leave the passing set.
	// Best effort, briefly bounded: the deregistration is what counts.
	uctx, ucancel := context.WithTimeout(ctx, min(r.callTimeout, criticalTimeout))
	if err := r.client.Agent().UpdateTTLOpts(CheckID(id), "draining: outrider is deregistering the instance", consul.HealthCritical,
		(&consul.QueryOptions{}).WithContext(uctx)); err != nil && !isNotFound(err) {
		r.log.Debug("could not set the check critical before deregistering", "service_id", id, "err", err)
	}
	ucancel()
	cctx, cancel := context.WithTimeout(ctx, r.callTimeout)
	defer cancel()
	err := r.client.Agent().ServiceDeregisterOpts(id, (&consul.QueryOptions{}).WithContext(cctx))
	if err != nil && !isNotFound(err) {
		r.m.errors.WithLabelValues("deregister").Inc()
		return fmt.Errorf("deregister service %q from consul at %s: %w", id, r.addr, err)
	}
	r.m.registered.Set(0)
	r.mu.Lock()
	r.deregistered, r.registered = true, false
	r.setCondLocked(false, "deregistered")
	r.mu.Unlock()
	r.log.Info("deregistered from consul", "service_id", id)
	return nil
}

// SetMaintenance turns Consul's maintenance mode for the service on or
// off. The wish is kept: when Consul cannot be told now, or loses it, the
// registrar applies it again, and the error wraps ErrPending.
func (r *Registrar) SetMaintenance(ctx context.Context, enable bool, reason string) error {
	r.mu.Lock()
	r.maint = maintenance{enabled: enable, reason: reason}
	if !enable {
		r.maint.reason = ""
	}
	r.mu.Unlock()
	if !r.lock(ctx) {
		return fmt.Errorf("maintenance: %w: %w", ErrPending, ctx.Err())
	}
	defer r.unlock()
	if err := r.applyMaintenance(ctx); err != nil {
		return fmt.Errorf("maintenance: %w: %w", ErrPending, err)
	}
	return nil
}

var errNotRegistered = errors.New("the service is not registered yet")

// applyMaintenance makes Consul's maintenance mode what is wanted. The
// caller holds op.
func (r *Registrar) applyMaintenance(ctx context.Context) error {
	r.mu.Lock()
	want, have, known := r.maint, r.maintInConsul, r.maintKnown
	registered, stopped, id := r.registered, r.stopped, r.svc.ID
	r.mu.Unlock()
	if stopped || (known && want.enabled == have.enabled) {
		return nil
	}
	if !registered {
		return errNotRegistered
	}
	cctx, cancel := context.WithTimeout(ctx, r.callTimeout)
	defer cancel()
	q := (&consul.QueryOptions{}).WithContext(cctx)
	var err error
	if want.enabled {
		err = r.client.Agent().EnableServiceMaintenanceOpts(id, want.reason, q)
	} else {
		err = r.client.Agent().DisableServiceMaintenanceOpts(id, q)
	}
	if err != nil {
		r.m.errors.WithLabelValues("maintenance").Inc()
		if isNotFound(err) {
			r.mu.Lock()
			r.registered, r.pending = false, reasonRepair
			r.mu.Unlock()
			r.m.registered.Set(0)
			r.wake()
		}
		return fmt.Errorf("set maintenance of service %q in consul at %s: %w", id, r.addr, err)
	}
	r.mu.Lock()
	r.maintInConsul, r.maintKnown = want, true
	r.mu.Unlock()
	r.log.Info("consul maintenance mode set", "service_id", id, "enabled", want.enabled, "reason", want.reason)
	return nil
}

// Update replaces the registration's tags, meta, address, port and check
// timing (a reloaded configuration) and registers again in place. The ID
// cannot change: that would be another instance.
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
	if r.pending == "" {
		r.pending = reasonConfig
	}
	r.wake()
	return nil
}

func (r *Registrar) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *Registrar) setCond(ok bool, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.setCondLocked(ok, reason)
}

// setCondLocked tells OnRegistered about a change. It is called with mu
// held, so that changes reach it in order; OnRegistered must not call back.
func (r *Registrar) setCondLocked(ok bool, reason string) {
	if r.condSet && r.condOK == ok && r.condReason == reason {
		return
	}
	r.condOK, r.condReason, r.condSet = ok, reason, true
	r.onReg(ok, reason)
}

// Status is the registrar's state, for /status.
type Status struct {
	ServiceID           string    `json:"service_id"`
	CheckID             string    `json:"check_id"`
	Address             string    `json:"consul_address"`
	Registered          bool      `json:"registered"`
	Deregistered        bool      `json:"deregistered"`
	Consul              string    `json:"consul"`
	CheckStatus         string    `json:"check_status,omitempty"`
	LastHeartbeat       time.Time `json:"last_heartbeat,omitzero"`
	ConsecutiveFailures int       `json:"consecutive_failures"`
	LastError           string    `json:"last_error,omitempty"`
	LastErrorAt         time.Time `json:"last_error_at,omitzero"`
	Maintenance         bool      `json:"maintenance"`
	MaintenanceReason   string    `json:"maintenance_reason,omitempty"`
}

// Status returns a snapshot of the registrar's state.
func (r *Registrar) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Status{
		ServiceID:           r.svc.ID,
		CheckID:             CheckID(r.svc.ID),
		Address:             r.addr,
		Registered:          r.registered,
		Deregistered:        r.deregistered,
		Consul:              string(r.link),
		CheckStatus:         r.lastCheckStatus,
		LastHeartbeat:       r.lastBeat,
		ConsecutiveFailures: r.failures,
		LastError:           r.lastErr,
		LastErrorAt:         r.lastErrAt,
		Maintenance:         r.maint.enabled,
		MaintenanceReason:   r.maint.reason,
	}
}

func cloneService(s Service) Service {
	s.Tags = slices.Clone(s.Tags)
	s.Meta = maps.Clone(s.Meta)
	return s
}

func sameService(a, b Service) bool {
	return a.ID == b.ID && a.Name == b.Name && slices.Equal(a.Tags, b.Tags) && maps.Equal(a.Meta, b.Meta) &&
		a.Address == b.Address && a.Port == b.Port && a.TTL == b.TTL &&
		a.DeregisterCriticalAfter == b.DeregisterCriticalAfter
}
