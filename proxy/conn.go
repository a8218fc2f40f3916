package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Connection states, for Drain.
const (
	stateIdle   = iota // waiting for a request head
	stateActive        // forwarding a request
)

// h2Preface opens every HTTP/2 connection with prior knowledge.
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

var (
	errClientGone = errors.New("client went away")
	// aLongTimeAgo is a deadline in the past, to interrupt a blocked read.
	aLongTimeAgo = time.Unix(1, 0)
)

// Write buffers: answers are gathered in outBufs, request heads in the
// smaller reqBufs.
var (
	outBufs = sync.Pool{New: func() any { b := make([]byte, 0, bufSize); return &b }}
	reqBufs = sync.Pool{New: func() any { b := make([]byte, 0, reqBufSize); return &b }}
)

// reqBufSize is the first size of a request head's buffer, which every
// request waiting for the app holds (its head is kept to resend once). A
// call between services, rewritten with its X-Forwarded fields, fits in
// it; a larger head grows the buffer, which goes back to the pool grown
// (up to bufSize), so the pool takes the size of the heads that come. At
// 1,000 connections, 1 KiB buffers held 1 MB.
const reqBufSize = 256

// conn is one client connection and the goroutine that serves it.
type conn struct {
	p     *Proxy
	nc    net.Conn
	br    *reader
	up    *upConn // pinned while both sides stay keep-alive
	state atomic.Int32
	// tunnel is set when the connection became a WebSocket or other
	// upgraded tunnel.
	tunnel bool
	// handedOff is set when the HTTP/2 server took the connection over.
	handedOff bool
	// linger is set when the connection closes after an error answer while
	// the client may still be sending.
	linger bool

	req, resp   head
	headLen     int
	respHeadLen int
	clientIP    []byte
	// rdl and wdl are the deadlines last set on nc.
	rdl, wdl time.Time
	// bodyDone is set while the request body is being copied by another
	// goroutine; it receives the result.
	bodyDone  chan bodyResult
	bodyState atomic.Int32
	// bodyStop is set by stopBody before it moves the body goroutine's
	// deadlines to the past, and checked by that goroutine after it moves
	// them itself: whichever comes second, the copy stops.
	bodyStop atomic.Bool
	// State of the exchange in progress, kept here rather than on the
	// goroutine's stack: o is its outcome; out the write buffer, from
	// reqBP or outBP; pp the response body's pipe.
	o       outcome
	out     []byte
	reqBP   *[]byte
	outBP   *[]byte
	pp      pipe
	upgrade bool
	// interim is set once an interim (1xx) answer was relayed.
	interim bool
	// now is the time last read by this connection's goroutine: deadlines
	// are computed from it, with slack, to spare clock reads.
	now time.Time
	// rl is the state of the read loop (readloop.go); inLoop is set while
	// the goroutine holds the descriptor in it, cut once the drain cut the
	// connection off.
	rl     readLoop
	inLoop atomic.Bool
	cut    atomic.Bool

	// start is when the exchange in progress began, for its duration.
	start time.Time
	// parked is set while an event loop holds the connection, and ev is
	// its state there (evloop_linux.go); resumeFrom is the step a
	// goroutine resumes it at when the loop hands it back.
	parked     atomic.Bool
	ev         connEv
	resumeFrom int
	// unparked counts the next waits for a request that its goroutine
	// keeps, after a loop handed the connection back for a request or an
	// answer it does not serve: a connection that streams bodies would
	// otherwise go to the loop and back on every request.
	unparked int
}

// keepUnparked is unparked after such a hand-back.
const keepUnparked = 8

// How a connection handed back by an event loop resumes in a goroutine.
const (
	resumeNone   = iota
	resumeServe  // between exchanges: serve the next request, whose head may be partly buffered
	resumeAnswer // the request was sent on c.up up to c.ev.sent: send the rest, read the answer
	resumeWrite  // the answer was relayed up to c.ev.pend, which is left to write
	resumeFirst  // accepted by the loop: serve its first request, whose head may be buffered
	resumeLinger // its exchange is over and counted: close it, lingering (see lingerIfUnread)
)

