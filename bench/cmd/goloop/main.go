// Command goloop is a minimal HTTP/1.1 reverse proxy built the other way
// round from outrider's: one event loop per P over epoll, and no goroutine
// per connection. It is a benchmark peer, not a product. It measures what
// that design can reach in Go on the bench's workloads, before anyone
// rebuilds the proxy on it (docs/benchmarks-log.md, "A floor for an event
// loop in Go").
//
// It does only what the bench's rows need:
//   - It relays bytes as they come and parses only enough to find where
//     heads and bodies end (Content-Length and chunked).
//   - It pins one app connection to each client connection and keeps app
//     connections for reuse. A request's "Connection: close" is blanked
//     so that the app keeps its connection.
//   - It has no timeouts, no header rewriting, no limits, no drain and no
//     metrics.
//
// Everything outrider adds on top (the grammar's checks, X-Forwarded-For,
// counters, deadlines) costs CPU that goloop does not pay. So goloop is a
// floor for the design, not a fair peer.
//
// Usage: GOMAXPROCS=N goloop -listen 127.0.0.1:8080 -app 127.0.0.1:8081
package main

import (
	"fmt"
	"syscall"
	"unsafe"

	"github.com/outrider-sidecar/outrider/bench/internal/h1"
	"github.com/outrider-sidecar/outrider/bench/internal/rawloop"
)

// epollET is EPOLLET, which package syscall spells as a negative number.
const epollET = 1 << 31

func main() { rawloop.Main("goloop", syscall.SOCK_NONBLOCK, startLoop) }

// startLoop runs a loop on the listening socket ln.
func startLoop(ln int, app *syscall.SockaddrInet4) error {
	l, err := newLoop(ln, app)
	if err != nil {
		return err
	}
	go l.run()
	return nil
}

// end is one side of an exchange: the client's connection or the app's.
type end struct {
	fd    int
	app   bool
	peer  *end
	out   []byte // bytes for this end that a write could not take yet
	stall bool   // reading this end waits until the peer's out is written
	dead  bool
	f     h1.Framer // the heads and bodies read from this end
	// Client ends only: requests sent on whose answers have not ended,
	// and whether the last one asked for the connection to close.
	waiting    int
	closeAfter bool
}

type loop struct {
	ep, ln  int
	app     *syscall.SockaddrInet4
	ends    []*end // by descriptor
	idle    []*end // app connections to reuse
	scratch []byte
	spare   []byte // for a head that grows (sayClose)
	events  []syscall.EpollEvent
}

func newLoop(ln int, app *syscall.SockaddrInet4) (*loop, error) {
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll: %w", err)
	}
	if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, ln, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(ln)}); err != nil {
		return nil, fmt.Errorf("epoll add: %w", err)
	}
	return &loop{ep: ep, ln: ln, app: app, scratch: make([]byte, 64<<10), events: make([]syscall.EpollEvent, 256)}, nil
}

