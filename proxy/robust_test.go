package proxy

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outrider-sidecar/outrider/internal/testlog"
)

// flakyListener fails the next fail accepts with EMFILE, as a process out
// of file descriptors does.
type flakyListener struct {
	net.Listener
	fail atomic.Int32
}

func (l *flakyListener) Accept() (net.Conn, error) {
	for n := l.fail.Load(); n > 0; n = l.fail.Load() {
		if l.fail.CompareAndSwap(n, n-1) {
			return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", syscall.EMFILE)}
		}
	}
	return l.Listener.Accept()
}

func TestAcceptErrorsAreRetried(t *testing.T) {
	app := startEcho(t)
	logs := &testlog.Buffer{}
	reg := prometheus.NewRegistry()
	p, err := New(Config{Upstream: app, Log: slog.New(slog.NewTextHandler(logs, nil))}, reg)
	if err != nil {
		t.Fatal(err)
	}
	const quiet = 50 * time.Millisecond
	p.acceptQuiet = quiet
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &flakyListener{Listener: inner}
	ln.fail.Store(5)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()
	tp := &testProxy{Proxy: p, addr: inner.Addr().String(), reg: reg}
	// recoverEpisode serves requests, one connection each, until the episode is
	// logged as over: accepts went the quiet time without failing.
	recoverEpisode := func(episodes int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for logs.Count("proxy accepting connections again") < episodes {
			if time.Now().After(deadline) {
				t.Fatalf("episode %d never logged as over:\n%s", episodes, logs.String())
			}
			getClose(t, tp.addr)
			time.Sleep(quiet / 5)
		}
	}
	// Two episodes of failures, each followed by requests served. The
	// second starts after the accept already waiting takes one.
	getClose(t, tp.addr)
	recoverEpisode(1)
	ln.fail.Store(7)
	getClose(t, tp.addr)
	recoverEpisode(2)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if got := tp.metric(t, "outrider_proxy_accept_errors_total").GetCounter().GetValue(); got != 12 {
		t.Errorf("outrider_proxy_accept_errors_total: got %v, want 12", got)
	}
	out := logs.String()
	if n := strings.Count(out, "proxy cannot accept connections"); n != 2 {
		t.Errorf("episode start logged %d times, want once per episode (2):\n%s", n, out)
	}
	if n := strings.Count(out, "proxy accepting connections again"); n != 2 {
		t.Errorf("episode end logged %d times, want 2:\n%s", n, out)
	}
	if !strings.Contains(out, "too many open files") {
		t.Errorf("the log does not name the error:\n%s", out)
	}
}

func TestMaxConns(t *testing.T) {
	app := startEcho(t)
	tp := startProxy(t, app, func(c *Config) { c.MaxConns = 2 })
	var open []*rawConn
	for range 2 {
		rc := dialRaw(t, tp.addr)
		rc.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		io.Copy(io.Discard, rc.response("GET").Body)
		open = append(open, rc)
	}
	over := dialRaw(t, tp.addr)
	over.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if b, err := io.ReadAll(over.br); len(b) != 0 {
		t.Fatalf("a connection over the bound: got %q (%v), want it closed unanswered", b, err)
	}
	if got := tp.metric(t, "outrider_proxy_connections_rejected_total").GetCounter().GetValue(); got != 1 {
		t.Errorf("outrider_proxy_connections_rejected_total: got %v, want 1", got)
	}
	if st := tp.Status(); st.Connections != 2 || st.MaxConns != 2 {
		t.Errorf("status: got %d connections of at most %d, want 2 of 2", st.Connections, st.MaxConns)
	}
	// Once one leaves, a new one is served.
	open[0].nc.Close()
	deadline := time.Now().Add(10 * time.Second)
	for tp.Status().Connections > 1 {
		if time.Now().After(deadline) {
			t.Fatal("the closed connection was never forgotten")
		}
		time.Sleep(5 * time.Millisecond)
	}
	rc := dialRaw(t, tp.addr)
	rc.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp := rc.response("GET"); resp.StatusCode != 200 {
		t.Errorf("after one left: got %d, want 200", resp.StatusCode)
	}
}

// blockingProxy is a proxy whose dials all wait until the test ends;
// blocked reports each dial as it starts waiting.
func blockingProxy(t *testing.T, upstream string, tweak func(*Config)) (tp *testProxy, blocked chan struct{}) {
	blocked = make(chan struct{}, 64)
	release := make(chan struct{})
	tp = startProxyWith(t, upstream, tweak, func(p *Proxy) {
		p.pool.dialer.Control = func(string, string, syscall.RawConn) error {
			blocked <- struct{}{}
			<-release
			return nil
		}
	})
	// Registered after startProxyWith's cleanup, so run before it.
	t.Cleanup(func() { close(release) })
	return tp, blocked
}

