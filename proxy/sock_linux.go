package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// Client sockets are kept out of Go's poller. Why: Go's net package
// accepts, sets TCP_NODELAY on and closes every connection with system
// calls made through the scheduler's bookkeeping, and on one P the first
// such call after an idle moment wakes the scheduler's monitor thread,
// which then polls every 20 µs on the proxy's core. With a new connection
// per request that took about a tenth of outrider's CPU, and the handing
// of the P between threads more (docs/benchmarks.md, "Where the close
// row's CPU goes"). Here the accept, the reads and writes and the close
// are raw system calls, readiness comes from an epoll instance of the
// proxy's own, and the goroutines wait on channels. The app's sockets
// stay with Go's poller: they are opened once and kept.
//
// The epoll instance is itself registered with Go's poller, so the
// goroutine that reads its events parks like any other; nothing blocks a
// thread.

// Events of a client socket, edge-triggered: one per change.
const (
	evRead  = syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLHUP | syscall.EPOLLERR
	evWrite = syscall.EPOLLOUT | syscall.EPOLLHUP | syscall.EPOLLERR
	evET    = 1 << 31
)

// poller is an epoll instance for client sockets and the goroutine that
// reads its events and wakes the goroutines waiting on them.
type poller struct {
	epfd   int
	file   *os.File // epfd, as Go's poller sees it
	done   chan struct{}
	closed atomic.Bool

	mu    sync.RWMutex
	socks []*sock // by descriptor
	gen   uint32  // tells a reused descriptor's socket from its predecessor
}

func newPoller() (*poller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		_ = syscall.Close(epfd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	pl := &poller{epfd: epfd, file: os.NewFile(uintptr(epfd), "proxy-epoll"), done: make(chan struct{})}
	rc, err := pl.file.SyscallConn()
	if err != nil {
		_ = pl.file.Close()
		return nil, err
	}
	go pl.run(rc)
	return pl, nil
}

// run dispatches events until the poller is closed.
func (pl *poller) run(rc syscall.RawConn) {
	defer close(pl.done)
	events := make([]syscall.EpollEvent, 256)
	wait := func(fd uintptr) bool {
		for {
			n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, fd,
				uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
			switch {
			case e == syscall.EINTR:
				continue
			case e != 0 || n == 0:
				// Nothing ready: Go's poller wakes this goroutine when
				// the epoll instance has events again.
				return false
			}
			pl.dispatch(events[:n])
			if int(n) < len(events) {
				return false
			}
		}
	}
	for !pl.closed.Load() {
		if err := rc.Read(wait); err != nil {
			return
		}
	}
}

func (pl *poller) dispatch(events []syscall.EpollEvent) {
	pl.mu.RLock()
	defer pl.mu.RUnlock()
	for i := range events {
		ev := &events[i]
		fd := int(ev.Fd)
		if fd < 0 || fd >= len(pl.socks) {
			continue
		}
		s := pl.socks[fd]
		if s == nil || s.gen != uint32(ev.Pad) {
			continue
		}
		if ev.Events&evRead != 0 {
			s.readable.Store(true)
			s.rready.Store(true)
			wake(s.rch)
		}
		if ev.Events&evWrite != 0 {
			s.wready.Store(true)
			wake(s.wch)
		}
	}
}

// close stops the poller; sockets still open see it as closed.
func (pl *poller) close() {
	if pl.closed.Swap(true) {
		return
	}
	_ = pl.file.Close()
	<-pl.done
	pl.mu.Lock()
	socks := pl.socks
	pl.socks = nil
	pl.mu.Unlock()
	for _, s := range socks {
		if s != nil {
			wake(s.rch)
			wake(s.wch)
		}
	}
}

// add registers a socket accepted on descriptor fd.
func (pl *poller) add(s *sock) error {
	pl.mu.Lock()
	if pl.closed.Load() {
		pl.mu.Unlock()
		return net.ErrClosed
	}
	if s.fd >= len(pl.socks) {
		grown := make([]*sock, max(s.fd+1, 2*len(pl.socks), 64))
		copy(grown, pl.socks)
		pl.socks = grown
	}
	pl.gen++
	s.gen = pl.gen
	pl.socks[s.fd] = s
	pl.mu.Unlock()
	ev := syscall.EpollEvent{Events: evRead | evWrite | evET, Fd: int32(s.fd), Pad: int32(s.gen)}
	_, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_CTL, uintptr(pl.epfd), syscall.EPOLL_CTL_ADD,
		uintptr(s.fd), uintptr(unsafe.Pointer(&ev)), 0, 0)
	if e != 0 {
		pl.remove(s)
		return os.NewSyscallError("epoll_ctl", e)
	}
	return nil
}

