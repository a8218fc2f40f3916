// Package proxy is outrider's inbound reverse proxy: it forwards HTTP/1.1
// (and HTTP/2 cleartext with prior knowledge) from clients to the app,
// counts and times every request, and drains on shutdown.
//
// The HTTP/1.1 path is purpose-built rather than net/http's server and
// httputil.ReverseProxy: request heads are read in place from a pooled
// buffer, rewritten, and forwarded on an app connection pinned to the
// client connection while both stay keep-alive. On Linux, event loops
// accept connections and serve plain requests; a goroutine serves the
// others. Bodies are streamed, never buffered whole.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config is the proxy's settings. Zero fields take the defaults named.
type Config struct {
	// Upstream is the app's host:port.
	Upstream string
	// MaxHeaderBytes bounds a request head (default 16 KiB): larger is 431.
	MaxHeaderBytes int
	// MaxHeaderFields bounds the fields of a request head (default 100).
	MaxHeaderFields int
	// ReadHeaderTimeout bounds reading a head once its first byte came
	// (default 10s): the slowloris guard.
	ReadHeaderTimeout time.Duration
	// IdleTimeout is how long a keep-alive client connection may wait for
	// its next request (default 60s).
	IdleTimeout time.Duration
	// IOTimeout bounds each read of a request body and each write to either
	// side (default 60s).
	IOTimeout time.Duration
	// DialTimeout bounds connecting to the app (default 2s).
	DialTimeout time.Duration
	// MaxIdleUpstream bounds the pool of idle keep-alive connections to the
	// app (default 128); more are closed as they come back.
	MaxIdleUpstream int
	// ClientCheckInterval is how often a request still waiting for the app
	// checks that its client is there (default 1s); a client found gone is
	// counted 499 and its app request is cancelled.
	ClientCheckInterval time.Duration
	// QPSWindow is the sliding window of the request rate (default 10s,
	// at most MaxQPSWindow).
	QPSWindow time.Duration
	// DrainTimeout bounds the drain Serve runs itself when its context
	// ends before anyone called Drain (default 25s).
	DrainTimeout time.Duration
	// MaxConns bounds the client connections open at once; past it a new
	// connection is closed as soon as it is accepted, and counted. Zero
	// means no bound.
	MaxConns int
	// TunnelIdleTimeout closes an upgraded tunnel (WebSocket) through which
	// no byte went either way for that long (default 1h).
	TunnelIdleTimeout time.Duration
	// TunnelHalfCloseTimeout closes a tunnel one side of which has closed,
	// once no byte went the other way for that long (default 10s, at most
	// TunnelIdleTimeout): a side's close and its half-close look the same,
	// and a client gone silent would otherwise hold the tunnel, and a
	// drain, for TunnelIdleTimeout.
	TunnelHalfCloseTimeout time.Duration
	// DisableEventLoop serves every client connection from a goroutine of
	// its own. By default, on Linux, keep-alive connections wait for their
	// next request, and plain requests are forwarded, in one event loop
	// per P, which costs less CPU and memory per request.
	DisableEventLoop bool
	// KeepUnderscoreHeaders forwards request header fields whose names hold
	// an underscore; by default they are dropped and counted, as nginx
	// does, because CGI-style apps read X_Forwarded_For and X-Forwarded-For
	// (or Transfer_Encoding and Transfer-Encoding) as the same variable.
	KeepUnderscoreHeaders bool
	// Log receives connection-level problems at debug level; nil discards.
	Log *slog.Logger
	// Now is the clock of the metrics; nil means time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = 16 << 10
	}
	c.MaxHeaderBytes = max(c.MaxHeaderBytes, bufSize)
	if c.MaxHeaderFields <= 0 {
		c.MaxHeaderFields = 100
	}
	def(&c.ReadHeaderTimeout, 10*time.Second)
	def(&c.IdleTimeout, 60*time.Second)
	def(&c.IOTimeout, 60*time.Second)
	def(&c.DialTimeout, 2*time.Second)
	def(&c.ClientCheckInterval, time.Second)
	def(&c.QPSWindow, 10*time.Second)
	def(&c.DrainTimeout, 25*time.Second)
	def(&c.TunnelIdleTimeout, time.Hour)
	def(&c.TunnelHalfCloseTimeout, 10*time.Second)
	c.TunnelHalfCloseTimeout = min(c.TunnelHalfCloseTimeout, c.TunnelIdleTimeout)
	if c.MaxIdleUpstream <= 0 {
		c.MaxIdleUpstream = 128
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// clock returns t when the metrics clock is the real one, else the time:
// deadlines need the real time, and one clock read per event is enough.
func (p *Proxy) clock(t time.Time) time.Time {
	if p.realClock {
		return t
	}
	return time.Now()
}

// Proxy is the reverse proxy. Create it with New, run it with Serve.
type Proxy struct {
	cfg       Config
	realClock bool
	m         *metrics
	pool      *pool
	h2        *h2Server

	// acceptMu is held by Serve from an accept to the connection's
	// admission, and by the drain from its last accepts to the listener's
	// close; mu, when both are taken, after it.
	acceptMu sync.Mutex
	mu       sync.Mutex
	ln       net.Listener
	// lnClosed is set, under mu, once the drain or a failed accept closed
	// the listener for good: no connection is admitted after it.
	lnClosed bool
	conns    map[*conn]struct{}
	draining atomic.Bool
	// closeKeepAlive is set by CloseKeepAlives, and by Drain before
	// draining: every answer then carries "Connection: close" (see
	// keepAliveOver).
	closeKeepAlive atomic.Bool
	// active counts connections that are not tunnels, tunnels the upgraded
	// ones; while draining, the last one to go signals drained.
	active  atomic.Int64
	tunnels atomic.Int64
	drained chan struct{}
	// drainDone is closed when the first Drain returns, with drainRep and
	// drainErr set.
	drainDone chan struct{}
	drainRep  DrainReport
	drainErr  error
	stop      chan struct{} // closed to stop Serve
	// acceptFailing is set while accepts fail for want of descriptors;
	// a connection that closes meanwhile wakes the retry on acceptWake.
	acceptFailing atomic.Bool
	acceptWake    chan struct{}
	// acceptQuiet overrides acceptQuiet in tests.
	acceptQuiet time.Duration
	// testHookBeforePark, set only by tests, runs when a goroutine has
	// left its read loop to park a connection in an event loop, before
	// it marks it parked.
	testHookBeforePark func(*conn)
	// testHookDrainBegun, set only by tests, runs once the drain has
	// begun, before it takes the connections queued on the listener.
	testHookDrainBegun func()
	// testHookAccepted, set only by tests, runs when an event loop has
	// accepted a connection, before it admits it.
	testHookAccepted func()
	// testLoopsHandDials, set only by tests, has the event loops hand a
	// connection that needs a dial to a goroutine, which dials, as they
	// did before they dialed themselves (evLoop.dialFor): for tests of a
	// goroutine serving a new connection's first request.
	testLoopsHandDials bool
	// workers serve the client connections (workers.go).
	workers workers
	wg      sync.WaitGroup
	// evl holds the event loops (evloop_linux.go) once Serve started
	// them; nil when off.
	evl atomic.Pointer[evLoops]
}

// MaxQPSWindow bounds Config.QPSWindow: the rate meter keeps a counter
// per second of the window.
const MaxQPSWindow = time.Hour

// New returns a proxy to cfg.Upstream whose metrics are registered on reg.
func New(cfg Config, reg prometheus.Registerer) (*Proxy, error) {
	realClock := cfg.Now == nil
	cfg.setDefaults()
	if cfg.Upstream == "" {
		return nil, errors.New("proxy: no upstream address")
	}
	if cfg.QPSWindow > MaxQPSWindow {
		return nil, fmt.Errorf("proxy: QPS window %v is longer than %v: the rate meter keeps a counter per second of it", cfg.QPSWindow, MaxQPSWindow)
	}
	p := &Proxy{
		cfg:       cfg,
		realClock: realClock,
		pool:      newPool(cfg.Upstream, cfg.DialTimeout, cfg.MaxIdleUpstream),
		conns:     map[*conn]struct{}{},
		drained:   make(chan struct{}, 1),
		drainDone: make(chan struct{}),
		stop:      make(chan struct{}),
		// One wake-up pending is enough.
		acceptWake: make(chan struct{}, 1),
	}
	m, err := newMetrics(reg, cfg.QPSWindow, cfg.Now, &p.tunnels)
	if err != nil {
		return nil, fmt.Errorf("proxy: register metrics: %w", err)
	}
	p.m = m
	p.h2 = newH2Server(p)
	return p, nil
}

// Serve accepts client connections on ln until ctx is cancelled or Drain
// is called; then it drains, waiting at most DrainTimeout for requests in
// flight, and returns when every connection goroutine is done.
func (p *Proxy) Serve(ctx context.Context, ln net.Listener) error {
	p.mu.Lock()
	p.ln = ln
	if p.draining.Load() {
		// Drained before it served: nothing to accept.
		_ = ln.Close()
		p.lnClosed = true
	}
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), p.cfg.DrainTimeout)
			defer cancel()
			_ = p.Drain(dctx)
		case <-p.stop:
		}
	}()
	if !p.cfg.DisableEventLoop {
		evl, err := startEvLoops(p, ln)
		if err != nil {
			p.cfg.Log.Warn("proxy cannot start its event loops; every connection is served by a goroutine of its own", "err", err)
		} else if evl != nil {
			// Set before the first connection is accepted.
			p.pool.steal = evl.stealApp
		}
		p.evl.Store(evl)
	}
	ls := p.evl.Load()
	loopsAccept := ls.accepts()
	var err error
	retry := acceptRetry{quiet: p.acceptQuiet}
	for {
		// The event loops accept while accepts succeed (evaccept_linux.go);
		// an episode of failing accepts is this loop's.
		if loopsAccept && !retry.active && !ls.waitFailure(p.stop) {
			break
		}
		// Held from the accept to the admission, so that the drain's
		// last accepts and the listener's close never fall between them.
		p.acceptMu.Lock()
		nc, aerr := ln.Accept()
		var c *conn
		if aerr == nil {
			c = p.newConn(nc)
		}
		p.acceptMu.Unlock()
		if aerr != nil {
			if p.draining.Load() {
				break
			}
			var ne net.Error
			if errors.As(aerr, &ne) && ne.Timeout() {
				continue
			}
			if temporaryAcceptError(aerr) {
				p.m.acceptErrors.Inc()
				retry.wait(ctx, p, ln, aerr)
				continue
			}
			err = fmt.Errorf("proxy: accept on %s: %w", ln.Addr(), aerr)
			p.draining.Store(true)
			p.closeAll()
			p.closeOnce()
			break
		}
		retry.accepted(p, ln)
		if c == nil {
			continue
		}
		p.workers.serve(c)
	}
	p.wg.Wait()
	p.evl.Load().stop()
	p.workers.stop()
	p.pool.close()
	return err
}

