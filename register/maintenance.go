package register

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	consul "github.com/hashicorp/consul/api"
)

// ErrPending is wrapped by SetMaintenance when the change is recorded but
// Consul could not be told yet; the registrar applies it once it can.
var ErrPending = errors.New("recorded, consul not updated yet")

// ErrStopped is SetMaintenance's error once the drain has deregistered the
// instance, or is doing so: there is no registration left to put in
// maintenance, and Consul is not told.
var ErrStopped = errors.New("the instance is deregistered from consul (outrider is draining or has stopped)")

var errNotRegistered = errors.New("the service is not registered yet")

// maintMode is Consul's maintenance mode of the service.
type maintMode struct {
	enabled bool
	reason  string
}

// maintenance is the wanted maintenance mode and what Consul is known to
// hold; the registrar applies the difference whenever it can.
type maintenance struct {
	mu       sync.Mutex
	want     maintMode
	inConsul maintMode
	known    bool // inConsul is what Consul holds
	// rekey is set when the ACL token changed: Consul keeps a maintenance
	// under the token that set it, and enabling it again changes nothing.
	rekey   bool
	failing bool // a failure was logged; only the registrar's steps use it
}

func (m *maintenance) wish(enable bool, reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.want = maintMode{enabled: enable, reason: reason}
	if !enable {
		m.want.reason = ""
	}
}

// todo returns the wanted mode, whether Consul must be told, and whether
// that is only a check: Consul's mode is unknown and none is wanted.
func (m *maintenance) todo() (want maintMode, todo, confirming bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.want, !m.known || m.want.enabled != m.inConsul.enabled, !m.known && !m.want.enabled
}

func (m *maintenance) applied(mode maintMode) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.inConsul, m.known = mode, true
}

// tokenChanged follows a new ACL token. The local agent takes a change of
// the maintenance check to the catalog with the token that set it: once
// the old token is deleted, an enable=false would leave the instance in
// maintenance in the catalog for good. A wanted maintenance is therefore
// set again under the new token.
func (m *maintenance) tokenChanged() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.known, m.rekey = false, true
}

// takeRekey reports whether the ACL token changed since the mode was last
// sent, and clears it: a token that changes while the mode is being sent
// is one more change. keepRekey puts it back when the sending failed.
func (m *maintenance) takeRekey() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	rekey := m.rekey
	m.rekey = false
	return rekey
}

func (m *maintenance) keepRekey() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rekey = true
}

// registered follows a registration. After a repair Consul holds no
// maintenance (it lost the instance), so only a wanted one is sent. After
// any other registration it may hold one outrider does not know of:
// Consul keeps maintenance across an in-place registration, so one that
// an earlier run of outrider set, or that a failed disable left, is still
// there. The wanted mode is then sent once either way (a disable of a
// service not in maintenance changes nothing).
func (m *maintenance) registered(afterLoss bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.known = afterLoss && !m.want.enabled
	if m.known {
		m.inConsul = maintMode{}
	}
}

// lost follows Consul losing the instance: what it holds is unknown.
func (m *maintenance) lost() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.known = false
}

func (m *maintenance) report(s *Status) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s.Maintenance, s.MaintenanceReason = m.want.enabled, m.want.reason
}

// Stopped reports whether the instance is deregistered, or being so: it
// is never registered again.
func (r *Registrar) Stopped() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopped
}

// SetMaintenance turns Consul's maintenance mode for the service on or
// off. The wish is kept: when Consul cannot be told now, or loses it, the
// registrar applies it again. Every error it returns wraps ErrPending, but
// ErrStopped after a deregistration.
func (r *Registrar) SetMaintenance(ctx context.Context, enable bool, reason string) error {
	if r.Stopped() {
		return ErrStopped
	}
	r.maint.wish(enable, reason)
	if !r.lock(ctx) {
		return fmt.Errorf("maintenance: %w: %w", ErrPending, ctx.Err())
	}
	defer r.unlock()
	// Deregister cancels this call as it cancels a step: on an agent that
	// does not answer, the drain's deregistration would otherwise wait
	// out the call's timeout for the lock.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.mu.Lock()
	r.cancelStep = cancel
	r.mu.Unlock()
	if err := r.applyMaintenance(ctx); err != nil {
		return fmt.Errorf("maintenance: %w: %w", ErrPending, err)
	}
	return nil
}

// holdsBack reports whether maintenance is wanted and Consul does not hold
// it yet: until it does, the check must not show the instance passing.
func (m *maintenance) holdsBack() bool {
	want, todo, _ := m.todo()
	return want.enabled && todo
}

// applyMaintenance makes Consul's maintenance mode what is wanted. The
// caller holds op.
func (r *Registrar) applyMaintenance(ctx context.Context) error {
	want, todo, confirming := r.maint.todo()
	r.mu.Lock()
	registered, stopped, id := r.registered, r.stopped, r.svc.ID
	r.mu.Unlock()
	if stopped || !todo {
		return nil
	}
	if !registered {
		return errNotRegistered
	}
	cctx, cancel := context.WithTimeout(ctx, r.callTimeout)
	defer cancel()
	q := (&consul.QueryOptions{}).WithContext(cctx)
	rekey := r.maint.takeRekey()
	var err error
	switch {
	case !want.enabled:
		err = r.agent.DisableServiceMaintenanceOpts(id, q)
	case rekey:
		err = r.enableAgain(q, id, want.reason)
	default:
		err = r.agent.EnableServiceMaintenanceOpts(id, want.reason, q)
	}
	if err != nil {
		if rekey {
			r.maint.keepRekey()
		}
		r.m.errors.WithLabelValues("maintenance").Inc()
		if isNotFound(err) {
			r.lost(err)
			r.wake()
		}
		return fmt.Errorf("set maintenance of service %q in consul at %s: %w", id, r.addr, err)
	}
	r.maint.applied(want)
	level := slog.LevelInfo
	if confirming {
		level = slog.LevelDebug
	}
	r.log.Log(ctx, level, "consul maintenance mode set", "service_id", id, "enabled", want.enabled, "reason", want.reason)
	return nil
}

// enableAgain sets maintenance again under the current token: it removes
// the one Consul holds under an older token first, as Consul ignores an
// enable while a maintenance is on. The probe's check is set critical
// before, so that the instance never shows passing in between.
func (r *Registrar) enableAgain(q *consul.QueryOptions, id, reason string) error {
	const output = "outrider: setting maintenance mode again under the new ACL token"
	if err := r.agent.UpdateTTLOpts(CheckID(id), output, consul.HealthCritical, q); err != nil {
		return err
	}
	r.check.sent(consul.HealthCritical, r.clock.Now())
	if err := r.agent.DisableServiceMaintenanceOpts(id, q); err != nil {
		return err
	}
	return r.agent.EnableServiceMaintenanceOpts(id, reason, q)
}