// remove forgets s; closing its descriptor takes it out of the epoll set.
func (pl *poller) remove(s *sock) {
	pl.mu.Lock()
	if s.fd < len(pl.socks) && pl.socks[s.fd] == s {
		pl.socks[s.fd] = nil
	}
	pl.mu.Unlock()
}

// wake leaves a token for a goroutine waiting on ch, or waking to check.
func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// sock is an accepted client socket: a net.Conn whose reads, writes and
// close are raw system calls, waiting on the proxy's poller.
type sock struct {
	fd     int
	gen    uint32
	pl     *poller
	raddr  net.Addr
	laddr  net.Addr
	closed atomic.Bool
	// borrowed is set for the listening socket, which its listener closes.
	borrowed bool

	// Readiness since the last attempt, set by the poller; the channels
	// carry its wake-ups. readable is set with the first read event.
	rready, wready atomic.Bool
	readable       atomic.Bool
	rch, wch       chan struct{}

	// Deadlines in Unix nanoseconds (0: none), and whether they passed.
	rdl, wdl         atomic.Int64
	rexpired, wexpir atomic.Bool

	mu     sync.Mutex // guards refs and the timers
	refs   int        // calls holding the descriptor
	rt, wt *time.Timer

	// One reader and one writer at a time, as Go's poller allows: a
	// second waiter would share the first one's wake-ups.
	rmu, wmu sync.Mutex
}

var (
	_ net.Conn        = (*sock)(nil)
	_ syscall.Conn    = (*sock)(nil)
	_ syscall.RawConn = (*rawSock)(nil)
)

func newSock(pl *poller, fd int, raddr net.Addr) (*sock, error) {
	s := &sock{fd: fd, pl: pl, raddr: raddr, rch: make(chan struct{}, 1), wch: make(chan struct{}, 1)}
	if err := pl.add(s); err != nil {
		return nil, err
	}
	return s, nil
}

// incref holds the descriptor for a call; it fails once Close was called.
func (s *sock) incref() error {
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return net.ErrClosed
	}
	s.refs++
	s.mu.Unlock()
	return nil
}

// decref lets the descriptor go; the last call after Close closes it.
func (s *sock) decref() {
	s.mu.Lock()
	s.refs--
	last := s.refs == 0 && s.closed.Load()
	s.mu.Unlock()
	if last {
		s.destroy()
	}
}

func (s *sock) destroy() {
	s.pl.remove(s)
	if !s.borrowed {
		syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(s.fd), 0, 0)
	}
}

// Close closes the socket once no call holds it; calls waiting for it
// return net.ErrClosed at once.
func (s *sock) Close() error {
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return s.opError("close", net.ErrClosed)
	}
	s.closed.Store(true)
	for _, t := range []*time.Timer{s.rt, s.wt} {
		if t != nil {
			t.Stop()
		}
	}
	refs := s.refs
	s.mu.Unlock()
	wake(s.rch)
	wake(s.wch)
	if refs == 0 {
		s.destroy()
	}
	return nil
}

// wait waits for the readiness flag ready, or an error: the socket or
// the poller closed, or the deadline passed.
func (s *sock) wait(ready, expired *atomic.Bool, ch chan struct{}) error {
	for !ready.Load() {
		switch {
		case s.closed.Load() || s.pl.closed.Load():
			return net.ErrClosed
		case expired.Load():
			return os.ErrDeadlineExceeded
		}
		<-ch
	}
	return nil
}

// rawSock is the socket as a syscall.RawConn.
type rawSock sock

func (s *sock) SyscallConn() (syscall.RawConn, error) { return (*rawSock)(s), nil }

func (r *rawSock) Control(f func(fd uintptr)) error {
	s := (*sock)(r)
	if err := s.incref(); err != nil {
		return err
	}
	defer s.decref()
	f(uintptr(s.fd))
	return nil
}

// Read calls f until it returns true, waiting for the socket to become
// readable after each false, as syscall.RawConn's Read does.
func (r *rawSock) Read(f func(fd uintptr) bool) error {
	s := (*sock)(r)
	s.rmu.Lock()
	defer s.rmu.Unlock()
	return s.rawIO(f, &s.rready, &s.rexpired, s.rch)
}

// Write is Read for writability.
func (r *rawSock) Write(f func(fd uintptr) bool) error {
	s := (*sock)(r)
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.rawIO(f, &s.wready, &s.wexpir, s.wch)
}

func (s *sock) rawIO(f func(fd uintptr) bool, ready, expired *atomic.Bool, ch chan struct{}) error {
	if err := s.incref(); err != nil {
		return err
	}
	defer s.decref()
	if expired.Load() {
		return os.ErrDeadlineExceeded
	}
	for {
		// Readiness that comes after this point is kept for the wait.
		ready.Store(false)
		if f(uintptr(s.fd)) {
			return nil
		}
		if err := s.wait(ready, expired, ch); err != nil {
			return err
		}
	}
}

