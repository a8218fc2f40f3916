package proxy

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// maxResponseHead bounds a response head from the app, and
// maxResponseFields its fields. The request's bounds (MaxHeaderBytes,
// MaxHeaderFields) guard against clients; an app's answer may carry more,
// such as many Set-Cookie fields.
const (
	maxResponseHead   = 64 << 10
	maxResponseFields = 1000
)

// maxInline is the largest body sent in the same write as its head.
const maxInline = 16 << 10

// How a response body is framed.
const (
	bodyNone = iota
	bodyLength
	bodyChunked
	bodyUntilClose
)

// outcome is what forwarding one request came to.
type outcome struct {
	code        int
	reqN, respN int64
	keep        bool
	// tunnel is the app connection of an upgraded exchange.
	tunnel *upConn
}

// forward forwards the request just read, counts it, and reports whether
// the connection stays open for another.
func (c *conn) forward() bool {
	c.startForward()
	c.exchange()
	return c.endForward()
}

// startForward starts the exchange of the request just read: its clock,
// and the requests in flight.
func (c *conn) startForward() {
	p := c.p
	c.start = p.cfg.Now()
	c.now = p.clock(c.start)
	p.m.inFlight.Add(1)
	c.o = outcome{}
	c.interim = false
	if c.req.underscores > 0 && !p.cfg.KeepUnderscoreHeaders {
		p.m.underscoreDropped.Add(float64(c.req.underscores))
	}
}

// finishForward counts the exchange that ended and reports whether the
// connection stays open for another.
func (c *conn) finishForward() bool {
	p := c.p
	c.releaseOut()
	p.m.inFlight.Add(-1)
	end := p.cfg.Now()
	c.now = p.clock(end)
	o := &c.o
	p.m.count(c.req.methodClass, o.code, end.Sub(c.start), end, o.reqN, o.respN)
	return o.keep
}

// endForward is finishForward, then the tunnel of an upgraded exchange.
func (c *conn) endForward() bool {
	keep := c.finishForward()
	if u := c.o.tunnel; u != nil {
		c.o.tunnel = nil
		c.runTunnel(u)
		return false
	}
	return keep
}

// exchange sends the request to the app and its answer to the client,
// leaving the outcome in c.o. Its steps are separate functions so that no
// frame on the way to a blocking call is large: a connection goroutine
// then lives in a 4 KiB stack rather than 8.
func (c *conn) exchange() {
	if c.req.methodClass == methodCONNECT {
		c.br.discard(c.headLen)
		c.o.code = 405
		c.o.respN = c.writeError(405, "CONNECT is not supported by this proxy", true)
		return
	}
	inline := c.prepareRequest()
	if u := c.sendRequest(inline, nil, 0); u != nil {
		c.relayAnswer(u)
	}
}

// relayAnswer passes the answer whose head was read on, interim answers
// first.
func (c *conn) relayAnswer(u *upConn) {
	// The request's bytes were kept until the answer started, to resend
	// them once; the answer is written from a larger buffer.
	c.releaseOut()
	c.outBP = outBufs.Get().(*[]byte)
	c.out = (*c.outBP)[:0]
	if c.resp.status < 200 && !c.relayInterim(u) {
		return
	}
	c.relayResponse(u)
}

// prepareRequest writes the request head for the app into c.out, with the
// body when it was read in full already (up to maxInline), and reports
// whether it was. A longer or chunked body is streamed by a second
// goroutine while this one waits for the answer, as the app may answer
// while it reads.
func (c *conn) prepareRequest() (inline bool) {
	req := &c.req
	b := c.br.buffered()
	c.upgrade = req.connUpgrade && req.hasUpgrade && !req.chunked && req.contentLength <= 0
	// Every request waiting for the app holds this buffer: a small one.
	c.reqBP = reqBufs.Get().(*[]byte)
	c.out = c.appendRequestHead((*c.reqBP)[:0], b[:c.headLen], c.upgrade)
	switch rest := b[c.headLen:]; {
	case req.chunked:
		c.br.discard(c.headLen)
		return false
	case req.contentLength > 0 && req.contentLength <= int64(len(rest)) && req.contentLength <= maxInline:
		n := int(req.contentLength)
		c.out = append(c.out, rest[:n]...)
		c.br.discard(c.headLen + n)
		c.o.reqN = int64(n)
		return true
	case req.contentLength > 0:
		c.br.discard(c.headLen)
		return false
	}
	c.br.discard(c.headLen)
	return true
}

