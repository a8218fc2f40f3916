package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/outrider-sidecar/outrider/internal/testbin"
)

func TestMain(m *testing.M) {
	if addr := os.Getenv(loadClientEnv); addr != "" {
		loadClient(addr)
	}
	testbin.Main(m)
}

// startEcho runs the sample app and returns its address.
func startEcho(t *testing.T) string {
	t.Helper()
	addr := testbin.FreeAddr(t)
	testbin.Start(t, testbin.Echo(t), nil, "-listen", addr)
	testbin.WaitHTTP(t, "http://"+addr+"/healthz", 200, 20*time.Second)
	return addr
}

// testProxy is a proxy serving on a loopback port.
type testProxy struct {
	*Proxy
	addr string
	reg  *prometheus.Registry
}

// startProxy serves a proxy to upstream until the test ends.
func startProxy(t testing.TB, upstream string, tweak func(*Config)) *testProxy {
	t.Helper()
	return startProxyWith(t, upstream, tweak, nil)
}

// startProxyWith is startProxy with setup called on the proxy before it
// serves.
func startProxyWith(t testing.TB, upstream string, tweak func(*Config), setup func(*Proxy)) *testProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startProxyOn(t, ln, upstream, tweak, setup)
}

// startProxyOn is startProxyWith serving on ln.
func startProxyOn(t testing.TB, ln net.Listener, upstream string, tweak func(*Config), setup func(*Proxy)) *testProxy {
	t.Helper()
	cfg := Config{Upstream: upstream}
	if tweak != nil {
		tweak(&cfg)
	}
	reg := prometheus.NewRegistry()
	p, err := New(cfg, reg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if setup != nil {
		setup(p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("Serve did not return")
		}
	})
	return &testProxy{Proxy: p, addr: ln.Addr().String(), reg: reg}
}

// drainInBackground starts a drain of up to 20 s and returns where its
// result comes.
func (tp *testProxy) drainInBackground() <-chan error {
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		drained <- tp.Drain(ctx)
	}()
	return drained
}

// drainResult waits up to 10 s for the result of a drain started in the
// background, failing the test with why it may not have come.
func drainResult(t *testing.T, drained <-chan error, why string) error {
	t.Helper()
	select {
	case err := <-drained:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Drain did not return: " + why)
		return nil
	}
}

// drainMidway starts a drain once the proxy has had d to read what a
// client sent (and answer or refuse it), and returns once the drain has
// had d to close what it closes at once: a client's next bytes then come
// midway through the drain.
func (tp *testProxy) drainMidway(d time.Duration) <-chan error {
	time.Sleep(d)
	drained := tp.drainInBackground()
	for !tp.Draining() {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(d)
	return drained
}

// settle drains the proxy so that every request it took is counted.
func (tp *testProxy) settle(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := tp.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
}

// counts returns outrider_http_requests_total as "METHOD CODE" → value,
// leaving out the series at 0 (errorsFromZero's).
func (tp *testProxy) counts(t *testing.T) map[string]float64 {
	t.Helper()
	got := tp.series(t)
	maps.DeleteFunc(got, func(_ string, v float64) bool { return v == 0 })
	return got
}

// series returns every series of outrider_http_requests_total as
// "METHOD CODE" → value.
func (tp *testProxy) series(t *testing.T) map[string]float64 {
	t.Helper()
	mfs, err := tp.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "outrider_http_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			got[l["method"]+" "+l["code"]] = m.GetCounter().GetValue()
		}
	}
	return got
}

// metric returns the single metric of a family.
func (tp *testProxy) metric(t *testing.T, name string) *dto.Metric {
	t.Helper()
	mfs, err := tp.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0]
		}
	}
	t.Fatalf("no metric %s", name)
	return nil
}

func newClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}, Timeout: 30 * time.Second}
}

func TestCountsEveryRequest(t *testing.T) {
	app := startEcho(t)
	tp := startProxy(t, app, nil)
	client := newClient()
	cases := []struct {
		name         string
		method, path string
		body         string
		n            int
		want         string // "METHOD CODE"
		wantBody     string
	}{
		{name: "get", method: "GET", path: "/", n: 25, want: "GET 200", wantBody: `"message":"hello"`},
		{name: "not found", method: "GET", path: "/nope", n: 3, want: "GET 404"},
		{name: "status", method: "GET", path: "/status/503", n: 4, want: "GET 503"},
		{name: "head", method: "HEAD", path: "/", n: 2, want: "HEAD 200"},
		{name: "post", method: "POST", path: "/echo", body: "ping", n: 5, want: "POST 200", wantBody: "ping"},
		{name: "odd method", method: "BREW", path: "/", n: 2, want: "OTHER 405"},
		{name: "lower-case method", method: "get", path: "/", n: 1, want: "OTHER 405"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for range tc.n {
				req, _ := http.NewRequest(tc.method, "http://"+tp.addr+tc.path, strings.NewReader(tc.body))
				if tc.body == "" {
					req.Body = nil
				}
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if want := tc.want[strings.IndexByte(tc.want, ' ')+1:]; fmt.Sprint(resp.StatusCode) != want {
					t.Fatalf("status: got %d, want %s", resp.StatusCode, want)
				}
				if !strings.Contains(string(b), tc.wantBody) {
					t.Fatalf("body: got %q, want it to contain %q", b, tc.wantBody)
				}
			}
		})
	}
	tp.settle(t)
	want := map[string]float64{}
	for _, tc := range cases {
		want[tc.want] += float64(tc.n)
	}
	got := tp.counts(t)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("requests_total{%s}: got %v, want %v", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("requests_total: got series %v, want %v", got, want)
	}
	var total uint64
	for _, tc := range cases {
		total += uint64(tc.n)
	}
	if h := tp.metric(t, "outrider_http_request_duration_seconds").GetHistogram(); h.GetSampleCount() != total {
		t.Errorf("duration histogram: got %d samples, want %d", h.GetSampleCount(), total)
	}
	if g := tp.metric(t, "outrider_http_requests_in_flight").GetGauge().GetValue(); g != 0 {
		t.Errorf("in flight after the requests: got %v, want 0", g)
	}
}

// TestSlowAnswerIsDelivered: IOTimeout bounds a write that is blocked, not
// the time the app takes. An answer whose head, or a piece of whose body,
// comes after longer than IOTimeout is relayed, in both serving modes; the
// write to the client used to get a deadline computed from the clock read
// when the request was sent, already past, and the client got nothing
// (counted 499).
func TestSlowAnswerIsDelivered(t *testing.T) {
	const wait = 600 * time.Millisecond
	app := fakeApp(t, func(nc net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if req.URL.Path == "/late-body" {
				io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nsl")
			}
			time.Sleep(wait)
			if req.URL.Path == "/late-body" {
				io.WriteString(nc, "ow")
			} else {
				io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")
			}
		}
	})
	for _, noLoop := range []bool{false, true} {
		for _, path := range []string{"/late-head", "/late-body"} {
			t.Run(fmt.Sprintf("%s noEventLoop=%v", path[1:], noLoop), func(t *testing.T) {
				tp := startProxy(t, app, func(c *Config) {
					c.IOTimeout = wait / 3
					c.ClientCheckInterval = 20 * time.Millisecond
					c.DisableEventLoop = noLoop
				})
				rc := dialRaw(t, tp.addr)
				rc.send("GET " + path + " HTTP/1.1\r\nHost: a\r\n\r\n")
				resp := rc.response("GET")
				b, err := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 || string(b) != "slow" || err != nil {
					t.Errorf("got %d %q (%v), want 200 %q", resp.StatusCode, b, err, "slow")
				}
				tp.settle(t)
				if got := tp.counts(t); got["GET 200"] != 1 || len(got) != 1 {
					t.Errorf("counts: got %v, want one GET 200", got)
				}
			})
		}
	}
}