func (s *sock) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var err error
	ioErr := (*rawSock)(s).Read(func(fd uintptr) bool {
		for {
			n, err = readNow(fd, p)
			switch err {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false
			}
			return true
		}
	})
	switch {
	case ioErr != nil:
		return 0, s.opError("read", ioErr)
	case err != nil:
		return 0, s.opError("read", os.NewSyscallError("read", err))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (s *sock) Write(p []byte) (int, error) {
	written := 0
	var err error
	ioErr := (*rawSock)(s).Write(func(fd uintptr) bool {
		for written < len(p) {
			var n int
			n, err = writeNow(fd, p[written:])
			switch err {
			case nil:
				written += n
				continue
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				err = nil
				return false
			}
			return true
		}
		return true
	})
	switch {
	case ioErr != nil:
		return written, s.opError("write", ioErr)
	case err != nil:
		return written, s.opError("write", os.NewSyscallError("write", err))
	}
	return written, nil
}

// CloseRead and CloseWrite shut down one direction, as *net.TCPConn's do.
func (s *sock) CloseRead() error  { return s.shutdown(syscall.SHUT_RD) }
func (s *sock) CloseWrite() error { return s.shutdown(syscall.SHUT_WR) }

func (s *sock) shutdown(how int) error {
	var e syscall.Errno
	if err := (*rawSock)(s).Control(func(fd uintptr) {
		_, _, e = syscall.RawSyscall(syscall.SYS_SHUTDOWN, fd, uintptr(how), 0)
	}); err != nil {
		return s.opError("shutdown", err)
	}
	if e != 0 {
		return s.opError("shutdown", os.NewSyscallError("shutdown", e))
	}
	return nil
}

func (s *sock) RemoteAddr() net.Addr { return s.raddr }

// LocalAddr asks the socket, the first time.
func (s *sock) LocalAddr() net.Addr {
	s.mu.Lock()
	laddr := s.laddr
	s.mu.Unlock()
	if laddr != nil {
		return laddr
	}
	var sa syscall.Sockaddr
	var err error
	if cerr := (*rawSock)(s).Control(func(fd uintptr) { sa, err = syscall.Getsockname(int(fd)) }); cerr != nil || err != nil {
		return &net.TCPAddr{}
	}
	laddr = tcpAddr(sa)
	s.mu.Lock()
	s.laddr = laddr
	s.mu.Unlock()
	return laddr
}

func (s *sock) SetDeadline(t time.Time) error {
	s.SetReadDeadline(t)
	s.SetWriteDeadline(t)
	return nil
}

func (s *sock) SetReadDeadline(t time.Time) error {
	s.setDeadline(t, &s.rdl, &s.rexpired, &s.rt, s.rch)
	return nil
}

func (s *sock) SetWriteDeadline(t time.Time) error {
	s.setDeadline(t, &s.wdl, &s.wexpir, &s.wt, s.wch)
	return nil
}

// setDeadline arms the timer that marks the deadline passed and wakes the
// waiting call. A timer that fires for an earlier deadline checks the
// current one and does nothing.
func (s *sock) setDeadline(t time.Time, dl *atomic.Int64, expired *atomic.Bool, timer **time.Timer, ch chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if *timer != nil {
		(*timer).Stop()
	}
	if s.closed.Load() {
		return
	}
	if t.IsZero() {
		dl.Store(0)
		expired.Store(false)
		return
	}
	dl.Store(t.UnixNano())
	d := time.Until(t)
	if d <= 0 {
		expired.Store(true)
		wake(ch)
		return
	}
	expired.Store(false)
	if *timer == nil {
		*timer = time.AfterFunc(d, func() {
			if at := dl.Load(); at != 0 && time.Now().UnixNano() >= at {
				expired.Store(true)
				wake(ch)
			}
		})
		return
	}
	(*timer).Reset(d)
}

func (s *sock) opError(op string, err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// As net's: a timeout, and errors.Is(err, os.ErrDeadlineExceeded).
		return &net.OpError{Op: op, Net: "tcp", Addr: s.raddr, Err: os.ErrDeadlineExceeded}
	}
	return &net.OpError{Op: op, Net: "tcp", Addr: s.raddr, Err: err}
}

