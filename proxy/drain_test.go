package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outrider-sidecar/outrider/internal/testbin"
)

// openTunnel upgrades a client connection to a WebSocket through tp.
func openTunnel(t *testing.T, tp *testProxy) *rawConn {
	t.Helper()
	rc := dialRaw(t, tp.addr)
	rc.send("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	if resp := rc.response("GET"); resp.StatusCode != 101 {
		t.Fatalf("handshake: got %d, want 101", resp.StatusCode)
	}
	rc.send(string(wsFrame("hello")))
	if got := readWSFrame(t, rc.br); got != "hello" {
		t.Fatalf("echo before the drain: got %q", got)
	}
	return rc
}

func TestDrainTunnels(t *testing.T) {
	t.Run("a tunnel that closes before the deadline is not cut", func(t *testing.T) {
		tp := startProxy(t, startEcho(t), nil)
		rc := openTunnel(t, tp)
		drained := tp.drainInBackground()
		// The tunnel still carries messages while the drain waits for it.
		rc.send(string(wsFrame("during")))
		if got := readWSFrame(t, rc.br); got != "during" {
			t.Errorf("echo while draining: got %q, want %q", got, "during")
		}
		select {
		case err := <-drained:
			t.Fatalf("Drain returned %v with a tunnel open", err)
		default:
		}
		rc.nc.Close()
		if err := <-drained; err != nil {
			t.Fatalf("Drain: %v", err)
		}
		if got := tp.DrainReport(); got.Cut != 0 || got.TunnelsCut != 0 {
			t.Errorf("report: got %+v, want nothing cut", got)
		}
	})
	t.Run("a tunnel open at the deadline is closed and counted", func(t *testing.T) {
		tp := startProxy(t, startEcho(t), nil)
		rc := openTunnel(t, tp)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		err := tp.Drain(ctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Drain: got %v, want the deadline", err)
		}
		if got := tp.DrainReport(); got.TunnelsCut != 1 || got.Cut != 0 {
			t.Errorf("report: got %+v, want 1 tunnel cut and no request", got)
		}
		if b, _ := io.ReadAll(rc.br); len(b) != 0 {
			t.Errorf("cut tunnel: got %q, want it closed", b)
		}
	})
}

// startProxyNotingDrain is startProxy with a channel closed once a drain
// has counted the requests in flight: a test that releases a held request
// after it knows the drain counted it.
func startProxyNotingDrain(t *testing.T, app string) (*testProxy, <-chan struct{}) {
	t.Helper()
	begun := make(chan struct{})
	tp := startProxyWith(t, app, nil, func(p *Proxy) {
		p.testHookDrainBegun = func() { close(begun) }
	})
	return tp, begun
}

func TestDrainReportsFinished(t *testing.T) {
	app, held, _, release := holdingApp(t)
	tp, begun := startProxyNotingDrain(t, app)
	busy := dialRaw(t, tp.addr)
	busy.send("GET /hold HTTP/1.1\r\nHost: a\r\n\r\n")
	<-held
	drained := make(chan error, 1)
	go func() { drained <- tp.Drain(context.Background()) }()
	// Released only once the drain has counted the request in flight:
	// released before, the request could finish before the drain began.
	<-begun
	// A second, concurrent Drain joins the first and gets its result.
	second := make(chan error, 1)
	go func() { second <- tp.Drain(context.Background()) }()
	close(release)
	if resp := busy.response("GET"); resp.StatusCode != 200 {
		t.Errorf("request in flight: got %d, want 200", resp.StatusCode)
	}
	for _, ch := range []chan error{drained, second} {
		if err := <-ch; err != nil {
			t.Errorf("Drain: %v", err)
		}
	}
	want := DrainReport{InFlight: 1, Finished: 1}
	if got := tp.DrainReport(); got != want {
		t.Errorf("report: got %+v, want %+v", got, want)
	}
}

