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
	failing  bool // a failure was logged; only the registrar's steps use it
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

// SetMaintenance turns Consul's maintenance mode for the service on or
// off. The wish is kept: when Consul cannot be told now, or loses it, the
// registrar applies it again. Every error it returns wraps ErrPending.
func (r *Registrar) SetMaintenance(ctx context.Context, enable bool, reason string) error {
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
	var err error
	if want.enabled {
		err = r.agent.EnableServiceMaintenanceOpts(id, want.reason, q)
	} else {
		err = r.agent.DisableServiceMaintenanceOpts(id, q)
	}
	if err != nil {
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
