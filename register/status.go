package register

import "time"

// Status is the registrar's state, for /status. CheckStatus is the status
// outrider last set on the check Consul holds, "" while outrider knows of
// no registration (deregistered, lost, not taken yet).
type Status struct {
	ServiceID    string `json:"service_id"`
	CheckID      string `json:"check_id"`
	Address      string `json:"consul_address"`
	Registered   bool   `json:"registered"`
	Deregistered bool   `json:"deregistered"`
	// NothingToDeregister: outrider stopped and Consul had never taken
	// the instance, so nothing was deregistered (Deregistered is false).
	NothingToDeregister bool      `json:"nothing_to_deregister,omitempty"`
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
	s := Status{
		ServiceID:           r.svc.ID,
		CheckID:             CheckID(r.svc.ID),
		Address:             r.addr,
		Registered:          r.registered,
		Deregistered:        r.deregistered && r.mayHold,
		NothingToDeregister: r.deregistered && !r.mayHold,
	}
	r.mu.Unlock()
	r.link.status(&s)
	r.check.report(&s)
	if !s.Registered {
		// Consul holds no check: deregistered, lost, or never taken.
		s.CheckStatus = ""
	}
	r.maint.report(&s)
	return s
}
