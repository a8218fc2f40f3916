package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outrider-sidecar/outrider/internal/version"
)

// newServer returns an HTTP server with every timeout set, so that a slow
// or hostile client cannot hold outrider's own endpoints, and that holds
// at most maxConns connections (see connCap); closed counts those it
// closes to stay within them.
func newServer(h http.Handler, writeTimeout time.Duration, maxConns int, closed prometheus.Counter, log *slog.Logger) *http.Server {
	cc := &connCap{max: maxConns, closed: closed, open: map[net.Conn]connEntry{}}
	srv := &http.Server{
		Handler:           cc.answered(h),
		ConnContext:       withConn,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ConnState:         cc.track,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// Shutdown closes idle keep-alive connections but waits up to 5 s for
	// a connection that has sent no request yet, per server, as one that
	// may be about to; at exit nothing is, and a client that connects and
	// sends nothing would delay the exit after a drain by that much.
	srv.RegisterOnShutdown(cc.closeWaiting)
	return srv
}

// maxServerConns is the most connections the metrics and the admin
// server each hold: about 2 MiB at the 11 KiB a connection waiting for a
// request was measured at, which fits in what the proxy's connection
// bound keeps back for outrider's own use (docs/proxy.md#overload).
// Unbounded, a flood of connections to the metrics port, which other pods
// may reach, had outrider killed for memory within seconds.
const maxServerConns = 128

// connCap keeps an HTTP server within max connections, as nginx does
// when its connections run out: a new connection past the bound closes
// the one that has waited longest for a request (one that has sent none
// yet, a keep-alive one between requests, or one whose answer is sent
// and that holds back a body it announced), never one whose request is
// being answered. When every connection is in a request, it closes the
// one that has been sending its answer longest: a client that asks and
// does not read keeps the server writing to it until the write timeout,
// and a flood of them would otherwise keep every new connection out for
// as long. Only when every request is still being worked on is the new
// one closed. A flood of idle or half-sent connections thus holds no
// more memory than the bound, and a client that sends its request at once
// (Prometheus, the kubelet's probes, the preStop hook) is still answered,
// which a bound that stopped accepting would not give.
type connCap struct {
	max    int
	closed prometheus.Counter

	mu   sync.Mutex
	seq  uint64
	open map[net.Conn]connEntry
}

// connEntry is one connection a server holds.
type connEntry struct {
	busy bool
	// waiting orders the connections by when they began to wait.
	waiting uint64
	// sending, for a busy one, orders them by when the handler began
	// its answer; 0 while it has not.
	sending uint64
}

// track is the server's ConnState hook.
func (c *connCap) track(nc net.Conn, st http.ConnState) {
	var victim net.Conn
	c.mu.Lock()
	c.seq++
	switch st {
	case http.StateNew:
		if len(c.open) >= c.max {
			victim = c.longestWaiting()
			if victim == nil {
				victim = nc
				break
			}
			delete(c.open, victim)
		}
		c.open[nc] = connEntry{waiting: c.seq}
	case http.StateActive:
		if _, ok := c.open[nc]; ok {
			c.open[nc] = connEntry{busy: true}
		}
	case http.StateIdle:
		if _, ok := c.open[nc]; ok {
			c.open[nc] = connEntry{waiting: c.seq}
		}
	case http.StateHijacked, http.StateClosed:
		delete(c.open, nc)
	}
	c.mu.Unlock()
	if victim != nil {
		// Counted first: a client that sees its connection closed finds
		// the close already in the count.
		c.closed.Inc()
		_ = victim.Close()
	}
}

// connKey is the context key under which withConn keeps a request's
// connection.
type connKey struct{}

// withConn is the server's ConnContext hook: it puts the connection in
// the context of its requests, for connCap.answered.
func withConn(ctx context.Context, nc net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, nc)
}

// answered keeps a request whose body is held back from holding its
// connection: none of outrider's handlers reads a body, yet the server
// reads the body a request announced, until its read timeout, before it
// writes the answer, and again after the handler. A flood of connections
// that each send a head with a Content-Length and no body would thus keep
// every connection in a request, the handlers stuck in their first
// write, and connCap would close every new one: Prometheus and the
// kubelet's probes kept out for as long as the flood lasts. So the answer
// does not wait for the body, and once it is sent such a connection
// counts as waiting again. One without a body stays in its request until
// the server is done with it, so that a stop's closeWaiting does not cut
// an answer being sent; from the handler's first write it is marked
// sending, for connCap to close it should every connection be in a
// request.
func (c *connCap) answered(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		_ = rc.EnableFullDuplex()
		nc, _ := r.Context().Value(connKey{}).(net.Conn)
		sw := &sendingWriter{ResponseWriter: w, sending: func() { c.sending(nc) }}
		next.ServeHTTP(sw, r)
		sw.begin() // what the handler wrote is still to be sent
		if r.Body == nil || r.Body == http.NoBody {
			return
		}
		_ = rc.Flush()
		c.mu.Lock()
		if _, ok := c.open[nc]; ok {
			c.seq++
			c.open[nc] = connEntry{waiting: c.seq}
		}
		c.mu.Unlock()
	})
}