// releaseOut gives the write buffer back to its pool.
func (c *conn) releaseOut() {
	switch {
	case c.outBP != nil:
		if cap(c.out) <= 64<<10 {
			*c.outBP = c.out[:0]
			outBufs.Put(c.outBP)
		}
	case c.reqBP != nil:
		if cap(c.out) <= bufSize {
			*c.reqBP = c.out[:0]
			reqBufs.Put(c.reqBP)
		}
	}
	c.outBP, c.reqBP, c.out = nil, nil, nil
}

// sendRequest sends the request and reads the head of the answer. It
// returns nil when the exchange ended there, with c.o set. sent, when not
// nil, is the app connection an event loop sent the request on, up to
// off: the rest is sent on it first.
func (c *conn) sendRequest(inline bool, sent *upConn, off int) *upConn {
	for attempt := 0; ; attempt++ {
		var u *upConn
		var err error
		switch {
		case sent != nil && attempt == 0:
			u = sent
			if off < len(c.out) {
				err = writeUp(u, c.out[off:], c.now, c.p.cfg.IOTimeout, nil)
			}
			if err == nil {
				err = c.readResponseHead(u)
			}
		default:
			u, err = c.upstream(attempt > 0)
			if err != nil {
				c.upstreamFailed(err, inline)
				return nil
			}
			if u.br.rc != nil && len(u.br.buffered()) == 0 {
				err = c.sendThenReadHead(u, inline)
			} else {
				err = writeUp(u, c.out, c.now, c.p.cfg.IOTimeout, nil)
				if err == nil {
					if !inline {
						c.startBody(u)
					}
					err = c.readResponseHead(u)
				}
			}
		}
		if err == nil {
			return u
		}
		// A reused connection the app closed meanwhile fails before any
		// byte comes back; an idempotent request with nothing streamed is
		// resent once. Another (POST, PATCH) may have reached the app
		// before the connection failed, and the app may have acted on it:
		// it gets a 502, as nginx answers it.
		retry := inline && attempt == 0 && u.reused && idempotent(c.req.methodClass) &&
			len(u.br.buffered()) == 0 && !isTimeout(err) && !errors.Is(err, errClientGone)
		if !c.sendFailed(err, retry, inline) {
			return nil
		}
	}
}

// upstreamFailed ends an exchange that got no app connection.
func (c *conn) upstreamFailed(err error, inline bool) {
	switch {
	case errors.Is(err, errClientGone):
		c.stopBody(true)
		c.o.code = CodeClientGone
	case errors.Is(err, errAppBusy), errors.Is(err, errDraining):
		c.p.cfg.Log.Debug("app busy", "app", c.p.cfg.Upstream, "err", err)
		c.fail(503, "app busy, retry later", !inline)
	default:
		c.p.cfg.Log.Debug("app unreachable", "app", c.p.cfg.Upstream, "err", err)
		c.fail(502, "app unreachable", !inline)
	}
}

// sendFailed ends an exchange whose request could not be sent or got no
// answer, unless it is to be retried.
func (c *conn) sendFailed(err error, retry, inline bool) (retried bool) {
	c.dropUpstream()
	if res, ok := c.stopBody(true); ok {
		c.o.reqN = res.n
		if res.clientFailed() {
			// The client's body failed first: that is the cause.
			c.failBody(res)
			return false
		}
		if res.appFailed {
			// The app stopped taking the body: that is the cause.
			err = res.writeErr
		}
	}
	if errors.Is(err, errClientGone) {
		c.o.code = CodeClientGone
		return false
	}
	if retry {
		return true
	}
	c.p.cfg.Log.Debug("app failed before answering", "app", c.p.cfg.Upstream, "err", err)
	switch _, bad := err.(*headError); {
	case bad:
		c.fail(502, "malformed response from the app", !inline)
	case isTimeout(err):
		c.fail(502, "app stopped reading the request", !inline)
	default:
		c.fail(502, "app closed the connection", !inline)
	}
	return false
}

// relayInterim passes on interim responses: 100 Continue and 103 Early
// Hints go to a 1.1 client; 101 turns the connection into a tunnel. It
// returns false when the exchange ended there.
func (c *conn) relayInterim(u *upConn) bool {
	for c.resp.status < 200 {
		rb := u.br.buffered()
		if c.resp.status == 101 {
			if !c.upgrade {
				c.dropUpstream()
				c.fail(502, "app switched protocols unasked", true)
				return false
			}
			c.out = c.appendResponseHead(c.out[:0], rb, false, bodyNone, true)
			u.br.discard(c.respHeadLen)
			c.o.code = 101
			if err := c.writeClient(c.out, c.now); err != nil {
				c.dropUpstream()
				c.o.code = CodeClientGone
				return false
			}
			c.up = nil
			c.o.tunnel = u
			return false
		}
		if c.req.minor == 1 {
			c.out = c.appendResponseHead(c.out[:0], rb, false, bodyNone, false)
			if err := c.writeClient(c.out, c.now); err != nil {
				c.dropUpstream()
				c.stopBody(true)
				c.o.code = CodeClientGone
				return false
			}
		}
		u.br.discard(c.respHeadLen)
		// The app's framing after an interim answer is the rare path: its
		// connection is not reused.
		c.interim = true
		if err := c.readResponseHead(u); err != nil {
			// As before the interim answer: a client that abandoned its
			// body (the app's answer then never comes) is gone, 499.
			c.sendFailed(err, false, false)
			return false
		}
	}
	return true
}

