package register

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"

	consul "github.com/hashicorp/consul/api"
)

// Registration reasons, the values of outrider_consul_registrations_total{reason}.
const (
	reasonStart  = "start"
	reasonRepair = "repair"
	reasonConfig = "config"
)

// register sends the registration in place: same ID, never a deregister
// first, so an instance that is already there keeps its check state.
// Before the first, it makes sure no other live instance holds the ID
// (see heldBy).
func (r *Registrar) register(ctx context.Context, reason string) error {
	r.mu.Lock()
	svc := cloneService(r.svc)
	r.sending = r.gen
	wasRegistered := r.registered
	r.mu.Unlock()

	if reason == reasonStart {
		if at := r.heldBy(ctx, svc); at != "" {
			return &idHeldError{id: svc.ID, at: at}
		}
		// A stop during the lookup: nothing was sent, and Consul cannot
		// hold what this step would have sent. Going on would mark the ID
		// as maybe held, and the drain would then deregister an ID that
		// another instance may hold.
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("register service %q with consul at %s: stopped before sending: %w", svc.ID, r.addr, err)
		}
	}

	reg := &consul.AgentServiceRegistration{
		ID:      svc.ID,
		Name:    svc.Name,
		Tags:    svc.Tags,
		Meta:    svc.Meta,
		Address: svc.Address,
		Port:    svc.Port,
		Checks: consul.AgentServiceChecks{
			{
				CheckID: CheckID(svc.ID),
				Name:    "outrider probe",
				Notes:   "TTL check heartbeated by outrider: passing while the app's probe is healthy",
				TTL:     svc.TTL.String(),
				// Critical until the probe says healthy; on a repair, what
				// the probe says now, so a healthy app never flaps.
				// Critical while maintenance is wanted, until Consul holds
				// it.
				Status: r.registerStatus(),
			},
			{
				// Apart from the probe's check, so that an app that stays
				// unhealthy is not reaped: only outrider's death is.
				CheckID:                        AliveCheckID(svc.ID),
				Name:                           "outrider",
				Notes:                          "TTL check heartbeated by outrider: passing while outrider runs beside the app",
				TTL:                            svc.TTL.String(),
				Status:                         consul.HealthPassing,
				DeregisterCriticalServiceAfter: svc.DeregisterCriticalAfter.String(),
			},
		},
	}
	cctx, cancel := context.WithTimeout(ctx, r.callTimeout)
	defer cancel()
	if err := r.agent.ServiceRegisterOpts(reg, consul.ServiceRegisterOpts{}.WithContext(cctx)); err != nil {
		if !notTaken(err) {
			r.mu.Lock()
			r.mayHold = true
			r.mu.Unlock()
		}
		return fmt.Errorf("register service %q with consul at %s: %w", svc.ID, r.addr, err)
	}
	r.m.registrations.WithLabelValues(reason).Inc()
	r.m.registered.Set(1)

	r.mu.Lock()
	r.registered, r.mayHold = true, true
	r.accepted = svc
	if r.pending == reason {
		r.pending = ""
		if r.gen != r.sending {
			// A reload came while this registration was in flight.
			r.pending = reasonConfig
		}
	}
	r.mu.Unlock()
	r.maint.registered(reason == reasonRepair)
	r.cond.update(true, "registered in consul as "+svc.ID)

	switch {
	case reason == reasonRepair:
		r.log.Warn("registered again in consul", "service_id", svc.ID, "reason", reason)
	case !wasRegistered || reason == reasonConfig:
		r.log.Info("registered in consul", "service_id", svc.ID, "service", svc.Name,
			"address", svc.Address, "port", svc.Port, "tags", svc.Tags, "reason", reason)
	}
	return nil
}

// registerStatus is the check status a registration carries: the probe's,
// or critical while maintenance is wanted and Consul does not hold it, so
// that the instance never shows passing before its maintenance mode.
func (r *Registrar) registerStatus() string {
	if r.maint.holdsBack() {
		return consul.HealthCritical
	}
	return r.check.status()
}

