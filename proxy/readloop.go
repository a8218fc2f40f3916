package proxy

import (
	"syscall"
)

// The read loop serves a client connection's requests from inside one
// syscall.RawConn.Read, for as long as they are plain (see plain), so that
// the connection waits for its next request without first trying a read
// that finds nothing.
//
// Why: Go's poller forgets a socket's readiness when a Read starts, so a
// Read must try the socket once before it waits. Started after an answer
// was written, that try finds nothing (the client has not sent its next
// request yet) and costs a system call per request. Inside one long Read
// the readiness is kept: the loop reads the socket only when the last
// read may have left bytes (it filled the buffer) or the poller said bytes
// came since, as nginx does with edge-triggered epoll.
//
// While the loop runs, the goroutine holds the descriptor, and a Close
// from another goroutine would wait for it to let go: the drain cuts such
// a connection off with a shutdown instead (cutOff), which ends every wait
// of the loop, and the goroutine closes the connection itself.

// How the goroutine left the read loop.
const (
	leaveClose   = iota // the connection closes: its end, an error, a refused head, the drain
	leaveForward        // a request that needs the descriptor free: forwarded outside the loop
	leaveH2             // the HTTP/2 preface: the connection is handed off
	leavePark           // nothing to read: the connection waits in an event loop
)

// readLoop is the state of a connection's read loop.
type readLoop struct {
	// step is the function given to RawConn.Read, made once.
	step  func(fd uintptr) bool
	first bool // the next head is the connection's first
	// started is set once bytes of the next head came (see headStarted).
	started bool
	// read is set when the socket is to be read before the buffered bytes
	// are looked at again; emptied when the last read left the socket
	// empty, so that only the poller's word makes another worth trying.
	read, emptied bool
	leave         int
}

// serveLoop serves the connection until it closes, is handed off or is
// parked in an event loop, forwarding plain requests inside the read loop
// and the others outside. It reports whether it parked the connection,
// after which the caller must not touch c.
func (c *conn) serveLoop(first bool) (parked bool) {
	rl := &c.rl
	if rl.step == nil {
		// Bound to c, which a later connection may reuse (see recycle):
		// made once.
		rl.step = c.step
	}
	rl.first = first
	for {
		if !c.idle() {
			return false
		}
		// A new Read starts without the poller's readiness: try first.
		rl.read = len(c.br.buffered()) == 0
		rl.emptied = false
		rl.leave = leaveClose
		c.inLoop.Store(true)
		err := c.readInLoop()
		c.inLoop.Store(false)
		switch {
		case err != nil || rl.leave == leaveClose:
			// A timeout, a reset, the end, or the drain.
			return false
		case rl.leave == leaveH2:
			c.handOffH2()
			return false
		case rl.leave == leavePark:
			// Marked parked before the cut is read, as cutOff stores the
			// cut before it reads parked: a drain that runs out of time
			// now either finds the connection parked and leaves it to its
			// loop, or cut it off here (closed it, out of the read loop)
			// and this goroutine sees the cut and ends it. Parking a
			// connection cutOff closed would hand the loop a descriptor
			// of -1.
			if hook := c.p.testHookBeforePark; hook != nil {
				hook(c)
			}
			c.parked.Store(true)
			if c.cut.Load() {
				c.parked.Store(false)
				return false
			}
			c.p.evl.Load().park(c)
			return true
		}
		if !c.forward() {
			return false
		}
	}
}

// readInLoop runs the read loop until it leaves. The drain's poke (see
// pokeIfIdle) ends a wait with a deadline in the past, meant for a
// connection with nothing of a next request: when bytes of a head came
// before it (read, or waiting in the socket), the loop goes on reading
// that head under the head's deadline.
func (c *conn) readInLoop() error {
	for {
		err := c.br.rc.Read(c.rl.step)
		if err == nil || !c.pokedMidHead(err) {
			return err
		}
		// The poke may have come before the loop looked at bytes already
		// buffered (an event loop reads a head before it hands its
		// connection over): look at them first.
		c.rl.read, c.rl.leave = len(c.br.buffered()) == 0, leaveClose
	}
}

// step is the read loop: called by RawConn.Read with the descriptor, it
// returns false to wait until the poller says the socket is readable, and
// true to leave, with rl.leave saying why.
func (c *conn) step(fd uintptr) bool {
	rl := &c.rl
	for {
		if c.cut.Load() {
			return true
		}
		if rl.read {
			emptied, err := c.br.readFd(fd, c.p.cfg.MaxHeaderBytes)
			switch {
			case err == syscall.EAGAIN:
				return c.wouldWait()
			case err == errHeadTooLarge:
				c.req.reset()
				c.reject(err)
				return true
			case err != nil:
				// A reset or the end: nothing to answer.
				return true
			}
			rl.read, rl.emptied = false, emptied
		}
		switch c.checkHead(rl.first) {
		case headMore:
			c.headStarted()
			rl.read = true
			if rl.emptied {
				return c.wouldWait()
			}
			continue
		case headH2:
			rl.leave = leaveH2
			return true
		case headBad:
			return true
		}
		rl.first = false
		if !c.plain() {
			rl.leave = leaveForward
			return true
		}
		if !c.forward() || !c.idle() {
			return true
		}
	}
}

// plain reports whether the request just read can be forwarded inside the
// read loop: nothing but this goroutine will read the connection until the
// answer is written, as no body is left to stream from the client (it is
// all buffered and small enough to go with the head) and no upgrade may
// turn the connection into a tunnel.
func (c *conn) plain() bool {
	req := &c.req
	switch {
	case req.connUpgrade && req.hasUpgrade, req.chunked:
		return false
	case req.contentLength > 0:
		return req.contentLength <= maxInline && req.contentLength <= int64(len(c.br.buffered())-c.headLen)
	}
	return true
}

// cutOff closes the connection for a drain that ran out of time. A
// connection in the read loop is shut down rather than closed: Close
// would wait for its goroutine to leave the loop, and the shutdown makes
// it leave (reads find the end, writes fail, a wait for the app sees the
// client gone); the goroutine then closes it. Called with p.mu held.
func (c *conn) cutOff() {
	c.cut.Store(true)
	if c.parked.Load() || c.nc == nil {
		// Its event loop closes it, woken by closeAll, or is closing it
		// (a connection it accepted has no net.Conn).
		return
	}
	if !c.inLoop.Load() {
		// Not in the loop, and if it enters now it sees cut and leaves at
		// once: Close does not wait long.
		_ = c.nc.Close()
		return
	}
	if sc, ok := c.nc.(interface {
		CloseRead() error
		CloseWrite() error
	}); ok {
		_ = sc.CloseRead()
		_ = sc.CloseWrite()
	}
}

// wouldWait is step's answer when the connection has nothing to read: wait
// for the poller (false), or leave to park the connection in an event
// loop (true) when it is between requests with an app connection pinned.
func (c *conn) wouldWait() bool {
	rl := &c.rl
	if c.p.evl.Load() == nil || rl.first || len(c.br.buffered()) > 0 || c.linger || c.cut.Load() ||
		c.p.draining.Load() || c.up == nil || c.up.br == nil || c.up.br.rc == nil || len(c.up.br.buffered()) > 0 {
		return false
	}
	if c.unparked > 0 {
		c.unparked--
		return false
	}
	rl.leave = leavePark
	return true
}