// keptConns holds the state of finished connections for new ones: the conn,
// its reader and the fields of its heads. A connection then allocates
// only what Go's net package does for its socket, and a burst of new
// connections after the last one ended leaves no garbage of this package.
var keptConns sync.Pool

// maxKeptFields bounds the fields slice that a kept conn keeps per head: a
// rare head with hundreds of fields does not stay in the pool.
const maxKeptFields = 64

// reuseConn returns a conn for nc, a kept one when there is one.
func reuseConn(p *Proxy, nc net.Conn) *conn {
	c, _ := keptConns.Get().(*conn)
	if c == nil {
		return &conn{p: p, nc: nc}
	}
	*c = conn{p: p, nc: nc, br: c.br, clientIP: c.clientIP[:0],
		req: head{fields: c.req.fields[:0]}, resp: head{fields: c.resp.fields[:0]},
		rl: readLoop{step: c.rl.step}}
	return c
}

// recycle keeps c for a later connection once its goroutine is done with
// it. A conn whose request body goroutine may still run is not kept.
func (c *conn) recycle() {
	if c.bodyDone != nil || cap(c.req.fields) > maxKeptFields || cap(c.resp.fields) > maxKeptFields {
		return
	}
	// Nothing kept in the pool holds a socket or the proxy.
	c.p, c.nc, c.up = nil, nil, nil
	if c.br != nil {
		c.br.rd, c.br.rc = nil, nil
	}
	keptConns.Put(c)
}

func (c *conn) serve() (parked bool) {
	first := true
	switch from := c.resumeFrom; from {
	case resumeNone:
		if c.br == nil {
			c.br = newReader(c.nc)
		} else {
			c.br.reset(c.nc)
		}
		c.clientIP = appendHost(c.clientIP[:0], c.nc.RemoteAddr())
		c.now = time.Now()
	case resumeFirst:
		// Accepted by an event loop, which read its first bytes and set
		// its address.
		c.resumeFrom = resumeNone
		c.now = time.Now()
	default:
		// Handed back by an event loop.
		c.resumeFrom = resumeNone
		first = false
		c.now = time.Now()
		if !c.resume(from) {
			c.end()
			return false
		}
	}
	if c.br.rc != nil {
		if c.serveLoop(first) {
			return true
		}
		c.end()
		return false
	}
	for ; ; first = false {
		if !c.readRequest(first) || !c.forward() {
			c.end()
			return false
		}
	}
}

// resume goes on with a connection an event loop handed back, from the
// step it reached, and reports whether the connection stays open for
// its next request.
func (c *conn) resume(from int) bool {
	switch from {
	case resumeAnswer:
		if u := c.sendRequest(true, c.up, c.ev.sent); u != nil {
			c.relayAnswer(u)
		}
		return c.endForward()
	case resumeWrite:
		if err := c.writePend(); err != nil {
			c.o.code = CodeClientGone
			c.o.keep = false
			c.dropUpstream()
		}
		return c.endForward()
	case resumeLinger:
		return false
	}
	return true
}

// end closes the connection and lets the proxy forget it.
func (c *conn) end() {
	c.close()
	c.p.forget(c)
}

func (c *conn) close() {
	// The app connection goes back first: a client that saw its
	// connection close and connects again finds it in the pool.
	if c.up != nil {
		if c.up.br != nil {
			c.up.br.unregister()
		}
		c.p.pool.put(c.up)
		c.up = nil
	}
	if c.linger {
		c.lingerClose()
	}
	switch {
	case c.handedOff:
	case c.nc != nil:
		_ = c.nc.Close()
	case c.ev.cfd >= 0:
		// Accepted by an event loop and never given a net.Conn.
		closeNow(c.ev.cfd)
	}
	c.br.release()
}