// TestSlowUploadIsDelivered: a client may pause up to IOTimeout between
// pieces of its body. The write of a piece to the app used to get its
// deadline from the clock read before the wait for it: after a short pause
// and then a long one, the deadline was already past and the upload was cut.
func TestSlowUploadIsDelivered(t *testing.T) {
	const timeout = 2 * time.Second
	app := fakeApp(t, func(nc net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_ = nc.SetReadDeadline(time.Now().Add(3 * timeout))
		b, err := io.ReadAll(req.Body)
		if err != nil {
			return
		}
		fmt.Fprintf(nc, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(b), b)
	})
	tp := startProxy(t, app, func(c *Config) { c.IOTimeout = timeout })
	rc := dialRaw(t, tp.addr)
	rc.send("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n")
	// The first pause is too short for the write after it to move the
	// deadline on; the two add up to more than IOTimeout.
	for _, p := range []struct {
		pause time.Duration
		piece string
	}{{timeout * 35 / 100, "a"}, {timeout * 75 / 100, "b"}, {0, "c"}} {
		time.Sleep(p.pause)
		rc.send(p.piece)
	}
	resp := rc.response("POST")
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "abc" || err != nil {
		t.Errorf("got %d %q (%v), want 200 %q", resp.StatusCode, b, err, "abc")
	}
	tp.settle(t)
	if got := tp.counts(t); got["POST 200"] != 1 || len(got) != 1 {
		t.Errorf("counts: got %v, want one POST 200", got)
	}
}

