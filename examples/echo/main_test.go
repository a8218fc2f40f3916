package main

import (
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outrider-sidecar/outrider/internal/testbin"
)

func TestMain(m *testing.M) { testbin.Main(m) }

// waitFor polls cond until it holds, for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestStopFinishesTheRequestsInFlight: at SIGTERM echo stops accepting,
// answers the requests in flight, and only then exits with -exit-code. It
// used to exit as soon as its server stopped accepting, cutting them: the
// sample app must stop as the docs tell apps to.
func TestStopFinishesTheRequestsInFlight(t *testing.T) {
	addr := testbin.FreeAddr(t)
	p := testbin.Start(t, testbin.Echo(t), nil, "-listen", addr, "-exit-code", "3")
	testbin.WaitHTTP(t, "http://"+addr+"/healthz", 200, 20*time.Second)
	// A POST /echo whose body comes in two parts: the first's echo shows
	// the request is in flight; the second is sent after the SIGTERM.
	const part = 64 << 10
	body, send := io.Pipe()
	defer send.Close()
	resp := make(chan *http.Response, 1)
	failed := make(chan error, 1)
	go func() {
		r, err := http.Post("http://"+addr+"/echo", "application/octet-stream", body)
		if err != nil {
			failed <- err
			return
		}
		resp <- r
	}()
	if _, err := send.Write(make([]byte, part)); err != nil {
		t.Fatal(err)
	}
	var r *http.Response
	select {
	case r = <-resp:
	case err := <-failed:
		t.Fatal(err)
	}
	defer r.Body.Close()
	if _, err := io.ReadFull(r.Body, make([]byte, 1)); err != nil {
		t.Fatalf("the echo of the first part: %v", err)
	}
	p.Signal(syscall.SIGTERM)
	waitFor(t, "echo to log its stop", func() bool { return strings.Contains(p.Output(), "stop signal received") })
	if _, err := send.Write(make([]byte, part)); err != nil {
		t.Fatalf("the second part, after SIGTERM: %v", err)
	}
	send.Close()
	n, err := io.Copy(io.Discard, r.Body)
	if err != nil || n != 2*part-1 || r.StatusCode != 200 {
		t.Errorf("the request in flight at SIGTERM: %d, %d bytes echoed, %v; want 200, all %d", r.StatusCode, n+1, err, 2*part)
	}
	if code := p.Wait(10 * time.Second); code != 3 {
		t.Errorf("exit status %d, want 3", code)
	}
}
