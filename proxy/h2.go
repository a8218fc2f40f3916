package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// h2Server serves the client connections that open with the HTTP/2
// preface (h2c with prior knowledge, as gRPC clients do without TLS). It
// is net/http's HTTP/2 server and a ReverseProxy over an HTTP/2 cleartext
// transport to the app, counted by the same metrics. It starts with the
// first such connection.
type h2Server struct {
	p     *Proxy
	once  sync.Once
	srv   *http.Server
	ln    *chanListener
	conns atomic.Int64

	mu sync.Mutex
	// handed is every connection handed to the server and not yet
	// closed, for goAway.
	handed map[*h2Conn]struct{}
}

func newH2Server(p *Proxy) *h2Server {
	s := &h2Server{p: p, ln: newChanListener(), handed: make(map[*h2Conn]struct{})}
	target := &url.URL{Scheme: "http", Host: p.cfg.Upstream}
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	tr := &http.Transport{
		Protocols:           &protos,
		DialContext:         (&net.Dialer{Timeout: p.cfg.DialTimeout}).DialContext,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
		// An app that stops reading its connection has it closed once a
		// write has been blocked for IOTimeout, as on HTTP/1.1; the
		// connection's streams fail (502) instead of waiting for ever.
		HTTP2: &http.HTTP2Config{WriteByteTimeout: p.cfg.IOTimeout},
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
			setForwarded(pr)
			if !p.cfg.KeepUnderscoreHeaders {
				dropUnderscoreHeaders(pr.Out.Header, p.m)
			}
		},
		Transport:     tr,
		FlushInterval: -1,
		ErrorLog:      slog.NewLogLogger(p.cfg.Log.Handler(), slog.LevelDebug),
		// A status outside 100–599 is refused as the HTTP/1.1 path's
		// parser refuses it: net/http's server would pass up to 999 on.
		ModifyResponse: func(resp *http.Response) error {
			if resp.StatusCode < 100 || resp.StatusCode > 599 {
				return fmt.Errorf("%w: %d", errBadStatus, resp.StatusCode)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(context.Cause(r.Context()), errBodyStalled) {
				p.cfg.Log.Debug("h2c: request body timed out", "app", p.cfg.Upstream, "timeout", p.cfg.IOTimeout)
				http.Error(w, "request body timed out: the client sent nothing for "+p.cfg.IOTimeout.String(), http.StatusRequestTimeout)
				return
			}
			if r.Context().Err() != nil {
				return
			}
			reason := "app unreachable"
			var oe *net.OpError
			switch {
			case errors.Is(err, errBadStatus):
				reason = "malformed response from the app"
			case errors.As(err, &oe) && oe.Op == "write" && isTimeout(err):
				// The connection's WriteByteTimeout.
				reason = "app stopped reading the request"
			}
			p.cfg.Log.Debug("h2c: "+reason, "app", p.cfg.Upstream, "err", err)
			http.Error(w, reason, http.StatusBadGateway)
		},
	}
	s.srv = &http.Server{
		Handler:           s.count(rp),
		Protocols:         &protos,
		ReadHeaderTimeout: p.cfg.ReadHeaderTimeout,
		IdleTimeout:       p.cfg.IdleTimeout,
		MaxHeaderBytes:    p.cfg.MaxHeaderBytes,
		// A client that stops reading has its connection closed once a
		// write has been blocked for IOTimeout, as on HTTP/1.1.
		HTTP2:    &http.HTTP2Config{WriteByteTimeout: p.cfg.IOTimeout},
		ErrorLog: slog.NewLogLogger(p.cfg.Log.Handler(), slog.LevelDebug),
		ConnState: func(nc net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				s.conns.Add(1)
			case http.StateClosed, http.StateHijacked:
				s.conns.Add(-1)
				if c, ok := nc.(*h2Conn); ok {
					s.forget(c)
				}
			}
		},
	}
	return s
}

// errBadStatus is an HTTP/2 answer whose status is outside 100–599.
var errBadStatus = errors.New("status outside 100-599")

// setForwarded adds X-Forwarded-For and, when absent, -Proto and -Host, as
// the HTTP/1.1 path does: every value the client sent is kept, but an
// empty one, which counts as absent.
func setForwarded(pr *httputil.ProxyRequest) {
	in, out := pr.In.Header, pr.Out.Header
	client, _, err := net.SplitHostPort(pr.In.RemoteAddr)
	if err != nil {
		client = pr.In.RemoteAddr
	}
	if prior := nonEmpty(in.Values("X-Forwarded-For")); len(prior) > 0 {
		client = strings.Join(prior, ", ") + ", " + client
	}
	out.Set("X-Forwarded-For", client)
	if v := nonEmpty(in.Values("X-Forwarded-Proto")); len(v) > 0 {
		out["X-Forwarded-Proto"] = v
	} else {
		out.Set("X-Forwarded-Proto", "http")
	}
	if v := nonEmpty(in.Values("X-Forwarded-Host")); len(v) > 0 {
		out["X-Forwarded-Host"] = v
	} else if pr.In.Host != "" {
		out.Set("X-Forwarded-Host", pr.In.Host)
	}
}