// rawConn is a client connection written and read by hand.
type rawConn struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
	return &rawConn{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func (rc *rawConn) send(s string) {
	rc.t.Helper()
	if _, err := io.WriteString(rc.nc, s); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

func (rc *rawConn) response(method string) *http.Response {
	rc.t.Helper()
	resp, err := http.ReadResponse(rc.br, &http.Request{Method: method})
	if err != nil {
		rc.t.Fatalf("read response: %v", err)
	}
	return resp
}

// closed reports whether the proxy closed the connection: nothing more
// comes before the end of the stream.
func (rc *rawConn) closed() bool {
	b, err := io.ReadAll(rc.br)
	return err == nil && len(b) == 0
}

func TestRefusesSmuggling(t *testing.T) {
	app := startEcho(t)
	tp := startProxy(t, app, nil)
	cases := []struct {
		name, req string
		want      int
	}{
		{"length and chunked", "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"chunked and length", "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n", 400},
		{"xchunked", "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400},
		{"chunked list", "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400},
		{"chunked twice in a list", "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400},
		{"identity", "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 400},
		{"duplicated", "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"duplicated other", "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n", 400},
		{"leading space", "POST /echo HTTP/1.1\r\nHost: a\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"leading tab", "POST /echo HTTP/1.1\r\nHost: a\r\n\tTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"space before colon", "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400},
		{"vertical tab", "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n", 400},
		{"folded value", "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 400},
		{"bare CR", "POST /echo HTTP/1.1\r\nHost: a\r\nX: y\rTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"differing lengths", "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde", 400},
		{"differing lengths in a list", "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 5\r\n\r\nabcde", 400},
		{"signed length", "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\nabcd", 400},
		{"negative length", "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400},
		{"hex length", "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 0x4\r\n\r\nabcd", 400},
		{"huge length", "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400},
		{"chunked in 1.0", "POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"bad chunk size", "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400},
		{"chunk size with LF only", "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", 400},
		{"chunk without CRLF", "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX0\r\n\r\n", 400},
		{"chunk size overflow", "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nhello\r\n0\r\n\r\n", 400},
		{"no host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"space in target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"HTTP/2 line", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rc := dialRaw(t, tp.addr)
			rc.send(tc.req)
			resp := rc.response("POST")
			io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != tc.want {
				t.Errorf("status: got %d, want %d", resp.StatusCode, tc.want)
			}
			if !rc.closed() {
				t.Errorf("connection: got open, want closed")
			}
		})
	}
}

func TestChunkedBothWays(t *testing.T) {
	app := startEcho(t)
	tp := startProxy(t, app, nil)

	t.Run("response", func(t *testing.T) {
		resp, err := newClient().Get("http://" + tp.addr + "/chunked?n=5")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if want := "chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n"; string(b) != want {
			t.Errorf("body: got %q, want %q", b, want)
		}
		if len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
			t.Errorf("transfer encoding: got %v, want [chunked]", resp.TransferEncoding)
		}
	})
	t.Run("request", func(t *testing.T) {
		rc := dialRaw(t, tp.addr)
		rc.send("POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: dropped\r\n\r\n")
		resp := rc.response("POST")
		b, _ := io.ReadAll(resp.Body)
		if string(b) != "hello, world" {
			t.Errorf("echo: got %q, want %q", b, "hello, world")
		}
		// The connection stays usable.
		rc.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		if resp := rc.response("GET"); resp.StatusCode != 200 {
			t.Errorf("next request: got %d, want 200", resp.StatusCode)
		}
	})
	t.Run("1.0 client gets the body decoded", func(t *testing.T) {
		rc := dialRaw(t, tp.addr)
		rc.send("GET /chunked?n=2 HTTP/1.0\r\n\r\n")
		b, err := io.ReadAll(rc.br)
		if err != nil {
			t.Fatal(err)
		}
		got := string(b)
		if !strings.HasSuffix(got, "\r\n\r\nchunk 0\nchunk 1\n") || strings.Contains(strings.ToLower(got), "transfer-encoding") {
			t.Errorf("response: got %q, want an unchunked body and the connection closed", got)
		}
	})
}

func TestExpectContinue(t *testing.T) {
	app := startEcho(t)
	tp := startProxy(t, app, nil)
	rc := dialRaw(t, tp.addr)
	rc.send("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	if resp := rc.response("POST"); resp.StatusCode != 100 {
		t.Fatalf("interim: got %d, want 100", resp.StatusCode)
	}
	rc.send("hello")
	resp := rc.response("POST")
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "hello" {
		t.Errorf("final: got %d %q, want 200 %q", resp.StatusCode, b, "hello")
	}
}

// An interim answer reaches the client without a Content-Length, even
// when the app gave it one (RFC 9110 8.6: never in a 1xx).
func TestInterimAnswerHasNoLength(t *testing.T) {
	app := fakeApp(t, func(nc net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(nc, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nContent-Length: 0\r\n\r\n"+
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	tp := startProxy(t, app, nil)
	rc := dialRaw(t, tp.addr)
	rc.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	head, err := rc.br.ReadString('\n')
	for err == nil {
		line, lerr := rc.br.ReadString('\n')
		if line == "\r\n" || lerr != nil {
			break
		}
		if strings.HasPrefix(strings.ToLower(line), "content-length:") {
			t.Errorf("the 103 carries %q", strings.TrimSpace(line))
		}
		head += line
	}
	if !strings.HasPrefix(head, "HTTP/1.1 103 ") || !strings.Contains(head, "Link: </a.css>") {
		t.Errorf("interim head %q, want the 103 with its Link", head)
	}
	resp := rc.response("GET")
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || string(b) != "ok" {
		t.Errorf("final answer %d %q, want 200 %q", resp.StatusCode, b, "ok")
	}
}

func TestStreamsLargeBodies(t *testing.T) {
	app := startEcho(t)
	tp := startProxy(t, app, nil)
	client := newClient()
	const size = 5 << 20

	measure := func(t *testing.T, run func()) {
		t.Helper()
		if raceEnabled {
			// The race detector's sync.Pool drops a quarter of the buffers
			// put back, at random, so allocations there say nothing about
			// buffering: scripts/test.sh runs this test without it too.
			run()
			return
		}
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		run()
		runtime.ReadMemStats(&after)
		// Client and proxy share this process: everything they allocated
		// during the transfer, garbage included, stays far below the body.
		// Buffering it would allocate at least the body's size.
		if grew := after.TotalAlloc - before.TotalAlloc; grew > size/4 {
			t.Errorf("allocated %d bytes moving %d: the body was buffered", grew, size)
		}
	}
	t.Run("upload", func(t *testing.T) {
		measure(t, func() {
			src := io.LimitReader(patternReader{}, size)
			resp, err := client.Post("http://"+tp.addr+"/echo", "application/octet-stream", src)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			n, err := io.Copy(checkPattern{t: t}, resp.Body)
			if err != nil || n != size {
				t.Errorf("echo: got %d bytes (%v), want %d", n, err, size)
			}
		})
	})
	t.Run("download", func(t *testing.T) {
		measure(t, func() {
			resp, err := client.Get(fmt.Sprintf("http://%s/bytes?n=%d", tp.addr, size))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			n, err := io.Copy(io.Discard, resp.Body)
			if err != nil || n != size || resp.ContentLength != size {
				t.Errorf("download: got %d bytes of %d (%v), want %d", n, resp.ContentLength, err, size)
			}
		})
	})
	tp.settle(t)
	if got := tp.counts(t); got["POST 200"] != 1 || got["GET 200"] != 1 {
		t.Errorf("counts: got %v, want one POST 200 and one GET 200", got)
	}
}

// patternReader yields a repeating alphabet without allocating.
type patternReader struct{}

func (patternReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a' + byte(i%26)
	}
	return len(p), nil
}

// checkPattern only counts: the echo's content is checked by length.
type checkPattern struct{ t *testing.T }

func (c checkPattern) Write(p []byte) (int, error) { return len(p), nil }

func TestAppClosesMidResponse(t *testing.T) {
	app := startEcho(t)
	tp := startProxy(t, app, nil)
	resp, err := newClient().Get("http://" + tp.addr + "/abort?n=100")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if !errors.Is(err, io.ErrUnexpectedEOF) || len(b) != 100 {
		t.Errorf("body: got %d bytes and %v, want 100 bytes and an unexpected EOF", len(b), err)
	}
	tp.settle(t)
	if got := tp.counts(t); got["GET 502"] != 1 {
		t.Errorf("counts: got %v, want one GET 502", got)
	}
}

func TestAppDown(t *testing.T) {
	tp := startProxy(t, testbin.RefusingAddr(t), nil)
	resp, err := newClient().Get("http://" + tp.addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 502 || len(b) == 0 || len(b) > 100 {
		t.Errorf("got %d %q, want 502 with a short body", resp.StatusCode, b)
	}
	q := tp.QPS()
	if _, err := json.Marshal(q); err != nil {
		t.Errorf("QPS with the app gone: %v", err)
	}
	tp.settle(t)
	if got := tp.counts(t); got["GET 502"] != 1 {
		t.Errorf("counts: got %v, want one GET 502", got)
	}
}

func TestWebSocket(t *testing.T) {
	app := startEcho(t)
	tp := startProxy(t, app, nil)
	rc := dialRaw(t, tp.addr)
	rc.send("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	resp := rc.response("GET")
	if resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("handshake: got %d %v", resp.StatusCode, resp.Header)
	}
	for _, msg := range []string{"hello", strings.Repeat("x", 300)} {
		rc.send(string(wsFrame(msg)))
		got := readWSFrame(t, rc.br)
		if got != msg {
			t.Errorf("echo: got %q, want %q", got, msg)
		}
	}
	rc.nc.Close()
	tp.settle(t)
	if got := tp.counts(t); got["GET 101"] != 1 || len(got) != 1 {
		t.Errorf("counts: got %v, want the upgrade counted once, as GET 101", got)
	}
}

// wsFrame is a masked client text frame.
func wsFrame(msg string) []byte {
	f := []byte{0x81}
	if len(msg) < 126 {
		f = append(f, 0x80|byte(len(msg)))
	} else {
		f = append(f, 0x80|126)
		f = binary.BigEndian.AppendUint16(f, uint16(len(msg)))
	}
	var mask [4]byte
	_, _ = rand.Read(mask[:])
	f = append(f, mask[:]...)
	for i := range len(msg) {
		f = append(f, msg[i]^mask[i%4])
	}
	return f
}

func readWSFrame(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		t.Fatal(err)
	}
	n := int(h[1] & 0x7f)
	if n == 126 {
		var b [2]byte
		if _, err := io.ReadFull(br, b[:]); err != nil {
			t.Fatal(err)
		}
		n = int(binary.BigEndian.Uint16(b[:]))
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(br, b); err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestForwardedHeaders(t *testing.T) {
	app := startEcho(t)
	tp := startProxy(t, app, nil)
	rc := dialRaw(t, tp.addr)
	rc.send("GET /headers HTTP/1.1\r\nHost: shop.example\r\nConnection: X-Secret, keep-alive\r\n" +
		"X-Secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: gzip\r\n" +
		"Upgrade: h2c\r\nTrailer: X-T\r\nX-Forwarded-For: 203.0.113.9\r\nX-Kept: yes\r\n\r\n")
	resp := rc.response("GET")
	var got map[string][]string
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{"X-Secret", "Keep-Alive", "Proxy-Connection", "Te", "Upgrade", "Trailer"} {
		if v, ok := got[gone]; ok {
			t.Errorf("%s reached the app: %v", gone, v)
		}
	}
	want := map[string]string{
		"X-Forwarded-For":   "203.0.113.9, 127.0.0.1",
		"X-Forwarded-Proto": "http",
		"X-Forwarded-Host":  "shop.example",
		"Host":              "shop.example",
		"X-Kept":            "yes",
	}
	for k, v := range want {
		if g := strings.Join(got[k], ","); g != v {
			t.Errorf("%s: got %q, want %q", k, g, v)
		}
	}
}

// TestEmptyForwardedFields: an X-Forwarded-* field with an empty value is
// an absent one, as it is on the HTTP/2 path: the app gets outrider's
// value alone, not the empty field beside it or instead of it.
func TestEmptyForwardedFields(t *testing.T) {
	app := startEcho(t)
	tp := startProxy(t, app, nil)
	cases := []struct {
		name, fields string
		want         map[string]string
	}{
		{"empty proto", "X-Forwarded-Proto:\r\n",
			map[string]string{"X-Forwarded-Proto": "http", "X-Forwarded-Host": "shop.example"}},
		{"blank proto", "X-Forwarded-Proto:  \t\r\n",
			map[string]string{"X-Forwarded-Proto": "http"}},
		{"empty host", "X-Forwarded-Host:\r\n",
			map[string]string{"X-Forwarded-Proto": "http", "X-Forwarded-Host": "shop.example"}},
		{"empty proto beside a value", "X-Forwarded-Proto:\r\nX-Forwarded-Proto: https\r\n",
			map[string]string{"X-Forwarded-Proto": "https"}},
		{"empty for", "X-Forwarded-For:\r\n",
			map[string]string{"X-Forwarded-For": "127.0.0.1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rc := dialRaw(t, tp.addr)
			rc.send("GET /headers HTTP/1.1\r\nHost: shop.example\r\n" + tc.fields + "\r\n")
			resp := rc.response("GET")
			var got map[string][]string
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.want {
				if g := got[k]; len(g) != 1 || g[0] != v {
					t.Errorf("%s: got %q, want [%q]", k, g, v)
				}
			}
		})
	}
}

func TestHeadLimits(t *testing.T) {
	app := startEcho(t)
	tp := startProxy(t, app, func(c *Config) {
		c.ReadHeaderTimeout = 200 * time.Millisecond
		c.MaxHeaderBytes = 8 << 10
	})
	t.Run("too large", func(t *testing.T) {
		// Counted by the method of the head's first line, though the head
		// is not parsed; empty lines before it are allowed (RFC 9112 2.2).
		for _, line := range []string{"GET / HTTP/1.1", "\r\nPUT /a HTTP/1.1", "get / HTTP/1.1"} {
			rc := dialRaw(t, tp.addr)
			rc.send(line + "\r\nHost: a\r\nX-Big: " + strings.Repeat("b", 9<<10) + "\r\n\r\n")
			resp := rc.response("GET")
			io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != 431 {
				t.Errorf("%q: status: got %d, want 431", line, resp.StatusCode)
			}
			if !rc.closed() {
				t.Errorf("%q: connection: got open, want closed", line)
			}
		}
		want := map[string]float64{"GET 431": 1, "PUT 431": 1, "OTHER 431": 1}
		if got := tp.counts(t); !maps.Equal(got, want) {
			t.Errorf("counts: got %v, want %v", got, want)
		}
	})
	t.Run("slowloris", func(t *testing.T) {
		rc := dialRaw(t, tp.addr)
		rc.send("GET / HTTP/1.1\r\nHost: a\r\n")
		// The head never ends: the proxy hangs up after ReadHeaderTimeout.
		if !rc.closed() {
			t.Errorf("connection: got open, want closed")
		}
	})
}

func TestResponseHeadLimits(t *testing.T) {
	// An app's answer may carry more fields than a client's request may
	// (many Set-Cookie fields); past its own bound it is a 502.
	cases := []struct {
		fields   int
		wantCode int
	}{
		{120, 200},
		{maxResponseFields, 200},
		{maxResponseFields + 1, 502},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.fields, " fields"), func(t *testing.T) {
			app := fakeApp(t, func(nc net.Conn, br *bufio.Reader) {
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				var b strings.Builder
				b.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n")
				for i := 1; i < tc.fields; i++ {
					fmt.Fprintf(&b, "Set-Cookie: c%d=v\r\n", i)
				}
				b.WriteString("\r\nok")
				io.WriteString(nc, b.String())
			})
			tp := startProxy(t, app, nil)
			resp, err := newClient().Get("http://" + tp.addr + "/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("status: got %d, want %d", resp.StatusCode, tc.wantCode)
			}
			if n := len(resp.Header.Values("Set-Cookie")); tc.wantCode == 200 && n != tc.fields-1 {
				t.Errorf("the client got %d Set-Cookie fields, want %d", n, tc.fields-1)
			}
		})
	}
}

func TestPipelinedAndHTTP10(t *testing.T) {
	app := startEcho(t)
	tp := startProxy(t, app, nil)
	t.Run("pipelined", func(t *testing.T) {
		rc := dialRaw(t, tp.addr)
		rc.send("GET /status/201 HTTP/1.1\r\nHost: a\r\n\r\nGET /status/202 HTTP/1.1\r\nHost: a\r\n\r\n")
		for _, want := range []int{201, 202} {
			resp := rc.response("GET")
			io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != want {
				t.Errorf("got %d, want %d", resp.StatusCode, want)
			}
		}
	})
	t.Run("pipelined while the first is at the app", func(t *testing.T) {
		// The second request arrives while the connection's goroutine
		// forwards the first: the poller's word that it came must not be
		// lost, or it would wait for the idle timeout.
		app, held, _, release := holdingApp(t)
		tp := startProxy(t, app, func(c *Config) { c.IdleTimeout = time.Hour })
		rc := dialRaw(t, tp.addr)
		rc.send("GET /hold HTTP/1.1\r\nHost: a\r\n\r\n")
		<-held
		rc.send("GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
		close(release)
		for _, path := range []string{"/hold", "/next"} {
			resp := rc.response("GET")
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || string(b) != "ok\n" {
				t.Errorf("%s: got %d %q, want 200 \"ok\\n\"", path, resp.StatusCode, b)
			}
		}
	})
	// keepAlive10 sends two HTTP/1.0 keep-alive requests on one
	// connection; each answer must say the connection stays.
	keepAlive10 := func(t *testing.T, addr string, wantCode int) {
		rc := dialRaw(t, addr)
		for range 2 {
			rc.send("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
			resp := rc.response("GET")
			io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != wantCode || resp.Header.Get("Connection") != "keep-alive" {
				t.Errorf("got %d Connection=%q, want %d keep-alive", resp.StatusCode, resp.Header.Get("Connection"), wantCode)
			}
		}
	}
	t.Run("1.0 keep-alive", func(t *testing.T) { keepAlive10(t, tp.addr, 200) })
	t.Run("1.0 keep-alive with the proxy's own answer", func(t *testing.T) {
		// The app is down: outrider's own 502 tells the 1.0 client the
		// connection stays, as the app's answers do.
		keepAlive10(t, startProxy(t, testbin.RefusingAddr(t), nil).addr, 502)
	})
	t.Run("1.0 closes", func(t *testing.T) {
		rc := dialRaw(t, tp.addr)
		rc.send("GET / HTTP/1.0\r\n\r\n")
		resp := rc.response("GET")
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 || !rc.closed() {
			t.Errorf("got %d, want 200 and the connection closed", resp.StatusCode)
		}
	})
}

// fakeApp is an app written by hand: serve runs for each connection.
func fakeApp(t testing.TB, serve func(nc net.Conn, br *bufio.Reader)) string {
	t.Helper()
	return testbin.Serve(t, func(nc net.Conn) { serve(nc, bufio.NewReader(nc)) })
}

// holdingApp answers "ok" to every request but /hold, which it reports
// on held and answers only when release is closed. gone is signalled
// when the proxy drops a held request.
func holdingApp(t *testing.T) (addr string, held, gone chan struct{}, release chan struct{}) {
	held, gone, release = make(chan struct{}, 8), make(chan struct{}, 8), make(chan struct{})
	addr = fakeApp(t, func(nc net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			if req.URL.Path == "/hold" {
				held <- struct{}{}
				closed := make(chan struct{})
				go func() {
					if _, err := br.ReadByte(); err != nil {
						close(closed)
					}
				}()
				select {
				case <-release:
					// The watcher still reads br: answer and hang up.
					io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
				case <-closed:
					gone <- struct{}{}
				}
				return
			}
			if _, err := io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"); err != nil {
				return
			}
		}
	})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	return addr, held, gone, release
}

func TestDrain(t *testing.T) {
	t.Run("waits for requests in flight", func(t *testing.T) {
		app, held, _, release := holdingApp(t)
		tp := startProxy(t, app, nil)

		idle := dialRaw(t, tp.addr)
		idle.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		resp := idle.response("GET")
		io.Copy(io.Discard, resp.Body)

		busy := dialRaw(t, tp.addr)
		busy.send("GET /hold HTTP/1.1\r\nHost: a\r\n\r\n")
		<-held
		drained := tp.drainInBackground()
		if !idle.closed() {
			t.Errorf("idle keep-alive connection: got open, want closed")
		}
		// The idle connection's request ended before it closed.
		if n := tp.InFlight(); n != 1 {
			t.Errorf("in flight while draining: got %d, want 1", n)
		}
		// The listener closes while the request is in flight, once it
		// has taken the connections queued on it: idle connections may
		// close a little before.
		waitFor(t, "new connections to be refused", func() bool {
			nc, err := net.Dial("tcp", tp.addr)
			if err == nil {
				nc.Close()
			}
			return err != nil
		})
		select {
		case err := <-drained:
			t.Fatalf("Drain returned %v with a request in flight", err)
		default:
		}
		close(release)
		resp = busy.response("GET")
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(b) != "ok\n" || !resp.Close {
			t.Errorf("request in flight: got %d %q close=%v, want 200 \"ok\\n\" with Connection: close", resp.StatusCode, b, resp.Close)
		}
		if !busy.closed() {
			t.Errorf("busy connection after its response: got open, want closed")
		}
		if err := <-drained; err != nil {
			t.Errorf("Drain: %v", err)
		}
		if n := tp.InFlight(); n != 0 {
			t.Errorf("in flight after Drain: got %d, want 0", n)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		app, held, _, _ := holdingApp(t)
		tp := startProxy(t, app, nil)
		busy := dialRaw(t, tp.addr)
		busy.send("GET /hold HTTP/1.1\r\nHost: a\r\n\r\n")
		<-held
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // the deadline has passed: Drain cuts at once
		err := tp.Drain(ctx)
		if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "1 requests still in flight") {
			t.Errorf("Drain: got %v, want the cut request named", err)
		}
		if b, _ := io.ReadAll(busy.br); len(b) != 0 {
			t.Errorf("cut connection: got %q, want it closed without an answer", b)
		}
	})
	t.Run("deadline, the app never answering", func(t *testing.T) {
		// The request waits for the app, which checks its client only
		// every hour: the cut must not wait for that check.
		app, held, _, release := holdingApp(t)
		tp := startProxy(t, app, func(c *Config) { c.ClientCheckInterval = time.Hour })
		busy := dialRaw(t, tp.addr)
		busy.send("GET /hold HTTP/1.1\r\nHost: a\r\n\r\n")
		<-held
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		drained := make(chan error, 1)
		go func() { drained <- tp.Drain(ctx) }()
		if err := drainResult(t, drained, "after cutting the request"); !errors.Is(err, context.Canceled) {
			t.Errorf("Drain: got %v, want the cut", err)
		}
		if b, _ := io.ReadAll(busy.br); len(b) != 0 {
			t.Errorf("cut connection: got %q, want it closed without an answer", b)
		}
		if got := tp.DrainReport(); got.Cut != 1 {
			t.Errorf("report: got %+v, want 1 request cut", got)
		}
		close(release)
	})
}

func TestDrainBeforeServe(t *testing.T) {
	p, err := New(Config{Upstream: "127.0.0.1:1"}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Drain(context.Background()); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(context.Background(), ln) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after Drain: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Serve after Drain did not return")
	}
}

func TestClientGoneIs499(t *testing.T) {
	app, held, gone, _ := holdingApp(t)
	tp := startProxy(t, app, func(c *Config) { c.ClientCheckInterval = 20 * time.Millisecond })
	rc := dialRaw(t, tp.addr)
	rc.send("GET /hold HTTP/1.1\r\nHost: a\r\n\r\n")
	<-held
	rc.nc.Close()
	// The proxy notices and cancels the app's request.
	<-gone
	tp.settle(t)
	if got := tp.counts(t); got["GET 499"] != 1 || len(got) != 1 {
		t.Errorf("counts: got %v, want one GET 499", got)
	}
}

// TestClientGoneMidUploadIs499: a client that abandons its upload once the
// app has begun to answer is counted as gone, not as an app failure,
// though the app's answer breaks off too; so is one that abandons it after
// the app's 100 Continue, which the app's answer never follows.
func TestClientGoneMidUploadIs499(t *testing.T) {
	app := startEcho(t)
	for _, tc := range []struct {
		name  string
		begin func(t *testing.T, rc *rawConn)
	}{
		{"the answer begun", func(t *testing.T, rc *rawConn) {
			rc.send("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n" + strings.Repeat("u", 20000))
			// The app streams the body back: its answer has begun.
			if _, err := rc.br.ReadString('\n'); err != nil {
				t.Fatalf("the answer's status line: %v", err)
			}
		}},
		{"after 100 Continue", func(t *testing.T, rc *rawConn) {
			rc.send("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n")
			if resp := rc.response("POST"); resp.StatusCode != 100 {
				t.Fatalf("interim: got %d, want 100", resp.StatusCode)
			}
			rc.send(strings.Repeat("u", 20000))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := startProxy(t, app, nil)
			rc := dialRaw(t, tp.addr)
			tc.begin(t, rc)
			rc.nc.Close()
			tp.settle(t)
			if got := tp.counts(t); got["POST 499"] != 1 || len(got) != 1 {
				t.Errorf("counts: got %v, want one POST 499", got)
			}
		})
	}
}

func TestDialsBounded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := newPool(ln.Addr().String(), 5*time.Second, 1)
	// Each dial is held in the dialer until release is closed, once as many
	// dials as the bound allows are in flight: the others must wait for a
	// slot meanwhile, however the goroutines are scheduled.
	var now, most atomic.Int32
	release := make(chan struct{})
	p.dialer.Control = func(string, string, syscall.RawConn) error {
		n := now.Add(1)
		defer now.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-release
		return nil
	}
	const clients = 4 * maxDials
	errs := make(chan error, clients)
	for range clients {
		go func() {
			u, err := p.dial(0, nil)
			if err == nil {
				u.close()
			}
			errs <- err
		}()
	}
	for deadline := time.Now().Add(3 * time.Second); now.Load() < maxDials; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("dials in flight: %d after 3 s, want %d", now.Load(), maxDials)
		}
	}
	// Past the bound, no dial starts while the slots stay full.
	time.Sleep(50 * time.Millisecond)
	close(release)
	for range clients {
		if err := <-errs; err != nil {
			t.Errorf("dial: %v", err)
		}
	}
	if got := most.Load(); got != maxDials {
		t.Errorf("dials in flight at most: got %d, want %d", got, maxDials)
	}
}

func TestStalledClientTimesOut(t *testing.T) {
	app := startEcho(t)
	tp := startProxy(t, app, func(c *Config) { c.IOTimeout = 300 * time.Millisecond })
	rc := dialRaw(t, tp.addr)
	if err := rc.nc.(*net.TCPConn).SetReadBuffer(4 << 10); err != nil {
		t.Fatal(err)
	}
	// A body far larger than the sockets hold, never read: the proxy's
	// write to the client stalls until its deadline.
	rc.send("GET /bytes?n=268435456 HTTP/1.1\r\nHost: a\r\n\r\n")
	start := time.Now()
	for tp.InFlight() == 0 {
		if time.Since(start) > 10*time.Second {
			t.Fatal("the request never started")
		}
		time.Sleep(time.Millisecond)
	}
	tp.settle(t)
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("drain took %v: the stalled write did not time out", took)
	}
	if got := tp.counts(t); got["GET 499"] != 1 || len(got) != 1 {
		t.Errorf("counts: got %v, want one GET 499", got)
	}
}

func TestAppClosesKeepAlive(t *testing.T) {
	// An app that closes every connection after one answer, without
	// saying so: the pinned connection is found dead and the request is
	// sent again on a new one.
	var accepted atomic.Int64
	app := fakeApp(t, func(nc net.Conn, br *bufio.Reader) {
		accepted.Add(1)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
	})
	tp := startProxy(t, app, nil)
	rc := dialRaw(t, tp.addr)
	for i := range 5 {
		rc.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		resp := rc.response("GET")
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: got %d, want 200", i, resp.StatusCode)
		}
	}
	if n := accepted.Load(); n < 5 {
		t.Errorf("app connections: got %d, want one per request", n)
	}
}

// TestOnlyIdempotentRequestsAreResent: the app takes a request on a
// kept-alive connection and the connection fails before any answer byte.
// The app may have acted on it: a proxy must not send a POST or a PATCH
// again (RFC 9112 9.3.1), and may send a GET, a PUT or a DELETE again.
func TestOnlyIdempotentRequestsAreResent(t *testing.T) {
	cases := []struct {
		method    string
		wantCode  int
		wantOnApp int64 // times the app got the request
	}{
		{"POST", 502, 1},
		{"PATCH", 502, 1},
		{"LOCK", 502, 1},
		{"GET", 200, 2},
		{"PUT", 200, 2},
		{"DELETE", 200, 2},
	}
	for _, loop := range []bool{false, true} {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s/loop=%v", tc.method, loop), func(t *testing.T) {
				var got atomic.Int64
				app := fakeApp(t, func(nc net.Conn, br *bufio.Reader) {
					for {
						req, err := http.ReadRequest(br)
						if err != nil {
							return
						}
						_, _ = io.Copy(io.Discard, req.Body)
						if req.URL.Path == "/act" && got.Add(1) == 1 {
							return // acted on it; the connection closes unanswered
						}
						_, _ = io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
					}
				})
				tp := startProxy(t, app, func(c *Config) { c.DisableEventLoop = !loop })
				rc := dialRaw(t, tp.addr)
				rc.send("GET /warm HTTP/1.1\r\nHost: a\r\n\r\n")
				_, _ = io.Copy(io.Discard, rc.response("GET").Body)
				rc.send(tc.method + " /act HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
				resp := rc.response(tc.method)
				_, _ = io.Copy(io.Discard, resp.Body)
				if resp.StatusCode != tc.wantCode || got.Load() != tc.wantOnApp {
					t.Errorf("client got %d and the app got the request %d times; want %d and %d",
						resp.StatusCode, got.Load(), tc.wantCode, tc.wantOnApp)
				}
			})
		}
	}
}

// TestNoContentHasNoLength: a 204 must not carry Content-Length (RFC 9110
// 8.6); an app that sends one gets it dropped, as nginx drops it. A 304
// keeps it: there it states the length of the representation.
func TestNoContentHasNoLength(t *testing.T) {
	for _, tc := range []struct {
		status     string
		wantLength string
	}{
		{"204 No Content", ""},
		{"304 Not Modified", "7"},
	} {
		t.Run(tc.status, func(t *testing.T) {
			app := fakeApp(t, func(nc net.Conn, br *bufio.Reader) {
				for {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					_, _ = io.WriteString(nc, "HTTP/1.1 "+tc.status+"\r\nContent-Length: 7\r\n\r\n")
				}
			})
			tp := startProxy(t, app, nil)
			rc := dialRaw(t, tp.addr)
			for i := range 2 { // the second on the kept connection
				rc.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
				resp := rc.response("GET")
				_, _ = io.Copy(io.Discard, resp.Body)
				if got := resp.Header.Get("Content-Length"); got != tc.wantLength {
					t.Errorf("request %d: Content-Length %q, want %q", i, got, tc.wantLength)
				}
			}
		})
	}
}

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestQPS(t *testing.T) {
	app := startEcho(t)
	clock := &fakeClock{now: time.Unix(1_800_000_000, 0)}
	tp := startProxy(t, app, func(c *Config) {
		c.Now = clock.Now
		c.QPSWindow = 10 * time.Second
	})
	gauge := func() float64 {
		return tp.metric(t, "outrider_http_requests_per_second").GetGauge().GetValue()
	}
	if q := tp.QPS(); q != (QPS{QPS: 0, WindowSeconds: 10, InFlight: 0}) || gauge() != 0 {
		t.Errorf("before any request: got %+v and gauge %v, want zeros over a 10 s window", q, gauge())
	}
	// A constant load of 20 requests a second for 12 seconds.
	const rate = 20
	rc := dialRaw(t, tp.addr)
	for range 12 {
		for range rate {
			rc.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			resp := rc.response("GET")
			io.Copy(io.Discard, resp.Body)
		}
		clock.Advance(time.Second)
	}
	for name, got := range map[string]float64{"QPS()": tp.QPS().QPS, "gauge": gauge()} {
		if got < rate*0.9 || got > rate*1.1 {
			t.Errorf("%s under a constant %d/s: got %v, want within 10%%", name, rate, got)
		}
	}
	b, err := json.Marshal(tp.QPS())
	if err != nil || !strings.Contains(string(b), `"window_seconds":10`) {
		t.Errorf("JSON: got %s (%v)", b, err)
	}
	clock.Advance(11 * time.Second)
	if q := tp.QPS().QPS; q != 0 {
		t.Errorf("a window after the load: got %v, want 0", q)
	}
}

func TestRateMeter(t *testing.T) {
	base := time.Unix(1_800_000_000, 0)
	cases := []struct {
		name   string
		window time.Duration
		events []time.Duration // offsets from base
		at     time.Duration
		want   float64
	}{
		{name: "nothing yet", window: 10 * time.Second, at: 0, want: 0},
		{name: "current second left out", window: 10 * time.Second, events: []time.Duration{0, 0}, at: 500 * time.Millisecond, want: 0},
		{name: "last whole second", window: 10 * time.Second, events: []time.Duration{0, 0}, at: time.Second, want: 0.2},
		{name: "edge of the window", window: 2 * time.Second, events: []time.Duration{0, time.Second, 2 * time.Second}, at: 3 * time.Second, want: 1},
		{name: "gone out of the window", window: 2 * time.Second, events: []time.Duration{0}, at: 3 * time.Second, want: 0},
		{name: "bucket reused after wrapping", window: 2 * time.Second, events: []time.Duration{0, 0, 0, 4 * time.Second}, at: 5 * time.Second, want: 0.5},
		{name: "window rounded up to whole seconds", window: 1500 * time.Millisecond, events: []time.Duration{0, time.Second}, at: 2 * time.Second, want: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRateMeter(tc.window)
			for _, e := range tc.events {
				r.add(base.Add(e))
			}
			if got := r.rate(base.Add(tc.at)); got != tc.want {
				t.Errorf("rate: got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestH2C(t *testing.T) {
	// A gRPC-style app: HTTP/2 cleartext only.
	app := startH2CApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s xff=%s under=%s", r.Proto, r.Method, b, r.Header.Get("X-Forwarded-For"), r.Header.Get("X_Forwarded_For"))
	}))
	tp := startProxy(t, app, nil)
	client := h2cClient(t)
	for range 3 {
		req, _ := http.NewRequest("POST", "http://"+tp.addr+"/", strings.NewReader("ping"))
		req.Header.Set("X_Forwarded_For", "6.6.6.6")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := "HTTP/2.0 POST ping xff=127.0.0.1 under="; resp.Proto != "HTTP/2.0" || string(b) != want {
			t.Errorf("got %s %q, want HTTP/2.0 %q", resp.Proto, b, want)
		}
	}
	client.CloseIdleConnections()
	tp.settle(t)
	if got := tp.counts(t); got["POST 200"] != 3 || len(got) != 1 {
		t.Errorf("counts: got %v, want three POST 200", got)
	}
}

// TestH2CForwardedFields: HTTP/2 requests get the X-Forwarded-* fields
// the HTTP/1.1 path gives them (see TestForwardedHeaders and
// TestEmptyForwardedFields): every non-empty value from the client kept,
// an empty one absent, outrider's value added when none is left.
func TestH2CForwardedFields(t *testing.T) {
	app := startH2CApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(r.Header)
	}))
	tp := startProxy(t, app, nil)
	client := h2cClient(t)
	cases := []struct {
		name string
		in   http.Header
		want http.Header
	}{
		{"none", http.Header{},
			http.Header{"X-Forwarded-For": {"127.0.0.1"}, "X-Forwarded-Proto": {"http"}, "X-Forwarded-Host": {"shop.example"}}},
		{"set by a gateway", http.Header{"X-Forwarded-For": {"203.0.113.9", "198.51.100.1"}, "X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"www.example"}},
			http.Header{"X-Forwarded-For": {"203.0.113.9, 198.51.100.1, 127.0.0.1"}, "X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"www.example"}}},
		{"empty proto", http.Header{"X-Forwarded-Proto": {""}},
			http.Header{"X-Forwarded-Proto": {"http"}}},
		{"blank proto", http.Header{"X-Forwarded-Proto": {" \t"}},
			http.Header{"X-Forwarded-Proto": {"http"}}},
		{"empty proto beside a value", http.Header{"X-Forwarded-Proto": {"", "https"}},
			http.Header{"X-Forwarded-Proto": {"https"}}},
		{"two protos", http.Header{"X-Forwarded-Proto": {"https", "wss"}},
			http.Header{"X-Forwarded-Proto": {"https", "wss"}}},
		{"empty host beside a value", http.Header{"X-Forwarded-Host": {"", "www.example"}},
			http.Header{"X-Forwarded-Host": {"www.example"}}},
		{"empty for", http.Header{"X-Forwarded-For": {""}},
			http.Header{"X-Forwarded-For": {"127.0.0.1"}}},
		{"empty for beside a value", http.Header{"X-Forwarded-For": {"", "203.0.113.9", ""}},
			http.Header{"X-Forwarded-For": {"203.0.113.9, 127.0.0.1"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", "http://"+tp.addr+"/", nil)
			req.Host = "shop.example"
			req.Header = tc.in
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var got http.Header
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.want {
				if g := got[k]; !slices.Equal(g, v) {
					t.Errorf("%s: got %q, want %q", k, g, v)
				}
			}
		})
	}
}

// CONNECT is refused over HTTP/2 as over HTTP/1.1: the app is not asked
// to open a tunnel to an address the client names.
func TestH2CConnectIsRefused(t *testing.T) {
	var asked atomic.Bool
	app := startH2CApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { asked.Store(true) }))
	tp := startProxy(t, app, nil)
	client := h2cClient(t)
	req, _ := http.NewRequest(http.MethodConnect, "http://"+tp.addr, nil)
	req.Host = "internal.example:443"
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 405 || !strings.Contains(string(b), "CONNECT is not supported") {
		t.Errorf("got %d %q, want 405 saying CONNECT is not supported", resp.StatusCode, b)
	}
	if asked.Load() {
		t.Error("the app was asked to CONNECT")
	}
	client.CloseIdleConnections()
	tp.settle(t)
	if got := tp.counts(t); got["CONNECT 405"] != 1 || len(got) != 1 {
		t.Errorf("counts: got %v, want one CONNECT 405", got)
	}
}

func TestH2CStreamCutShortIsCounted(t *testing.T) {
	// An HTTP/2 stream whose answer is cut short, by the app failing
	// mid-body or by the client resetting the stream, is counted (502 and
	// 499) and leaves nothing in flight.
	app := startH2CApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/fail":
			w.Header().Set("Content-Length", "100")
			io.WriteString(w, "ten bytes!")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		case "/slow":
			for range 200 {
				io.WriteString(w, strings.Repeat("x", 1024))
				w.(http.Flusher).Flush()
				time.Sleep(10 * time.Millisecond)
			}
		}
	}))
	tp := startProxy(t, app, nil)
	client := h2cClient(t)

	for range 3 {
		resp, err := client.Get("http://" + tp.addr + "/fail")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAll(resp.Body); err == nil {
			t.Errorf("/fail: the client read the whole answer, want it cut short")
		}
		resp.Body.Close()

		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+tp.addr+"/slow", nil)
		resp, err = client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(resp.Body, make([]byte, 2048)); err != nil {
			t.Fatal(err)
		}
		cancel()
		resp.Body.Close()
	}
	tp.settle(t) // fails if a stream is left in flight
	if got := tp.metric(t, "outrider_http_requests_in_flight").GetGauge().GetValue(); got != 0 {
		t.Errorf("outrider_http_requests_in_flight: got %v, want 0", got)
	}
	if got := tp.counts(t); got["GET 502"] != 3 || got["GET 499"] != 3 || len(got) != 2 {
		t.Errorf("counts: got %v, want three GET 502 and three GET 499", got)
	}
}

// TestStatusOutOfRange: a status outside 100–599 from the app (RFC 9110
// 15 calls them invalid) is a malformed answer on both paths: the client
// gets a 502, and the 502 is what is counted. Over HTTP/2 the client got
// the app's 600 while the request was counted 502.
func TestStatusOutOfRange(t *testing.T) {
	h1 := fakeApp(t, func(nc net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			fmt.Fprintf(nc, "HTTP/1.1 %s Beyond\r\nContent-Length: 2\r\n\r\nok", strings.TrimPrefix(req.URL.Path, "/"))
		}
	})
	h2 := startH2CApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
		w.WriteHeader(code)
		io.WriteString(w, "ok")
	}))
	cases := []struct {
		name   string
		app    string
		client *http.Client
	}{
		{"HTTP/1.1", h1, &http.Client{Timeout: 30 * time.Second}},
		{"HTTP/2", h2, h2cClient(t)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tp := startProxy(t, tc.app, nil)
			for _, code := range []int{600, 999} {
				resp, err := tc.client.Get(fmt.Sprintf("http://%s/%d", tp.addr, code))
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 502 || !strings.Contains(string(b), "malformed response from the app") {
					t.Errorf("app's %d: got %d %q, want 502 saying the answer was malformed", code, resp.StatusCode, b)
				}
			}
			tc.client.CloseIdleConnections()
			tp.settle(t)
			if got := tp.counts(t); got["GET 502"] != 2 || len(got) != 1 {
				t.Errorf("counts: got %v, want two GET 502", got)
			}
		})
	}
}