// lingerClose half-closes the connection and reads what the client still
// sends while it keeps sending: closing with unread input would reset the
// connection and could destroy the error answer before the client reads
// it. A client that sends its whole body before it reads the answer gets
// the answer once the body is through.
func (c *conn) lingerClose() {
	tc, ok := c.nc.(interface{ CloseWrite() error })
	if !ok || tc.CloseWrite() != nil {
		return
	}
	end := time.Now().Add(lingerMax)
	cb := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(cb)
	for {
		deadline := time.Now().Add(lingerTimeout)
		if deadline.After(end) {
			deadline = end
		}
		if c.nc.SetReadDeadline(deadline) != nil {
			return
		}
		_, err := c.nc.Read(*cb)
		if err == nil {
			continue
		}
		// The drain's poke (see pokeIfIdle), a deadline in the past meant
		// for a connection waiting for a request, reaches a connection
		// that lingers after refusing a head: it lingers on.
		if !isTimeout(err) || !time.Now().Before(deadline) {
			return
		}
	}
}

// lingerIfUnread has the connection, about to close after an answer
// although its client meant to keep it (the drain or its delay, or an
// answer whose end is the close), linger when bytes its client sent wait
// unread (a request pipelined behind the one answered): closing with them
// would reset the connection and throw away what of the answer the kernel
// had not sent yet, an answer to a request the app served. The close tells
// the client the next request was not.
func (c *conn) lingerIfUnread() {
	switch {
	case len(c.br.buffered()) > 0:
	case c.ev.writing:
		// Relayed by an event loop, which hands the connection to a
		// goroutine to linger (see endExchange).
		if peekFd(uintptr(c.ev.cfd)) != peekData {
			return
		}
	case c.br.peek() != peekData:
		return
	}
	c.linger = true
}

// A connection closed after an error reads and drops what the client
// sends until nothing came for lingerTimeout, for at most lingerMax
// (nginx's lingering_timeout and lingering_time are 5 s and 30 s). A body
// sent at the speed of a network in a cluster is through well within
// lingerMax.
const (
	lingerTimeout = 500 * time.Millisecond
	lingerMax     = 10 * time.Second
)

// pokeIfIdle interrupts a connection waiting for its next request; it then
// sees that the proxy is draining and closes, unless bytes of the next
// request had come (see pokedMidHead). Called with p.mu held.
func (c *conn) pokeIfIdle() {
	if c.parked.Load() || c.nc == nil {
		// Its loop closes it (see Drain), or is closing it: a connection
		// a loop accepted has no net.Conn until a goroutine serves it.
		return
	}
	if c.state.Load() == stateIdle {
		_ = c.nc.SetReadDeadline(aLongTimeAgo)
	}
}

// appendHost appends the host part of a, the client's address, to b.
func appendHost(b []byte, a net.Addr) []byte {
	if ta, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap().AppendTo(b)
		}
		return append(b, ta.IP.String()...)
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return append(b, a.String()...)
	}
	return append(b, host...)
}

// setReadDeadline sets nc's read deadline to t unless the one set is
// already within slack before it: a timer update per request is avoided.
func (c *conn) setReadDeadline(t time.Time, slack time.Duration) {
	if c.rdl.After(t) || c.rdl.Before(t.Add(-slack)) {
		c.rdl = t
		_ = c.nc.SetReadDeadline(t)
	}
}

// readRequest reads and checks the next request head. It returns false
// when the connection should close: the client left, timed out, sent a
// head that was refused (and answered), or the proxy is draining. It
// serves connections without a descriptor; the others are read by the
// read loop.
func (c *conn) readRequest(first bool) bool {
	if !c.idle() {
		return false
	}
	for {
		switch c.checkHead(first) {
		case headDone:
			return true
		case headH2:
			c.handOffH2()
			return false
		case headBad:
			return false
		}
		c.headStarted()
		if err := c.br.fill(c.p.cfg.MaxHeaderBytes); err != nil {
			if c.pokedMidHead(err) {
				continue
			}
			if err == errHeadTooLarge {
				c.req.reset()
				c.reject(err)
			}
			// A timeout, a reset or the end: nothing to answer.
			return false
		}
	}
}

