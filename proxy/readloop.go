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

// serveLoop serves the connection until it closes or is handed off,
// forwarding plain requests inside the read loop and the others outside.
func (c *conn) serveLoop() {
	rl := &c.rl
	if rl.step == nil {
		// Bound to c, which a later connection may reuse (see recycle):
		// made once.
		rl.step = c.step
	}
	rl.first = true
	for {
		if !c.idle() {
			return
		}
		// A new Read starts without the poller's readiness: try first.
		rl.read = len(c.br.buffered()) == 0
		rl.emptied = false
		rl.leave = leaveClose
		c.inLoop.Store(true)
		err := c.br.rc.Read(rl.step)
		c.inLoop.Store(false)
		switch {
		case err != nil || rl.leave == leaveClose:
			// A timeout, a reset, the end, or the drain.
			return
		case rl.leave == leaveH2:
			c.handOffH2()
			return
		}
		if !c.forward() || c.p.draining.Load() {
			return
		}
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
				return false
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
				return false
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
		if !c.forward() || c.p.draining.Load() || !c.idle() {
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