// fillDialSlots starts maxDials requests that wait in their dials.
func fillDialSlots(t *testing.T, tp *testProxy, blocked chan struct{}) {
	for range maxDials {
		rc := dialRaw(t, tp.addr)
		rc.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	}
	for range maxDials {
		select {
		case <-blocked:
		case <-time.After(10 * time.Second):
			t.Fatal("the dials did not start")
		}
	}
}

func TestWaitForTheAppIsBounded(t *testing.T) {
	app := startEcho(t)
	t.Run("a full budget answers 503 with Retry-After", func(t *testing.T) {
		tp, blocked := blockingProxy(t, app, func(c *Config) { c.DialTimeout = 300 * time.Millisecond })
		fillDialSlots(t, tp, blocked)
		rc := dialRaw(t, tp.addr)
		start := time.Now()
		rc.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		resp := rc.response("GET")
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" {
			t.Errorf("got %d Retry-After %q, want 503 Retry-After 1", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("the answer took %v, want about the dial timeout", took)
		}
	})
	t.Run("a client that leaves ends its wait", func(t *testing.T) {
		tp, blocked := blockingProxy(t, app, func(c *Config) {
			c.DialTimeout = time.Minute
			c.ClientCheckInterval = 20 * time.Millisecond
		})
		fillDialSlots(t, tp, blocked)
		rc := dialRaw(t, tp.addr)
		rc.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		for tp.InFlight() < maxDials+1 {
			time.Sleep(time.Millisecond)
		}
		rc.nc.Close()
		deadline := time.Now().Add(10 * time.Second)
		for tp.counts(t)["GET 499"] != 1 {
			if time.Now().After(deadline) {
				t.Fatalf("counts: got %v, want one GET 499 while the dial slots are still full", tp.counts(t))
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	t.Run("a drain ends the wait", func(t *testing.T) {
		tp, blocked := blockingProxy(t, app, func(c *Config) {
			c.DialTimeout = time.Minute
			c.ClientCheckInterval = 20 * time.Millisecond
		})
		fillDialSlots(t, tp, blocked)
		rc := dialRaw(t, tp.addr)
		rc.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		for tp.InFlight() < maxDials+1 {
			time.Sleep(time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		go tp.Drain(ctx)
		if resp := rc.response("GET"); resp.StatusCode != 503 || !resp.Close {
			t.Errorf("got %d (close %v), want 503 and the connection closed", resp.StatusCode, resp.Close)
		}
	})
}

func TestAppAnswersWhileTheBodyIsRead(t *testing.T) {
	// The app answers before reading a body the client is slow to send:
	// the answer must reach the client at once, not after the body read's
	// timeout (the client check used to wait behind that read).
	app := fakeApp(t, func(nc net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		// Long enough for the proxy to check on its client a few times.
		<-time.After(200 * time.Millisecond)
		io.WriteString(nc, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbig\n")
	})
	tp := startProxy(t, app, func(c *Config) {
		c.IOTimeout = 30 * time.Second
		c.ClientCheckInterval = 20 * time.Millisecond
	})
	rc := dialRaw(t, tp.addr)
	start := time.Now()
	rc.send("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n" + strings.Repeat("x", 20000))
	resp := rc.response("POST")
	if resp.StatusCode != 413 {
		t.Errorf("got %d, want the app's 413", resp.StatusCode)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the answer took %v: it waited for the body read's timeout", took)
	}
}

// TestAppStopsReadingTheBody: an app that stops reading a request body,
// and so never answers, has its connection closed once a write to it has
// been blocked for IOTimeout: the client gets a 502 then, not an answer
// that never comes for as long as it waits, and the request is counted.
func TestAppStopsReadingTheBody(t *testing.T) {
	for _, tc := range []struct{ name, head string }{
		{"length", "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000000\r\n\r\n"},
		{"chunked", "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3b9aca00\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			answered, appSaw := make(chan struct{}), make(chan error, 1)
			var once sync.Once
			answer := func() { once.Do(func() { close(answered) }) }
			defer answer()
			app := fakeApp(t, func(nc net.Conn, br *bufio.Reader) {
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				// Neither read nor answer until the client has its answer,
				// then see whether the proxy closed this connection.
				select {
				case <-answered:
				case <-time.After(20 * time.Second):
				}
				_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, err := io.Copy(io.Discard, br)
				appSaw <- err
			})
			tp := startProxy(t, app, func(c *Config) {
				c.IOTimeout = 300 * time.Millisecond
				c.ClientCheckInterval = 20 * time.Millisecond
			})
			rc := dialRaw(t, tp.addr)
			rc.send(tc.head)
			sent := make(chan struct{})
			go func() {
				defer close(sent)
				b := bytes.Repeat([]byte("x"), 64<<10)
				for {
					if _, err := rc.nc.Write(b); err != nil {
						return
					}
				}
			}()
			_ = rc.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp := rc.response("POST")
			answer()
			b, _ := io.ReadAll(resp.Body)
			if want := "app stopped reading the request"; resp.StatusCode != 502 || !strings.Contains(string(b), want) {
				t.Errorf("got %d %q, want 502 saying %q", resp.StatusCode, b, want)
			}
			rc.nc.Close()
			<-sent
			if err := <-appSaw; isTimeout(err) {
				t.Error("the app connection is still open")
			}
			tp.settle(t)
			if got := tp.counts(t); got["POST 502"] != 1 || len(got) != 1 {
				t.Errorf("counts: got %v, want one POST 502", got)
			}
		})
	}
}

// TestClientStallsItsBody: a client that sends nothing of its request
// body for IOTimeout gets a 408 and its connection closed, and the request
// is counted 408; it was answered 502, "app closed the connection", and
// counted as the app's failure, which showed in the 5xx ratio. An answer
// the app had started is cut, and counted 408 too.
func TestClientStallsItsBody(t *testing.T) {
	for _, tc := range []struct {
		name, head  string
		answerFirst bool
		wantCode    int
	}{
		{"length", "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n0123456789", false, 408},
		{"chunked", "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n0123456789", false, 408},
		{"answer started", "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n0123456789", true, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := fakeApp(t, func(nc net.Conn, br *bufio.Reader) {
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				if tc.answerFirst {
					_, _ = io.WriteString(nc, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
				}
				_, _ = io.Copy(io.Discard, req.Body)
			})
			tp := startProxy(t, app, func(c *Config) {
				c.IOTimeout = 300 * time.Millisecond
				c.ClientCheckInterval = 20 * time.Millisecond
			})
			rc := dialRaw(t, tp.addr)
			rc.send(tc.head)
			_ = rc.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp := rc.response("POST")
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantCode {
				t.Errorf("got %d %q, want %d", resp.StatusCode, b, tc.wantCode)
			}
			if want := "408 Request Timeout"; tc.wantCode == 408 && resp.Status != want {
				t.Errorf("status line: got %q, want %q", resp.Status, want)
			}
			if !rc.closed() {
				t.Error("the client connection is still open")
			}
			if got := tp.metric(t, "outrider_http_requests_in_flight").GetGauge().GetValue(); got != 0 {
				t.Errorf("in flight: got %v, want 0", got)
			}
			tp.settle(t)
			if got := tp.counts(t); got["POST 408"] != 1 || len(got) != 1 {
				t.Errorf("counts: got %v, want one POST 408", got)
			}
		})
	}
}

// headApp answers every request with its own head as the body.
func headApp(t *testing.T) string {
	return fakeApp(t, func(nc net.Conn, br *bufio.Reader) {
		for {
			var head bytes.Buffer
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				head.WriteString(line)
				if line == "\r\n" {
					break
				}
			}
			fmt.Fprintf(nc, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", head.Len(), head.Bytes())
		}
	})
}

func TestUnderscoreHeaders(t *testing.T) {
	req := "GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 6.6.6.6\r\nTransfer_Encoding: chunked\r\nX-Fine: 1\r\n\r\n"
	cases := []struct {
		name        string
		keep        bool
		wantPresent bool
		wantDropped float64
	}{
		{name: "dropped by default", keep: false, wantPresent: false, wantDropped: 2},
		{name: "kept when asked", keep: true, wantPresent: true, wantDropped: 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tp := startProxy(t, headApp(t), func(c *Config) { c.KeepUnderscoreHeaders = tc.keep })
			rc := dialRaw(t, tp.addr)
			rc.send(req)
			b, _ := io.ReadAll(rc.response("GET").Body)
			got := string(b)
			for _, name := range []string{"X_Forwarded_For", "Transfer_Encoding"} {
				if strings.Contains(got, name) != tc.wantPresent {
					t.Errorf("%s reached the app: %v, want %v; the app got:\n%s", name, !tc.wantPresent, tc.wantPresent, got)
				}
			}
			if !strings.Contains(got, "X-Fine: 1") {
				t.Errorf("the app did not get X-Fine:\n%s", got)
			}
			if v := tp.metric(t, "outrider_proxy_header_fields_dropped_total").GetCounter().GetValue(); v != tc.wantDropped {
				t.Errorf("outrider_proxy_header_fields_dropped_total: got %v, want %v", v, tc.wantDropped)
			}
		})
	}
}

func TestAbsoluteFormTarget(t *testing.T) {
	tp := startProxy(t, headApp(t), nil)
	cases := []struct {
		name      string
		method    string // GET if empty
		target    string
		wantCode  int
		wantLines []string
	}{
		{name: "path and query", target: "http://shop.test:8080/cart?id=1", wantCode: 200,
			wantLines: []string{"GET /cart?id=1 HTTP/1.1", "Host: shop.test:8080", "X-Forwarded-Host: shop.test:8080"}},
		{name: "no path", target: "HTTP://shop.test", wantCode: 200,
			wantLines: []string{"GET / HTTP/1.1", "Host: shop.test", "X-Forwarded-Host: shop.test"}},
		{name: "query only", target: "https://shop.test?x", wantCode: 200,
			wantLines: []string{"GET /?x HTTP/1.1", "Host: shop.test"}},
		// RFC 9112 3.2.4: OPTIONS without a path asks about the server.
		{name: "OPTIONS no path", method: "OPTIONS", target: "http://shop.test:8080", wantCode: 200,
			wantLines: []string{"OPTIONS * HTTP/1.1", "Host: shop.test:8080"}},
		{name: "OPTIONS root", method: "OPTIONS", target: "http://shop.test/", wantCode: 200,
			wantLines: []string{"OPTIONS / HTTP/1.1"}},
		{name: "OPTIONS query only", method: "OPTIONS", target: "http://shop.test?x", wantCode: 200,
			wantLines: []string{"OPTIONS /?x HTTP/1.1"}},
		{name: "userinfo", target: "http://user:pw@shop.test/", wantCode: 400},
		{name: "no authority", target: "http:///x", wantCode: 400},
		{name: "other scheme", target: "ftp://shop.test/", wantCode: 400},
		{name: "relative", target: "cart", wantCode: 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			method := cmp.Or(tc.method, "GET")
			rc := dialRaw(t, tp.addr)
			rc.send(method + " " + tc.target + " HTTP/1.1\r\nHost: ignored.test\r\n\r\n")
			resp := rc.response(method)
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("got %d %q, want %d", resp.StatusCode, b, tc.wantCode)
			}
			lines := strings.Split(string(b), "\r\n")
			for _, want := range tc.wantLines {
				found := false
				for _, l := range lines {
					found = found || l == want
				}
				if !found {
					t.Errorf("the app did not get %q; it got:\n%s", want, b)
				}
			}
			if tc.wantCode == 200 && strings.Contains(string(b), "ignored.test") {
				t.Errorf("the Host field reached the app beside the target's:\n%s", b)
			}
		})
	}
}

// TestAsteriskFormTarget: "*" is the target of a server-wide OPTIONS
// alone (RFC 9112 3.2.4); with any other method it is refused 400 before
// the app, and counted by its method, as other malformed targets are.
func TestAsteriskFormTarget(t *testing.T) {
	tp := startProxy(t, headApp(t), nil)
	cases := []struct {
		method, label string
		wantCode      int
	}{
		{"OPTIONS", "OPTIONS", 200},
		{"GET", "GET", 400},
		{"HEAD", "HEAD", 400},
		{"POST", "POST", 400},
		{"DELETE", "DELETE", 400},
		{"PROPFIND", "OTHER", 400},
	}
	want := map[string]float64{}
	for _, tc := range cases {
		t.Run(tc.method, func(t *testing.T) {
			rc := dialRaw(t, tp.addr)
			rc.send(tc.method + " * HTTP/1.1\r\nHost: a\r\n\r\n")
			resp := rc.response(tc.method)
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("got %d %q, want %d", resp.StatusCode, b, tc.wantCode)
			}
			if tc.wantCode == 200 && !strings.HasPrefix(string(b), "OPTIONS * HTTP/1.1\r\n") {
				t.Errorf("the app got:\n%s\nwant OPTIONS *", b)
			}
			if tc.wantCode == 400 && !rc.closed() {
				t.Errorf("connection: got open, want closed")
			}
		})
		want[fmt.Sprintf("%s %d", tc.label, tc.wantCode)]++
	}
	tp.settle(t)
	if got := tp.counts(t); !maps.Equal(got, want) {
		t.Errorf("counts: got %v, want %v", got, want)
	}
}

func TestTunnelIdleTimeout(t *testing.T) {
	// The app's ticks come five times as often as the idle timeout: a
	// tick that reaches the proxy's relay 800 ms late on a loaded machine
	// still keeps the tunnel open. (A tick every 100 ms with a timeout of
	// 300 ms left 200 ms, which a loaded machine sometimes took: the
	// tunnel closed before the first tick went through.)
	const (
		ticks = 8
		every = 200 * time.Millisecond
		idle  = time.Second
	)
	var appDone sync.WaitGroup
	appDone.Add(1)
	app := fakeApp(t, func(nc net.Conn, br *bufio.Reader) {
		defer appDone.Done()
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(nc, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n")
		// Bytes one way only, more often than the idle timeout and for
		// longer than it, then silence.
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := range ticks {
			<-tick.C
			if _, err := fmt.Fprintf(nc, "tick %d\n", i); err != nil {
				return
			}
		}
		io.Copy(io.Discard, nc)
	})
	tp := startProxy(t, app, func(c *Config) { c.TunnelIdleTimeout = idle })
	rc := dialRaw(t, tp.addr)
	rc.send("GET /t HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n")
	if resp := rc.response("GET"); resp.StatusCode != 101 {
		t.Fatalf("got %d, want 101", resp.StatusCode)
	}
	// The tunnel is counted once its relay starts, a moment after the 101.
	deadline := time.Now().Add(5 * time.Second)
	for tp.Status().Tunnels != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("status while open: got %d tunnels, want 1", tp.Status().Tunnels)
		}
		time.Sleep(time.Millisecond)
	}
	for i := range ticks {
		line, err := rc.br.ReadString('\n')
		if want := fmt.Sprintf("tick %d\n", i); err != nil || line != want {
			t.Fatalf("got %q (%v), want %q: the tunnel closed while bytes went through it", line, err, want)
		}
	}
	quiet := time.Now()
	if b, err := io.ReadAll(rc.br); len(b) != 0 || err != nil {
		t.Fatalf("after the ticks: got %q (%v), want the tunnel closed", b, err)
	}
	if took := time.Since(quiet); took > 5*time.Second {
		t.Errorf("the idle tunnel closed after %v, want about %v", took, idle)
	}
	appDone.Wait()
	deadline = time.Now().Add(5 * time.Second)
	for tp.Status().Tunnels != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("status after the close: got %d tunnels, want 0", tp.Status().Tunnels)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A tunnel passes a half-close on: a protocol that ends its input with a
// FIN gets its answer, as it would from the app directly.
func TestTunnelHalfClose(t *testing.T) {
	for _, tc := range []struct {
		name string
		// clientFirst: the client half-closes and reads the app's answer;
		// else the app does, and reads what the client sends after it.
		clientFirst bool
	}{{"client half-closes", true}, {"app half-closes", false}} {
		t.Run(tc.name, func(t *testing.T) {
			app := fakeApp(t, func(nc net.Conn, br *bufio.Reader) {
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(nc, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n")
				if tc.clientFirst {
					in, _ := io.ReadAll(br)
					// The answer comes a moment after the client's FIN.
					time.Sleep(50 * time.Millisecond)
					io.WriteString(nc, "result:"+string(in))
					return
				}
				io.WriteString(nc, "question")
				nc.(*net.TCPConn).CloseWrite()
				in, _ := io.ReadAll(br)
				io.WriteString(nc, "never sent: the write side is closed")
				if string(in) != "answer" {
					t.Errorf("the app read %q after its half-close, want %q", in, "answer")
				}
			})
			tp := startProxy(t, app, nil)
			rc := dialRaw(t, tp.addr)
			rc.send("GET /t HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n")
			if resp := rc.response("GET"); resp.StatusCode != 101 {
				t.Fatalf("got %d, want 101", resp.StatusCode)
			}
			if tc.clientFirst {
				rc.send("payload")
				rc.nc.(*net.TCPConn).CloseWrite()
				if got, err := io.ReadAll(rc.br); string(got) != "result:payload" || err != nil {
					t.Errorf("after the half-close the client got %q (%v), want %q", got, err, "result:payload")
				}
			} else {
				if got, err := io.ReadAll(rc.br); string(got) != "question" || err != nil {
					t.Fatalf("the client got %q (%v), want %q and the app's FIN", got, err, "question")
				}
				rc.send("answer")
				rc.nc.(*net.TCPConn).CloseWrite()
			}
			deadline := time.Now().Add(5 * time.Second)
			for tp.Status().Tunnels != 0 {
				if time.Now().After(deadline) {
					t.Fatalf("status after both sides closed: got %d tunnels, want 0", tp.Status().Tunnels)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}

// A tunnel whose app has closed, with a client that says nothing more,
// is closed once TunnelHalfCloseTimeout has passed, not the idle timeout:
// it does not hold its goroutine, its sockets or a drain for an hour.
func TestTunnelClosedByTheAppEndsAfterTheHalfCloseTimeout(t *testing.T) {
	const halfIdle = 300 * time.Millisecond
	app := fakeApp(t, func(nc net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(nc, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\nbye")
	})
	tp := startProxy(t, app, func(c *Config) { c.TunnelIdleTimeout = time.Hour; c.TunnelHalfCloseTimeout = halfIdle })
	rc := dialRaw(t, tp.addr)
	// Taken before the request: the proxy may see the app's close, and
	// start the timeout, well before this goroutine reads the 101.
	start := time.Now()
	rc.send("GET /t HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n")
	if resp := rc.response("GET"); resp.StatusCode != 101 {
		t.Fatalf("got %d, want 101", resp.StatusCode)
	}
	if got, err := io.ReadAll(rc.br); string(got) != "bye" || err != nil {
		t.Fatalf("the client got %q (%v), want %q and the end", got, err, "bye")
	}
	// The client stays silent and open.
	deadline := time.Now().Add(10 * time.Second)
	for tp.Status().Tunnels != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the tunnel is still open %v after the request, the app closing it at once", time.Since(start))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if took := time.Since(start); took < halfIdle/2 {
		t.Errorf("the tunnel closed %v after the request, the app closing it at once: before the half-close timeout %v", took, halfIdle)
	}
	if _, err := rc.nc.Write([]byte("x")); err == nil {
		time.Sleep(50 * time.Millisecond)
		if _, err := rc.nc.Write([]byte("x")); err == nil {
			t.Error("the client can still write into the closed tunnel")
		}
	}
}

func TestUnreadBodyIsNotTakenForRequests(t *testing.T) {
	// The app answers at once without reading a large body, as an app
	// refusing an upload does. The rest of the body the client sends is
	// body, never the next request: the client gets the one answer and
	// then its connection closed, and the requests hidden in the body
	// never reach the app.
	block := strings.Repeat("a", 8000) + " /smuggled HTTP/1.1\r\nHost: s\r\n\r\n"
	for _, tc := range []struct {
		name, head string
		body       func(w io.Writer)
	}{
		{"content-length", fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", 4000*len(block)),
			func(w io.Writer) {
				for range 4000 {
					if _, err := io.WriteString(w, block); err != nil {
						return
					}
				}
			}},
		{"chunked", "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
			func(w io.Writer) {
				for range 4000 {
					if _, err := fmt.Fprintf(w, "%x\r\n%s\r\n", len(block), block); err != nil {
						return
					}
				}
				io.WriteString(w, "0\r\n\r\n")
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var paths []string
			hold := make(chan struct{})
			defer close(hold)
			app := fakeApp(t, func(nc net.Conn, br *bufio.Reader) {
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					mu.Lock()
					paths = append(paths, req.URL.Path)
					mu.Unlock()
					io.WriteString(nc, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
					if req.URL.Path == "/upload" {
						// Keep the connection open and its body unread.
						<-hold
						return
					}
				}
			})
			tp := startProxy(t, app, nil)
			rc := dialRaw(t, tp.addr)
			go func() {
				io.WriteString(rc.nc, tc.head)
				tc.body(rc.nc)
			}()
			if resp := rc.response("POST"); resp.StatusCode != 404 {
				t.Fatalf("got %d, want the app's 404", resp.StatusCode)
			}
			rc.nc.SetReadDeadline(time.Now().Add(20 * time.Second))
			rest, err := io.ReadAll(rc.br)
			if len(rest) != 0 || isTimeout(err) {
				t.Errorf("after the answer the client got %q (%v), want its connection closed", trim(rest), err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(paths) != 1 {
				t.Errorf("the app got %d requests, the first %v, want only /upload", len(paths), paths[:min(len(paths), 3)])
			}
			tp.settle(t)
			if got := tp.counts(t); len(got) != 1 || got["POST 404"] != 1 {
				t.Errorf("counts = %v, want one POST 404", got)
			}
		})
	}
}

// trim shortens b for a failure message.
func trim(b []byte) []byte {
	if len(b) > 200 {
		return b[:200]
	}
	return b
}

// TestHalfClosedClient: a client that sends its request and shuts down its
// side gets the whole answer, and then the end of the connection, whether
// the request was the connection's first (a goroutine's) or followed an
// exchange (an event loop's, where the end can come in the same event as
// the request).
func TestHalfClosedClient(t *testing.T) {
	tp := startProxy(t, startEcho(t), nil)
	for _, first := range []bool{true, false} {
		t.Run(fmt.Sprintf("first request %v", first), func(t *testing.T) {
			rc := dialRaw(t, tp.addr)
			_ = rc.nc.SetDeadline(time.Now().Add(5 * time.Second))
			if !first {
				rc.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
				resp := rc.response("GET")
				io.Copy(io.Discard, resp.Body)
				// Time for the connection to go to its event loop.
				time.Sleep(50 * time.Millisecond)
			}
			rc.send("GET /slow?delay=100ms HTTP/1.1\r\nHost: a\r\n\r\n")
			if err := rc.nc.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			resp := rc.response("GET")
			b, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != 200 || string(b) != "slept 100ms\n" {
				t.Fatalf("answer: got %d %q (%v), want 200 \"slept 100ms\\n\"", resp.StatusCode, b, err)
			}
			if rest, err := io.ReadAll(rc.br); err != nil || len(rest) != 0 {
				t.Errorf("after the answer: got %q, %v; want the connection closed", rest, err)
			}
		})
	}
}

// TestAnswerBeforeTheBodyCloses: an app that answers before the client
// sent the whole body (a refused upload, a client that waits for
// "100 Continue" and gets a final answer, a chunked body after its first
// chunk, whose end is not the body's) ends the client's connection:
// what the client still sends is body, not a next request. The answer says
// so with "Connection: close", or the client would send its next request
// on a connection about to close.
func TestAnswerBeforeTheBodyCloses(t *testing.T) {
	app := fakeApp(t, func(nc net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if req.ContentLength < 0 {
			// A chunked body: answer once its first chunk came, whose end
			// is not the body's.
			if _, err := io.ReadFull(req.Body, make([]byte, 5)); err != nil {
				return
			}
		}
		io.WriteString(nc, "HTTP/1.1 401 Unauthorized\r\nContent-Length: 5\r\n\r\nwho?\n")
		// Keep the app's side open: the proxy decides.
		time.Sleep(2 * time.Second)
	})
	tp := startProxy(t, app, nil)
	cases := []struct{ name, req string }{
		{"part of the body sent", "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n" + strings.Repeat("x", 1000)},
		{"waiting for 100 Continue", "POST /upload HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 100000\r\n\r\n"},
		{"the first chunk of a chunked body sent", "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rc := dialRaw(t, tp.addr)
			_ = rc.nc.SetDeadline(time.Now().Add(10 * time.Second))
			rc.send(tc.req)
			resp := rc.response("POST")
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 401 || string(b) != "who?\n" || !resp.Close {
				t.Errorf("got %d %q close=%v, want the app's 401 with Connection: close", resp.StatusCode, b, resp.Close)
			}
			if rest, err := io.ReadAll(rc.br); err != nil || len(rest) != 0 {
				t.Errorf("after the answer: got %q, %v; want the connection closed", rest, err)
			}
		})
	}
}

// TestResponseTrailers: response trailers are passed on, but not fields
// that frame a message or belong to one connection (RFC 9110, section
// 6.5.1), nor those the answer's Connection names (RFC 9110 7.6.1): a
// client that merged a trailing Content-Length or Connection into the
// header section would act on it.
func TestResponseTrailers(t *testing.T) {
	for _, tc := range []struct {
		name, answer string
		want         http.Header
	}{
		{"framing and connection fields",
			"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n3\r\nabc\r\n0\r\n" +
				"X-Sum: 1\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\nConnection: close\r\nKeep-Alive: timeout=1\r\n" +
				"Trailer: X-More\r\nHost: elsewhere\r\nUpgrade: websocket\r\nProxy-Connection: close\r\nTE: trailers\r\nX-After: 2\r\n\r\n",
			http.Header{"X-Sum": {"1"}, "X-After": {"2"}}},
		{"fields the Connection of the answer names",
			"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nConnection: x-hidden\r\n" +
				"X-Secret: head\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n" +
				"X-Sum: 1\r\nx-secret: trailer\r\nX-Hidden: trailer\r\n\r\n",
			http.Header{"X-Sum": {"1"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := fakeApp(t, func(nc net.Conn, br *bufio.Reader) {
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(nc, tc.answer)
			})
			tp := startProxy(t, app, nil)
			rc := dialRaw(t, tp.addr)
			rc.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			resp := rc.response("GET")
			b, err := io.ReadAll(resp.Body)
			if err != nil || string(b) != "abc" {
				t.Fatalf("body: got %q, %v; want \"abc\"", b, err)
			}
			if v, ok := resp.Header["X-Secret"]; ok {
				t.Errorf("X-Secret reached the client in the head: %v", v)
			}
			if !reflect.DeepEqual(resp.Trailer, tc.want) {
				t.Errorf("trailers: got %v, want %v", resp.Trailer, tc.want)
			}
		})
	}
}

// TestAnswerBeforeTheBodyLingers: after an answer that came before the
// client sent its whole body, the proxy shuts its side down and reads on
// for a moment before it closes, as after its own error answers: closing
// with the client's body still coming would reset the connection, and a
// reset can destroy the answer before the client reads it.
func TestAnswerBeforeTheBodyLingers(t *testing.T) {
	app := fakeApp(t, func(nc net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(nc, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 4\r\n\r\nbig\n")
		time.Sleep(2 * time.Second)
	})
	tp := startProxy(t, app, nil)
	rc := dialRaw(t, tp.addr)
	_ = rc.nc.SetDeadline(time.Now().Add(10 * time.Second))
	rc.send("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\n" + strings.Repeat("x", 1000))
	resp := rc.response("POST")
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 413 || string(b) != "big\n" {
		t.Fatalf("got %d %q, want the app's 413", resp.StatusCode, b)
	}
	// The client goes on sending its body for a moment, as clients that
	// read the answer only once they sent the body do.
	if _, err := rc.nc.Write([]byte(strings.Repeat("x", 64<<10))); err != nil {
		t.Fatalf("write after the answer: %v", err)
	}
	time.Sleep(100 * time.Millisecond)
	// A socket closed with bytes coming answers them with a reset, which
	// the next write sees.
	if _, err := rc.nc.Write([]byte(strings.Repeat("x", 1024))); err != nil {
		t.Errorf("write 100 ms after the answer: %v; want the proxy still reading", err)
	}
	if rest, err := io.ReadAll(rc.br); err != nil || len(rest) != 0 {
		t.Errorf("after the answer: got %q, %v; want the end of the stream, not a reset", rest, err)
	}
}

// TestAnswerBeforeTheBodyToAClientSendingItWhole: a client that sends its
// whole body before it reads the answer (Python's http.client and
// requests, Java's HttpURLConnection) gets an answer that came first,
// however long the body, as long as it keeps sending: the proxy reads the
// rest before it closes. It read 256 KiB at most, then closed with the
// body still coming, and the reset broke the client's write: the client
// never read the 413.
func TestAnswerBeforeTheBodyToAClientSendingItWhole(t *testing.T) {
	app := fakeApp(t, func(nc net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(nc, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbig\n")
		time.Sleep(5 * time.Second)
	})
	tp := startProxy(t, app, nil)
	rc := dialRaw(t, tp.addr)
	// More than the socket buffers of both ends hold.
	const size = 64 << 20
	rc.send(fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", size))
	if _, err := rc.nc.Write(make([]byte, size)); err != nil {
		t.Fatalf("sending the body: %v; want the proxy reading it to its end", err)
	}
	resp := rc.response("POST")
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 413 || string(b) != "big\n" {
		t.Fatalf("got %d %q, want the app's 413", resp.StatusCode, b)
	}
	if !rc.closed() {
		t.Errorf("after the answer: want the end of the stream")
	}
	if got := tp.counts(t)["POST 413"]; got != 1 {
		t.Errorf("POST 413 counted %v times, want 1", got)
	}
}

// TestAnswerBeforeTheBodyToAClientNotReading: an answer that comes before
// the whole request body, to a client that reads nothing, ends when the
// write to the client times out (499), and the connection then closes at
// once: lingering for the rest of the body is for a client that reads
// its answer, and this one does not.
func TestAnswerBeforeTheBodyToAClientNotReading(t *testing.T) {
	app := fakeApp(t, func(nc net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		const size = 256 << 20
		fmt.Fprintf(nc, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", size)
		chunk := make([]byte, 1<<20)
		for range size / len(chunk) {
			if _, err := nc.Write(chunk); err != nil {
				return
			}
		}
	})
	tp := startProxy(t, app, func(c *Config) { c.IOTimeout = 300 * time.Millisecond })
	rc := dialRaw(t, tp.addr)
	rc.send("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\n" + strings.Repeat("x", 1000))
	waitFor(t, "the answer to be counted 499", func() bool { return tp.counts(t)["POST 499"] == 1 })
	// A socket closed with bytes coming answers them with a reset, which
	// the next write sees; a lingering one reads them.
	var err error
	for i := 0; i < 3 && err == nil; i++ {
		_, err = rc.nc.Write([]byte(strings.Repeat("x", 1024)))
		time.Sleep(50 * time.Millisecond)
	}
	if err == nil {
		t.Errorf("writes after the 499: all went through; want the connection closed, not lingering")
	}
}
