package main

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/outrider-sidecar/outrider/bench/internal/relaytest"
)

// startRelay serves one gnet loop in front of app and returns its address.
func startRelay(t *testing.T, app string) string {
	t.Helper()
	aa, err := net.ResolveTCPAddr("tcp", app)
	if err != nil {
		t.Fatal(err)
	}
	// A free port: gnet listens itself and does not say which port an
	// address with port 0 got.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	started := make(chan gnet.Engine, 1)
	done := make(chan error, 1)
	go func() { done <- run(&relay{app: aa}, addr, 1, started) }()
	select {
	case eng := <-started:
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = eng.Stop(ctx)
		})
	case err := <-done:
		t.Fatalf("gnetloop on %s: %v", addr, err)
	}
	return addr
}

func TestRelay(t *testing.T) { relaytest.Check(t, startRelay) }
