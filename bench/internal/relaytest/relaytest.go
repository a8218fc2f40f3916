// Package relaytest checks the bench's minimal event-loop proxies
// (cmd/goloop, cmd/gnetloop) end to end, in front of a net/http app.
package relaytest

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/outrider-sidecar/outrider/bench/internal/rawloop"
)

// CheckRaw runs Check on a raw-socket loop (cmd/goloop, cmd/uringloop):
// start runs one loop on a listening socket on a free loopback port, and
// flags are added to that socket's type.
func CheckRaw(t *testing.T, flags int, start rawloop.Start) {
	t.Helper()
	Check(t, func(t *testing.T, app string) string {
		t.Helper()
		aa, err := rawloop.Addr(app)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := rawloop.Listen(&syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}, flags)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Close(ln) })
		sa, err := syscall.Getsockname(ln)
		if err != nil {
			t.Fatal(err)
		}
		if err := start(ln, aa); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	})
}

// Check starts an app, has start put a proxy in front of it (start
// returns the proxy's address), and checks what a client gets through it:
// answers with a length and chunked ones, a body of 200,000 bytes echoed
// back, one app connection for a keep-alive client, and "Connection:
// close" that ends the client's connection, says so, and keeps the app's.
// The proxy must send every client connection to the same app pool.
func Check(t *testing.T, start func(t *testing.T, app string) string) {
	t.Helper()
	var appConns atomic.Int32
	app := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/echo":
			// Chunked, as no length is set; full duplex, as the bench's app.
			_ = http.NewResponseController(w).EnableFullDuplex()
			_, _ = io.Copy(w, r.Body)
		default:
			w.Header().Set("Content-Length", "5")
			_, _ = io.WriteString(w, "hello")
		}
	}))
	app.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			appConns.Add(1)
		}
	}
	app.Start()
	defer app.Close()
	base := "http://" + start(t, app.Listener.Addr().String())

	client := &http.Client{}
	for i := range 3 {
		resp, err := client.Get(base + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "hello" {
			t.Errorf("GET %d: body %q, want hello", i, body)
		}
	}
	big := strings.Repeat("x", 200_000)
	resp, err := client.Post(base+"/echo", "text/plain", strings.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != big {
		t.Errorf("POST /echo: got %d bytes back, want %d", len(body), len(big))
	}
	if n := appConns.Load(); n != 1 {
		t.Errorf("the app saw %d connections for one keep-alive client, want 1", n)
	}

	// Connection: close ends the client's connection, says so, and keeps
	// the app's.
	for i := range 3 {
		req, _ := http.NewRequest("GET", base+"/", nil)
		req.Close = true
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if !resp.Close {
			t.Errorf("close %d: the answer does not say Connection: close", i)
		}
	}
	if n := appConns.Load(); n != 1 {
		t.Errorf("the app saw %d connections after requests with Connection: close, want 1", n)
	}
}