// closeOnce stops Serve's watcher when Serve ends on its own.
func (p *Proxy) closeOnce() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
}

// InFlight returns the number of requests being forwarded now.
func (p *Proxy) InFlight() int { return int(p.m.inFlight.Load()) }

// CloseKeepAlives makes every HTTP/1.1 answer from now on carry
// "Connection: close" and close its connection, as a drain's answers do,
// and tells every HTTP/2 connection, and each that comes later, to go
// away, while the proxy still accepts. The drain delay calls it:
// keep-alive clients then leave their connections one answer at a time,
// each told so, and Drain finds few idle connections to close. Closing an
// idle connection races with a client that is sending its next request on
// it, and a client loses that request unless it retries it (Go's
// http.Transport does not retry a POST).
func (p *Proxy) CloseKeepAlives() {
	p.closeKeepAlive.Store(true)
	p.h2.goAway()
}

// keepAliveOver reports whether answers close their connections: the
// drain delay or the drain itself has begun.
func (p *Proxy) keepAliveOver() bool { return p.closeKeepAlive.Load() || p.draining.Load() }

// Draining reports whether Drain has been called.
func (p *Proxy) Draining() bool { return p.draining.Load() }

// QPS is the request rate figure of /v1/qps.
type QPS struct {
	QPS           float64 `json:"qps"`
	WindowSeconds float64 `json:"window_seconds"`
	InFlight      int     `json:"in_flight"`
}