// relayResponse passes the final response head and its body on.
func (c *conn) relayResponse(u *upConn) {
	req, resp := &c.req, &c.resp
	mode := bodyUntilClose
	// certain is false when the answer's end is in doubt: a body may follow
	// an answer that has none (careless apps write one after HEAD, 204 or
	// 304, at once or a moment later), or the framing was contradictory.
	// Such an app connection is closed, never reused: stray bytes would
	// reach the next exchange on it, another client's.
	certain := !resp.lengthAndCoding && !c.interim
	switch {
	case req.methodClass == methodHEAD || resp.status == 204 || resp.status == 304:
		mode = bodyNone
		certain = false
	case resp.otherCoding:
		// A coding other than chunked cannot be restated to the client
		// (net/http clients refuse it) and its end is the app's close.
		c.dropUpstream()
		c.fail(502, "app sent a transfer coding other than chunked", true)
		return
	case resp.chunked:
		mode = bodyChunked
	case resp.contentLength >= 0:
		mode = bodyLength
	}
	chunkedOut := mode == bodyChunked && req.minor == 1
	upKeep := certain && mode != bodyUntilClose && !resp.connClose && (resp.minor == 1 || resp.connKeepAlive)
	// An answer that comes before the client sent its whole body closes
	// the connection (what the client still sends is body, not a next
	// request), and says so: a client told nothing would send its next
	// request on a connection about to close.
	keep := req.keepAlive() && !c.p.keepAliveOver() &&
		(mode == bodyNone || mode == bodyLength || chunkedOut) &&
		(c.bodyDone == nil || c.bodyState.Load() != bodyReading)
	var hop []byte
	if chunkedOut {
		// Read before the head leaves the buffer: its trailers come later.
		hop = connectionNamed(u.br.buffered(), resp)
	}
	c.out = c.appendResponseHead(c.out[:0], u.br.buffered(), !keep, mode, false)
	u.br.discard(c.respHeadLen)
	c.o.code = resp.status

	// The pipe lives in the connection, not on the stack.
	pp := &c.pp
	*pp = pipe{c: c, src: u.br, fromUp: true, u: u, out: c.out, now: c.now, hop: hop}
	switch mode {
	case bodyLength:
		pp.copyLength(resp.contentLength)
	case bodyChunked:
		pp.copyChunked(chunkedOut, true)
	case bodyUntilClose:
		pp.copyUntilEOF()
	}
	pp.flush()
	c.out = pp.out
	c.o.respN = pp.n

	// clientFailed: the client's body failed first (not by the abort
	// here), so an answer that then breaks off is the client's doing.
	clientFailed, stalled := false, false
	if res, ok := c.stopBody(true); ok {
		c.o.reqN = res.n
		keep = keep && res.readAll
		upKeep = upKeep && res.written
		clientFailed = res.clientFailed()
		stalled = res.stalled
		// The client may still be sending the body it was answered
		// before: closing now would reset the connection, as after the
		// proxy's own error answers (see lingerClose). A client whose
		// answer could not be written is not reading it: nothing to
		// linger for.
		c.linger = !res.readAll && !clientFailed && pp.writeErr == nil
	}
	switch {
	case pp.writeErr != nil, pp.readErr != nil && clientFailed:
		c.o.code = CodeClientGone
		if stalled && pp.writeErr == nil {
			c.o.code = 408
		}
		keep, upKeep = false, false
	case pp.readErr != nil:
		// The app failed mid-response: the status is already sent, so the
		// client learns it from the connection closing early.
		c.p.cfg.Log.Debug("app failed mid-response", "app", c.p.cfg.Upstream, "err", pp.readErr)
		c.o.code = 502
		keep, upKeep = false, false
	case !keep && !c.linger && req.keepAlive():
		// The connection closes although its client meant to keep it
		// (the drain, or an answer whose end is the close): its next
		// request may be on the way.
		c.lingerIfUnread()
	}
	*pp = pipe{}
	if len(u.br.buffered()) > 0 {
		// Bytes the app sent past its response: it is out of step.
		upKeep = false
	}
	u.br.releaseIfEmpty()
	if upKeep {
		u.reused = true
	} else {
		c.dropUpstream()
	}
	c.o.keep = keep
}