// TestDrainHTTP2: a stream in flight on an HTTP/2 connection when the
// drain starts is answered; the connection gets GOAWAY, and the drain ends
// once the stream is done.
func TestDrainHTTP2(t *testing.T) {
	held, release := make(chan struct{}), make(chan struct{})
	app := startH2CApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			close(held)
			<-release
		}
		io.WriteString(w, "ok")
	}))
	tp, begun := startProxyNotingDrain(t, app)
	client := h2cClient(t)

	type answer struct {
		code int
		body string
		err  error
	}
	got := make(chan answer, 1)
	go func() {
		resp, err := client.Get("http://" + tp.addr + "/hold")
		if err != nil {
			got <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		got <- answer{resp.StatusCode, string(b), err}
	}()
	<-held
	drained := tp.drainInBackground()
	<-begun
	select {
	case err := <-drained:
		t.Fatalf("Drain returned %v with an HTTP/2 stream in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if a := <-got; a.err != nil || a.code != 200 || a.body != "ok" {
		t.Errorf("stream in flight: got %d %q %v, want 200 ok", a.code, a.body, a.err)
	}
	if err := <-drained; err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if rep := tp.DrainReport(); rep.Cut != 0 || rep.InFlight != 1 {
		t.Errorf("report: got %+v, want 1 in flight at the start and nothing cut", rep)
	}
}

func TestDrainWithNothingLeftAtAnExpiredDeadline(t *testing.T) {
	// A drain timeout of 0: the deadline has passed when the drain
	// begins, but nothing is in flight, so nothing is cut and the drain
	// succeeds; with the HTTP/2 server started too.
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprint("http2 started: ", h2), func(t *testing.T) {
			for range 20 {
				tp := startProxy(t, startEcho(t), nil)
				resp, err := newClient().Get("http://" + tp.addr + "/")
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if h2 {
					c := h2cClient(t)
					if resp, err := c.Get("http://" + tp.addr + "/"); err == nil {
						resp.Body.Close()
					}
					c.CloseIdleConnections()
				}
				// The answer's last byte may reach the client before the
				// proxy counts it as answered.
				for deadline := time.Now().Add(10 * time.Second); tp.InFlight() > 0 && time.Now().Before(deadline); {
					time.Sleep(time.Millisecond)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 0)
				err = tp.Drain(ctx)
				cancel()
				if err != nil {
					t.Fatalf("Drain: %v, want nil with nothing in flight", err)
				}
				if got := tp.DrainReport(); got.Cut != 0 || got.TunnelsCut != 0 {
					t.Fatalf("report: got %+v, want nothing cut", got)
				}
			}
		})
	}
}

// TestDrainFinishesBegunHeads: a request whose head had begun to come when
// the drain started is read to its end and answered, with "Connection:
// close", whether it is a connection's first or follows an exchange (a
// connection an event loop held). Only connections with nothing of a next
// request close at once.
func TestDrainFinishesBegunHeads(t *testing.T) {
	for _, first := range []bool{true, false} {
		t.Run(fmt.Sprintf("first request %v", first), func(t *testing.T) {
			tp := startProxy(t, startEcho(t), nil)
			rc := dialRaw(t, tp.addr)
			if !first {
				rc.send("GET /before HTTP/1.1\r\nHost: a\r\n\r\n")
				resp := rc.response("GET")
				io.Copy(io.Discard, resp.Body)
				// The answer reaches the client a moment before the proxy
				// waits for the next request: a drain in that moment ends
				// the connection after its exchange, unread.
				waitFor(t, "the proxy to wait for the next request", func() bool { return tp.idleConns() == 1 })
			}
			rc.send("GET /headers HTTP/1.1\r\nHost: a\r\n")
			drained := tp.drainMidway(200 * time.Millisecond)
			rc.send("X-Rest: 1\r\n\r\n")
			resp, err := http.ReadResponse(rc.br, &http.Request{Method: "GET"})
			if err != nil {
				t.Fatalf("the begun request: got %v, want an answer", err)
			}
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || !strings.Contains(string(b), "X-Rest") || !resp.Close {
				t.Errorf("the begun request: got %d %q close=%v, want 200 from the app with Connection: close", resp.StatusCode, b, resp.Close)
			}
			if err := <-drained; err != nil {
				t.Errorf("Drain: %v", err)
			}
			if got := tp.DrainReport(); got.Cut != 0 {
				t.Errorf("report: got %+v, want nothing cut", got)
			}
		})
	}
}