// run is the loop: it waits for events and handles each in place.
func (l *loop) run() {
	for {
		// Ask without waiting first, as a loop under load usually has
		// events ready; wait through the scheduler only when it has none.
		n := epollNow(l.ep, l.events)
		if n <= 0 {
			var err error
			n, err = syscall.EpollWait(l.ep, l.events, -1)
			if err != nil {
				continue
			}
		}
		for _, ev := range l.events[:n] {
			fd := int(ev.Fd)
			if fd == l.ln {
				l.accept()
				continue
			}
			e := l.ends[fd]
			if e == nil || e.dead {
				continue
			}
			if ev.Events&syscall.EPOLLOUT != 0 {
				l.flush(e)
			}
			if ev.Events&(syscall.EPOLLIN|syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 && !e.dead {
				l.readable(e)
			}
		}
	}
}

func (l *loop) accept() {
	for {
		fd, _, err := syscall.Accept4(l.ln, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
		if err != nil {
			return
		}
		l.add(&end{fd: fd})
	}
}

func (l *loop) add(e *end) {
	for len(l.ends) <= e.fd {
		l.ends = append(l.ends, nil)
	}
	l.ends[e.fd] = e
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLOUT | syscall.EPOLLRDHUP | epollET, Fd: int32(e.fd)}
	if err := syscall.EpollCtl(l.ep, syscall.EPOLL_CTL_ADD, e.fd, &ev); err != nil {
		l.close(e)
	}
}

// dial returns an idle app connection, or connects a new one; the
// connect completes while the first write waits.
func (l *loop) dial() *end {
	for len(l.idle) > 0 {
		u := l.idle[len(l.idle)-1]
		l.idle = l.idle[:len(l.idle)-1]
		if !u.dead {
			return u
		}
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	if err := syscall.Connect(fd, l.app); err != nil && err != syscall.EINPROGRESS {
		syscall.Close(fd)
		return nil
	}
	u := &end{fd: fd, app: true, f: h1.Framer{Resp: true}}
	l.add(u)
	return u
}

// readable reads e until the socket is empty, relaying what it reads to
// the peer; it stops early when the peer cannot take more yet. A read
// that did not fill the buffer emptied the socket, as nginx assumes: bytes
// that come later raise a new edge. So a request costs one read a side,
// not a second that finds nothing.
func (l *loop) readable(e *end) {
	for !e.dead {
		if e.peer != nil && len(e.peer.out) > 0 {
			e.stall = true
			return
		}
		n, err := readNow(e.fd, l.scratch)
		if err == syscall.EAGAIN {
			return
		}
		if n <= 0 {
			l.hangUp(e)
			return
		}
		l.relay(e, l.scratch[:n])
		if n < len(l.scratch) {
			return
		}
	}
}

// relay follows the framing of what e sent and passes it to the peer.
func (l *loop) relay(e *end, b []byte) {
	if !e.app {
		if e.peer == nil {
			u := l.dial()
			if u == nil {
				l.close(e)
				return
			}
			e.peer, u.peer = u, e
		}
		heads, _ := e.f.Scan(b)
		if heads > 0 {
			e.waiting += heads
			e.closeAfter = e.f.Closed
		}
		l.send(e.peer, b)
		return
	}
	c := e.peer
	if c == nil {
		// An idle app connection has nothing to say.
		l.close(e)
		return
	}
	_, ends := e.f.Scan(b)
	c.waiting -= ends
	if c.closeAfter && e.f.HeadAt >= 0 {
		b = l.sayClose(b, e.f.HeadAt)
	}
	l.send(c, b)
	if c.waiting == 0 && c.closeAfter && len(c.out) == 0 {
		l.release(c)
	}
}

// sayClose returns b with "Connection: close" added to the response head
// at b[at:] (see h1.SayClose), in a buffer the loop keeps.
func (l *loop) sayClose(b []byte, at int) []byte {
	out, ok := h1.SayClose(l.spare[:0], b, at)
	if !ok {
		return b
	}
	l.spare = out
	return out
}

// send writes b to e, keeping what the socket does not take.
func (l *loop) send(e *end, b []byte) {
	if e.dead {
		return
	}
	if len(e.out) == 0 {
		n, err := writeNow(e.fd, b)
		if err != nil && err != syscall.EAGAIN {
			l.hangUp(e)
			return
		}
		b = b[max(n, 0):]
	}
	e.out = append(e.out, b...)
}

// flush writes what e kept, then resumes reading a stalled peer.
func (l *loop) flush(e *end) {
	if len(e.out) > 0 {
		n, err := writeNow(e.fd, e.out)
		if err != nil && err != syscall.EAGAIN {
			l.hangUp(e)
			return
		}
		if n > 0 {
			e.out = e.out[:copy(e.out, e.out[n:])]
		}
		if len(e.out) > 0 {
			return
		}
	}
	if !e.app && e.waiting == 0 && e.closeAfter {
		l.release(e)
		return
	}
	if p := e.peer; p != nil && p.stall {
		p.stall = false
		l.readable(p)
	}
}

// release closes client connection c and keeps its app connection when
// no answer is owed on it and it is between messages.
func (l *loop) release(c *end) {
	u := c.peer
	c.peer = nil
	l.close(c)
	if u == nil {
		return
	}
	u.peer = nil
	if c.waiting == 0 && u.f.Clean() && len(u.out) == 0 {
		l.idle = append(l.idle, u)
	} else {
		l.close(u)
	}
}

// hangUp ends e: a client's end as release does, an app's end with its
// client.
func (l *loop) hangUp(e *end) {
	if !e.app {
		l.release(e)
		return
	}
	l.close(e)
}

func (l *loop) close(e *end) {
	if e.dead {
		return
	}
	e.dead = true
	l.ends[e.fd] = nil
	syscall.Close(e.fd)
	if p := e.peer; p != nil {
		e.peer, p.peer = nil, nil
		l.close(p)
	}
}

// epollNow returns the ready events without waiting, and without the
// scheduler's bookkeeping around a system call that may block.
func epollNow(ep int, events []syscall.EpollEvent) int {
	r, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_WAIT, uintptr(ep), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return -1
	}
	return int(r)
}

// readNow and writeNow are read(2) and write(2) on a non-blocking socket,
// made as outrider's proxy makes them.
func readNow(fd int, p []byte) (int, error) {
	r, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

func writeNow(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}