// fail answers the client with a short error when nothing of the response
// was sent yet. closeConn is set when the client's body is not in step.
func (c *conn) fail(code int, reason string, closeConn bool) {
	if res, ok := c.stopBody(true); ok {
		c.o.reqN = res.n
		if res.readErr != nil {
			c.failBody(res)
			return
		}
		closeConn = closeConn || !res.readAll
	}
	closeConn = closeConn || c.p.keepAliveOver() || !c.req.keepAlive()
	c.o.code = code
	c.o.respN = c.writeError(code, reason, closeConn)
	c.o.keep = !closeConn
	c.linger = closeConn
}

// failBody counts a request whose body could not be read from the client:
// a malformed body gets its 4xx, a client that sent none of its body for
// IOTimeout a 408, and one that left is counted 499.
func (c *conn) failBody(res bodyResult) {
	var he *headError
	switch {
	case errors.As(res.readErr, &he):
		c.o.code = he.code
		c.o.respN = c.writeError(he.code, he.reason, true)
		c.linger = true
		return
	case res.stalled:
		c.o.code = 408
		c.o.respN = c.writeError(408, "request body timed out: the client sent nothing for "+c.p.cfg.IOTimeout.String(), true)
		c.linger = true
		return
	}
	c.o.code = CodeClientGone
}

// upstream returns the pinned app connection if it is still usable, or
// one from the pool; fresh forces a new one.
func (c *conn) upstream(fresh bool) (*upConn, error) {
	if c.up != nil && !fresh && c.up.alive() {
		return c.up, nil
	}
	c.dropUpstream()
	if err := c.ev.dialErr; err != nil {
		// An event loop dialed for this request, and failed (see
		// evLoop.dialFor): the request's time counts from that dial.
		c.ev.dialErr = nil
		c.start = c.ev.dialStart
		return nil, err
	}
	var err error
	iv := c.p.cfg.ClientCheckInterval
	if fresh {
		c.up, err = c.p.pool.dial(iv, c.dialWaitOver)
	} else {
		c.up, err = c.p.pool.get(iv, c.dialWaitOver)
	}
	return c.up, err
}

// errDraining ends a wait for the app when the proxy drains.
var errDraining = errors.New("the proxy is draining")

// dialWaitOver says why a request waiting for a dial slot should stop
// waiting: its client left, or the proxy drains.
func (c *conn) dialWaitOver() error {
	if c.clientGone() {
		return errClientGone
	}
	if c.p.draining.Load() {
		return errDraining
	}
	return nil
}

// dropUpstream closes the pinned app connection.
func (c *conn) dropUpstream() {
	if c.up != nil {
		c.up.close()
		c.up = nil
	}
}

// sendThenReadHead sends a request head, with its body when inline, and
// reads the head of the answer, with one read system call fewer than
// writeUp and readResponseHead: see reader.sendThenFill. A body that is
// not inline starts streaming as soon as the head is written.
func (c *conn) sendThenReadHead(u *upConn, inline bool) error {
	iv := c.p.cfg.ClientCheckInterval
	if u.rdl.Before(c.now.Add(iv / 2)) {
		u.rdl = c.now.Add(iv)
		_ = u.nc.SetReadDeadline(u.rdl)
	}
	var then func()
	if !inline {
		then = func() { c.startBody(u) }
	}
	rest, err := u.br.sendThenFill(c.out, then)
	switch {
	case len(rest) > 0:
		if err := writeUp(u, rest, c.now, c.p.cfg.IOTimeout, nil); err != nil {
			return err
		}
		if then != nil {
			then()
		}
	case err == nil:
	case !isTimeout(err):
		return err
	case c.clientGone():
		return errClientGone
	}
	return c.readResponseHead(u)
}

func (c *conn) readResponseHead(u *upConn) error {
	for {
		if buf := u.br.buffered(); len(buf) > 0 {
			n, err := parseResponse(buf, &c.resp, maxResponseFields)
			if err == nil {
				c.respHeadLen = n
				return nil
			}
			if err != errNeedMore {
				return err
			}
		}
		if err := c.fillUp(u, maxResponseHead, &c.now); err != nil {
			if err == errHeadTooLarge {
				return errBadStatusLine
			}
			return err
		}
	}
}

