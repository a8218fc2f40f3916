package proxy

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// workerIdle is how long a goroutine that served a client connection waits
// for the next one before it exits.
const workerIdle = 10 * time.Second

// workers keeps the goroutines that served client connections for the
// connections that come next.
//
// Why: a connection's goroutine grows its stack as it serves the first
// request (the head parser, the forwarder, the poller's wait), and a stack
// grows by being copied. A new goroutine per connection paid that copy on
// every connection: 6-8% of outrider's CPU per request with a new
// connection per request (bench/compare.sh with 'Connection: close', one
// and two cores). The goroutine that went idle last is handed the next
// connection, so that after a burst the others wait out the idle time and
// exit with their stacks.
type workers struct {
	idleFor time.Duration // workerIdle; tests shorten it
	started atomic.Int64  // goroutines started, for tests
	// busy counts the connections handed to goroutines and not yet done
	// with (served, closed or parked in a loop): while it is 0 a loop may
	// hold its P (evLoop.hold).
	busy atomic.Int64

	mu      sync.Mutex
	idle    []*worker // the last one to go idle at the end
	stopped bool
}

// worker is one goroutine's hand-over point.
type worker struct {
	next  chan *conn // holds one; nil means exit
	timer *time.Timer
}

// serve has c served by an idle goroutine, or by a new one.
func (ws *workers) serve(c *conn) {
	ws.busy.Add(1)
	ws.mu.Lock()
	w, ok := popLast(&ws.idle)
	ws.mu.Unlock()
	if ok {
		w.next <- c
		return
	}
	ws.started.Add(1)
	go ws.run(&worker{next: make(chan *conn, 1)}, c)
}

// run serves c, then every connection handed over, until none comes for
// the idle time or the workers stop.
func (ws *workers) run(w *worker, c *conn) {
	for c != nil {
		if !c.serve() {
			c.recycle()
		}
		ws.busy.Add(-1)
		c = ws.wait(w)
	}
	if w.timer != nil {
		w.timer.Stop()
	}
}

// wait puts w on the idle list and returns the next connection, or nil
// when it is time to exit.
func (ws *workers) wait(w *worker) *conn {
	idleFor := ws.idleFor
	if idleFor == 0 {
		idleFor = workerIdle
	}
	ws.mu.Lock()
	if ws.stopped {
		ws.mu.Unlock()
		return nil
	}
	ws.idle = append(ws.idle, w)
	ws.mu.Unlock()
	if w.timer == nil {
		w.timer = time.NewTimer(idleFor)
	} else {
		w.timer.Reset(idleFor)
	}
	select {
	case c := <-w.next:
		return c
	case <-w.timer.C:
	}
	ws.mu.Lock()
	if i := slices.Index(ws.idle, w); i >= 0 {
		ws.idle = slices.Delete(ws.idle, i, i+1)
		ws.mu.Unlock()
		return nil
	}
	ws.mu.Unlock()
	// Taken off the list as the time ran out: its connection (or the
	// stop) is on the way.
	return <-w.next
}

// stop makes the idle goroutines exit, and every one that goes idle later.
func (ws *workers) stop() {
	ws.mu.Lock()
	idle := ws.idle
	ws.idle, ws.stopped = nil, true
	ws.mu.Unlock()
	for _, w := range idle {
		w.next <- nil
	}
}

// idleCount returns the goroutines waiting for a connection.
func (ws *workers) idleCount() int {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return len(ws.idle)
}