// TestDrainDuringKeepAliveUploads: clients that upload 64 KiB bodies one
// after another on keep-alive connections while the drain starts get
// each request they sent answered by the app, or their connection closed
// before a request: never an error for a request whose body the app was
// being sent. (The drain's poke, meant for connections waiting for their
// next request, can come when the next head was just read.)
func TestDrainDuringKeepAliveUploads(t *testing.T) {
	app := fakeApp(t, func(nc net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			n, _ := io.Copy(io.Discard, req.Body)
			s := fmt.Sprint(n)
			fmt.Fprintf(nc, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(s), s)
		}
	})
	body := strings.Repeat("x", 64<<10)
	for _, noLoop := range []bool{true, false} {
		t.Run(fmt.Sprintf("event loop off %v", noLoop), func(t *testing.T) {
			for round := range 5 {
				tp := startProxy(t, app, func(c *Config) { c.DisableEventLoop = noLoop })
				var bad atomic.Int64
				var wg sync.WaitGroup
				for range 32 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						nc, err := net.Dial("tcp", tp.addr)
						if err != nil {
							return
						}
						defer nc.Close()
						_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
						br := bufio.NewReader(nc)
						for {
							go io.WriteString(nc, "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 65536\r\n\r\n"+body)
							resp, err := http.ReadResponse(br, nil)
							if err != nil {
								return
							}
							b, _ := io.ReadAll(resp.Body)
							if resp.StatusCode != 200 || string(b) != "65536" {
								bad.Add(1)
								t.Logf("round %d: got %d %q", round, resp.StatusCode, b)
							}
							if resp.Close {
								return
							}
						}
					}()
				}
				time.Sleep(100 * time.Millisecond)
				if err := <-tp.drainInBackground(); err != nil {
					t.Errorf("Drain: %v", err)
				}
				wg.Wait()
				if n := bad.Load(); n > 0 {
					t.Fatalf("round %d: %d uploads not answered by the app", round, n)
				}
			}
		})
	}
}

// idleConns counts the client connections waiting for their next request.
func (tp *testProxy) idleConns() int {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	n := 0
	for c := range tp.conns {
		if c.state.Load() == stateIdle {
			n++
		}
	}
	return n
}