// appendRequestHead writes the request head for the app: HTTP/1.1, the
// fields minus the hop-by-hop ones, X-Forwarded-*, and the body's framing
// restated once.
func (c *conn) appendRequestHead(out, b []byte, upgrade bool) []byte {
	h := &c.req
	out = append(out, h.method.of(b)...)
	out = append(out, ' ')
	switch {
	case h.asteriskTarget:
		out = append(out, '*')
	case h.rootTarget:
		out = append(out, '/')
	}
	out = append(out, h.target.of(b)...)
	out = append(out, " HTTP/1.1\r\n"...)
	xff := false
	var host []byte
	if h.absolute {
		// The target's authority is the Host the app sees (RFC 9112
		// 3.2.2), whatever Host field came with it.
		host = h.absHost.of(b)
		out = appendField(out, []byte("Host"), host)
	}
	keepUnderscore := c.p.cfg.KeepUnderscoreHeaders
	for i := range h.fields {
		f := &h.fields[i]
		switch f.kind {
		case kindHost:
			if h.absolute {
				continue
			}
			host = f.value.of(b)
			out = appendField(out, f.name.of(b), host)
		case kindUnderscore:
			if keepUnderscore {
				out = appendField(out, f.name.of(b), f.value.of(b))
			}
		case kindOther:
			out = appendField(out, f.name.of(b), f.value.of(b))
		case kindXForwardedProto, kindXForwardedHost:
			// An empty one is left out, as X-Forwarded-For's are.
			if f.value.end > f.value.start {
				out = appendField(out, f.name.of(b), f.value.of(b))
			}
		case kindExpect:
			if h.minor == 1 {
				out = appendField(out, f.name.of(b), f.value.of(b))
			}
		case kindUpgrade:
			if upgrade {
				out = appendField(out, f.name.of(b), f.value.of(b))
			}
		case kindXForwardedFor:
			if xff {
				continue
			}
			// All X-Forwarded-For fields, joined, then the client.
			xff = true
			out = append(out, "X-Forwarded-For: "...)
			for j := i; j < len(h.fields); j++ {
				if g := &h.fields[j]; g.kind == kindXForwardedFor && g.value.end > g.value.start {
					out = append(out, g.value.of(b)...)
					out = append(out, ", "...)
				}
			}
			out = append(out, c.clientIP...)
			out = append(out, "\r\n"...)
		}
	}
	if !h.hasHost && !h.absolute {
		out = appendField(out, []byte("Host"), []byte(c.p.cfg.Upstream))
	}
	if !xff {
		out = append(out, "X-Forwarded-For: "...)
		out = append(out, c.clientIP...)
		out = append(out, "\r\n"...)
	}
	if !h.hasXFProto {
		out = append(out, "X-Forwarded-Proto: http\r\n"...)
	}
	if !h.hasXFHo && host != nil {
		out = appendField(out, []byte("X-Forwarded-Host"), host)
	}
	if h.teTrailers {
		out = append(out, "TE: trailers\r\n"...)
	}
	if upgrade {
		out = append(out, "Connection: Upgrade\r\n"...)
	}
	switch {
	case h.chunked:
		out = append(out, "Transfer-Encoding: chunked\r\n"...)
	case h.contentLength >= 0:
		out = append(out, "Content-Length: "...)
		out = strconv.AppendInt(out, h.contentLength, 10)
		out = append(out, "\r\n"...)
	}
	return append(out, "\r\n"...)
}

// appendResponseHead writes the response head for the client.
func (c *conn) appendResponseHead(out, b []byte, closeConn bool, mode int, upgrade bool) []byte {
	h := &c.resp
	out = append(out, "HTTP/1.1 "...)
	out = append(out, codeNames[h.status-minCode]...)
	out = append(out, ' ')
	out = append(out, h.reason.of(b)...)
	out = append(out, "\r\n"...)
	chunkedOut := mode == bodyChunked && c.req.minor == 1
	for i := range h.fields {
		f := &h.fields[i]
		switch f.kind {
		case kindOther, kindHost, kindExpect, kindXForwardedFor, kindXForwardedProto, kindXForwardedHost, kindUnderscore:
			out = appendField(out, f.name.of(b), f.value.of(b))
		case kindTrailer:
			if chunkedOut {
				out = appendField(out, f.name.of(b), f.value.of(b))
			}
		case kindUpgrade:
			if upgrade {
				out = appendField(out, f.name.of(b), f.value.of(b))
			}
		}
	}
	// A 1xx or a 204 has no body and must not say how long it is (RFC
	// 9110 8.6).
	if h.contentLength >= 0 && (mode == bodyLength || mode == bodyNone) && h.status >= 200 && h.status != 204 {
		out = append(out, "Content-Length: "...)
		out = strconv.AppendInt(out, h.contentLength, 10)
		out = append(out, "\r\n"...)
	}
	switch {
	case upgrade:
		out = append(out, "Connection: Upgrade\r\n"...)
	case h.status < 200:
	case closeConn:
		out = append(out, "Connection: close\r\n"...)
	case c.req.minor == 0:
		out = append(out, "Connection: keep-alive\r\n"...)
	}
	if chunkedOut {
		out = append(out, "Transfer-Encoding: chunked\r\n"...)
	}
	return append(out, "\r\n"...)
}