// tcpAddr converts a socket address to a *net.TCPAddr.
func tcpAddr(sa syscall.Sockaddr) net.Addr {
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]).To16(), Port: a.Port}
	case *syscall.SockaddrInet6:
		ip := make(net.IP, net.IPv6len)
		copy(ip, a.Addr[:])
		zone := ""
		if a.ZoneId != 0 {
			if ifi, err := net.InterfaceByIndex(int(a.ZoneId)); err == nil {
				zone = ifi.Name
			}
		}
		return &net.TCPAddr{IP: ip, Port: a.Port, Zone: zone}
	}
	return &net.TCPAddr{}
}

// rawTCPAddr converts the address accept4 filled in.
func rawTCPAddr(rsa *syscall.RawSockaddrAny) net.Addr {
	switch rsa.Addr.Family {
	case syscall.AF_INET:
		p := (*syscall.RawSockaddrInet4)(unsafe.Pointer(rsa))
		port := (*[2]byte)(unsafe.Pointer(&p.Port))
		return &net.TCPAddr{IP: net.IPv4(p.Addr[0], p.Addr[1], p.Addr[2], p.Addr[3]), Port: int(port[0])<<8 | int(port[1])}
	case syscall.AF_INET6:
		p := (*syscall.RawSockaddrInet6)(unsafe.Pointer(rsa))
		port := (*[2]byte)(unsafe.Pointer(&p.Port))
		sa := &syscall.SockaddrInet6{Port: int(port[0])<<8 | int(port[1]), ZoneId: p.Scope_id, Addr: p.Addr}
		return tcpAddr(sa)
	}
	return &net.TCPAddr{}
}

// rawListener accepts on a TCP listener with raw accept4 calls, and hands
// out sockets on its poller. The listening socket is registered with the
// poller as well (Go's net gives a listener's RawConn no Read to wait
// with), but stays the listener's to close.
type rawListener struct {
	net.Listener
	rc syscall.RawConn
	ls *sock // the listening socket's readiness
	pl *poller
}

// rawListen wraps ln when it is a TCP listener; the accepted sockets get
// TCP_NODELAY, as net's do, from the listening socket, which Linux copies
// it from. stop closes the poller: call it once every socket is closed.
// Any other listener, or a failure to set it up, leaves ln as it is.
func rawListen(ln net.Listener) (wrapped net.Listener, stop func()) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return ln, func() {}
	}
	rc, err := tl.SyscallConn()
	if err != nil {
		return ln, func() {}
	}
	lfd := -1
	var serr error
	if err := rc.Control(func(fd uintptr) {
		lfd = int(fd)
		serr = syscall.SetsockoptInt(lfd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	}); err != nil || serr != nil {
		return ln, func() {}
	}
	pl, err := newPoller()
	if err != nil {
		return ln, func() {}
	}
	ls := &sock{fd: lfd, pl: pl, borrowed: true, rch: make(chan struct{}, 1), wch: make(chan struct{}, 1)}
	if err := pl.add(ls); err != nil {
		pl.close()
		return ln, func() {}
	}
	return &rawListener{Listener: ln, rc: rc, ls: ls, pl: pl}, pl.close
}

func (l *rawListener) Accept() (net.Conn, error) {
	for {
		var nfd uintptr
		var e syscall.Errno
		var rsa syscall.RawSockaddrAny
		l.ls.rready.Store(false)
		err := l.rc.Control(func(fd uintptr) {
			n := uint32(syscall.SizeofSockaddrAny)
			nfd, _, e = syscall.RawSyscall6(syscall.SYS_ACCEPT4, fd, uintptr(unsafe.Pointer(&rsa)),
				uintptr(unsafe.Pointer(&n)), syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0, 0)
		})
		switch {
		case err != nil:
		case e == syscall.EINTR || e == syscall.ECONNABORTED:
			// A connection reset before it was taken: take the next.
			continue
		case e == syscall.EAGAIN:
			err = l.ls.wait(&l.ls.rready, &l.ls.rexpired, l.ls.rch)
			if err == nil {
				continue
			}
		case e != 0:
			err = os.NewSyscallError("accept4", e)
		default:
			s, serr := newSock(l.pl, int(nfd), rawTCPAddr(&rsa))
			if serr == nil {
				return s, nil
			}
			syscall.RawSyscall(syscall.SYS_CLOSE, nfd, 0, 0)
			err = serr
		}
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: err}
	}
}

// Close stops Accept and closes the listener.
func (l *rawListener) Close() error {
	_ = l.ls.Close()
	return l.Listener.Close()
}

// nothingSent reports whether the client has sent nothing yet, so that
// a read would find nothing: the poller has not announced a byte since
// the socket was accepted (an accepted socket with bytes already waiting
// is announced when it is registered). Called from inside a RawConn.Read,
// after it reset the readiness, so a byte that comes meanwhile wakes it.
func nothingSent(nc net.Conn) bool {
	s, ok := nc.(*sock)
	return ok && !s.readable.Load()
}