// nonEmpty returns the values that are not empty or blank, trimmed, as
// the HTTP/1.1 parser reads them.
func nonEmpty(values []string) []string {
	var kept []string
	for _, v := range values {
		if v = strings.Trim(v, " \t"); v != "" {
			kept = append(kept, v)
		}
	}
	return kept
}

// dropUnderscoreHeaders removes the fields whose names hold an
// underscore, as the HTTP/1.1 path does, and counts them.
func dropUnderscoreHeaders(h http.Header, m *metrics) {
	for name, values := range h {
		if strings.IndexByte(name, '_') >= 0 {
			delete(h, name)
			m.underscoreDropped.Add(float64(len(values)))
		}
	}
}

// count wraps the handler with the proxy's metrics.
func (s *h2Server) count(next http.Handler) http.Handler {
	m := s.p.m
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := s.p.cfg.Now()
		m.inFlight.Add(1)
		sw := &statusWriter{ResponseWriter: w}
		body := &countingBody{ReadCloser: r.Body}
		ctx, cancel := context.WithCancelCause(r.Context())
		defer cancel(nil)
		stall := &stallBody{ReadCloser: body, timeout: s.p.cfg.IOTimeout, cancel: cancel, answered: &sw.begun}
		defer stall.stop()
		r = r.WithContext(ctx)
		r.Body = stall
		// ReverseProxy aborts a stream whose answer fails mid-body by
		// panicking with http.ErrAbortHandler: count it, then let the
		// panic reach the server, which resets the stream.
		defer func() {
			aborted := recover()
			m.inFlight.Add(-1)
			code := sw.code
			switch {
			case errors.Is(context.Cause(ctx), errBodyStalled) && !sw.failed:
				// The client sent nothing of its body for IOTimeout: it
				// got a 408, or its answer was cut.
				code = http.StatusRequestTimeout
			case ctx.Err() != nil, sw.failed:
				// The client left, or a write to it failed (the server
				// may cancel the stream only after the write fails).
				code = CodeClientGone
			case aborted != nil:
				code = 502
			case code == 0:
				code = 200
			}
			end := s.p.cfg.Now()
			m.count(methodClass([]byte(r.Method)), code, end.Sub(start), end, body.n.Load(), sw.n)
			if aborted != nil {
				panic(aborted)
			}
		}()
		if r.Method == http.MethodConnect {
			// As on HTTP/1.1: the app is not asked to open a tunnel to
			// an address the client names.
			http.Error(sw, "CONNECT is not supported by this proxy", http.StatusMethodNotAllowed)
			return
		}
		next.ServeHTTP(sw, r)
	})
}

// statusWriter records the status and size of a response, and whether a
// write to the client failed.
type statusWriter struct {
	http.ResponseWriter
	code   int
	n      int64
	failed bool
	// begun is set once the answer's status is sent, for stallBody,
	// which reads it from its timer.
	begun atomic.Bool
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 && code >= 200 {
		w.begin(code)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.begin(200)
	}
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	w.failed = w.failed || err != nil
	return n, err
}

// begin records the answer's status as it is sent. (Its connection is
// told to go away by h2Server.goAway, or as it is handed over, once
// keep-alives are over.)
func (w *statusWriter) begin(code int) {
	w.code = code
	w.begun.Store(true)
}

