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
// TestConnectionStack starts to measure in.
const stackChild = "OUTRIDER_TEST_STACK_CHILD"

// TestConnectionStack holds many client connections, each in the middle
// of its second exchange, and reads the goroutine stack the proxy keeps
// for them. A connection's goroutine runs every step of an exchange on a
// 4 KiB stack (see exchange); a frame that grew on that path would double
// it to 8 KiB, and at a thousand connections that is 4 MB more resident.
//
// It measures in a new process running only this test: stacks that other
// tests' goroutines left free would be reused and hide a growth. Not
// under the race detector, whose instrumentation deepens every frame
// (scripts/test.sh runs it without).
func TestConnectionStack(t *testing.T) {
	if os.Getenv(stackChild) == "1" {
		fmt.Printf("stack per connection: %d\n", connectionStack(t))
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestConnectionStack$", "-test.count=1")
	cmd.Env = append(os.Environ(), stackChild+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the measuring process failed: %v\n%s", err, out)
	}
	var perConn int
	const said = "stack per connection: "
	at := strings.Index(string(out), said)
	if at < 0 {
		t.Fatalf("the measuring process said no figure:\n%s", out)
	}
	if _, err := fmt.Sscanf(string(out[at:]), said+"%d", &perConn); err != nil {
		t.Fatalf("the measuring process said no figure (%v):\n%s", err, out)
	}
	t.Logf("goroutine stack per connection held mid-exchange: %d bytes", perConn)
	if perConn > 6<<10 {
		t.Errorf("each connection held mid-exchange costs %d bytes of goroutine stack, want at most 4 KiB and some slack (6 KiB): a frame on the exchange's path grew; find it with go build -gcflags=-S, see exchange", perConn)
	}
}

// connectionStack returns the goroutine stack, in bytes, that the proxy
// holds per connection waiting for the app's answer to its second request.
func connectionStack(t *testing.T) int64 {
	const n = 200
	// The app, one goroutine: for each connection the proxy opens, it
	// answers the first request and holds the second. The test's clients
	// are driven from the test's goroutine: neither side adds a goroutine
	// per connection, so the stacks that grow are the proxy's.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan error, n)
	var mu sync.Mutex
	var appConns []net.Conn
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			appConns = append(appConns, nc)
			mu.Unlock()
			br := bufio.NewReader(nc)
			err = readBodiless(br)
			if err == nil {
				_, err = io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
			}
			if err == nil {
				err = readBodiless(br)
			}
			held <- err
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, nc := range appConns {
			nc.Close()
		}
	})
	tp := startProxy(t, ln.Addr().String(), nil)

	// Stacks grown now stay grown: no collection shrinks them.
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	goroutines := runtime.NumGoroutine()

	for i := range n {
		nc, err := net.Dial("tcp", tp.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		br := bufio.NewReader(nc)
		if _, err := io.WriteString(nc, "GET /first HTTP/1.1\r\nHost: app\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("connection %d, first answer: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != "ok\n" {
			t.Fatalf("connection %d, first answer: %d %q, want 200 \"ok\\n\"", i, resp.StatusCode, body)
		}
		if _, err := io.WriteString(nc, "GET /held HTTP/1.1\r\nHost: app\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if err := <-held; err != nil {
			t.Fatalf("connection %d: the app did not get both requests: %v", i, err)
		}
	}

	runtime.ReadMemStats(&after)
	if got := runtime.NumGoroutine() - goroutines; got < n {
		t.Fatalf("%d goroutines more for %d connections held; the measure assumes one each", got, n)
	}
	return (int64(after.StackInuse) - int64(before.StackInuse)) / n
}

// readBodiless reads one request without a body.
func readBodiless(br *bufio.Reader) error {
	req, err := http.ReadRequest(br)
	if err != nil {
		return err
	}
	return req.Body.Close()
}