// sending marks nc's request as being answered: from then on it is only
// sending, and may be closed for a new connection.
func (c *connCap) sending(nc net.Conn) {
	c.mu.Lock()
	if e, ok := c.open[nc]; ok && e.busy && e.sending == 0 {
		c.seq++
		e.sending = c.seq
		c.open[nc] = e
	}
	c.mu.Unlock()
}

// sendingWriter tells its connCap when the handler begins its answer.
type sendingWriter struct {
	http.ResponseWriter
	sending func()
	begun   bool
}

func (w *sendingWriter) begin() {
	if !w.begun {
		w.begun = true
		w.sending()
	}
}

func (w *sendingWriter) WriteHeader(code int) {
	w.begin()
	w.ResponseWriter.WriteHeader(code)
}

func (w *sendingWriter) Write(p []byte) (int, error) {
	w.begin()
	return w.ResponseWriter.Write(p)
}

// Unwrap gives http.ResponseController the server's writer.
func (w *sendingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// closeWaiting closes every connection that is not in a request.
func (c *connCap) closeWaiting() {
	c.mu.Lock()
	var waiting []net.Conn
	for nc, e := range c.open {
		if !e.busy {
			waiting = append(waiting, nc)
		}
	}
	c.mu.Unlock()
	for _, nc := range waiting {
		_ = nc.Close()
	}
}

// longestWaiting returns the connection that has waited longest without
// a request in progress or, when every one has one, the one that has been
// sending its answer longest; nil when every request is still being
// worked on. c.mu is held.
func (c *connCap) longestWaiting() net.Conn {
	var oldest, sender net.Conn
	var since, sendingSince uint64
	for nc, e := range c.open {
		switch {
		case !e.busy:
			if oldest == nil || e.waiting < since {
				oldest, since = nc, e.waiting
			}
		case e.sending != 0:
			if sender == nil || e.sending < sendingSince {
				sender, sendingSince = nc, e.sending
			}
		}
	}
	if oldest == nil {
		return sender
	}
	return oldest
}

// requireToken lets a request through only with "Authorization: Bearer
// <token>", the scheme in any case (RFC 7235). An empty token allows
// everything: config refuses that unless the listener is loopback.
func requireToken(token string, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	want := []byte(token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, got, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		got = strings.TrimLeft(got, " ")
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="outrider"`)
			http.Error(w, "missing or wrong bearer token", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// refuseBrowsers keeps web pages away from the admin API, which no page
// has a reason to call: a page the operator has open could otherwise
// drain the instance with a form's POST, or an image's GET /prestop,
// which carry no preflight and need no answer to do harm.
//   - A request a browser marks as coming from another site
//     (Sec-Fetch-Site other than same-origin or none, the address bar),
//     or whose Origin is not the Host it was sent to, is refused: the
//     rule of Go's http.CrossOriginProtection, applied to every method,
//     as GET /prestop changes state too.
//   - Without a token, the listener is loopback, and a Host that is not
//     an IP address or localhost is refused too: it is a DNS name a page
//     rebound to 127.0.0.1 to read /status as same-origin. An empty one,
//     HTTP/1.0's (a script's printf to the port), is let through: no
//     browser sends it.
func refuseBrowsers(token string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if why := crossSite(r); why != "" {
			http.Error(w, "refused: "+why+"; outrider's admin API is not for web pages", http.StatusForbidden)
			return
		}
		if token == "" && r.Host != "" && !hostIsAddress(r.Host) {
			http.Error(w, "refused: Host "+strconv.Quote(r.Host)+" is not an IP address or localhost; outrider's admin API answers only on its own address", http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// crossSite says why r came from another site's page, or "".
func crossSite(r *http.Request) string {
	switch site := r.Header.Get("Sec-Fetch-Site"); site {
	case "", "same-origin", "none":
	default:
		return "Sec-Fetch-Site: " + site
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return "" // not a browser, or one that sends neither
	}
	if u, err := url.Parse(origin); err != nil || u.Host != r.Host {
		return "Origin " + strconv.Quote(origin) + " is not the Host " + strconv.Quote(r.Host)
	}
	return ""
}

// hostIsAddress reports whether a Host field names this machine by
// address: an IP address or localhost, with or without a port.
func hostIsAddress(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	_, err := netip.ParseAddr(host)
	return err == nil
}

// serveStatus answers GET /status with the agent's state as JSON.
func (a *agent) serveStatus(w http.ResponseWriter, _ *http.Request) {
	ready, why := a.gate.Ready()
	body := map[string]any{
		"version":        version.Version,
		"service_id":     a.cfg.Service.ID,
		"service_name":   a.cfg.Service.Name,
		"registry":       a.cfg.Registry.Kind,
		"ready":          ready,
		"not_ready_why":  why,
		"conditions":     a.gate.Conditions(),
		"uptime_seconds": time.Since(a.started).Seconds(),
	}
	for name, section := range a.status {
		body[name] = section()
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(body)
}
