// Command gnetloop is goloop (bench/cmd/goloop) built on the gnet library
// (github.com/panjf2000/gnet/v2) instead of its own epoll loop: one gnet
// event loop per P, and each client connection's app connection dialed
// onto the client's own loop (EventLoop.Register), so that a request and
// its answer never leave that loop's goroutine. It is a benchmark peer,
// not a product: it answers whether a maintained event-loop library keeps
// the floor that goloop measured, or spends it (docs/benchmarks-log.md,
// "The same floor on the gnet library").
//
// It does what goloop does and no more: it relays bytes, follows the
// framing (Content-Length and chunked, bench/internal/h1), pins an app
// connection to each client connection and keeps app connections for
// reuse, and blanks a request's "Connection: close" so that the app keeps
// its connection. No timeouts, limits, drain or metrics, and no
// back-pressure: gnet buffers what a slow reader has not taken, so the
// large-answer rows would hold whole answers in memory.
//
// Usage: GOMAXPROCS=N gnetloop -listen 127.0.0.1:8080 -app 127.0.0.1:8081
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"

	"github.com/panjf2000/gnet/v2"
	"github.com/panjf2000/gnet/v2/pkg/logging"

	"github.com/outrider-sidecar/outrider/bench/internal/h1"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve on")
	app := flag.String("app", "127.0.0.1:8081", "address of the app")
	flag.Parse()
	aa, err := net.ResolveTCPAddr("tcp", *app)
	if err != nil {
		fail(fmt.Errorf("-app: %w", err))
	}
	if err := run(&relay{app: aa}, *listen, runtime.GOMAXPROCS(0), nil); err != nil {
		fail(err)
	}
}

// run serves r on listen with that many loops until the engine stops;
// started, when not nil, receives the engine once it is serving.
func run(r *relay, listen string, loops int, started chan<- gnet.Engine) error {
	r.started = started
	return gnet.Run(r, "tcp://"+listen,
		gnet.WithMulticore(true),
		gnet.WithNumEventLoop(loops),
		// One listening socket per loop on the same port, as goloop does.
		gnet.WithReusePort(true),
		gnet.WithTCPNoDelay(gnet.TCPNoDelay),
		gnet.WithLogLevel(logging.ErrorLevel))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "gnetloop:", err)
	os.Exit(2)
}

// relay is the event handler of every loop.
type relay struct {
	gnet.BuiltinEventEngine
	app     net.Addr
	started chan<- gnet.Engine

	mu    sync.Mutex
	pools map[gnet.EventLoop]*pool
}

// pool holds one loop's idle app connections; only that loop touches it.
type pool struct{ idle []*side }

// side is one end of an exchange: a client's connection or the app's.
type side struct {
	c    gnet.Conn // nil while an app connection is being dialed
	app  bool
	peer *side
	pool *pool
	dead bool
	f    h1.Framer // the heads and bodies read from this side
	// Client sides only: requests sent on whose answers have not ended,
	// whether the last one asked for the connection to close, and what
	// came before the app connection did.
	waiting    int
	closeAfter bool
	pending    []byte
	// spare holds an answer's first bytes that grew by a field (SayClose).
	spare []byte
}

func (r *relay) OnBoot(eng gnet.Engine) gnet.Action {
	if r.started != nil {
		r.started <- eng
	}
	return gnet.None
}

// poolOf returns the idle app connections of loop el.
func (r *relay) poolOf(el gnet.EventLoop) *pool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pools == nil {
		r.pools = make(map[gnet.EventLoop]*pool)
	}
	p := r.pools[el]
	if p == nil {
		p = &pool{}
		r.pools[el] = p
	}
	return p
}

func (r *relay) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	if u, ok := c.Context().(*side); ok {
		// An app connection dialed for a client (see dial).
		u.c = c
		cl := u.peer
		if cl == nil || cl.dead {
			// Its client went away while it was dialed.
			u.peer = nil
			u.pool.idle = append(u.pool.idle, u)
			return nil, gnet.None
		}
		b := cl.pending
		cl.pending = nil
		return b, gnet.None
	}
	c.SetContext(&side{c: c, pool: r.poolOf(c.EventLoop())})
	return nil, gnet.None
}

func (r *relay) OnTraffic(c gnet.Conn) gnet.Action {
	s := c.Context().(*side)
	b, _ := c.Next(-1)
	if !s.app {
		return r.fromClient(s, b)
	}
	cl := s.peer
	if cl == nil {
		// An idle app connection has nothing to say.
		return gnet.Close
	}
	_, ends := s.f.Scan(b)
	cl.waiting -= ends
	if cl.closeAfter && s.f.HeadAt >= 0 {
		if out, ok := h1.SayClose(cl.spare[:0], b, s.f.HeadAt); ok {
			b, cl.spare = out, out
		}
	}
	_, _ = cl.c.Write(b)
	if cl.waiting == 0 && cl.closeAfter {
		r.release(cl)
	}
	return gnet.None
}

// fromClient follows the requests in b and passes them to the client's
// app connection, dialing one onto the client's loop first if it has
// none.
func (r *relay) fromClient(s *side, b []byte) gnet.Action {
	if heads, _ := s.f.Scan(b); heads > 0 {
		s.waiting += heads
		s.closeAfter = s.f.Closed
	}
	if s.peer == nil {
		if !r.pair(s) {
			return gnet.Close
		}
	}
	if s.peer.c == nil {
		s.pending = append(s.pending, b...)
		return gnet.None
	}
	_, _ = s.peer.c.Write(b)
	return gnet.None
}

// pair gives client side s an idle app connection of its loop, or dials
// one onto its loop; its OnOpen sends what came meanwhile.
func (r *relay) pair(s *side) bool {
	p := s.pool
	for len(p.idle) > 0 {
		u := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if !u.dead {
			s.peer, u.peer = u, s
			return true
		}
	}
	u := &side{app: true, pool: p, peer: s, f: h1.Framer{Resp: true}}
	if _, err := s.c.EventLoop().Register(gnet.NewContext(context.Background(), u), r.app); err != nil {
		return false
	}
	s.peer = u
	return true
}

// release closes client side cl, which owes no answer, and keeps its app
// connection for the next client.
func (r *relay) release(cl *side) {
	u := cl.peer
	cl.peer = nil
	if u != nil {
		u.peer = nil
		r.keep(u, cl)
	}
	_ = cl.c.EventLoop().Close(cl.c)
}

// keep puts app side u, just unpaired from cl, back in its pool when it is
// between answers, and closes it otherwise.
func (r *relay) keep(u, cl *side) {
	switch {
	case u.c == nil:
		// Still being dialed: OnOpen pools it.
	case cl.waiting == 0 && u.f.Clean() && u.c.OutboundBuffered() == 0:
		u.pool.idle = append(u.pool.idle, u)
	default:
		_ = u.c.EventLoop().Close(u.c)
	}
}

func (r *relay) OnClose(c gnet.Conn, _ error) gnet.Action {
	s, ok := c.Context().(*side)
	if !ok {
		return gnet.None
	}
	s.dead = true
	p := s.peer
	if p == nil {
		return gnet.None
	}
	s.peer, p.peer = nil, nil
	if s.app {
		// The app hung up: its client's answer cannot end.
		if p.c != nil {
			_ = p.c.EventLoop().Close(p.c)
		}
		return gnet.None
	}
	r.keep(p, s)
	return gnet.None
}
