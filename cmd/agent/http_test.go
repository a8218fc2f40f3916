package main

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outrider-sidecar/outrider/internal/testlog"
)

// TestRefuseBrowsers: a web page cannot drive the admin API, by a
// cross-site request or by a DNS name rebound to loopback; outrider
// prestop, curl, the kubelet (no Sec-Fetch-Site, no Origin) and a script
// that sends HTTP/1.0 without a Host (which no browser does) can.
func TestRefuseBrowsers(t *testing.T) {
	tests := []struct {
		name   string
		token  string
		method string
		host   string
		header map[string]string
		want   int
	}{
		{name: "curl", method: "POST", host: "127.0.0.1:15000", want: 200},
		{name: "localhost", method: "POST", host: "localhost:15000", want: 200},
		{name: "IPv6 loopback", method: "GET", host: "[::1]:15000", want: 200},
		{name: "address bar", method: "GET", host: "127.0.0.1:15000", header: map[string]string{"Sec-Fetch-Site": "none"}, want: 200},
		{name: "same origin", method: "POST", host: "127.0.0.1:15000",
			header: map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "http://127.0.0.1:15000"}, want: 200},
		{name: "form from a page", method: "POST", host: "127.0.0.1:15000",
			header: map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example"}, want: 403},
		{name: "image from a page", method: "GET", host: "127.0.0.1:15000",
			header: map[string]string{"Sec-Fetch-Site": "cross-site"}, want: 403},
		{name: "same site", method: "GET", host: "127.0.0.1:15000",
			header: map[string]string{"Sec-Fetch-Site": "same-site"}, want: 403},
		{name: "old browser's Origin", method: "POST", host: "127.0.0.1:15000",
			header: map[string]string{"Origin": "http://evil.example"}, want: 403},
		{name: "HTTP/1.0 without Host", method: "POST", host: "", want: 200},
		{name: "rebound name", method: "GET", host: "evil.example:15000",
			header: map[string]string{"Sec-Fetch-Site": "same-origin"}, want: 421},
		{name: "name with a token", token: "t", method: "GET", host: "outrider.pod:15000", want: 200},
		{name: "cross-site with a token", token: "t", method: "POST", host: "10.0.0.7:15000",
			header: map[string]string{"Sec-Fetch-Site": "cross-site"}, want: 403},
	}
	ok := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, "/drain", nil)
			r.Host = tt.host
			for k, v := range tt.header {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			refuseBrowsers(tt.token, ok).ServeHTTP(w, r)
			if w.Code != tt.want {
				t.Errorf("got %d %q, want %d", w.Code, w.Body, tt.want)
			}
		})
	}
}

// TestRequireToken: the bearer scheme is matched in any case (RFC 7235),
// the token exactly; the answer never holds either token.
func TestRequireToken(t *testing.T) {
	tests := []struct {
		name   string
		header string
		want   int
	}{
		{name: "bearer", header: "Bearer s3cret", want: 200},
		{name: "lower-case scheme", header: "bearer s3cret", want: 200},
		{name: "upper-case scheme", header: "BEARER s3cret", want: 200},
		{name: "two spaces", header: "Bearer  s3cret", want: 200},
		{name: "none", header: "", want: 401},
		{name: "token alone", header: "s3cret", want: 401},
		{name: "wrong token", header: "Bearer s3cre", want: 401},
		{name: "token in another case", header: "Bearer S3CRET", want: 401},
		{name: "other scheme", header: "Basic s3cret", want: 401},
		{name: "scheme glued to the token", header: "Bearers3cret", want: 401},
	}
	ok := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "http://127.0.0.1:15000/status", nil)
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			w := httptest.NewRecorder()
			requireToken("s3cret", ok).ServeHTTP(w, r)
			if w.Code != tt.want {
				t.Errorf("got %d %q, want %d", w.Code, w.Body, tt.want)
			}
			if body := strings.ToLower(w.Body.String() + fmt.Sprint(w.Header())); strings.Contains(body, "s3cre") {
				t.Errorf("answer %q %v holds the token", w.Body, w.Header())
			}
		})
	}
}

