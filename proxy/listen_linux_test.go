package proxy

import (
	"context"
	"net"
	"strings"
	"syscall"
	"testing"
)

// acceptedKeepAlive returns the keep-alive options of a connection
// accepted on ln.
func acceptedKeepAlive(t *testing.T, ln net.Listener) map[string]int {
	t.Helper()
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
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

func TestListenBadAddress(t *testing.T) {
	_, err := Listen(context.Background(), "127.0.0.1:notaport")
	if err == nil || !strings.Contains(err.Error(), "listen on 127.0.0.1:notaport") {
		t.Errorf("got %v, want an error naming the address", err)
	}
}
