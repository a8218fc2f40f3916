package register

import (
	"context"
	"fmt"
	"time"

	consul "github.com/hashicorp/consul/api"
)

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
	if err := r.agent.UpdateTTLOpts(CheckID(id), "draining: outrider is deregistering the instance", consul.HealthCritical,
		(&consul.QueryOptions{}).WithContext(uctx)); err != nil && !isNotFound(err) {
		r.log.Debug("could not set the check critical before deregistering", "service_id", id, "err", err)
	}
	ucancel()
	cctx, cancel := context.WithTimeout(ctx, r.callTimeout)
	defer cancel()
	err := r.agent.ServiceDeregisterOpts(id, (&consul.QueryOptions{}).WithContext(cctx))
	if err != nil && !isNotFound(err) {
		r.m.errors.WithLabelValues("deregister").Inc()
		return fmt.Errorf("deregister service %q from consul at %s: %w", id, r.addr, err)
	}
	r.m.registered.Set(0)
	r.mu.Lock()
	r.deregistered, r.registered = true, false
	r.mu.Unlock()
	r.cond.update(false, "deregistered")
	r.log.Info("deregistered from consul", "service_id", id)
	return nil
}
