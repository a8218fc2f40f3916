package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestIdleConnectionIsNotReused checks that a worker reuses a keep-alive
// connection while it is fresh and dials a new one once it has been idle
// longer than the idle timeout.
func TestIdleConnectionIsNotReused(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")

	g := newGenerator(nil, "/", 1, 5*time.Second, 30*time.Second)
	w := worker{g: g, conns: map[string]*clientConn{}}
	defer w.closeAll()
	for i, tc := range []struct {
		name      string
		idleFor   time.Duration
		wantConns int32
	}{
		{"first request dials", 0, 1},
		{"fresh connection is reused", time.Second, 1},
		{"connection idle past the timeout is replaced", time.Minute, 2},
		{"the new one is reused", 0, 2},
	} {
		if c, ok := w.conns[addr]; ok {
			c.lastUsed = time.Now().Add(-tc.idleFor)
		}
		if kind := w.send(addr); kind != "" {
			t.Fatalf("request %d (%s): %s", i, tc.name, kind)
		}
		if got := conns.Load(); got != tc.wantConns {
			t.Errorf("%s: %d connections dialed, want %d", tc.name, got, tc.wantConns)
		}
	}
}
