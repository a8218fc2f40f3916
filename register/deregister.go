package register

import (
	"context"
	"errors"
	"fmt"
	"time"

	consul "github.com/hashicorp/consul/api"
)

// criticalTimeout bounds the check update that precedes a deregistration;
// so does a tenth of the call timeout. A local agent answers it in
// milliseconds; on a slow one, every moment waited for it would come out
// of the deregistration's time, which the stop bounds to one call timeout.
const criticalTimeout = 500 * time.Millisecond

// Deregister sets the check critical, removes the service from Consul
// through the agent API (a catalog delete would be undone by the agent's
// anti-entropy) and stops every later heartbeat and repair. It sends
// nothing when Consul never took a registration. Calling it again is
// harmless.
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
	done, id, held := r.deregistered, r.id, r.mayHold
	if !held {
		// Consul was unreachable or refused the instance since the start:
		// there is nothing to deregister, and nothing for it to reap.
		r.deregistered = true
	}
	r.mu.Unlock()
	if done {
		return nil
	}
	if !held {
		r.log.Info("nothing to deregister: consul never took the registration", "service_id", id)
		return nil
	}
	// Critical first: a watcher that reads the health before the
	// deregistration reaches it sees the instance leave the passing set.
	// Best effort, briefly bounded: the deregistration is what counts.
	uctx, ucancel := context.WithTimeout(ctx, min(r.callTimeout/10, criticalTimeout))
	err := r.agent.UpdateTTLOpts(CheckID(id), "draining: outrider is deregistering the instance", consul.HealthCritical,
		(&consul.QueryOptions{}).WithContext(uctx))
	switch {
	case err == nil:
		r.check.sent(consul.HealthCritical, r.clock.Now())
	case !isNotFound(err):
		r.log.Debug("could not set the check critical before deregistering", "service_id", id, "err", err)
	}
	ucancel()
	cctx, cancel := context.WithTimeout(ctx, r.callTimeout)
	defer cancel()
	err = r.agent.ServiceDeregisterOpts(id, (&consul.QueryOptions{}).WithContext(cctx))
	if err != nil && !isNotFound(err) {
		r.m.errors.WithLabelValues("deregister").Inc()
		err = fmt.Errorf("deregister service %q from consul at %s: %w", id, r.addr, err)
		if !errors.Is(err, context.Canceled) {
			// Consul's failure, not a stop cutting the call short: /status
			// says so, as after a failed heartbeat.
			r.link.fail(err, r.clock.Now(), r.retryMax())
		}
		if errors.Is(err, context.DeadlineExceeded) {
			r.mu.Lock()
			r.deregisterTimedOut = true
			r.mu.Unlock()
		}
		return err
	}
	r.answered()
	r.m.registered.Set(0)
	r.mu.Lock()
	r.deregistered, r.registered = true, false
	r.mu.Unlock()
	r.cond.update(false, "deregistered")
	r.log.Info("deregistered from consul", "service_id", id)
	return nil
}

// NeverTaken reports whether Consul never took the instance, nor may have:
// once Deregister has returned nil, it had nothing to remove and sent
// nothing.
func (r *Registrar) NeverTaken() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.mayHold
}