// QPS returns the request rate over the sliding window.
func (p *Proxy) QPS() QPS {
	return QPS{
		QPS:           p.m.rate.rate(p.cfg.Now()),
		WindowSeconds: p.m.rate.windowSeconds(),
		InFlight:      p.InFlight(),
	}
}

// Status is the proxy's section of /status.
type Status struct {
	Listen        string  `json:"listen"`
	Upstream      string  `json:"upstream"`
	Connections   int     `json:"connections"`
	MaxConns      int     `json:"max_connections,omitempty"`
	Tunnels       int     `json:"tunnels"`
	InFlight      int     `json:"in_flight"`
	QPS           float64 `json:"qps"`
	WindowSeconds float64 `json:"window_seconds"`
	UpstreamIdle  int     `json:"upstream_idle"`
	Draining      bool    `json:"draining"`
}

// Status returns the proxy's state.
func (p *Proxy) Status() Status {
	q := p.QPS()
	p.mu.Lock()
	n := len(p.conns)
	listen := ""
	if p.ln != nil {
		listen = p.ln.Addr().String()
	}
	p.mu.Unlock()
	return Status{
		Listen:        listen,
		Upstream:      p.cfg.Upstream,
		Connections:   n + p.h2.connections(),
		MaxConns:      p.cfg.MaxConns,
		Tunnels:       int(p.tunnels.Load()),
		InFlight:      q.InFlight,
		QPS:           q.QPS,
		WindowSeconds: q.WindowSeconds,
		UpstreamIdle:  p.pool.idleCount(),
		Draining:      p.draining.Load(),
	}
}

