//go:build !race

package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
)

// stackChild is set in the environment of the process that
// TestConnectionStack starts to measure in: "1" for connections served by
// goroutines, "loop" for the event loop.
const stackChild = "OUTRIDER_TEST_STACK_CHILD"

// TestConnectionStack holds many client connections, each in the middle
// of its second exchange, and reads the goroutines and the goroutine stack
// the proxy keeps for them.
//
// Served by goroutines (the event loop off, and every connection's first
// request, and any request that is not plain), a connection's goroutine
// runs every step of an exchange on a 4 KiB stack (see exchange); a frame
// that grew on that path would double it to 8 KiB, and at a thousand
// connections that is 4 MB more resident. In the event loop, a connection
// waiting for the app's answer holds no goroutine at all.
//
// It measures in a new process running only this test: stacks that other
// tests' goroutines left free would be reused and hide a growth. Not
// under the race detector, whose instrumentation deepens every frame
// (scripts/test.sh runs it without).
func TestConnectionStack(t *testing.T) {
	if mode := os.Getenv(stackChild); mode != "" {
		stack, goroutines := connectionStack(t, mode == "loop")
		fmt.Printf("stack per connection: %d, goroutines per connection: %.2f\n", stack, goroutines)
		return
	}
	for _, tt := range []struct {
		mode          string
		maxStack      int64
		maxGoroutines float64
	}{
		{"1", 6 << 10, 1.05},
		{"loop", 512, 0.05},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestConnectionStack$", "-test.count=1")
		cmd.Env = append(os.Environ(), stackChild+"="+tt.mode)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("the measuring process (%s) failed: %v\n%s", tt.mode, err, out)
		}
		var stack int64
		var goroutines float64
		const said = "stack per connection: "
		at := strings.Index(string(out), said)
		if at < 0 {
			t.Fatalf("the measuring process (%s) said no figure:\n%s", tt.mode, out)
		}
		if _, err := fmt.Sscanf(string(out[at:]), said+"%d, goroutines per connection: %f", &stack, &goroutines); err != nil {
			t.Fatalf("the measuring process (%s) said no figure (%v):\n%s", tt.mode, err, out)
		}
		t.Logf("%s: goroutine stack per connection held mid-exchange: %d bytes, goroutines per connection: %.2f", tt.mode, stack, goroutines)
		if stack > tt.maxStack {
			t.Errorf("%s: each connection held mid-exchange costs %d bytes of goroutine stack, want at most %d: a frame on the exchange's path grew (find it with go build -gcflags=-S, see exchange), or a connection in the event loop kept its goroutine", tt.mode, stack, tt.maxStack)
		}
		if goroutines > tt.maxGoroutines {
			t.Errorf("%s: %.2f goroutines per connection held mid-exchange, want at most %.2f", tt.mode, goroutines, tt.maxGoroutines)
		}
	}
}

// connectionStack returns the goroutine stack, in bytes, and the
// goroutines that the proxy holds per connection waiting for the app's
// answer to its second request, with the event loop or without.
func connectionStack(t *testing.T, loop bool) (int64, float64) {
	const n = 200
	// The app, one goroutine: for each connection the proxy opens, it
	// answers the first request and holds the second. The test's clients
	// are driven from the test's goroutine: neither side adds a goroutine
	// per connection, so the stacks that grow are the proxy's.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// It answers the first request of each connection as it comes, and
	// reads the held ones only once every connection has had its first
	// answer: a request the loop waits on longer than its sweep's tick is
	// handed back to a goroutine, so the held requests are sent together,
	// however long a busy machine takes to open the connections.
	first := make(chan error, n)
	held := make(chan error, n)
	readHeld := make(chan struct{})
	var mu sync.Mutex
	var appConns []net.Conn
	go func() {
		var readers []*bufio.Reader
		for range n {
			nc, err := ln.Accept()
			if err != nil {
				first <- err
				return
			}
			mu.Lock()
			appConns = append(appConns, nc)
			mu.Unlock()
			br := bufio.NewReader(nc)
			readers = append(readers, br)
			err = readBodiless(br)
			if err == nil {
				_, err = io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
			}
			first <- err
		}
		<-readHeld
		for _, br := range readers {
			held <- readBodiless(br)
		}
		// Still here when the goroutines are counted, as at the start.
		_, _ = ln.Accept()
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, nc := range appConns {
			nc.Close()
		}
	})
	tp := startProxy(t, ln.Addr().String(), func(c *Config) { c.DisableEventLoop = !loop })

	// Stacks grown now stay grown: no collection shrinks them.
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	goroutines := runtime.NumGoroutine()

	clients := make([]net.Conn, n)
	for i := range n {
		nc, err := net.Dial("tcp", tp.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		clients[i] = nc
		br := bufio.NewReader(nc)
		if _, err := io.WriteString(nc, "GET /first HTTP/1.1\r\nHost: app\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if err := <-first; err != nil {
			t.Fatalf("connection %d: the app did not get the first request: %v", i, err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("connection %d, first answer: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != "ok\n" {
			t.Fatalf("connection %d, first answer: %d %q, want 200 \"ok\\n\"", i, resp.StatusCode, body)
		}
	}
	for _, nc := range clients {
		if _, err := io.WriteString(nc, "GET /held HTTP/1.1\r\nHost: app\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	close(readHeld)
	for i := range n {
		if err := <-held; err != nil {
			t.Fatalf("connection %d: the app did not get the held request: %v", i, err)
		}
	}

	runtime.ReadMemStats(&after)
	more := runtime.NumGoroutine() - goroutines
	if !loop && more < n {
		t.Fatalf("%d goroutines more for %d connections held; the measure assumes one each", more, n)
	}
	return (int64(after.StackInuse) - int64(before.StackInuse)) / n, float64(more) / n
}

// readBodiless reads one request without a body.
func readBodiless(br *bufio.Reader) error {
	req, err := http.ReadRequest(br)
	if err != nil {
		return err
	}
	return req.Body.Close()
}
