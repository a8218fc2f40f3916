package register

import (
	"sync"
	"time"

	consul "github.com/hashicorp/consul/api"

	"github.com/outrider-sidecar/outrider/probe"
)

// check is the TTL check's side: the probe's latest verdict and what was
// last sent to Consul.
type check struct {
	mu         sync.Mutex
	verdict    probe.Verdict
	have       bool
	lastBeat   time.Time
	lastStatus string
}

// set records v and reports whether the health changed, which is worth a
// heartbeat now; a new output alone waits for the next heartbeat.
func (c *check) set(v probe.Verdict) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	changed := !c.have || c.verdict.Healthy != v.Healthy
	c.verdict, c.have = v, true
	return changed
}

// status is the check status the verdict maps to: critical until the
// probe says healthy.
func (c *check) status() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.statusLocked()
}

func (c *check) statusLocked() string {
	if c.have && c.verdict.Healthy {
		return consul.HealthPassing
	}
	return consul.HealthCritical
}

// next returns the status and output the next heartbeat sends: the
// latest verdict and its latest output.
func (c *check) next() (status, output string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case !c.have:
		output = "outrider: waiting for the first probe verdict"
	case c.verdict.Output != "":
		output = c.verdict.Output
	case c.verdict.Healthy:
		output = "outrider: probe healthy"
	default:
		output = "outrider: probe unhealthy"
	}
	return c.statusLocked(), output
}

// sent records a heartbeat Consul accepted.
func (c *check) sent(status string, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastBeat, c.lastStatus = at, status
}

func (c *check) report(s *Status) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s.CheckStatus, s.LastHeartbeat = c.lastStatus, c.lastBeat
}
