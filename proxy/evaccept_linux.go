package proxy

import (
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"
	"unsafe"
)

// The event loops accept client connections themselves (see
// docs/proxy.md, "The event loop"). A connection accepted by a loop is
// not Go's: it has a descriptor and no net.Conn, is registered in that
// loop's epoll instance only, and its first request is served there when
// it is plain and an idle app connection is at hand. Anything else gives
// it a net.Conn (adopt) and hands it to a goroutine, as for a connection
// parked in a loop.
//
// Why: with a new connection per request, Go's accept path made a
// getsockname, a setsockopt, a registration in Go's poller and its
// removal per connection, set a finalizer, handed the connection to a
// goroutine, and made its accept and close calls through the scheduler's
// bookkeeping, which woke the scheduler's monitor thread after every
// idle moment. A loop makes none of that: one accept4, one epoll_ctl, and
// a close.
//
// Accepting stays Go's (Serve's loop, with its backoff, counting and
// logging) for an episode of failing accepts: a loop whose accept fails
// for any reason but "nothing to accept" hands accepting back to Serve,
// which returns it to the loops once the episode is over.

// epollExclusive is EPOLLEXCLUSIVE: a new connection wakes one loop, not
// every loop.
const epollExclusive = 1 << 28

// maxAcceptBatch bounds the connections a loop accepts from one event;
// the listener is level-triggered, so more are announced again.
const maxAcceptBatch = 64

// setListener readies the loops to accept from ln, a TCP listener; it is
// called before they start. They accept once waitFailure says so.
func (ls *evLoops) setListener(ln net.Listener) {
	sc, ok := ln.(syscall.Conn)
	if _, tcp := ln.(*net.TCPListener); !ok || !tcp {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	fd := -1
	if err := rc.Control(func(s uintptr) {
		fd = int(s)
		// Sockets accepted with accept4 are not set TCP_NODELAY by Go's
		// net, as accepted connections are; Linux copies it from the
		// listening socket.
		_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	}); err != nil {
		return
	}
	ls.lnRC, ls.lnFd = rc, fd
}

// accepts reports whether the loops can accept from the listener.
func (ls *evLoops) accepts() bool { return ls != nil && ls.lnRC != nil }

// waitFailure hands accepting to the loops until one of them hands it back
// (true) or the proxy stops (false).
func (ls *evLoops) waitFailure(stop <-chan struct{}) bool {
	ls.accepting.Store(true)
	ls.wake()
	select {
	case <-ls.failed:
		return true
	case <-stop:
		return false
	}
}

// listenOn registers the listener with the loop, unless it is or the
// loops are not accepting.
func (l *evLoop) listenOn() {
	ls := l.ls
	if l.lnOn || ls.lnRC == nil || !ls.accepting.Load() || l.p.draining.Load() {
		return
	}
	e := syscall.EpollEvent{Events: syscall.EPOLLIN | epollExclusive, Fd: int32(ls.lnFd)}
	_ = ls.lnRC.Control(func(fd uintptr) {
		if syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, int(fd), &e) == nil {
			l.lnOn = true
		}
	})
}

// listenOff takes the listener out of the loop.
func (l *evLoop) listenOff() {
	if !l.lnOn {
		return
	}
	l.lnOn = false
	_ = l.ls.lnRC.Control(func(fd uintptr) {
		_ = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
	})
}

// accept takes the connections waiting on the listener, serving each
// one's request at once when it came with it (the listener defers
// accepts until it has, see Listen).
func (l *evLoop) accept() {
	ls := l.ls
	if !ls.accepting.Load() || l.p.draining.Load() {
		l.listenOff()
		return
	}
	l.acceptErr = nil
	// Control keeps the descriptor from being closed, and its number
	// reused, while the loop accepts from it.
	if err := ls.lnRC.Control(l.acceptFn); err != nil && l.acceptErr == nil {
		l.acceptErr = err
	}
	if l.acceptErr == nil {
		return
	}
	// Closed by the drain, or failing: Serve's loop accepts (and counts,
	// backs off and logs) until the episode is over.
	l.listenOff()
	if l.p.draining.Load() {
		return
	}
	if ls.accepting.Swap(false) {
		select {
		case ls.failed <- struct{}{}:
		default:
		}
	}
}

// acceptFrom accepts from the listening socket fd, given by Control.
func (l *evLoop) acceptFrom(fd uintptr) {
	for range maxAcceptBatch {
		sl := uint32(unsafe.Sizeof(l.sa))
		nfd, _, e := syscall.RawSyscall6(syscall.SYS_ACCEPT4, fd, uintptr(unsafe.Pointer(&l.sa)),
			uintptr(unsafe.Pointer(&sl)), syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0, 0)
		switch e {
		case 0:
			l.accepted(int(nfd))
		case syscall.EAGAIN:
			return
		case syscall.EINTR, syscall.ECONNABORTED:
			// Go's accept retries these too: the listener is fine.
		default:
			l.acceptErr = os.NewSyscallError("accept4", e)
			return
		}
	}
}

