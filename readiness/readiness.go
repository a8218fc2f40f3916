// Package readiness combines named conditions into one ready/not-ready
// answer, served as /ready. Each component owns its condition and sets it;
// nobody else reads the component to find out.
package readiness

import (
	"net/http"
	"strings"
	"sync"
	"time"
)

// Condition is one named input to readiness.
type Condition struct {
	Name   string    `json:"name"`
	OK     bool      `json:"ok"`
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since"`
}

// Gate holds the conditions. The zero value is not usable; call New.
type Gate struct {
	mu    sync.RWMutex
	conds []Condition
	now   func() time.Time
}

// New returns a gate whose named conditions all start false with reason
// "starting". Only these names can be set later.
func New(names ...string) *Gate {
	g := &Gate{now: time.Now}
	for _, n := range names {
		g.conds = append(g.conds, Condition{Name: n, Reason: "starting", Since: g.now()})
	}
	return g
}

// Set records a condition. Setting it to what it already is keeps its Since.
// It panics on a name that New was not given: that is a wiring bug.
func (g *Gate) Set(name string, ok bool, reason string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i := range g.conds {
		c := &g.conds[i]
		if c.Name != name {
			continue
		}
		if c.OK != ok {
			c.Since = g.now()
		}
		c.OK, c.Reason = ok, reason
		return
	}
	panic("readiness: unknown condition " + name)
}

// Ready reports whether every condition holds and, if not, why.
func (g *Gate) Ready() (bool, string) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	var why []string
	for _, c := range g.conds {
		if !c.OK {
			why = append(why, c.Name+": "+c.Reason)
		}
	}
	return len(why) == 0, strings.Join(why, "; ")
}

// Conditions returns a copy of every condition, in the order given to New.
func (g *Gate) Conditions() []Condition {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return append([]Condition(nil), g.conds...)
}

// ServeHTTP answers 200 "ready", or 503 "not ready: " and the reasons,
// joined with "; ", on one line.
func (g *Gate) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	ok, why := g.Ready()
	if ok {
		_, _ = w.Write([]byte("ready\n"))
		return
	}
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write([]byte("not ready: " + why + "\n"))
}
