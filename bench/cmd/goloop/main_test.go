package main

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
)

// startLoop serves a loop in front of app and returns its address.
func startLoop(t *testing.T, app *httptest.Server) string {
	t.Helper()
	aa, err := sockaddr(app.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	l, err := newLoop(&syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}, aa)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(l.ln) })
	sa, err := syscall.Getsockname(l.ln)
	if err != nil {
		t.Fatal(err)
	}
	go l.run()
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}

func TestLoopRelays(t *testing.T) {
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
	base := "http://" + startLoop(t, app)

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
