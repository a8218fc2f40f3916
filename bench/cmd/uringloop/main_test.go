package main

import (
	"fmt"
	"syscall"
	"testing"

	"github.com/outrider-sidecar/outrider/bench/internal/relaytest"
)

// startLoop serves one loop in front of app and returns its address.
func startLoop(t *testing.T, app string) string {
	t.Helper()
	aa, err := sockaddr(app)
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
	if err := l.start(); err != nil {
		t.Fatalf("uringloop needs io_uring (Linux 6.1 or later, not refused by seccomp or kernel.io_uring_disabled): %v", err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}

func TestLoopRelays(t *testing.T) { relaytest.Check(t, startLoop) }