func appendField(out, name, value []byte) []byte {
	out = append(out, name...)
	out = append(out, ": "...)
	out = append(out, value...)
	return append(out, "\r\n"...)
}

// Progress of a request body streamed by its own goroutine.
const (
	bodyReading = iota // still reading from the client
	bodyRead           // all read; the last write to the app may be pending
	bodyWritten        // all written to the app
)

// bodyResult is how streaming a request body ended.
type bodyResult struct {
	n        int64
	readAll  bool // the client sent the whole body: its connection is in step
	written  bool // the app got the whole body: its connection is in step
	readErr  error
	writeErr error
	// appFailed is set when a write to the app timed out before the copy
	// was stopped: the app stopped reading the body.
	appFailed bool
	// stalled is set when a read from the client timed out before the
	// copy was stopped: the client sent nothing for IOTimeout.
	stalled bool
}

// clientFailed reports whether the body failed on the client's side: a
// read that failed, other than the deadline stopBody set to stop it.
func (r bodyResult) clientFailed() bool {
	return r.readErr != nil && (!isTimeout(r.readErr) || r.stalled)
}

// startBody streams the request body to u from a second goroutine, so the
// app may answer while it reads. stopBody collects it.
func (c *conn) startBody(u *upConn) {
	c.bodyState.Store(bodyReading)
	c.bodyStop.Store(false)
	done := make(chan bodyResult, 1)
	c.bodyDone = done
	bp := outBufs.Get().(*[]byte)
	go func() {
		pp := pipe{c: c, src: c.br, u: u, out: (*bp)[:0], state: &c.bodyState, now: time.Now()}
		// The body is read to its end, or the copy stopped early: on a
		// failed read, or on a failed write to the app (which stopBody
		// forces when the app answered first). The client's connection is
		// in step only when the body was read to its end; otherwise what
		// it still sends is body, not the next request.
		var readAll bool
		if c.req.chunked {
			readAll = pp.copyChunked(true, false)
		} else {
			readAll = pp.copyLength(c.req.contentLength) == 0
		}
		if readAll {
			c.bodyState.Store(bodyRead)
		}
		pp.flush()
		res := bodyResult{n: pp.n, readErr: pp.readErr, writeErr: pp.writeErr}
		res.readAll = readAll
		res.written = readAll && pp.writeErr == nil
		if res.written {
			c.bodyState.Store(bodyWritten)
		}
		// A write that timed out without stopBody's stop found the app no
		// longer reading. One that failed because the app closed is left
		// to the reader of its response: an app that answers early and
		// closes may still be sending its answer.
		res.appFailed = isTimeout(pp.writeErr) && !c.bodyStop.Load()
		res.stalled = isTimeout(pp.readErr) && !c.bodyStop.Load()
		if pp.readErr != nil || res.appFailed {
			// The app waits for the rest of a body that will not come, or
			// will not take it, and answers nothing: end the exchange so
			// the reader of its response wakes.
			_ = u.nc.Close()
		}
		if cap(pp.out) <= 64<<10 {
			*bp = pp.out[:0]
			outBufs.Put(bp)
		}
		done <- res
	}()
}

// stopBody collects the body goroutine, if one runs. When the response is
// complete (abort), a body still being read is cut off; one whose last
// write is pending is waited for.
func (c *conn) stopBody(abort bool) (bodyResult, bool) {
	if c.bodyDone == nil {
		return bodyResult{}, false
	}
	if abort {
		c.bodyStop.Store(true)
		switch c.bodyState.Load() {
		case bodyReading:
			_ = c.nc.SetReadDeadline(aLongTimeAgo)
			if c.up != nil {
				_ = c.up.nc.SetWriteDeadline(aLongTimeAgo)
			}
		case bodyRead:
			if c.up != nil {
				_ = c.up.nc.SetWriteDeadline(aLongTimeAgo)
			}
		}
	}
	res := <-c.bodyDone
	c.bodyDone = nil
	c.br.releaseIfEmpty()
	if abort {
		// The deadline may have been moved to the past behind c.rdl.
		c.rdl = aLongTimeAgo
	}
	if c.up != nil {
		c.up.wdl = time.Time{}
	}
	return res, true
}