// rejected records that Consul refused a reloaded registration (a 4xx,
// such as too many meta pairs): the settings go back to the ones Consul
// holds, which outrider keeps heartbeating, until the next reload. A
// reload that came while the refused registration was in flight is kept,
// and sent next.
func (r *Registrar) rejected(err error) {
	r.m.errors.WithLabelValues("register").Inc()
	r.mu.Lock()
	if r.gen == r.sending {
		r.svc = cloneService(r.accepted)
		r.pending = ""
	}
	r.mu.Unlock()
	r.log.Error("consul rejected the reloaded registration; the instance stays registered with its previous settings until the configuration is fixed",
		"service_id", r.id, "err", err)
}

// heartbeat updates the TTL check with the latest verdict and its output,
// then the liveness check.
func (r *Registrar) heartbeat(ctx context.Context) error {
	status, output := r.check.next()
	if r.maint.holdsBack() {
		status, output = consul.HealthCritical, "outrider: maintenance mode wanted; consul does not hold it yet"
	}
	if err := r.updateTTL(ctx, CheckID(r.id), output, status); err != nil {
		return err
	}
	r.check.sent(status, r.clock.Now())
	// No output: the registration has none either, so registering the
	// same settings again changes nothing in the catalog.
	return r.updateTTL(ctx, AliveCheckID(r.id), "", consul.HealthPassing)
}

// updateTTL sends one check update, bounded by the call timeout of its own:
// a Consul that answers each request in time never fails the second.
func (r *Registrar) updateTTL(ctx context.Context, id, output, status string) error {
	cctx, cancel := context.WithTimeout(ctx, r.callTimeout)
	defer cancel()
	if err := r.agent.UpdateTTLOpts(id, output, status, (&consul.QueryOptions{}).WithContext(cctx)); err != nil {
		return fmt.Errorf("update check %q in consul at %s: %w", id, r.addr, err)
	}
	return nil
}

// lost records that Consul no longer has the instance.
func (r *Registrar) lost(err error) {
	r.mu.Lock()
	r.registered = false
	r.pending = reasonRepair
	r.mu.Unlock()
	r.maint.lost()
	r.m.registered.Set(0)
	r.log.Warn("consul lost the registration; registering again in place",
		"service_id", r.id, "err", err)
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

// idHeldError is a first registration held back: Consul has the service ID
// at another address and outrider's liveness check there is passing.
type idHeldError struct{ id, at string }

func (e *idHeldError) Error() string {
	return fmt.Sprintf("service ID %q is registered in consul at %s, not at this instance's address, and its outrider check is passing: "+
		"another outrider runs with the same OUTRIDER_SERVICE_ID (give each instance its own), or this one's last run, whose check expires within its TTL; "+
		"registering once that check fails", e.id, e.at)
}

// heldBy returns where Consul has svc's ID registered when that is another
// address or port than svc's and outrider's liveness check there passes;
// "" when the registration may go ahead. Registering would take the ID
// from a live instance, silently: Consul replaces a registration by ID,
// and both outriders would then heartbeat one entry, with one of the two
// apps out of the fleet. The same address and port is this instance's own
// last run (two cannot listen on one). A failed lookup lets the
// registration go ahead, as before this check.
func (r *Registrar) heldBy(ctx context.Context, svc Service) string {
	cctx, cancel := context.WithTimeout(ctx, r.callTimeout)
	defer cancel()
	_, info, err := r.agent.AgentHealthServiceByIDOpts(svc.ID, (&consul.QueryOptions{}).WithContext(cctx))
	if err != nil || info == nil || info.Service == nil {
		return ""
	}
	if info.Service.Address == svc.Address && info.Service.Port == svc.Port {
		return ""
	}
	for _, c := range info.Checks {
		if c.CheckID == AliveCheckID(svc.ID) && c.Status == consul.HealthPassing {
			return net.JoinHostPort(info.Service.Address, strconv.Itoa(info.Service.Port))
		}
	}
	return ""
}
