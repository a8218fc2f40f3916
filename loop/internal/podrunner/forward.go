package podrunner

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// dialTimeout bounds a forwarded connection's dial; a pod that does not
// listen on the port refuses at once.
const dialTimeout = 5 * time.Second

// forwarder stands in for the pod network. Each of its listeners takes
// connections on one side of a namespace boundary and joins each to a new
// connection on the other side: the pod's ports at podIP on the host, and
// the node's ports at hostIP inside the pod. Bytes are copied both ways and
// each side's end of stream (FIN) is passed on, so clients see what they
// would see on a real network, one hop added.
type forwarder struct {
	log *slog.Logger

	mu        sync.Mutex
	closed    bool
	listeners []net.Listener
	conns     map[net.Conn]struct{}
	wg        sync.WaitGroup // accept loops and joined pairs
}

func newForwarder(log *slog.Logger) *forwarder {
	return &forwarder{log: log, conns: map[net.Conn]struct{}{}}
}

// serve forwards every connection ln accepts to a connection from dial,
// until close. A connection whose dial fails is closed: the client sees
// its connection end, where on a real network it would be refused.
func (f *forwarder) serve(ln net.Listener, dial func() (net.Conn, error)) {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		ln.Close()
		return
	}
	f.listeners = append(f.listeners, ln)
	f.mu.Unlock()
	f.wg.Go(func() {
		// A failed accept (out of file descriptors, say) is waited out, as
		// a server does, not taken for the end: only close ends the loop.
		backoff := time.Duration(0)
		for {
			in, err := ln.Accept()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				if backoff == 0 {
					f.log.Error("forwarder cannot accept; retrying", "addr", ln.Addr().String(), "err", err)
				}
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			backoff = 0
			f.wg.Go(func() { f.join(in, dial) })
		}
	})
}

func (f *forwarder) join(in net.Conn, dial func() (net.Conn, error)) {
	out, err := dial()
	if err != nil {
		abort(in)
		return
	}
	if !f.track(in, out) {
		abort(in)
		abort(out)
		return
	}
	defer f.untrack(in, out)
	var pair sync.WaitGroup
	pair.Go(func() { pipe(out, in) })
	pipe(in, out)
	pair.Wait()
}

// pipe copies from src to dst, then passes src's end of stream on to dst.
// An error (a reset, or close) ends both connections with a reset.
func pipe(dst, src net.Conn) {
	_, err := io.Copy(dst, src)
	if err == nil {
		if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			return
		}
	}
	abort(dst)
	abort(src)
}

// abort closes c with a reset (SO_LINGER 0), as a peer's reset would.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
}

func (f *forwarder) track(conns ...net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	for _, c := range conns {
		f.conns[c] = struct{}{}
	}
	return true
}

func (f *forwarder) untrack(conns ...net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range conns {
		delete(f.conns, c)
		c.Close()
	}
}

// close stops every listener, resets every joined connection and waits
// for its goroutines: what a pod's clients see when the pod's network goes
// away.
func (f *forwarder) close() {
	f.mu.Lock()
	f.closed = true
	for _, ln := range f.listeners {
		ln.Close()
	}
	for c := range f.conns {
		abort(c)
	}
	f.mu.Unlock()
	f.wg.Wait()
}
