package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// getClose sends one request on a new connection and reads the answer.
func getClose(t *testing.T, addr string) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	resp, err := client.Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("GET through the proxy: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET through the proxy: got %d, want 200", resp.StatusCode)
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestConnectionGoroutinesAreReused serves connections from goroutines
// only (the event loop off): with it, a goroutine is free again as soon as
// its connection's first request is answered (see TestConnectionStack).
func TestConnectionGoroutinesAreReused(t *testing.T) {
	app := startEcho(t)
	tests := []struct {
		name string
		// clients connections are open at once, rounds times.
		clients, rounds int
	}{
		{"one connection after another", 1, 20},
		{"8 connections at once", 8, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// An idle time no round comes near, however loaded the
			// machine: a goroutine that timed out between rounds would
			// be replaced by a new one, and the count would say nothing
			// of reuse.
			tp := startProxyWith(t, app, func(c *Config) { c.DisableEventLoop = true },
				func(p *Proxy) { p.workers.idleFor = time.Minute })
			ws := &tp.workers
			for range tt.rounds {
				openAndClose(t, tp.addr, tt.clients)
				// Every goroutine is back on the idle list before the next round.
				waitFor(t, "the connections' goroutines to go idle", func() bool {
					return tp.Status().Connections == 0 && ws.idleCount() == int(ws.started.Load())
				})
			}
			if got, want := ws.started.Load(), int64(tt.clients); got != want {
				t.Errorf("%d connections were served by %d goroutines, want %d", tt.clients*tt.rounds, got, want)
			}
		})
	}
}

// TestIdleConnectionGoroutinesExit: a goroutine that waits for a
// connection for the idle time exits, and the next connection gets a new
// one.
func TestIdleConnectionGoroutinesExit(t *testing.T) {
	for _, clients := range []int{1, 8} {
		t.Run(fmt.Sprintf("%d at once", clients), func(t *testing.T) {
			tp := startProxyWith(t, startEcho(t), func(c *Config) { c.DisableEventLoop = true },
				func(p *Proxy) { p.workers.idleFor = 300 * time.Millisecond })
			ws := &tp.workers
			openAndClose(t, tp.addr, clients)
			// Gone, not merely off the idle list (where a goroutine is
			// not yet when its connection has just closed).
			waitFor(t, "the idle goroutines to exit", func() bool {
				return tp.Status().Connections == 0 && workerGoroutines() == 0
			})
			getClose(t, tp.addr)
			if got, want := ws.started.Load(), int64(clients+1); got != want {
				t.Errorf("after the idle time, %d goroutines were started, want %d (a new one)", got, want)
			}
		})
	}
}

// openAndClose opens n connections to addr, one after another, has each
// answer a request, and then closes them all.
func openAndClose(t *testing.T, addr string, n int) {
	t.Helper()
	conns := make([]*rawConn, n)
	for i := range conns {
		conns[i] = dialRaw(t, addr)
		conns[i].send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp := conns[i].response("GET"); resp.StatusCode != 200 {
			t.Fatalf("GET through the proxy: got %d, want 200", resp.StatusCode)
		}
	}
	for _, rc := range conns {
		rc.nc.Close()
	}
}

// workerGoroutines counts the goroutines of this process that serve
// client connections or wait for one, every proxy's.
func workerGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "proxy.(*workers).run(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

func TestServeLeavesNoIdleGoroutines(t *testing.T) {
	app := startEcho(t)
	p, err := New(Config{Upstream: app}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	// Goroutines serve the connections' requests.
	p.testLoopsHandDials = true
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { getClose(t, ln.Addr().String()) })
	}
	wg.Wait()
	waitFor(t, "the connections' goroutines to go idle", func() bool { return p.workers.idleCount() > 0 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if n := p.workers.idleCount(); n != 0 {
		t.Errorf("after Serve returned, %d goroutines wait for connections, want 0", n)
	}
	// The goroutines that waited exit (the HTTP client's may take a moment).
	waitFor(t, "the goroutine count to come back", func() bool { return runtime.NumGoroutine() <= before })
}