// TestH2CAppStopsReading: an HTTP/2 app that stops reading its
// connection (frozen, or its reader stuck) has that connection closed once
// a write to it has been blocked for IOTimeout, as on HTTP/1.1 (see
// TestAppStopsReadingTheBody): the stream whose body could not be sent
// gets a 502. It waited for as long as its client did, and so did every
// later stream sent on that connection.
func TestH2CAppStopsReading(t *testing.T) {
	app := testbin.Serve(t, func(nc net.Conn) {
		// The server's preface: windows as large as HTTP/2 allows, so
		// that only the socket stops the proxy's writes. Then nothing is
		// read until the test ends.
		nc.Write([]byte{
			0, 0, 6, 0x4, 0, 0, 0, 0, 0, // SETTINGS
			0, 0x4, 0x7f, 0xff, 0xff, 0xff, // INITIAL_WINDOW_SIZE 2^31-1
			0, 0, 4, 0x8, 0, 0, 0, 0, 0, // WINDOW_UPDATE, stream 0
			0x7f, 0xfe, 0xff, 0xff, // 2^31-1 - 65535
		})
		<-t.Context().Done()
	})
	tp := startProxy(t, app, func(c *Config) { c.IOTimeout = 300 * time.Millisecond })
	client := h2cClient(t)
	client.Timeout = 5 * time.Second
	start := time.Now()
	resp, err := client.Post("http://"+tp.addr+"/upload", "application/octet-stream", bytes.NewReader(make([]byte, 64<<20)))
	if err != nil {
		t.Fatalf("after %v: %v; want a 502", time.Since(start), err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 502 || !strings.Contains(string(b), "app stopped reading") {
		t.Errorf("got %d %q, want 502 saying the app stopped reading", resp.StatusCode, b)
	}
	client.CloseIdleConnections()
	tp.settle(t)
	if got := tp.counts(t); got["POST 502"] != 1 || len(got) != 1 {
		t.Errorf("counts: got %v, want one POST 502", got)
	}
}

// TestH2CClientStopsReading: an HTTP/2 client that stops reading its
// connection while its answer comes has the connection closed once a
// write to it has been blocked for IOTimeout, as on HTTP/1.1 (see
// TestAnswerBeforeTheBodyToAClientNotReading): the stream is counted 499
// and the app's stream is cancelled. It stayed in flight for as long as
// the client kept the connection open.
func TestH2CClientStopsReading(t *testing.T) {
	appDone := make(chan struct{})
	app := startH2CApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(appDone)
		chunk := make([]byte, 64<<10)
		for {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	tp := startProxy(t, app, func(c *Config) { c.IOTimeout = 300 * time.Millisecond })
	nc, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// The preface, windows as large as HTTP/2 allows, so that only the
	// socket stops the proxy's writes, and GET / on stream 1. Then
	// nothing is read.
	io.WriteString(nc, h2Preface)
	nc.Write([]byte{
		0, 0, 6, 0x4, 0, 0, 0, 0, 0, // SETTINGS
		0, 0x4, 0x7f, 0xff, 0xff, 0xff, // INITIAL_WINDOW_SIZE 2^31-1
		0, 0, 4, 0x8, 0, 0, 0, 0, 0, // WINDOW_UPDATE, stream 0
		0x7f, 0xfe, 0xff, 0xff, // 2^31-1 - 65535
		0, 0, 6, 0x1, 0x5, 0, 0, 0, 1, // HEADERS, END_STREAM|END_HEADERS, stream 1
		0x82, 0x86, 0x84, 0x41, 1, 'a', // GET http / a, HPACK
	})
	select {
	case <-appDone:
	case <-time.After(10 * time.Second):
		t.Fatal("the app's stream still runs 10 s on; want it cancelled once the write to the client was blocked for IOTimeout")
	}
	waitFor(t, "the stream to be counted", func() bool { return len(tp.counts(t)) > 0 })
	if got := tp.counts(t); got["GET 499"] != 1 || len(got) != 1 {
		t.Errorf("counts: got %v, want one GET 499", got)
	}
	if n := tp.InFlight(); n != 0 {
		t.Errorf("in flight: %d, want 0", n)
	}
}

// TestH2CClientStallsItsBody: an HTTP/2 stream whose request body brings
// nothing for IOTimeout before its answer has begun ends, as on HTTP/1.1
// (see TestClientStallsItsBody): the client gets a 408, the app's request
// is cancelled, and the stream is counted 408. It stayed in flight, and the
// app's request open, for as long as the client kept its connection. A
// body that keeps coming, slowly; one the app does not read; a long answer
// after a body that ended; and a client quiet while its answer comes (a
// bidirectional gRPC stream) are left alone.
func TestH2CClientStallsItsBody(t *testing.T) {
	const timeout = 300 * time.Millisecond
	cases := []struct {
		name     string
		path     string
		body     func(w *io.PipeWriter) // writes the body; nil: none
		wantCode int                    // what the client gets; 0: a reset stream
		counted  string
	}{
		{"stalled", "/echo", func(w *io.PipeWriter) { io.WriteString(w, "0123456789") }, 408, "POST 408"},
		// A bidirectional stream (gRPC): its client may be quiet for
		// longer than IOTimeout while the app's answer is under way.
		{"quiet after the answer began", "/answer-first", func(w *io.PipeWriter) {
			io.WriteString(w, "0123")
			time.Sleep(3 * timeout)
			io.WriteString(w, "456789")
			w.Close()
		}, 200, "POST 200"},
		{"slow but coming", "/echo", func(w *io.PipeWriter) {
			for range 8 {
				io.WriteString(w, "x")
				time.Sleep(timeout / 3)
			}
			w.Close()
		}, 200, "POST 200"},
		{"not read by the app", "/no-read", func(w *io.PipeWriter) {
			w.Write(make([]byte, 16<<20))
		}, 200, "POST 200"},
		{"long answer after the body", "/stream", func(w *io.PipeWriter) {
			io.WriteString(w, "ping")
			w.Close()
		}, 200, "POST 200"},
		{"long answer, no body", "/stream", nil, 200, "GET 200"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			appEnded := make(chan error, 1)
			app := startH2CApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch r.URL.Path {
				case "/answer-first":
					w.WriteHeader(200)
					w.(http.Flusher).Flush()
					fallthrough
				case "/echo":
					b, err := io.ReadAll(r.Body)
					appEnded <- err
					w.Write(b)
				case "/no-read":
					time.Sleep(3 * timeout)
					appEnded <- nil
				case "/stream":
					io.Copy(io.Discard, r.Body)
					for range 8 {
						io.WriteString(w, "tick\n")
						w.(http.Flusher).Flush()
						time.Sleep(timeout / 3)
					}
					appEnded <- nil
				}
			}))
			tp := startProxy(t, app, func(c *Config) { c.IOTimeout = timeout })
			client := h2cClient(t)
			// Without an end to the stall, the client gives up after 5 s:
			// its body fails, which resets the stream.
			pr, pw := io.Pipe()
			var gaveUp atomic.Bool
			giveUp := time.AfterFunc(5*time.Second, func() {
				gaveUp.Store(true)
				pw.CloseWithError(errors.New("the test gave up"))
			})
			defer giveUp.Stop()
			defer pw.Close()
			method, body := "GET", io.Reader(nil)
			if tc.body != nil {
				go tc.body(pw)
				method, body = "POST", pr
			}
			req, _ := http.NewRequest(method, "http://"+tp.addr+tc.path, body)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("%v; want an answer within IOTimeout of the stall", err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case tc.wantCode == 0 && err == nil:
				t.Errorf("got the whole answer %d %q, want the stream reset", resp.StatusCode, b)
			case tc.wantCode != 0 && (err != nil || resp.StatusCode != tc.wantCode):
				t.Errorf("got %d %q (%v), want %d", resp.StatusCode, b, err, tc.wantCode)
			}
			if gaveUp.Load() {
				t.Error("the exchange still ran after 5 s, want it ended within IOTimeout of the stall")
			}
			if tc.wantCode == 408 && !strings.Contains(string(b), "request body timed out") {
				t.Errorf("got %q, want it to say the request body timed out", b)
			}
			select {
			case err := <-appEnded:
				if tc.wantCode == 0 || tc.wantCode == 408 {
					if err == nil {
						t.Error("the app read the whole body, want its request cancelled")
					}
				}
			case <-time.After(5 * time.Second):
				t.Error("the app's request still runs, want it cancelled")
			}
			client.CloseIdleConnections()
			tp.settle(t) // fails if the stream is left in flight
			if got := tp.counts(t); got[tc.counted] != 1 || len(got) != 1 {
				t.Errorf("counts: got %v, want one %s", got, tc.counted)
			}
		})
	}
}