// idle readies the connection for its next request: the idle deadline,
// or the head's when bytes of it are buffered already. It returns false
// when the proxy drains and no next request has begun to come.
func (c *conn) idle() bool {
	cfg := &c.p.cfg
	// c.now is when the last response ended, or the connection came.
	now := c.now
	c.rl.started = len(c.br.buffered()) > 0
	if !c.rl.started && c.p.draining.Load() {
		// A request that reached the socket before the drain began, and
		// that this goroutine had not read yet (it first ran after the
		// drain began, the listener deferring accepts until a request
		// comes), is answered, not closed unread.
		c.rl.started = c.br.peek() == peekData
	}
	if c.rl.started {
		c.setReadDeadline(now.Add(cfg.ReadHeaderTimeout), cfg.ReadHeaderTimeout/8)
	} else {
		c.setReadDeadline(now.Add(cfg.IdleTimeout), cfg.IdleTimeout/8)
	}
	// The deadline is set before the state is published, so that a poke
	// from Drain is never overwritten.
	c.state.Store(stateIdle)
	return c.rl.started || !c.p.draining.Load()
}

// headStarted moves the deadline from the idle one to the head's once the
// first bytes of a head came and did not complete it: a head that comes
// whole in one read sets no timer.
func (c *conn) headStarted() {
	if !c.rl.started && len(c.br.buffered()) > 0 {
		c.rl.started = true
		c.setReadDeadline(time.Now().Add(c.p.cfg.ReadHeaderTimeout), 0)
	}
}

// poked reports whether err, from a read, is the drain's poke (see
// pokeIfIdle) rather than the deadline c.rdl passing: the proxy drains and
// c.rdl is still ahead.
func (c *conn) poked(err error) bool {
	return isTimeout(err) && c.p.draining.Load() && time.Now().Before(c.rdl)
}

// pokedMidHead reports whether err is the drain's poke, which came after
// bytes of the next head did; the read then gets the head's deadline back.
// A request that had begun to come is answered, with "Connection: close",
// rather than cut: its client could not tell whether the app saw it. So
// is one waiting unread in the socket: the poke can come after idle saw
// no drain and before the read looked (a wait that begins with its
// deadline passed fails without looking).
func (c *conn) pokedMidHead(err error) bool {
	if !c.poked(err) {
		return false
	}
	if !c.rl.started {
		if c.br.peek() != peekData {
			return false
		}
		c.rl.started = true
		c.rdl = time.Now().Add(c.p.cfg.ReadHeaderTimeout)
	}
	return c.nc.SetReadDeadline(c.rdl) == nil
}

// What the bytes buffered so far come to, for checkHead.
const (
	headMore = iota // not a whole head yet
	headDone        // a request head, parsed into c.req
	headH2          // the HTTP/2 preface
	headBad         // a head that was refused, and answered
)

// checkHead parses the buffered bytes as a request head; the first
// request of a connection may be the HTTP/2 preface instead.
func (c *conn) checkHead(first bool) int {
	buf := c.br.buffered()
	if len(buf) == 0 {
		return headMore
	}
	if first && buf[0] == 'P' {
		if len(buf) < len(h2Preface) && string(buf) == h2Preface[:len(buf)] {
			return headMore
		}
		if len(buf) >= len(h2Preface) && string(buf[:len(h2Preface)]) == h2Preface {
			// Active, as for a request head: the drain's poke, meant for
			// connections waiting for a request, must not reach a
			// connection being handed to the HTTP/2 server.
			c.state.Store(stateActive)
			return headH2
		}
	}
	n, err := parseRequest(buf, &c.req, c.p.cfg.MaxHeaderFields)
	if err == nil {
		c.headLen = n
		c.state.Store(stateActive)
		return headDone
	}
	if err != errNeedMore {
		c.reject(err)
		return headBad
	}
	return headMore
}