// Unwrap lets http.ResponseController reach Flush and the rest.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// countingBody counts the bytes of a request body. n is atomic: a stream
// that ends before its body (a stall, a reset) is counted while the
// transport's copy may still be in a Read.
type countingBody struct {
	io.ReadCloser
	n atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// errBodyStalled cancels a stream whose request body brought nothing for
// IOTimeout.
var errBodyStalled = errors.New("request body timed out")

// stallBody ends a stream whose client sends nothing of its body for
// timeout before its answer has begun, as the HTTP/1.1 path's body read
// does: a Read that waits that long cancels the request with
// errBodyStalled and closes the body, which ends the Read; the client gets
// a 408 and the app's stream is reset. Only a pending Read is timed, so a
// body the app does not take (the copy then waits on the app's flow
// control, not on a Read) and a body that has ended are never cut. Nor is
// one whose answer has begun: that is a bidirectional stream (gRPC), whose
// client may send nothing for minutes while the app's messages come.
type stallBody struct {
	io.ReadCloser
	timeout  time.Duration
	cancel   context.CancelCauseFunc
	answered *atomic.Bool
	mu       sync.Mutex
	timer    *time.Timer
}

func (b *stallBody) Read(p []byte) (int, error) {
	if b.answered.Load() {
		return b.ReadCloser.Read(p)
	}
	b.mu.Lock()
	if b.timer == nil {
		b.timer = time.AfterFunc(b.timeout, func() {
			if b.answered.Load() {
				return
			}
			b.cancel(errBodyStalled)
			_ = b.ReadCloser.Close()
		})
	} else {
		b.timer.Reset(b.timeout)
	}
	b.mu.Unlock()
	n, err := b.ReadCloser.Read(p)
	b.stop()
	return n, err
}

// stop stops the timer of a Read that has returned, or of the stream.
func (b *stallBody) stop() {
	b.mu.Lock()
	if b.timer != nil {
		b.timer.Stop()
	}
	b.mu.Unlock()
}

// serve hands an HTTP/2 client connection to the server; buffered are the
// bytes already read from it, the preface among them. It returns false,
// leaving nc to the caller, when the server has shut down.
func (s *h2Server) serve(nc net.Conn, buffered []byte) bool {
	s.once.Do(func() {
		s.p.wg.Add(1)
		go func() {
			defer s.p.wg.Done()
			_ = s.srv.Serve(s.ln)
		}()
	})
	c := newH2Conn(&prefixConn{Conn: nc, prefix: append([]byte(nil), buffered...)}, s.p.cfg.IOTimeout)
	s.mu.Lock()
	s.handed[c] = struct{}{}
	// Read under mu: a goAway that began before this connection was
	// listed set it, and one that did not will find the connection.
	over := s.p.keepAliveOver()
	s.mu.Unlock()
	if over {
		c.notice()
	}
	select {
	case s.ln.ch <- c:
		return true
	case <-s.ln.done:
		s.forget(c)
		return false
	}
}

// forget takes a connection off the list goAway tells.
func (s *h2Server) forget(c *h2Conn) {
	s.mu.Lock()
	delete(s.handed, c)
	s.mu.Unlock()
}

// goAway tells every HTTP/2 connection to go away, in two steps (see
// h2Conn), and returns them. The proxy's keep-alives must be over, so
// that a connection handed over later is told as it comes.
func (s *h2Server) goAway() []*h2Conn {
	s.mu.Lock()
	conns := make([]*h2Conn, 0, len(s.handed))
	for c := range s.handed {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.notice()
	}
	return conns
}

// shutdown tells every HTTP/2 connection to go away, waits for their
// clients to answer for at most goAwayAckWait, sends the server's own
// GOAWAY to those that have not, and waits for their streams until ctx
// ends.
func (s *h2Server) shutdown(ctx context.Context) {
	_ = s.ln.Close()
	wait := time.NewTimer(goAwayAckWait)
	defer wait.Stop()
told:
	for _, c := range s.goAway() {
		select {
		case <-c.told:
		case <-wait.C:
			break told
		case <-ctx.Done():
			break told
		}
	}
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
	}
}

func (s *h2Server) close() {
	_ = s.ln.Close()
	_ = s.srv.Close()
}

func (s *h2Server) connections() int { return int(s.conns.Load()) }

// handOffH2 passes the connection to the HTTP/2 server; the connection's
// goroutine then ends without closing it. Once the proxy drains, a
// connection whose preface was still coming when the drain began is
// refused instead (see h2Refusal). The check comes after the connection
// was marked active (see checkHead) and its deadlines cleared, so that a
// drain that began after it sees the connection active and leaves it to
// the HTTP/2 server, which sends its own GOAWAY.
func (c *conn) handOffH2() {
	_ = c.nc.SetDeadline(time.Time{})
	if !c.p.draining.Load() && c.p.h2.serve(c.nc, c.br.buffered()) {
		c.handedOff = true
		return
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.p.cfg.IOTimeout))
	if _, err := c.nc.Write(h2Refusal); err == nil {
		// The client's first frames may still be coming: closing with
		// them unread would reset the connection and could destroy the
		// GOAWAY before the client reads it.
		c.linger = true
	}
}

// h2Refusal is what an HTTP/2 connection gets when it comes as the proxy
// drains: the server's preface (an empty SETTINGS frame) and a GOAWAY
// whose last stream is 0 with NO_ERROR, which tells the client that none
// of its streams was processed and each can be retried on another
// connection. A close without it would leave the client unable to tell.
var h2Refusal = append([]byte{
	0, 0, 0, 0x4, 0, 0, 0, 0, 0, // SETTINGS: length 0, stream 0
}, goAwayNoStream...)

// chanListener is a net.Listener fed with connections from a channel.
type chanListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4zero} }

// prefixConn replays bytes already read before reading the connection.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}