// acceptedByHand returns a proxy that serves no listener, goroutine per
// connection, and both ends of a client connection accepted for it, for
// tests that drive a connection's serving themselves.
func acceptedByHand(t *testing.T) (*Proxy, *rawConn, net.Conn) {
	t.Helper()
	p, err := New(Config{Upstream: startEcho(t), DisableEventLoop: true}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rc := dialRaw(t, ln.Addr().String())
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return p, rc, nc
}

// TestDrainServesAConnectionAdmittedBeforeIt: a connection accepted and
// admitted before the drain began, whose goroutine first runs after it
// began, has its request waiting in the socket (the listener defers
// accepts until the request comes): it is answered with "Connection:
// close", not closed unread.
func TestDrainServesAConnectionAdmittedBeforeIt(t *testing.T) {
	p, rc, nc := acceptedByHand(t)
	rc.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	c := p.newConn(nc)
	if c == nil {
		t.Fatal("the connection was not admitted")
	}
	// The drain begins before the connection's goroutine runs.
	p.draining.Store(true)
	// Time for the request to reach the socket.
	time.Sleep(50 * time.Millisecond)
	go c.serve()
	resp := rc.response("GET")
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !resp.Close {
		t.Errorf("got %d %q close=%v, want 200 with Connection: close", resp.StatusCode, b, resp.Close)
	}
	if !rc.closed() {
		t.Errorf("after the answer: got the connection open, want it closed")
	}
}

// TestDrainRefusesABegunHTTP2Preface: a connection whose HTTP/2 preface
// was still coming when the drain began gets the server's SETTINGS and a
// GOAWAY that names no stream processed (so its client retries each
// stream elsewhere), not a bare close, and then its end.
func TestDrainRefusesABegunHTTP2Preface(t *testing.T) {
	for _, noLoop := range []bool{true, false} {
		t.Run(fmt.Sprintf("event loop off %v", noLoop), func(t *testing.T) {
			tp := startProxy(t, startEcho(t), func(c *Config) { c.DisableEventLoop = noLoop })
			rc := dialRaw(t, tp.addr)
			rc.send(h2Preface[:10])
			drained := tp.drainMidway(200 * time.Millisecond)
			// The rest of the preface, the client's SETTINGS and a PING.
			rc.send(h2Preface[10:] + "\x00\x00\x00\x04\x00\x00\x00\x00\x00" +
				"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + "12345678")
			type frame struct {
				typ     byte
				payload string
			}
			var got []frame
			for {
				var fh [9]byte
				if _, err := io.ReadFull(rc.br, fh[:]); err != nil {
					break
				}
				p := make([]byte, int(fh[0])<<16|int(fh[1])<<8|int(fh[2]))
				if _, err := io.ReadFull(rc.br, p); err != nil {
					t.Fatalf("frame of type %d: %v", fh[3], err)
				}
				got = append(got, frame{fh[3], string(p)})
			}
			want := []frame{{0x4, ""}, {0x7, "\x00\x00\x00\x00\x00\x00\x00\x00"}}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("frames: got %q, want SETTINGS and GOAWAY(last stream 0, NO_ERROR), then the end", got)
			}
			if err := <-drained; err != nil {
				t.Errorf("Drain: %v", err)
			}
		})
	}
}

// TestDrainLetsALingerFinish: a connection lingering after an error
// answer to a refused head (reading what its client still sends, so that
// the answer is not lost to a reset) goes on lingering when a drain
// begins: the drain's poke is for connections waiting for a request.
func TestDrainLetsALingerFinish(t *testing.T) {
	tp := startProxy(t, startEcho(t), nil)
	rc := dialRaw(t, tp.addr)
	rc.send("GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n")
	// Well within the linger's 500 ms after the 400.
	drained := tp.drainMidway(100 * time.Millisecond)
	// A socket closed with bytes coming answers them with a reset, which
	// the next write sees.
	for i := range 3 {
		if _, err := rc.nc.Write([]byte("more of what the client was sending\r\n")); err != nil {
			t.Fatalf("write %d after the drain began: %v; want the proxy still lingering", i, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp := rc.response("GET")
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 400 {
		t.Errorf("got %d %q, want the 400", resp.StatusCode, b)
	}
	if rest, err := io.ReadAll(rc.br); err != nil || len(rest) != 0 {
		t.Errorf("after the answer: got %q, %v; want the end of the stream, not a reset", rest, err)
	}
	if err := <-drained; err != nil {
		t.Errorf("Drain: %v", err)
	}
}

// TestDrainServesConnectionsQueuedOnTheListener: connections that reached
// the listener's queue as the drain began, each with its request sent,
// are accepted and answered with "Connection: close" before the listener
// closes, not reset by its close. The listener is outrider's own, which
// hands a connection over once its request has come.
func TestDrainServesConnectionsQueuedOnTheListener(t *testing.T) {
	app := startEcho(t)
	for _, tt := range []struct {
		name        string
		noEventLoop bool
	}{
		{"event loops", false},
		{"a goroutine per connection", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			const queued = 16
			var rcs []*rawConn
			var tp *testProxy
			ln, err := Listen(context.Background(), "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			tp = startProxyOn(t, ln, app, func(c *Config) { c.DisableEventLoop = tt.noEventLoop }, func(p *Proxy) {
				p.testHookDrainBegun = func() {
					// Nothing accepts now: these wait in the queue.
					for i := range queued {
						rc := dialRaw(t, tp.addr)
						rc.send(fmt.Sprintf("GET /?n=%d HTTP/1.1\r\nHost: a\r\n\r\n", i))
						rcs = append(rcs, rc)
					}
				}
			})
			first := dialRaw(t, tp.addr)
			first.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			if resp := first.response("GET"); resp.StatusCode != 200 {
				t.Fatalf("before the drain: got %d, want 200", resp.StatusCode)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := tp.Drain(ctx); err != nil {
				t.Fatalf("Drain: %v", err)
			}
			for i, rc := range rcs {
				resp, err := http.ReadResponse(rc.br, &http.Request{Method: "GET"})
				if err != nil {
					t.Errorf("connection %d, queued as the drain began: %v, want an answer", i, err)
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 || !resp.Close {
					t.Errorf("connection %d: got %d %q close=%v, want 200 with Connection: close", i, resp.StatusCode, b, resp.Close)
				}
			}
			// The first request may still be counted in flight as the
			// drain begins; it is finished too.
			if got := tp.DrainReport(); got.Finished != queued+got.InFlight || got.Cut != 0 {
				t.Errorf("report: got %+v, want %d finished besides those in flight, and nothing cut", got, queued)
			}
		})
	}
}

// TestDrainPokeAfterAWholeHeadCame: the drain's poke that lands after a
// whole request head was buffered, and before the read loop looked at it
// (an event loop reads the head of a connection's first request before it
// hands the connection to a goroutine), has the head served at once, not
// waited on until the head's deadline and then dropped.
func TestDrainPokeAfterAWholeHeadCame(t *testing.T) {
	p, rc, nc := acceptedByHand(t)
	const head = "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
	rc.send(head)
	c := p.newConn(nc)
	if c == nil {
		t.Fatal("the connection was not admitted")
	}
	c.br = newReader(nc)
	if c.br.rc == nil {
		t.Fatal("the connection's reader has no descriptor")
	}
	waitFor(t, "the head to be buffered", func() bool {
		_ = c.br.rc.Control(func(fd uintptr) { _, _ = c.br.readFd(fd, 1<<16) })
		return len(c.br.buffered()) == len(head)
	})
	// The drain began, and poked the connection as it does an idle one;
	// its head deadline, already set, is not set again.
	p.draining.Store(true)
	c.now = time.Now()
	c.rdl = c.now.Add(p.cfg.ReadHeaderTimeout)
	_ = nc.SetReadDeadline(aLongTimeAgo)
	go c.serveLoop(true)

	_ = rc.nc.SetReadDeadline(time.Now().Add(p.cfg.ReadHeaderTimeout / 2))
	resp, err := http.ReadResponse(rc.br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatalf("the buffered request: %v, want it answered before its head deadline", err)
	}
	if resp.StatusCode != 200 || !resp.Close {
		t.Errorf("got %d close=%v, want 200 with Connection: close", resp.StatusCode, resp.Close)
	}
}

// TestCloseKeepAlives: once CloseKeepAlives is called (the drain delay),
// the next answer on a keep-alive connection says "Connection: close" and
// the connection closes after it, an error answer's too, while the proxy
// still accepts and answers new connections the same way. The client is
// told before its connection closes, so it sends nothing on it that
// could be lost.
func TestCloseKeepAlives(t *testing.T) {
	cases := []struct {
		name     string
		upstream func(t *testing.T) string
		want     int
	}{
		{"answer from the app", startEcho, 200},
		{"app unreachable", func(t *testing.T) string { return testbin.RefusingAddr(t) }, 502},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tp := startProxy(t, tc.upstream(t), nil)
			rc := dialRaw(t, tp.addr)
			rc.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			resp := rc.response("GET")
			_, _ = io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != tc.want || resp.Close {
				t.Fatalf("before: got %d, close %v; want %d kept alive", resp.StatusCode, resp.Close, tc.want)
			}
			tp.CloseKeepAlives()
			for _, c := range []*rawConn{rc, dialRaw(t, tp.addr)} {
				c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
				resp := c.response("GET")
				_, _ = io.Copy(io.Discard, resp.Body)
				if resp.StatusCode != tc.want || !resp.Close {
					t.Errorf("after CloseKeepAlives: got %d, close %v; want %d with Connection: close", resp.StatusCode, resp.Close, tc.want)
				}
				_ = c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
				if !c.closed() {
					t.Errorf("after CloseKeepAlives: the connection stayed open after its answer")
				}
			}
		})
	}
}

// TestCloseKeepAlivesHTTP2: once keep-alives are over (the drain delay),
// an HTTP/2 connection is told to go away in two steps: a GOAWAY naming
// every stream processed, with a PING; once the client answers the PING,
// a GOAWAY naming the last stream the server took, and the connection
// then closes. A stream the client sent before it read the first GOAWAY
// is served: a single GOAWAY would have named it unprocessed, and a gRPC
// client whose retry of it is refused too loses the call.
func TestCloseKeepAlivesHTTP2(t *testing.T) {
	tp, rc, first := openH2(t)
	if got := goAways(first); len(got) != 0 {
		t.Fatalf("before CloseKeepAlives: GOAWAY naming stream %v; want none", got)
	}
	tp.CloseKeepAlives()
	notice, err := readH2Frames(rc.br, isType(0x6))
	if err != nil {
		t.Fatalf("after CloseKeepAlives: frames %+v, then %v; want a GOAWAY and a PING", notice, err)
	}
	if got := goAways(notice); !reflect.DeepEqual(got, []uint32{1<<31 - 1}) {
		t.Errorf("after CloseKeepAlives: GOAWAY naming streams %v; want one, naming every stream (2^31-1)", got)
	}
	// Sent as if before the client read the GOAWAY: served.
	if got := goAways(rc.h2Answer(t, 3)); len(got) != 0 {
		t.Errorf("stream 3: GOAWAY naming streams %v with its answer; want none before the PING's answer", got)
	}
	rc.ackPing(notice[len(notice)-1])
	final, err := readH2Frames(rc.br, isType(0x7))
	if got := goAways(final); err != nil || !reflect.DeepEqual(got, []uint32{3}) {
		t.Errorf("after the PING's answer: frames %+v, then %v; want a GOAWAY naming stream 3", final, err)
	}
	_ = rc.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if rest, err := readH2Frames(rc.br, isType(0xff)); !errors.Is(err, io.EOF) {
		t.Errorf("after the GOAWAY: frames %+v, then %v; want the connection closed", rest, err)
	}
	if got := tp.counts(t); got["GET 200"] != 2 {
		t.Errorf("counts: got %v, want two GET 200", got)
	}
}

// TestDrainHTTP2ClientNotAnswering: a client that never answers the first
// GOAWAY's PING gets the server's own GOAWAY from the drain after at most
// goAwayAckWait, and the drain ends.
func TestDrainHTTP2ClientNotAnswering(t *testing.T) {
	tp, rc, _ := openH2(t)
	start := time.Now()
	drained := tp.drainInBackground()
	frames, err := readH2Frames(rc.br, func(f h2Frame) bool {
		return f.typ == 0x7 && len(f.payload) >= 4 && binary.BigEndian.Uint32(f.payload) == 1
	})
	if err != nil {
		t.Fatalf("frames %+v, then %v; want the GOAWAY naming stream 1", frames, err)
	}
	if got := goAways(frames); !reflect.DeepEqual(got, []uint32{1<<31 - 1, 1}) {
		t.Errorf("GOAWAYs naming streams %v; want every stream (2^31-1), then stream 1", got)
	}
	if d := time.Since(start); d < goAwayAckWait-100*time.Millisecond {
		t.Errorf("the second GOAWAY came after %v; want it after the wait for the PING's answer (%v)", d, goAwayAckWait)
	}
	rc.nc.Close()
	if err := drainResult(t, drained, "the HTTP/2 connection is not closed"); err != nil {
		t.Errorf("Drain: %v", err)
	}
}

// openH2 starts an h2c app that answers "ok" and the proxy in front of
// it, and returns the proxy, an HTTP/2 connection to it opened by hand,
// and the frames of the answer to GET / on stream 1.
func openH2(t *testing.T) (*testProxy, *rawConn, []h2Frame) {
	t.Helper()
	app := startH2CApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	tp := startProxy(t, app, nil)
	rc := dialRaw(t, tp.addr)
	rc.send(h2Open)
	return tp, rc, rc.h2Answer(t, 1)
}

// h2Open is what an HTTP/2 client opens with: the preface and an empty
// SETTINGS.
const h2Open = h2Preface + "\x00\x00\x00\x04\x00\x00\x00\x00\x00"

// h2Get is GET / on stream, HPACK: GET, http, /, :authority a.
func h2Get(stream byte) string {
	return "\x00\x00\x06\x01\x05\x00\x00\x00" + string(stream) + "\x82\x86\x84\x41\x01a"
}

// h2Answer sends GET / on stream and returns the frames up to the end of
// its answer.
func (rc *rawConn) h2Answer(t *testing.T, stream byte) []h2Frame {
	t.Helper()
	rc.send(h2Get(stream))
	frames, err := readH2Frames(rc.br, func(f h2Frame) bool {
		return f.stream == uint32(stream) && f.flags&0x1 != 0 // END_STREAM
	})
	if err != nil {
		t.Fatalf("stream %d: frames %+v, then %v; want its answer", stream, frames, err)
	}
	return frames
}

// ackPing answers a PING.
func (rc *rawConn) ackPing(ping h2Frame) {
	rc.send("\x00\x00\x08\x06\x01\x00\x00\x00\x00" + string(ping.payload))
}

// goAways returns the last streams the GOAWAYs among frames name.
func goAways(frames []h2Frame) (last []uint32) {
	for _, f := range frames {
		if f.typ == 0x7 && len(f.payload) >= 4 {
			last = append(last, binary.BigEndian.Uint32(f.payload))
		}
	}
	return last
}

// TestDrainLetsTheAnswerBeforeAPipelinedRequestThrough: an answer that
// the drain closes its connection after (with "Connection: close") while
// the client's next request, pipelined, waits unread reaches the client
// whole. Closing a socket with unread input resets the connection and
// throws away what of the answer the kernel had not sent yet: the client
// lost the answer to a request the app had served. The connection
// lingers instead, as after an error answer.
func TestDrainLetsTheAnswerBeforeAPipelinedRequestThrough(t *testing.T) {
	for _, noLoop := range []bool{true, false} {
		t.Run(fmt.Sprintf("event loop off %v", noLoop), func(t *testing.T) {
			held, release := make(chan struct{}, 1), make(chan struct{})
			// More than the sockets between the proxy and the client hold.
			const n = 8 << 20
			app := fakeApp(t, func(nc net.Conn, br *bufio.Reader) {
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					held <- struct{}{}
					<-release
					fmt.Fprintf(nc, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", n, strings.Repeat("a", n))
				}
			})
			tp := startProxy(t, app, func(c *Config) { c.DisableEventLoop = noLoop })
			nc := dialSmallReceive(t, tp.addr)
			io.WriteString(nc, "POST /first HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx")
			<-held
			// Sent while the first waits for its answer: unread in the
			// proxy's socket.
			io.WriteString(nc, "GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
			drained := tp.drainInBackground()
			for !tp.Draining() {
				time.Sleep(time.Millisecond)
			}
			resp, body, err := tp.answerBeforeTheClose(t, nc, "POST", func() { close(release) })
			if err != nil || len(body) != n || !resp.Close {
				t.Errorf("answer to the first request: got %d bytes of %d, then %v, close=%v; want all of it with Connection: close, then the end", len(body), n, err, resp.Close)
			}
			nc.Close()
			if err := drainResult(t, drained, "the connection lingers"); err != nil {
				t.Errorf("Drain: %v", err)
			}
		})
	}
}

// TestDrainTellsAnHTTP2ConnectionHandedOverAsItBegan: an HTTP/2
// connection the server took in just as the drain began (accepted, not
// yet registered with the HTTP/2 server when the drain sent its GOAWAYs)
// is told to go away by its first answer: the request it sent is served,
// a GOAWAY follows whose last stream is that request's, and the drain ends
// without waiting for its deadline. Without it the connection went on
// taking new streams, untold, until the deadline closed it under whatever
// its client had sent last.
func TestDrainTellsAnHTTP2ConnectionHandedOverAsItBegan(t *testing.T) {
	var (
		tp            *testProxy
		toldFirst     = make(chan struct{})
		drained       = make(chan error, 1)
		news          atomic.Int32
		firstIsServed = make(chan struct{})
	)
	const timeout = 5 * time.Second
	app := startH2CApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	tp = startProxyWith(t, app, nil, func(p *Proxy) {
		hook := p.h2.srv.ConnState
		p.h2.srv.ConnState = func(nc net.Conn, st http.ConnState) {
			hook(nc, st)
			if st != http.StateNew || news.Add(1) != 2 {
				return
			}
			// The second connection is accepted: the drain begins before
			// the server goes on with it, and sends its GOAWAYs (the
			// first connection's shows they went out).
			<-firstIsServed
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				defer cancel()
				drained <- p.Drain(ctx)
			}()
			select {
			case <-toldFirst:
			case <-time.After(timeout):
				t.Error("the first connection got no GOAWAY")
			}
		}
	})
	first := dialRaw(t, tp.addr)
	first.send(h2Open)
	// The server's SETTINGS: the connection is the HTTP/2 server's.
	if f, err := readH2Frames(first.br, isType(0x4)); err != nil || len(f) != 1 {
		t.Fatalf("first connection: got frames %+v, %v; want SETTINGS", f, err)
	}
	go func() {
		if _, err := readH2Frames(first.br, isType(0x7)); err == nil {
			close(toldFirst)
		}
	}()
	close(firstIsServed)
	second := dialRaw(t, tp.addr)
	second.send(h2Open + h2Get(1))
	start := time.Now()
	// The frames up to the end of the answer to stream 1.
	frames, err := readH2Frames(second.br, func(f h2Frame) bool {
		return f.stream == 1 && f.flags&0x1 != 0 // END_STREAM
	})
	if err != nil {
		t.Fatalf("second connection: frames %+v, then %v; want the answer to stream 1", frames, err)
	}
	// Told as it was handed over: a GOAWAY naming every stream and a
	// PING; once the PING is answered, a GOAWAY naming stream 1.
	var ping *h2Frame
	for i, f := range frames {
		if f.typ == 0x6 && f.flags&0x1 == 0 {
			ping = &frames[i]
		}
	}
	if ping == nil {
		more, err := readH2Frames(second.br, isType(0x6))
		if err != nil {
			t.Fatalf("second connection: frames %+v, %+v, then %v; want a PING with the first GOAWAY", frames, more, err)
		}
		frames = append(frames, more...)
		ping = &frames[len(frames)-1]
	}
	if got := goAways(frames); !reflect.DeepEqual(got, []uint32{1<<31 - 1}) {
		t.Errorf("second connection: GOAWAYs naming streams %v before the PING's answer; want one, naming every stream (2^31-1)", got)
	}
	second.ackPing(*ping)
	final, err := readH2Frames(second.br, isType(0x7))
	switch {
	case err != nil:
		t.Errorf("second connection: frames %+v, then %v and no GOAWAY: it takes new streams until the drain's deadline cuts it", final, err)
	case !bytes.Equal(final[len(final)-1].payload, []byte{0, 0, 0, 1, 0, 0, 0, 0}):
		t.Errorf("second connection: GOAWAY %v; want last stream 1 (the request it served), NO_ERROR", final[len(final)-1].payload)
	}
	if err := drainResult(t, drained, "the HTTP/2 connections are not closed"); err != nil {
		t.Errorf("Drain: %v", err)
	}
	if d := time.Since(start); d > timeout-time.Second {
		t.Errorf("Drain took %v, up to its deadline; want it done once both connections were told", d)
	}
	if got := tp.counts(t); got["GET 200"] != 1 {
		t.Errorf("counts: got %v, want one GET 200", got)
	}
}

// h2Frame is an HTTP/2 frame read by hand.
type h2Frame struct {
	typ, flags byte
	stream     uint32
	payload    []byte
}

// readH2Frames reads frames from br until one for which last is true,
// which ends the frames returned, or an error.
func readH2Frames(br *bufio.Reader, last func(h2Frame) bool) ([]h2Frame, error) {
	var frames []h2Frame
	for {
		var fh [9]byte
		if _, err := io.ReadFull(br, fh[:]); err != nil {
			return frames, err
		}
		f := h2Frame{typ: fh[3], flags: fh[4], stream: binary.BigEndian.Uint32(fh[5:]) &^ (1 << 31)}
		f.payload = make([]byte, int(fh[0])<<16|int(fh[1])<<8|int(fh[2]))
		if _, err := io.ReadFull(br, f.payload); err != nil {
			return frames, err
		}
		frames = append(frames, f)
		if last(f) {
			return frames, nil
		}
	}
}

// isType is readH2Frames' last for the first frame of type typ.
func isType(typ byte) func(h2Frame) bool {
	return func(f h2Frame) bool { return f.typ == typ }
}

// TestCloseLetsTheAnswerBeforeAPipelinedRequestThrough: an answer whose
// end is the connection's close (the app's answer ends with its own close,
// or a chunked one goes to an HTTP/1.0 client) reaches the client whole
// when the client's next request waits unread: closing with it unread
// would reset the connection and throw away what of the answer the kernel
// had not sent yet. The connection lingers instead, as after an error
// answer. (A client that asked to close and sends more anyway breaks
// HTTP/1.1's rules, and is not looked after.)
func TestCloseLetsTheAnswerBeforeAPipelinedRequestThrough(t *testing.T) {
	// More than the sockets between the proxy and the client hold.
	const n = 8 << 20
	body := strings.Repeat("a", n)
	cases := []struct {
		name, first string
		answer      string // what the app sends before it closes
	}{
		{"answer ends with the app's close", "GET /first HTTP/1.1\r\nHost: a\r\n\r\n",
			"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body},
		{"chunked answer to HTTP/1.0", "GET /first HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
			fmt.Sprintf("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", n, body)},
	}
	for _, tc := range cases {
		for _, noLoop := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s, event loop off %v", tc.name, noLoop), func(t *testing.T) {
				held, release := make(chan struct{}, 1), make(chan struct{})
				app := fakeApp(t, func(nc net.Conn, br *bufio.Reader) {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					held <- struct{}{}
					<-release
					io.WriteString(nc, tc.answer)
					nc.Close()
				})
				tp := startProxy(t, app, func(c *Config) { c.DisableEventLoop = noLoop })
				nc := dialSmallReceive(t, tp.addr)
				io.WriteString(nc, tc.first)
				<-held
				// Sent while the first waits for its answer: unread in the
				// proxy's socket.
				io.WriteString(nc, "GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
				_, b, err := tp.answerBeforeTheClose(t, nc, "GET", func() { close(release) })
				if err != nil || len(b) != n {
					t.Errorf("answer to the first request: got %d bytes of %d, then %v; want all of it, then the end", len(b), n, err)
				}
			})
		}
	}
}

// dialSmallReceive dials addr with a small receive buffer, so that a large
// answer fills the sockets between the proxy and the client.
func dialSmallReceive(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 64<<10) })
	}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	return nc
}

// answerBeforeTheClose calls answer, which lets the app send a large
// answer that closes its connection, and returns the answer the client
// got on nc, its body, and what ended the read. It reads only until the
// proxy has written the answer's last byte to its socket (it counts the
// answer then), and the rest once the proxy has closed: what the client
// had not taken is still in the sockets when it does, and a reset throws
// it away.
func (tp *testProxy) answerBeforeTheClose(t *testing.T, nc net.Conn, method string, answer func()) (*http.Response, []byte, error) {
	t.Helper()
	before := tp.Answered()
	answer()
	var got bytes.Buffer
	buf := make([]byte, 16<<10)
	for tp.Answered() == before {
		k, err := nc.Read(buf)
		got.Write(buf[:k])
		if err != nil {
			t.Fatalf("before the answer's end: %v", err)
		}
	}
	time.Sleep(100 * time.Millisecond)
	_, err := got.ReadFrom(nc)
	resp, perr := http.ReadResponse(bufio.NewReader(&got), &http.Request{Method: method})
	if perr != nil {
		t.Fatalf("answer to the first request: %v (then %v)", perr, err)
	}
	body, berr := io.ReadAll(resp.Body)
	if err == nil {
		err = berr
	}
	return resp, body, err
}