// boundedServer serves GET /fast, GET /big (64 KiB) and GET /slow, which
// answers once release is closed, with newServer bounded to bound
// connections. Each state a connection enters is sent on states once the
// bound has handled it.
func boundedServer(t *testing.T, bound int, release <-chan struct{}) (addr string, states <-chan http.ConnState, closed prometheus.Counter) {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /fast", func(http.ResponseWriter, *http.Request) {})
	mux.HandleFunc("GET /slow", func(http.ResponseWriter, *http.Request) { <-release })
	mux.HandleFunc("GET /big", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(make([]byte, 64<<10)) // past the server's buffer: written in the handler
	})
	closed = prometheus.NewCounter(prometheus.CounterOpts{Name: "closed_total", Help: "Connections closed."})
	srv := newServer(mux, 10*time.Second, bound, closed, slog.New(slog.DiscardHandler))
	ch := make(chan http.ConnState, 100)
	track := srv.ConnState
	srv.ConnState = func(nc net.Conn, st http.ConnState) {
		track(nc, st)
		ch <- st
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), ch, closed
}

// boundConn is a client connection of TestServerConnectionBound.
type boundConn struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

// dialBound connects to addr and writes head.
func dialBound(t *testing.T, addr, head string) *boundConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(nc, head); err != nil {
		t.Fatal(err)
	}
	return &boundConn{t: t, nc: nc, br: bufio.NewReader(nc)}
}

// status reads an answer and returns its status code, or 0 when the
// server closed the connection instead.
func (c *boundConn) status() int {
	c.t.Helper()
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			c.t.Fatalf("no answer and no close within 5s")
		}
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// await waits for the server to have handled each of want, in order.
func await(t *testing.T, states <-chan http.ConnState, want ...http.ConnState) {
	t.Helper()
	for _, w := range want {
		select {
		case got := <-states:
			if got != w {
				t.Fatalf("connection state: got %v, want %v", got, w)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("connection state: waited 5s for %v", w)
		}
	}
}

const (
	fastGet = "GET /fast HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
	slowGet = "GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
)

// TestServerConnectionBound: a server at its bound of connections closes,
// for each new one, the connection that has waited longest for a request,
// never one whose request is being answered; when every connection is in
// a request, the new one is closed.
func TestServerConnectionBound(t *testing.T) {
	t.Run("the longest waiting goes", func(t *testing.T) {
		release := make(chan struct{})
		addr, states, closed := boundedServer(t, 3, release)
		idle := dialBound(t, addr, fastGet)
		if code := idle.status(); code != http.StatusOK {
			t.Fatalf("first connection: got %d, want 200", code)
		}
		await(t, states, http.StateNew, http.StateActive, http.StateIdle)
		half := dialBound(t, addr, "GET /fast HTTP/1.1\r\n")
		await(t, states, http.StateNew)
		busy := dialBound(t, addr, slowGet)
		await(t, states, http.StateNew, http.StateActive)

		if code := dialBound(t, addr, fastGet).status(); code != http.StatusOK {
			t.Errorf("a new connection at the bound: got %d, want 200", code)
		}
		if code := idle.status(); code != 0 {
			t.Errorf("the idle keep-alive connection, the longest waiting: got %d, want it closed", code)
		}
		if _, err := io.WriteString(half.nc, "Host: 127.0.0.1\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if code := half.status(); code != http.StatusOK {
			t.Errorf("the connection that had sent half a head: got %d, want 200", code)
		}
		close(release)
		if code := busy.status(); code != http.StatusOK {
			t.Errorf("the connection in a request: got %d, want 200", code)
		}
		if got := testutil.ToFloat64(closed); got != 1 {
			t.Errorf("connections closed: got %v, want 1", got)
		}
	})
	t.Run("a body held back", func(t *testing.T) {
		// Each announces a body and sends none, which the server waited
		// for before it wrote the answer: in the handler for /big, after
		// it for /fast.
		addr, states, closed := boundedServer(t, 4, nil)
		var holders []*boundConn
		for _, path := range []string{"/fast", "/big", "/big", "/fast"} {
			holders = append(holders, dialBound(t, addr, "GET "+path+" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n"))
			await(t, states, http.StateNew, http.StateActive)
		}
		// The handler marks its connection waiting just after it returns,
		// which no connection state shows: try a few times (each try adds
		// two states to the 100 that states holds).
		code := 0
		for try := 0; code == 0 && try < 20; try++ {
			if code = dialBound(t, addr, fastGet).status(); code == 0 {
				time.Sleep(50 * time.Millisecond)
			}
		}
		if code != http.StatusOK {
			t.Fatalf("a new connection with every one holding back a body: got %d, want 200", code)
		}
		for i, c := range holders {
			if code := c.status(); code != http.StatusOK {
				t.Errorf("connection %d, its body held back: got %d, want 200 without waiting for the body", i, code)
			}
		}
		if got := testutil.ToFloat64(closed); got < 1 {
			t.Errorf("connections closed: got %v, want at least 1", got)
		}
	})
	t.Run("answers not read", func(t *testing.T) {
		// Each asks for answers again and again and reads none: the
		// server is stuck writing to it, in a request until its write
		// timeout, and a flood of them kept every new connection out
		// for as long. The one stuck longest goes instead.
		addr, states, closed := boundedServer(t, 3, nil)
		go func() {
			for range states { // too many to await
			}
		}()
		d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
			var err error
			_ = c.Control(func(fd uintptr) {
				err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1024)
			})
			return err
		}}
		for range 3 {
			nc, err := d.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { nc.Close() })
			go func() { _, _ = io.WriteString(nc, strings.Repeat("GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200)) }()
		}
		time.Sleep(time.Second) // for the server's socket buffers to fill
		for i := range 3 {
			if code := dialBound(t, addr, fastGet).status(); code != http.StatusOK {
				t.Fatalf("new connection %d with every one stuck sending an answer: got %d, want 200", i, code)
			}
		}
		if got := testutil.ToFloat64(closed); got != 3 {
			t.Errorf("connections closed: got %v, want 3", got)
		}
	})
	t.Run("every one in a request", func(t *testing.T) {
		release := make(chan struct{})
		addr, states, closed := boundedServer(t, 3, release)
		var busy []*boundConn
		for range 3 {
			busy = append(busy, dialBound(t, addr, slowGet))
			await(t, states, http.StateNew, http.StateActive)
		}
		if code := dialBound(t, addr, fastGet).status(); code != 0 {
			t.Errorf("a new connection with every one in a request: got %d, want it closed", code)
		}
		close(release)
		for i, c := range busy {
			if code := c.status(); code != http.StatusOK {
				t.Errorf("connection %d in a request: got %d, want 200", i, code)
			}
		}
		if got := testutil.ToFloat64(closed); got != 1 {
			t.Errorf("connections closed: got %v, want 1", got)
		}
	})
}

