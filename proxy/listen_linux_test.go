package proxy

import (
	"context"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// acceptedKeepAlive returns the keep-alive options of a connection
// accepted on ln.
func acceptedKeepAlive(t *testing.T, ln net.Listener) map[string]int {
	t.Helper()
	defer ln.Close()
	// A byte, so that a deferred accept does not wait.
	dialRaw(t, ln.Addr().String()).send("G")
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	rc, err := nc.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	err = rc.Control(func(fd uintptr) {
		for _, o := range []struct {
			name       string
			level, opt int
		}{
			{"SO_KEEPALIVE", syscall.SOL_SOCKET, syscall.SO_KEEPALIVE},
			{"TCP_KEEPIDLE", syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE},
			{"TCP_KEEPINTVL", syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL},
			{"TCP_KEEPCNT", syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT},
			{"TCP_NODELAY", syscall.IPPROTO_TCP, syscall.TCP_NODELAY},
		} {
			v, err := syscall.GetsockoptInt(int(fd), o.level, o.opt)
			if err != nil {
				t.Errorf("getsockopt %s: %v", o.name, err)
			}
			got[o.name] = v
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestListenKeepAlive: a connection accepted on Listen's listener has the
// keep-alive and no-delay settings net.Listen gives its connections,
// although they are set on the listening socket only.
func TestListenKeepAlive(t *testing.T) {
	ln, err := Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := acceptedKeepAlive(t, ln)
	std, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	want := acceptedKeepAlive(t, std)
	for _, name := range []string{"SO_KEEPALIVE", "TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_NODELAY"} {
		if got[name] != want[name] {
			t.Errorf("%s: got %d, want %d as net.Listen's connections have", name, got[name], want[name])
		}
	}
	if want["SO_KEEPALIVE"] != 1 || want["TCP_KEEPIDLE"] != 15 || want["TCP_KEEPINTVL"] != 15 || want["TCP_KEEPCNT"] != 9 {
		t.Errorf("net.Listen's keep-alive: got %v, want on, 15 s, 15 s, 9 probes (keepAliveIdle and the others restate it)", want)
	}
}

// TestListenDefersAccept: a connection is accepted once its client has
// sent something, not when it connects; one that sends nothing is
// accepted after deferAccept.
func TestListenDefersAccept(t *testing.T) {
	ln, err := Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tl := ln.(*net.TCPListener)
	accept := func(wait time.Duration) (net.Conn, error) {
		_ = tl.SetDeadline(time.Now().Add(wait))
		return tl.Accept()
	}

	dialRaw(t, ln.Addr().String())
	if nc, err := accept(300 * time.Millisecond); err == nil {
		nc.Close()
		t.Fatal("a connection that sent nothing was accepted at once, want it deferred")
	}
	start := time.Now()
	nc, err := accept(deferAccept + 5*time.Second)
	if err != nil {
		t.Fatalf("a connection that sent nothing was not accepted %v later: %v", deferAccept, err)
	}
	nc.Close()
	if waited := time.Since(start) + 300*time.Millisecond; waited < deferAccept/2 {
		t.Errorf("a connection that sent nothing was accepted after %v, want about %v", waited, deferAccept)
	}

	dialRaw(t, ln.Addr().String()).send("GET / HTTP/1.1\r\n")
	nc, err = accept(500 * time.Millisecond)
	if err != nil {
		t.Fatalf("a connection that sent its request was not accepted at once: %v", err)
	}
	defer nc.Close()
	b := make([]byte, 64)
	_ = nc.SetReadDeadline(time.Now().Add(time.Second))
	if n, err := nc.Read(b); err != nil || string(b[:n]) != "GET / HTTP/1.1\r\n" {
		t.Errorf("first read of an accepted connection: %q, %v; want the request sent before the accept", b[:n], err)
	}
}

func TestListenBadAddress(t *testing.T) {
	_, err := Listen(context.Background(), "127.0.0.1:notaport")
	if err == nil || !strings.Contains(err.Error(), "listen on 127.0.0.1:notaport") {
		t.Errorf("got %v, want an error naming the address", err)
	}
}