func (p *Proxy) newConn(nc net.Conn) *conn {
	// Taken before the lock, which every connection's end and the drain
	// also take: the lock guards only the set.
	c := reuseConn(p, nc)
	if !p.admit(c) {
		_ = nc.Close()
		c.recycle()
		return nil
	}
	return c
}

// admit lists a new connection, or reports false when it is to be closed
// at once: the listener is closed for good, or MaxConns are open. A
// connection accepted while the drain has begun but not yet closed the
// listener is admitted: its request came with it (see Listen), and it is
// answered with "Connection: close".
func (p *Proxy) admit(c *conn) bool {
	p.mu.Lock()
	if p.lnClosed {
		p.mu.Unlock()
		return false
	}
	if max := p.cfg.MaxConns; max > 0 && len(p.conns)+p.h2.connections() >= max {
		// Over the bound a connection is not queued: closing it at once
		// keeps outrider's descriptors and memory bounded, and the client
		// retries elsewhere.
		p.mu.Unlock()
		p.m.rejected.Inc()
		return false
	}
	p.conns[c] = struct{}{}
	p.active.Add(1)
	p.wg.Add(1)
	p.mu.Unlock()
	return true
}

// forget removes c, once its goroutine ends.
func (p *Proxy) forget(c *conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	if !c.tunnel {
		p.leaveActive()
	}
	if p.acceptFailing.Load() {
		// A descriptor came free: retry the accept now, not at the end of
		// the backoff.
		select {
		case p.acceptWake <- struct{}{}:
		default:
		}
	}
	p.wg.Done()
}
