package register

import "sync"

// condition is the readiness condition "registered": whether outrider
// knows the instance to be in Consul, and why. It tells its listener of
// every change, in order.
type condition struct {
	notify func(ok bool, reason string)

	mu     sync.Mutex
	ok     bool
	reason string
	set    bool
}

// update tells the listener when ok or reason changed, and reports
// whether they did. The listener runs under the condition's lock, so that
// changes reach it in order; it must not call back.
func (c *condition) update(ok bool, reason string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.set && c.ok == ok && c.reason == reason {
		return false
	}
	c.ok, c.reason, c.set = ok, reason, true
	c.notify(ok, reason)
	return true
}
