// Command uringloop is goloop (bench/cmd/goloop) on io_uring instead of
// epoll: the same minimal HTTP/1.1 reverse proxy, one loop per P, no
// goroutine per connection, and the same framing (bench/internal/h1). It
// is a benchmark peer, not a product: it measures what a proxy gains when
// its reads and writes are queued in a ring and a whole batch of them
// costs one system call, on a machine where each system call is dear
// (docs/benchmarks-log.md, "A floor on io_uring").
//
// Each connection always has one receive queued. Bytes received are sent
// to the peer straight from the buffer they came in, and the next receive
// is linked behind that send, so a buffer is never written while it is
// being sent and a slow reader holds its peer back, as goloop's stall
// does. The ring is set up for one issuing thread whose completions run
// only when it asks for them (IORING_SETUP_DEFER_TASKRUN, Linux 6.1).
//
// Like goloop it has no timeouts, no header rewriting, no limits, no
// drain and no metrics.
//
// Usage: GOMAXPROCS=N uringloop -listen 127.0.0.1:8080 -app 127.0.0.1:8081
package main

import (
	"fmt"
	"runtime"
	"syscall"
	"unsafe"

	"github.com/outrider-sidecar/outrider/bench/internal/h1"
	"github.com/outrider-sidecar/outrider/bench/internal/rawloop"
)

const (
	// bufSize is each connection's receive buffer.
	bufSize = 32 << 10
	// ringEntries is each loop's submission queue.
	ringEntries = 4096
)

// What a completion is for: the low byte of its user data. The rest is
// the end's id; the listener's is 0.
const (
	kindRecv = iota + 1
	kindSend
	kindAccept
)

func main() { rawloop.Main("uringloop", 0, startLoop) }

// end is one side of an exchange: the client's connection or the app's.
type end struct {
	id   uint64
	fd   int
	app  bool
	peer *end
	buf  []byte // what a receive fills
	alt  []byte // a response head with "Connection: close" added
	// ops counts the operations queued whose completion has not come:
	// the end (and its buffers) is kept until none is left.
	ops int
	// sendTo is the end the bytes in buf are being sent to.
	sendTo *end
	// armed is set while a receive is queued.
	armed bool
	dead  bool
	f     h1.Framer // the heads and bodies read from this end
	// Client ends only: requests sent on whose answers have not ended,
	// and whether the last one asked for the connection to close.
	waiting    int
	closeAfter bool
}

type loop struct {
	r    *ring
	ln   int
	app  *syscall.SockaddrInet4
	ends []*end // by id; id 0 is the listener's
	free []uint64
	idle []*end // app connections to reuse
}

// startLoop runs a loop on the listening socket ln, or says why its ring
// could not be set up (a kernel older than 6.1, io_uring disabled, or a
// seccomp profile that refuses it).
func startLoop(ln int, app *syscall.SockaddrInet4) error {
	l := &loop{ln: ln, app: app, ends: []*end{nil}}
	started := make(chan error)
	go l.run(started)
	if err := <-started; err != nil {
		return fmt.Errorf("uringloop needs io_uring (Linux 6.1 or later, not refused by seccomp or kernel.io_uring_disabled): %w", err)
	}
	return nil
}

// run is the loop. The ring belongs to the thread that set it up, so the
// loop keeps its thread.
func (l *loop) run(started chan<- error) {
	runtime.LockOSThread()
	r, err := newRing(ringEntries)
	started <- err
	if err != nil {
		return
	}
	l.r = r
	l.acceptAll()
	for {
		// Submit and collect without waiting first, as a loop under load
		// usually has completions due; wait only when it has none.
		l.r.enter(0, false)
		if !l.handleAll() {
			l.r.enter(1, true)
			l.handleAll()
		}
	}
}

// handleAll handles the completions there are, and reports whether there
// were any.
func (l *loop) handleAll() bool {
	found := false
	for {
		c, ok := l.r.pop()
		if !ok {
			return found
		}
		found = true
		l.handle(c)
	}
}