// TestServersStopTogether: at a stop the metrics and the admin server
// each wait up to 5 s for a request being answered, and they wait at the
// same time: a request held on each ends the run 5 s after the stop, not 10.
func TestServersStopTogether(t *testing.T) {
	t.Parallel()
	logs := &testlog.Buffer{}
	a := &agent{
		log: slog.New(slog.NewJSONHandler(logs, nil)),
		serverConnsClosed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "closed_total", Help: "Connections closed."},
			[]string{"server"}),
	}
	held, release := make(chan struct{}, 2), make(chan struct{})
	t.Cleanup(func() { close(release) })
	hold := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		held <- struct{}{}
		<-release
	})
	for _, name := range []string{"metrics", "admin"} {
		if err := a.serve(name, "OUTRIDER_"+strings.ToUpper(name)+"_LISTEN", "127.0.0.1:0", hold, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	addrs := regexp.MustCompile(`"addr":"([^"]+)"`).FindAllStringSubmatch(logs.String(), -1)
	if len(addrs) != 2 {
		t.Fatalf("want two listening lines, got:\n%s", logs.String())
	}
	for _, m := range addrs {
		go func() { _, _ = http.Get("http://" + m[1] + "/") }()
	}
	// The stop: an actor that ends once both requests are in their handlers.
	a.group.Add(func() error {
		<-held
		<-held
		return nil
	}, func(error) {})
	start := time.Now()
	_ = a.group.Run()
	if took := time.Since(start); took < 4*time.Second || took > 8*time.Second {
		t.Errorf("the run ended %s after the stop, want about 5 s (each server's wait, at the same time)", took.Round(time.Millisecond))
	}
}