// pipe copies one body from a buffered source to a destination, gathering
// small pieces into out and writing them when the source would block.
type pipe struct {
	c      *conn
	src    *reader
	fromUp bool // the source is the app; else the client
	u      *upConn
	out    []byte
	state  *atomic.Int32 // request bodies: set to bodyRead at the end
	// inChunk is set while copyLength copies one chunk of a chunked body,
	// whose end is not the body's.
	inChunk bool
	n       int64 // body bytes copied
	// now is the pipe's clock, read again before each blocking read.
	now time.Time
	// hop lists, comma-separated, the fields the answer's Connection
	// named: they are not passed on as trailers either.
	hop []byte

	readErr, writeErr error
}

// emit queues b for the destination.
func (pp *pipe) emit(b []byte) {
	pp.out = append(pp.out, b...)
	if len(pp.out) >= copyBufSize {
		pp.flush()
	}
}

// flush writes what is queued.
func (pp *pipe) flush() {
	if len(pp.out) == 0 || pp.writeErr != nil {
		pp.out = pp.out[:0]
		return
	}
	var err error
	if pp.fromUp {
		err = pp.c.writeClient(pp.out, pp.now)
	} else {
		err = writeUp(pp.u, pp.out, pp.now, pp.c.p.cfg.IOTimeout, &pp.c.bodyStop)
	}
	if err != nil {
		pp.writeErr = err
	}
	pp.out = pp.out[:0]
}

// fill reads more into the source buffer, writing what is queued first.
func (pp *pipe) fill(limit int) bool {
	pp.flush()
	if pp.writeErr != nil {
		return false
	}
	pp.now = time.Now()
	var err error
	if pp.fromUp {
		err = pp.c.fillUp(pp.u, limit, &pp.now)
	} else {
		err = pp.c.fillClient(&pp.now)
	}
	if err != nil {
		if errors.Is(err, errClientGone) {
			pp.writeErr = err
		} else {
			pp.readErr = err
		}
		return false
	}
	return true
}

// copyLength copies n bytes and returns how many of them it did not read:
// 0 unless a read or a write failed.
func (pp *pipe) copyLength(n int64) int64 {
	// A large body's copy buffer is taken once and kept to the end of the
	// body, not taken and put back for each read.
	var cb *[]byte
	var bufs *sync.Pool
	defer func() {
		if cb != nil {
			bufs.Put(cb)
		}
	}()
	for n > 0 && pp.readErr == nil && pp.writeErr == nil {
		if buf := pp.src.buffered(); len(buf) > 0 {
			k := int(min(n, int64(len(buf))))
			if int64(k) == n && !pp.inChunk {
				pp.readToEnd()
			}
			pp.emit(buf[:k])
			pp.src.discard(k)
			n -= int64(k)
			pp.n += int64(k)
			continue
		}
		if n < bufSize {
			if !pp.fill(bufSize) {
				return n
			}
			continue
		}
		// Large bodies bypass the small buffer.
		pp.flush()
		if pp.writeErr != nil {
			return n
		}
		if cb == nil {
			bufs = &copyBufs
			if n > copyBufSize {
				bufs = &bulkBufs
			}
			cb = bufs.Get().(*[]byte)
		}
		k, err := pp.readDirect((*cb)[:min(n, int64(len(*cb)))])
		if err == nil {
			if int64(k) == n && !pp.inChunk {
				pp.readToEnd()
			}
			if pp.fromUp {
				err = pp.c.writeClient((*cb)[:k], pp.now)
			} else {
				err = writeUp(pp.u, (*cb)[:k], pp.now, pp.c.p.cfg.IOTimeout, &pp.c.bodyStop)
			}
			if err != nil {
				pp.writeErr = err
			}
			n -= int64(k)
			pp.n += int64(k)
		}
	}
	return n
}

func (pp *pipe) readDirect(b []byte) (int, error) {
	pp.now = time.Now()
	var n int
	var err error
	if pp.fromUp {
		n, err = pp.c.readUp(pp.u, b, &pp.now)
	} else {
		n, err = pp.c.readClient(b, &pp.now)
	}
	if err != nil {
		if errors.Is(err, errClientGone) {
			pp.writeErr = err
		} else {
			pp.readErr = err
		}
	}
	return n, err
}

// copyUntilEOF copies until the source closes.
func (pp *pipe) copyUntilEOF() {
	for pp.readErr == nil && pp.writeErr == nil {
		if buf := pp.src.buffered(); len(buf) > 0 {
			pp.emit(buf)
			pp.n += int64(len(buf))
			pp.src.discard(len(buf))
			continue
		}
		if !pp.fill(bufSize) {
			if pp.readErr == io.EOF {
				pp.readErr = nil
			}
			return
		}
	}
}

