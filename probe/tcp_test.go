package probe

import (
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// fullBacklog returns the address of a listener that never accepts and
// whose backlog is full, so that a new connection attempt hangs.
func fullBacklog(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("bind: %v", err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatalf("listen: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname: %v", err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	// Fill the queue until a connection attempt is left waiting.
	for range 10 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return addr
		}
		t.Cleanup(func() { _ = c.Close() })
	}
	t.Fatalf("the backlog of %s never filled up", addr)
	return ""
}

func TestTCPProber(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepting := make(chan struct{})
	go func() {
		defer close(accepting)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-accepting
	})
	closed := closedAddr(t)

	tests := []struct {
		name       string
		spec       Spec
		timeout    time.Duration
		want       Outcome
		wantOutput []string
	}{
		{name: "listening", spec: mustSpec(t, "tcp://"+ln.Addr().String()), want: Success, wantOutput: []string{"connected"}},
		{name: "nothing listening", spec: mustSpec(t, "tcp://"+closed), want: Failure,
			wantOutput: []string{"connect to " + closed, "connection refused"}},
		{name: "no answer", spec: mustSpec(t, "tcp://"+fullBacklog(t)), timeout: 150 * time.Millisecond, want: Timeout,
			wantOutput: []string{"no answer within "}},
		{name: "no address", spec: Spec{Kind: KindTCP}, want: Error, wantOutput: []string{"without an address"}},
		{name: "not a tcp spec", spec: mustSpec(t, "exec:/bin/true"), want: Error},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkResult(t, probeWithin(probeTCP, tc.spec, tc.timeout), tc.want, tc.wantOutput...)
		})
	}
}