// accepted takes in a connection the loop accepted, and serves its first
// request if it is there.
func (l *evLoop) accepted(fd int) {
	p := l.p
	c := reuseConn(p, nil)
	if c.br == nil {
		c.br = newReader(nil)
	} else {
		c.br.reset(nil)
	}
	c.br.sysFd = fd
	c.clientIP = appendSockaddrHost(c.clientIP[:0], &l.sa)
	now := time.Now()
	c.now = now
	// Served here, or by the loop with the fewest connections.
	home := l.ls.assign(l)
	c.ev = connEv{home: home, cfd: fd, afd: -1, state: evIdle, fresh: true, since: now}
	c.parked.Store(true)
	if h := p.testHookAccepted; h != nil {
		h()
	}
	if !p.admit(c) {
		home.load.Add(-1)
		closeNow(fd)
		c.recycle()
		return
	}
	if home != l {
		home.enqueue(c)
		return
	}
	l.takeNew(c)
}

// takeNew lists c, a connection a loop accepted, and serves its first
// request if it is there.
func (l *evLoop) takeNew(c *conn) {
	fd := c.ev.cfd
	c.ev.idx = len(l.conns)
	l.conns = append(l.conns, c)
	l.setFd(fd, c)
	l.serveClient(c, true, false)
	// Registered once read: a socket registered edge-triggered while
	// readable is reported at once, and its bytes were read already.
	if l.owner(fd) == c && !l.register(c.br, fd) {
		l.handBack(c, resumeServe)
	}
}

// appendSockaddrHost appends the address of a socket address from
// accept4 to b, as appendHost does for a net.Addr.
func appendSockaddrHost(b []byte, sa *syscall.RawSockaddrAny) []byte {
	switch sa.Addr.Family {
	case syscall.AF_INET:
		a := (*syscall.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrFrom4(a.Addr).AppendTo(b)
	case syscall.AF_INET6:
		a := (*syscall.RawSockaddrInet6)(unsafe.Pointer(sa))
		return netip.AddrFrom16(a.Addr).Unmap().AppendTo(b)
	}
	return b
}

// closeNow closes a descriptor without the scheduler's bookkeeping (see
// readNow): closing a TCP socket does not wait.
func closeNow(fd int) {
	_, _, _ = syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(fd), 0, 0)
}

// adopt gives a connection the loop accepted the net.Conn that a
// goroutine serves it through: a copy of its descriptor, registered in
// Go's poller. The loop's own registration goes first, or epoll would go
// on reporting the copy's events under the old number.
func (l *evLoop) adopt(c *conn) bool {
	fd := c.ev.cfd
	if c.br.evl != nil {
		_ = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
		c.br.evl = nil
	}
	f := os.NewFile(uintptr(fd), "")
	nc, err := net.FileConn(f)
	_ = f.Close()
	// Under the lock, for what reads the connections' state under it.
	l.p.mu.Lock()
	if err != nil {
		c.ev.cfd = -1
	} else {
		c.nc = nc
	}
	l.p.mu.Unlock()
	if err != nil {
		return false
	}
	c.br.attach(nc)
	// Registered nowhere now: when its goroutine parks it, it goes to the
	// loop with the fewest connections.
	c.ev.home = nil
	return true
}

// takeApp gives c, a connection the loop accepted, an idle app connection
// from the pool, registered here. It reports false when there is none: a
// goroutine dials one.
func (l *evLoop) takeApp(c *conn) bool {
	if c.nc != nil {
		return false
	}
	// One the loop kept is registered here and was watched while idle:
	// no peek, no epoll_ctl.
	u := l.popIdleApp()
	if u == nil {
		if u = c.p.pool.takeAny(); u == nil {
			return false
		}
		if !l.register(u.br, u.br.fd()) {
			c.p.pool.put(u)
			return false
		}
	}
	c.up = u
	c.ev.afd = u.br.fd()
	l.setFd(c.ev.afd, c)
	return true
}

// dialFor dials the app for c, a connection the loop accepted whose
// request is read and found no idle app connection to take, and keeps c
// while a goroutine dials (evDial); dialDone goes on once the dial ended.
// It reports false, and starts nothing, for a connection a goroutine
// served before, while the proxy drains, or when every dial slot is busy:
// a goroutine serves c then, and waits for a slot if it must.
//
// Why: a burst of new clients finds the idle pool empty, and the first
// request of each waited for a dial. Handed to a goroutine for it, a
// connection was given a net.Conn of its own (a dup of its descriptor,
// registered in Go's poller) and parked back in the loop afterwards:
// more work than the dial itself. See docs/proxy.md, "The event loop".
func (l *evLoop) dialFor(c *conn) bool {
	p := l.p
	if c.nc != nil || p.draining.Load() || p.testLoopsHandDials {
		return false
	}
	// In flight from now, as when a goroutine dials for it; counted
	// before the dial starts, so that it is by the time the dial ends.
	c.ev.dialStart = p.cfg.Now()
	p.m.inFlight.Add(1)
	if !p.pool.dialAsync(func(u *upConn, err error) { l.dialEnded(c, u, err) }) {
		p.m.inFlight.Add(-1)
		return false
	}
	l.dials.Add(1)
	c.ev.state = evDial
	return true
}