// maxChunkLine bounds a chunk-size line with its extensions.
const maxChunkLine = 1 << 10

// readLine returns the next CRLF-terminated line of the source without
// its CRLF; it stays valid until the source is read again.
func (pp *pipe) readLine(limit int) []byte {
	scanned := 0
	for {
		buf := pp.src.buffered()
		for i := scanned; i < len(buf); i++ {
			if buf[i] == '\n' {
				if i == 0 || buf[i-1] != '\r' {
					pp.readErr = errBadChunk
					return nil
				}
				pp.src.r += i + 1
				return buf[:i-1]
			}
		}
		scanned = len(buf)
		if scanned >= limit {
			pp.readErr = errChunkLineTooBig
			return nil
		}
		if !pp.fill(limit + 2) {
			if pp.readErr == errHeadTooLarge {
				pp.readErr = errChunkLineTooBig
			}
			return nil
		}
	}
}

// copyChunked copies a chunked body, re-encoding its framing canonically
// when chunkedOut (extensions dropped) or decoding it otherwise. Trailer
// fields are passed on only when keepTrailers. It reports whether it read
// the body to its end, the last chunk and the trailer section.
func (pp *pipe) copyChunked(chunkedOut, keepTrailers bool) bool {
	var hex [20]byte
	for pp.readErr == nil && pp.writeErr == nil {
		line := pp.readLine(maxChunkLine)
		if line == nil {
			return false
		}
		size, err := parseChunkLine(line)
		if err != nil {
			pp.readErr = err
			return false
		}
		if size == 0 {
			return pp.copyTrailers(chunkedOut && keepTrailers, chunkedOut)
		}
		if chunkedOut {
			h := strconv.AppendInt(hex[:0], size, 16)
			pp.emit(append(h, '\r', '\n'))
		}
		pp.inChunk = true
		left := pp.copyLength(size)
		pp.inChunk = false
		if left != 0 {
			return false
		}
		if crlf := pp.readLine(2); crlf == nil {
			return false
		} else if len(crlf) != 0 {
			pp.readErr = errBadChunk
			return false
		}
		if chunkedOut {
			pp.emit([]byte("\r\n"))
		}
	}
	return false
}

// copyTrailers reads the trailer section after the last chunk and, when
// chunkedOut, ends the body with it (keep) or without it. It reports
// whether it read the section to its end.
func (pp *pipe) copyTrailers(keep, chunkedOut bool) bool {
	if chunkedOut {
		pp.emit([]byte("0\r\n"))
	}
	total := 0
	limit := pp.c.p.cfg.MaxHeaderBytes
	for {
		line := pp.readLine(limit)
		if line == nil {
			return false
		}
		if len(line) == 0 {
			break
		}
		total += len(line) + 2
		if total > limit || !validField(line) {
			pp.readErr = errBadChunk
			return false
		}
		if keep && trailerKept(line, pp.hop) {
			pp.emit(line)
			pp.emit([]byte("\r\n"))
		}
	}
	pp.readToEnd()
	if chunkedOut {
		pp.emit([]byte("\r\n"))
	}
	return true
}

// trailerKept reports whether a trailer field, checked by validField, may
// be passed on: not one that frames a message or belongs to one connection
// (RFC 9110, section 6.5.1), which a client that merges trailers into the
// header section would act on, nor one the list hop names (see
// connectionNamed).
func trailerKept(line, hop []byte) bool {
	name, _, _ := bytes.Cut(line, []byte(":"))
	switch fieldKind(name) {
	case kindHost, kindContentLength, kindTransferEncoding, kindConnection, kindKeepAlive,
		kindProxyConnection, kindTE, kindTrailer, kindUpgrade:
		return false
	}
	kept := true
	forTokens(hop, func(t []byte) {
		kept = kept && !bytes.EqualFold(t, name)
	})
	return kept
}

// readToEnd marks a request body read to its end before its last bytes
// are written to the app: an answer that comes once the app has them
// finds the client's connection in step (see relayResponse).
func (pp *pipe) readToEnd() {
	if pp.state != nil {
		pp.state.Store(bodyRead)
	}
}

// validField reports whether line is a well-formed field line.
func validField(line []byte) bool {
	colon := -1
	for i, c := range line {
		if c == ':' {
			colon = i
			break
		}
		if !tchar[c] {
			return false
		}
	}
	if colon <= 0 {
		return false
	}
	for _, c := range line[colon+1:] {
		if !vchar[c] {
			return false
		}
	}
	return true
}