// reject answers a refused head and counts it.
func (c *conn) reject(err error) {
	code, reason := 400, "bad request"
	var he *headError
	if errors.As(err, &he) {
		code, reason = he.code, he.reason
	}
	c.p.cfg.Log.Debug("refused request", "client", string(c.clientIP), "code", code, "reason", reason)
	if err == errHeadTooLarge {
		// The head was never parsed: its method is its first word (which
		// also keeps the body off an answer to HEAD).
		c.req.methodClass = leadingMethod(c.br.buffered())
	}
	c.writeError(code, reason, true)
	c.linger = true
	now := c.p.cfg.Now()
	c.p.m.count(c.req.methodClass, code, 0, now, 0, 0)
}

// writeError writes a short plain-text response.
func (c *conn) writeError(code int, reason string, closeConn bool) int64 {
	bp := outBufs.Get().(*[]byte)
	out := (*bp)[:0]
	out = append(out, "HTTP/1.1 "...)
	out = append(out, codeNames[code-minCode]...)
	out = append(out, ' ')
	out = append(out, statusText(code)...)
	out = append(out, "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: "...)
	out = strconv.AppendInt(out, int64(len(reason)+1), 10)
	switch {
	case closeConn:
		out = append(out, "\r\nConnection: close"...)
	case c.req.minor == 0:
		// An HTTP/1.0 client keeps the connection only when told so, as
		// appendResponseHead tells it.
		out = append(out, "\r\nConnection: keep-alive"...)
	}
	if code == 503 {
		out = append(out, "\r\nRetry-After: 1"...)
	}
	out = append(out, "\r\n\r\n"...)
	n := int64(0)
	// An answer to HEAD has no body, whatever its Content-Length says: a
	// client would read one as the start of the next answer.
	if c.req.methodClass != methodHEAD {
		out = append(out, reason...)
		out = append(out, '\n')
		n = int64(len(reason) + 1)
	}
	_ = c.writeClient(out, time.Now())
	*bp = out
	outBufs.Put(bp)
	return n
}

func statusText(code int) string {
	switch code {
	case 400:
		return "Bad Request"
	case 405:
		return "Method Not Allowed"
	case 408:
		return "Request Timeout"
	case 431:
		return "Request Header Fields Too Large"
	case 502:
		return "Bad Gateway"
	case 503:
		return "Service Unavailable"
	case 505:
		return "HTTP Version Not Supported"
	}
	return "Error"
}

// writeClient writes b to the client within IOTimeout.
func (c *conn) writeClient(b []byte, now time.Time) error {
	if c.ev.writing {
		return c.writeNowPend(b)
	}
	d := c.p.cfg.IOTimeout
	if c.wdl.Before(now.Add(d - d/8)) {
		c.wdl = now.Add(d)
		_ = c.nc.SetWriteDeadline(c.wdl)
	}
	return c.br.write(c.nc, b)
}

// writeUp writes b to the app within d, IOTimeout. stop, when not nil, is
// the request body's bodyStop.
func writeUp(u *upConn, b []byte, now time.Time, d time.Duration, stop *atomic.Bool) error {
	if u.wdl.IsZero() || u.wdl.Before(now.Add(d/2)) {
		// Writes to the app are bounded loosely: the app reads what it is
		// sent, and a stuck one is also caught by the client's timeouts.
		u.wdl = now.Add(d)
		_ = u.nc.SetWriteDeadline(u.wdl)
	}
	if stop != nil && stop.Load() {
		return errBodyStopped
	}
	return u.br.write(u.nc, b)
}