func (l *loop) handle(c cqe) {
	id, kind := c.userData>>8, c.userData&0xff
	if kind == kindAccept {
		if c.res >= 0 {
			e := l.newEnd(int(c.res), false)
			l.recv(e)
		}
		if c.flags&cqeFMore == 0 {
			l.acceptAll()
		}
		return
	}
	e := l.ends[id]
	e.ops--
	defer l.maybeFree(e)
	switch kind {
	case kindRecv:
		e.armed = false
		if e.dead {
			return
		}
		if c.res <= 0 {
			// The end, an error, or the receive was cancelled because the
			// send it was linked behind failed.
			l.hangUp(e)
			return
		}
		l.relay(e, e.buf[:c.res])
	case kindSend:
		to := e.sendTo
		e.sendTo = nil
		if e.dead {
			return
		}
		if c.res < 0 {
			l.hangUp(e)
			return
		}
		if e.app && to != nil && !to.dead && to.waiting == 0 && to.closeAfter {
			l.release(to)
		}
	}
}

// acceptAll queues a multishot accept: one completion per connection.
func (l *loop) acceptAll() {
	s := l.r.next()
	s.opcode = opAccept
	s.fd = int32(l.ln)
	s.ioprio = acceptMultishot
	s.opFlags = syscall.SOCK_CLOEXEC
	s.userData = kindAccept
}

func (l *loop) newEnd(fd int, app bool) *end {
	e := &end{fd: fd, app: app, buf: make([]byte, bufSize), f: h1.Framer{Resp: app}}
	if n := len(l.free); n > 0 {
		e.id = l.free[n-1]
		l.free = l.free[:n-1]
		l.ends[e.id] = e
	} else {
		e.id = uint64(len(l.ends))
		l.ends = append(l.ends, e)
	}
	return e
}

// maybeFree lets a closed end's id be reused once nothing queued refers
// to it or its buffers.
func (l *loop) maybeFree(e *end) {
	if e.dead && e.ops == 0 && l.ends[e.id] == e {
		l.ends[e.id] = nil
		l.free = append(l.free, e.id)
	}
}

// recv queues a receive into e's buffer.
func (l *loop) recv(e *end) {
	s := l.r.next()
	s.opcode = opRecv
	s.fd = int32(e.fd)
	s.addr = uint64(uintptr(unsafe.Pointer(&e.buf[0])))
	s.len = uint32(len(e.buf))
	s.userData = e.id<<8 | kindRecv
	e.ops++
	e.armed = true
}

// sendThenRecv queues a send of b, which is in from's buffers, to to, and
// from's next receive linked behind it.
func (l *loop) sendThenRecv(from, to *end, b []byte) {
	l.r.room(2)
	s := l.r.next()
	s.opcode = opSend
	s.flags = sqeIOLink
	s.fd = int32(to.fd)
	s.addr = uint64(uintptr(unsafe.Pointer(&b[0])))
	s.len = uint32(len(b))
	// All of it or a failure, which cancels the linked receive.
	s.opFlags = msgWaitAll | msgNoSignal
	s.userData = from.id<<8 | kindSend
	from.ops++
	from.sendTo = to
	l.recv(from)
}

// dial returns an idle app connection, or connects a new one.
func (l *loop) dial() *end {
	for len(l.idle) > 0 {
		u := l.idle[len(l.idle)-1]
		l.idle = l.idle[:len(l.idle)-1]
		if !u.dead {
			return u
		}
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	if err := syscall.Connect(fd, l.app); err != nil {
		syscall.Close(fd)
		return nil
	}
	u := l.newEnd(fd, true)
	l.recv(u)
	return u
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
		l.sendThenRecv(e, e.peer, b)
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
		if out, ok := h1.SayClose(e.alt[:0], b, e.f.HeadAt); ok {
			e.alt = out
			b = out
		}
	}
	l.sendThenRecv(e, c, b)
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
	if c.waiting == 0 && u.f.Clean() && u.sendTo == nil && u.armed {
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

// close ends e and its peer. The shutdown completes e's queued receive
// (the ring holds the socket open until it does) and sends the FIN.
func (l *loop) close(e *end) {
	if e.dead {
		return
	}
	e.dead = true
	_ = syscall.Shutdown(e.fd, syscall.SHUT_RDWR)
	_ = syscall.Close(e.fd)
	if p := e.peer; p != nil {
		e.peer, p.peer = nil, nil
		l.close(p)
	}
	l.maybeFree(e)
}