// dialEnded lists c, whose dial ended with u or err, for its loop to go
// on with (takeIn), and wakes the loop. Called by the dialing goroutine.
func (l *evLoop) dialEnded(c *conn, u *upConn, err error) {
	c.ev.dialUp, c.ev.dialErr = u, err
	l.enqueue(c)
}

// dialDone sends c's request on the app connection its dial made (c is in
// the loop, waiting for the dial, and listed by dialEnded). A
// request whose dial failed is handed to a goroutine, which answers it as
// if it had dialed itself (502: the app refused the connection or did not
// take it within the dial timeout). A connection the drain cut meanwhile
// is closed, its request counted as its client's, gone.
func (l *evLoop) dialDone(c *conn) {
	ev := &c.ev
	u, err := ev.dialUp, ev.dialErr
	ev.dialUp = nil
	p := l.p
	p.m.inFlight.Add(-1)
	switch {
	case c.cut.Load():
		ev.dialErr = nil
		if u != nil {
			u.close()
		}
		c.state.Store(stateActive)
		c.startForward()
		c.start = ev.dialStart
		ev.state = evAwait
		l.cut(c)
	case err != nil:
		// The goroutine answers with ev.dialErr (see conn.upstream).
		ev.state = evIdle
		l.handBack(c, resumeServe)
	case !l.register(u.br, u.br.fd()):
		// Out of memory for epoll, most likely: a goroutine dials again.
		u.close()
		ev.state = evIdle
		l.handBack(c, resumeServe)
	default:
		c.up = u
		ev.afd = u.br.fd()
		l.setFd(ev.afd, c)
		c.state.Store(stateActive)
		c.startForward()
		// The request's latency counts the dial, as a goroutine's does.
		c.start = ev.dialStart
		l.send(c)
	}
}

// keepApp keeps u, the idle app connection of a connection the loop
// closes, for the next connection the loop accepts, when it is registered
// here and the pool's bound has room; it reports whether it did. Watched
// as it waits, it needs neither the pool's peek nor a registration when
// it is taken: with a new connection per request, three system calls per
// request fewer.
func (l *evLoop) keepApp(u *upConn) bool {
	if u.br == nil || u.br.evl != l || len(u.br.buffered()) > 0 || !l.p.pool.hold() {
		return false
	}
	// Marked before it is listed: once listed, another loop or a
	// goroutine may take it (stealApp).
	l.setFd(u.br.fd(), l.appMark)
	l.mu.Lock()
	l.idleApps = append(l.idleApps, u)
	l.mu.Unlock()
	return true
}

// idleAppEvent closes the idle app connection on fd: the app closed it or
// sent bytes no request asked for.
func (l *evLoop) idleAppEvent(fd int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, u := range l.idleApps {
		if u.br.fd() == fd {
			l.idleApps = append(l.idleApps[:i], l.idleApps[i+1:]...)
			l.byFd[fd] = nil
			l.p.pool.unhold()
			u.br.evl = nil
			u.close()
			return
		}
	}
}

// closeIdleApps closes the idle app connections the loop keeps, as it
// stops.
func (l *evLoop) closeIdleApps() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, u := range l.idleApps {
		l.byFd[u.br.fd()] = nil
		l.p.pool.unhold()
		u.br.evl = nil
		u.close()
	}
	l.idleApps = nil
}

// stealApp takes an idle app connection that a loop keeps, out of that
// loop's epoll instance, for a loop that has none of its own or for a
// goroutine: with one loop per P, a connection closed in one loop would
// otherwise leave its app connection out of reach of the others. The
// loop's mark for its descriptor stays behind; an event for it finds no
// connection in idleApps and is dropped. It is peeked at, as in the pool:
// the loop that watched it may not have seen its last event yet.
func (ls *evLoops) stealApp() *upConn {
	for _, l := range ls.loops {
		for u := l.popIdleApp(); u != nil; u = l.popIdleApp() {
			u.br.unregister()
			if u.alive() {
				return u
			}
			u.close()
		}
	}
	return nil
}

// popIdleApp takes the idle app connection the loop kept last, or nil.
func (l *evLoop) popIdleApp() *upConn {
	l.mu.Lock()
	u, ok := popLast(&l.idleApps)
	l.mu.Unlock()
	if ok {
		l.p.pool.unhold()
	}
	return u
}