// startH2CApp serves handler over HTTP/2 cleartext only, as a gRPC app
// without TLS does, and returns its address.
func startH2CApp(t *testing.T, handler http.Handler) string {
	t.Helper()
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	app := &http.Server{Protocols: &protos, Handler: handler, ErrorLog: log.New(io.Discard, "", 0)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go app.Serve(ln)
	t.Cleanup(func() { app.Close() })
	return ln.Addr().String()
}

// h2cClient speaks HTTP/2 cleartext with prior knowledge, as gRPC
// clients do without TLS.
func h2cClient(t *testing.T) *http.Client {
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	c := &http.Client{Transport: &http.Transport{Protocols: &protos}, Timeout: 30 * time.Second}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// TestIdleAppConnectionHoldsNoBuffer: an app connection back in the pool
// after an answer holds no read buffer, whatever the answer's framing.
func TestIdleAppConnectionHoldsNoBuffer(t *testing.T) {
	cases := []struct {
		name, answer string
	}{
		{"length", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"},
		{"chunked with trailers", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			app := fakeApp(t, func(nc net.Conn, br *bufio.Reader) {
				for {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					if _, err := io.WriteString(nc, tc.answer); err != nil {
						return
					}
				}
			})
			tp := startProxy(t, app, nil)
			rc := dialRaw(t, tp.addr)
			rc.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			resp := rc.response("GET")
			if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || string(b) != "abc" {
				t.Fatalf("answer: got %d %q, want 200 \"abc\"", resp.StatusCode, b)
			}
			// The client leaves: its pinned app connection goes back to
			// the pool.
			rc.nc.Close()
			// A loop counts the connection it keeps before it lists it:
			// wait for the list, and for the count to agree with it.
			var idle []*upConn
			waitFor(t, "one idle app connection, listed and counted", func() bool {
				idle = idleAppConns(tp)
				return len(idle) == 1 && tp.pool.idleCount() == 1
			})
			if held := idle[0].br.buf != nil; held {
				t.Errorf("idle app connection: holds a read buffer, want none")
			}
		})
	}
}

// TestNewRefusesBadConfig: New names what is wrong with a config rather
// than serving with it.
func TestNewRefusesBadConfig(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no upstream", Config{}, "no upstream address"},
		{"a QPS window past the bound", Config{Upstream: "127.0.0.1:1", QPSWindow: MaxQPSWindow + time.Second}, "QPS window 1h0m1s is longer than 1h0m0s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, prometheus.NewRegistry())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: got %v, want an error saying %q", err, tc.want)
			}
		})
	}
	if _, err := New(Config{Upstream: "127.0.0.1:1", QPSWindow: MaxQPSWindow}, prometheus.NewRegistry()); err != nil {
		t.Errorf("New with the longest window: %v", err)
	}
}
