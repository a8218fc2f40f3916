package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The event loops dial the app themselves for a new connection that
// finds no idle app connection (evLoop.dialFor).

// TestEventLoopDialsForABurst: clients that all arrive at once, with no
// idle app connection to take, are served by the loops alone: each
// client's loop dials its app connection, no connection goes to a
// goroutine, and each client's next requests go on the app connection
// dialed for it.
func TestEventLoopDialsForABurst(t *testing.T) {
	var appConns atomic.Int32
	app := fakeApp(t, func(nc net.Conn, br *bufio.Reader) {
		id := appConns.Add(1)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			body := fmt.Sprintf("%s on %d", req.URL.Path, id)
			fmt.Fprintf(nc, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
	})
	tp := startProxy(t, app, nil)
	// Fewer than maxDials: none waits for a dial slot. Each client keeps
	// its connection until every client has its first answer: one that
	// closed before would leave its app connection idle for the next.
	const clients, requests = 64, 3
	errs := make(chan error, clients)
	var wg, firsts sync.WaitGroup
	firsts.Add(clients)
	for i := range clients {
		wg.Go(func() { errs <- burstClient(tp.addr, i, requests, &firsts) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if got := loopDials(tp); got != clients {
		t.Errorf("dials by the loops: got %d, want %d", got, clients)
	}
	if got := appConns.Load(); got != clients {
		t.Errorf("app connections: got %d, want %d", got, clients)
	}
	if got := tp.workers.started.Load(); got != 0 {
		t.Errorf("goroutines started: got %d, want 0", got)
	}
	tp.settle(t)
	if got := tp.counts(t)["GET 200"]; got != clients*requests {
		t.Errorf("GET 200 counted: got %v, want %d", got, clients*requests)
	}
}

// burstClient connects to addr and sends requests requests one after
// another; each answer must come from the app connection of the first.
// It marks firsts done once its first request is answered, or failed, and
// waits for every client's before it goes on.
func burstClient(addr string, i, requests int, firsts *sync.WaitGroup) error {
	first := sync.OnceFunc(firsts.Done)
	defer first()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(nc)
	var on string
	for r := range requests {
		path := fmt.Sprintf("/%d/%d", i, r)
		if _, err := fmt.Fprintf(nc, "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", path); err != nil {
			return fmt.Errorf("client %d: %w", i, err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return fmt.Errorf("client %d, request %d: %w", i, r, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return fmt.Errorf("client %d, request %d: %w", i, r, err)
		}
		var gotPath, gotOn string
		if n, _ := fmt.Sscanf(string(b), "%s on %s", &gotPath, &gotOn); resp.StatusCode != 200 || n != 2 || gotPath != path {
			return fmt.Errorf("client %d, request %d: got %d %q, want 200 %q", i, r, resp.StatusCode, b, path+" on …")
		}
		if r == 0 {
			on = gotOn
			first()
			firsts.Wait()
		} else if gotOn != on {
			return fmt.Errorf("client %d, request %d: answered on app connection %s, the first on %s", i, r, gotOn, on)
		}
	}
	return nil
}

// TestEventLoopDialFails: a loop's dial that fails is not made again: a
// goroutine answers the request 502, as it does when its own dial fails,
// and the request's time, as counted, includes the dial's.
func TestEventLoopDialFails(t *testing.T) {
	for _, tt := range []struct {
		name    string
		control func() error
		timeout time.Duration
		// spent is the least time the request must be counted as taking.
		spent time.Duration
	}{
		{"refused", func() error { return syscall.ECONNREFUSED }, time.Second, 0},
		{"too slow", func() error { time.Sleep(300 * time.Millisecond); return nil }, 100 * time.Millisecond, 300 * time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var dials atomic.Int32
			tp := startProxyWith(t, startEcho(t), func(c *Config) { c.DialTimeout = tt.timeout }, func(p *Proxy) {
				p.pool.dialer.Control = func(string, string, syscall.RawConn) error {
					dials.Add(1)
					return tt.control()
				}
			})
			start := time.Now()
			rc := dialRaw(t, tp.addr)
			rc.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			if code, body, _ := rc.answer("GET"); code != 502 {
				t.Fatalf("got %d %q, want 502", code, body)
			}
			took := time.Since(start)
			if got := loopDials(tp); got != 1 {
				t.Errorf("dials by the loops: got %d, want 1", got)
			}
			if got := dials.Load(); got != 1 {
				t.Errorf("dials: got %d, want 1 (the loop's, not made again)", got)
			}
			tp.settle(t)
			if got := tp.counts(t)["GET 502"]; got != 1 {
				t.Errorf("GET 502 counted: got %v, want 1", got)
			}
			h := tp.metric(t, "outrider_http_request_duration_seconds").GetHistogram()
			if h.GetSampleCount() != 1 {
				t.Fatalf("duration histogram: %d samples, want 1", h.GetSampleCount())
			}
			if spent := time.Duration(h.GetSampleSum() * float64(time.Second)); spent < tt.spent || spent > took {
				t.Errorf("the request's counted time: %v; want at least the dial's %v, and at most the client's wait, %v", spent, tt.spent, took)
			}
		})
	}
}

// heldDialProxy starts a proxy whose dials to app wait until release is
// called; dialing gets a value as each dial begins to wait.
func heldDialProxy(t *testing.T, app string) (tp *testProxy, dialing <-chan struct{}, release func()) {
	ch := make(chan struct{}, 8)
	held := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(held) }) }
	tp = startProxyWith(t, app, nil, func(p *Proxy) {
		p.pool.dialer.Control = func(string, string, syscall.RawConn) error {
			ch <- struct{}{}
			<-held
			return nil
		}
	})
	// Registered after startProxyWith's cleanup, so run before it.
	t.Cleanup(release)
	return tp, ch, release
}

// TestEventLoopDrainWaitsForADial: a request whose loop is dialing for it
// when the drain begins is in flight: the drain waits for it, and it is
// answered, with "Connection: close"; when the drain runs out of time
// first, it is cut once its dial ends, and counted as its client's, gone.
func TestEventLoopDrainWaitsForADial(t *testing.T) {
	t.Run("answered", func(t *testing.T) {
		tp, dialing, release := heldDialProxy(t, pathApp(t))
		rc := dialRaw(t, tp.addr)
		rc.send("GET /late HTTP/1.1\r\nHost: a\r\n\r\n")
		<-dialing
		if got := tp.InFlight(); got != 1 {
			t.Errorf("in flight while the loop dials: got %d, want 1", got)
		}
		drained := tp.drainInBackground()
		waitFor(t, "the drain to begin", tp.Draining)
		time.Sleep(50 * time.Millisecond)
		release()
		code, body, closing := rc.answer("GET")
		if code != 200 || body != "/late" || !closing || !rc.closed() {
			t.Errorf("got %d %q close=%v, want 200 \"/late\", Connection: close, and the connection closed", code, body, closing)
		}
		if err := drainResult(t, drained, "after the answer"); err != nil {
			t.Errorf("Drain: %v", err)
		}
		if rep := tp.DrainReport(); rep.InFlight != 1 || rep.Finished != 1 || rep.Cut != 0 {
			t.Errorf("drain report: %+v, want 1 in flight at the start, 1 finished, none cut", rep)
		}
	})
	t.Run("cut", func(t *testing.T) {
		tp, dialing, release := heldDialProxy(t, pathApp(t))
		rc := dialRaw(t, tp.addr)
		rc.send("GET /late HTTP/1.1\r\nHost: a\r\n\r\n")
		<-dialing
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if err := tp.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Drain: got %v, want the deadline", err)
		}
		if rep := tp.DrainReport(); rep.Cut != 1 {
			t.Errorf("drain report: %+v, want 1 request cut", rep)
		}
		release()
		if !rc.closed() {
			t.Error("the cut connection got an answer or stayed open")
		}
		waitFor(t, "the cut request to be counted", func() bool { return tp.counts(t)["GET 499"] == 1 })
		waitFor(t, "the cut connection to be forgotten", func() bool { return tp.Status().Connections == 0 })
		if g := tp.metric(t, "outrider_http_requests_in_flight").GetGauge().GetValue(); g != 0 {
			t.Errorf("in flight after the cut: %v, want 0", g)
		}
	})
}
