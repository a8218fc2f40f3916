package proxy

import (
	"errors"
	"net"
	"sync"
	"time"
)

// upConn is one keep-alive connection to the app.
type upConn struct {
	nc net.Conn
	br *reader
	// rdl and wdl are the deadlines last set on nc.
	rdl, wdl time.Time
	// reused is set once it has carried a request: a failure before the
	// first response byte may then be a close the app sent meanwhile.
	reused bool
}

func (u *upConn) close() {
	_ = u.nc.Close()
	if u.br != nil {
		u.br.release()
		u.br = nil
	}
}

// alive reports whether an idle connection is still usable: not closed by
// the app and with no bytes waiting that no request asked for. It is
// checked at every reuse, with one non-blocking peek: bytes an app sends
// after a complete answer would otherwise be read as the next request's
// answer, and that may be another client's.
func (u *upConn) alive() bool {
	return len(u.br.buffered()) == 0 && u.br.peek() == peekEmpty
}

// pool holds idle keep-alive connections to the app, at most max of them;
// the most recently used is handed out first.
type pool struct {
	addr   string
	dialer net.Dialer
	max    int
	// dials holds a token per dial in flight.
	dials chan struct{}

	mu   sync.Mutex
	idle []*upConn
	// held counts the idle connections event loops keep for themselves
	// (see evLoop.keepApp); max bounds them with the others. steal takes
	// one of those, or returns nil; it is set while the loops run.
	held   int
	closed bool
	steal  func() *upConn
}

func newPool(addr string, dialTimeout time.Duration, max int) *pool {
	return &pool{addr: addr, dialer: net.Dialer{Timeout: dialTimeout}, max: max,
		dials: make(chan struct{}, maxDials)}
}

// get returns an idle connection that is still alive, or dials a new one
// as dial does.
func (p *pool) get(check time.Duration, cancel func() error) (*upConn, error) {
	if u := p.takeAny(); u != nil {
		return u, nil
	}
	return p.dial(check, cancel)
}

// takeAny returns an idle connection that is still alive, the pool's or
// one an event loop keeps, or nil.
func (p *pool) takeAny() *upConn {
	if u := p.takeIdle(); u != nil || p.steal == nil {
		return u
	}
	return p.steal()
}

// takeIdle returns an idle connection that is still alive, or nil.
func (p *pool) takeIdle() *upConn {
	for {
		p.mu.Lock()
		u, ok := popLast(&p.idle)
		p.mu.Unlock()
		if !ok {
			return nil
		}
		if u.alive() {
			return u
		}
		u.close()
	}
}

// maxDials bounds the dials in flight. Each runs in its own goroutine,
// whose stack grows to 8 KiB on the way through the dialer: a thousand
// clients arriving at once would otherwise hold 8 MB of stacks at the same
// moment, and the heap keeps that memory after they are gone; at the bound
// they hold 1 MiB. Past it a dial waits for a slot, at most one dial
// timeout (errAppBusy then), and less when cancel says the wait is over.
//
// Why 128 and not fewer: every new client connection without an idle app
// connection to take dials, and the first requests of a burst wait for
// those dials. With 1,000 clients arriving at once (bench/run.sh's
// conns1000 row), a bound of 16 put their p99 at 2.8-3.1 times nginx's;
// 64 at 1.1-1.2 times; 128 at 0.82-1.05 times (four runs, one and two
// cores), for 2.6 MB more peak RSS than 16 at one core.
const maxDials = 128

// errAppBusy is returned when no dial slot came free within the wait: the
// app is accepting connections slower than clients arrive.
var errAppBusy = errors.New("no connection to the app could be started in time: every dial slot is busy")

// dial connects to the app from a short-lived goroutine: dialing runs
// deep, and a client connection's goroutine whose stack grew for it would
// keep the larger stack for as long as it lives. When every slot is busy,
// it waits for one until the dial timeout passes or cancel, called every
// check interval, returns an error.
func (p *pool) dial(check time.Duration, cancel func() error) (*upConn, error) {
	type result struct {
		nc  net.Conn
		err error
	}
	select {
	case p.dials <- struct{}{}:
	default:
		if err := p.waitSlot(check, cancel); err != nil {
			return nil, err
		}
	}
	ch := make(chan result, 1)
	go func() {
		nc, err := p.dialer.Dial("tcp", p.addr)
		<-p.dials
		ch <- result{nc, err}
	}()
	r := <-ch
	if r.err != nil {
		return nil, r.err
	}
	return &upConn{nc: r.nc, br: newAppReader(r.nc)}, nil
}

// dialAsync starts a dial in a goroutine of its own and calls done with
// its result there, unless every dial slot is busy: it reports false then,
// and does not wait for one (dial does). An event loop dials so for a new
// client connection, which it keeps meanwhile (see evLoop.dialFor).
func (p *pool) dialAsync(done func(*upConn, error)) bool {
	select {
	case p.dials <- struct{}{}:
	default:
		return false
	}
	go func() {
		nc, err := p.dialer.Dial("tcp", p.addr)
		<-p.dials
		if err != nil {
			done(nil, err)
			return
		}
		done(&upConn{nc: nc, br: newAppReader(nc)}, nil)
	}()
	return true
}

// dialsInFlight reports whether a dial is under way.
func (p *pool) dialsInFlight() bool { return len(p.dials) > 0 }

// waitSlot waits for a dial slot: the slow path of dial.
func (p *pool) waitSlot(check time.Duration, cancel func() error) error {
	limit := time.NewTimer(p.dialer.Timeout)
	defer limit.Stop()
	var tick <-chan time.Time
	if cancel != nil && check > 0 {
		t := time.NewTicker(check)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case p.dials <- struct{}{}:
			return nil
		case <-limit.C:
			return errAppBusy
		case <-tick:
			if err := cancel(); err != nil {
				return err
			}
		}
	}
}

// put gives back a connection that is idle and reusable.
func (p *pool) put(u *upConn) {
	p.mu.Lock()
	if p.full() {
		p.mu.Unlock()
		u.close()
		return
	}
	p.idle = append(p.idle, u)
	p.mu.Unlock()
}

// full reports whether the pool takes no more idle connections: it is
// closed, or at its bound. Called with mu held.
func (p *pool) full() bool { return p.closed || len(p.idle)+p.held >= p.max }

func (p *pool) idleCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle) + p.held
}

// hold counts an idle connection an event loop keeps for itself, and
// reports false when the bound leaves no room for it: it is closed then.
func (p *pool) hold() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.full() {
		return false
	}
	p.held++
	return true
}

// unhold notes that a connection counted by hold was taken or closed.
func (p *pool) unhold() {
	p.mu.Lock()
	p.held--
	p.mu.Unlock()
}

// close closes the idle connections and every one given back later.
func (p *pool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, u := range idle {
		u.close()
	}
}