// errBodyStopped ends a request body's copy that stopBody cut off. It is
// the deadline's error, which stopBody's past deadlines would have given.
var errBodyStopped = fmt.Errorf("request body copy stopped: %w", os.ErrDeadlineExceeded)

// fillUp reads more of the app's answer. While it waits, it checks every
// ClientCheckInterval that the client is still there, and moves *now on:
// the deadline of the write that relays what came is computed from it,
// and the app may have taken longer than that write's timeout.
func (c *conn) fillUp(u *upConn, limit int, now *time.Time) error {
	iv := c.p.cfg.ClientCheckInterval
	for ; ; *now = time.Now() {
		if u.rdl.Before(now.Add(iv / 2)) {
			u.rdl = now.Add(iv)
			_ = u.nc.SetReadDeadline(u.rdl)
		}
		err := u.br.fill(limit)
		if err == nil {
			return nil
		}
		if !isTimeout(err) {
			return err
		}
		if c.clientGone() {
			return errClientGone
		}
	}
}

// readUp reads from the app straight into p, bypassing the buffer, with
// the same client checks and clock as fillUp.
func (c *conn) readUp(u *upConn, p []byte, now *time.Time) (int, error) {
	iv := c.p.cfg.ClientCheckInterval
	for ; ; *now = time.Now() {
		if u.rdl.Before(now.Add(iv / 2)) {
			u.rdl = now.Add(iv)
			_ = u.nc.SetReadDeadline(u.rdl)
		}
		var n int
		var err error
		if u.br != nil {
			n, err = u.br.readInto(p)
		} else {
			n, err = u.nc.Read(p)
		}
		if n > 0 || err == nil {
			return n, nil
		}
		if !isTimeout(err) {
			return 0, err
		}
		if c.clientGone() {
			return 0, errClientGone
		}
	}
}

// clientGone reports whether the client closed its side or reset. Bytes
// waiting (a pipelined request, the body) mean it is there.
func (c *conn) clientGone() bool {
	if c.bodyDone == nil && len(c.br.buffered()) > 0 {
		return false
	}
	return c.br.peek() == peekGone
}

func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// fillClient reads more of the request body within IOTimeout, and moves
// *now on to when the read returned: the write that passes what came on
// to the app is timed from it, and the client may have taken most of
// IOTimeout.
func (c *conn) fillClient(now *time.Time) error {
	for d := c.p.cfg.IOTimeout; ; {
		c.setReadDeadline(now.Add(d), d/8)
		if c.bodyStop.Load() {
			return errBodyStopped
		}
		err := c.br.fill(bufSize)
		*now = time.Now()
		if !c.pokedInBody(err) {
			return err
		}
	}
}

// readClient reads a request body from the client straight into p,
// bypassing the buffer, with the raw read call (see readNow), and the
// same clock as fillClient.
func (c *conn) readClient(p []byte, now *time.Time) (int, error) {
	for d := c.p.cfg.IOTimeout; ; {
		c.setReadDeadline(now.Add(d), d/8)
		if c.bodyStop.Load() {
			return 0, errBodyStopped
		}
		n, err := c.br.readInto(p)
		*now = time.Now()
		if n > 0 {
			return n, nil
		}
		if err == nil {
			err = io.ErrNoProgress
		}
		if !c.pokedInBody(err) {
			return 0, err
		}
	}
}

// pokedInBody reports whether err, from a read of the request body, is
// the drain's poke: a poke meant for a connection waiting for its next
// request can land once that request's head was read (the connection was
// still idle when the drain looked), and it moved the deadline behind
// c.rdl, which then no longer says what is set. The deadline is set again
// and the read retried; a stop by stopBody, which sets bodyStop first, is
// no poke.
func (c *conn) pokedInBody(err error) bool {
	if c.bodyStop.Load() || !c.poked(err) {
		return false
	}
	c.rdl = time.Time{}
	return true
}
