package testbin

import (
	"net"
	"testing"
)

// Serve listens on a free loopback port until the test ends, runs serve
// for each connection in a goroutine of its own and closes the connection
// when serve returns, and returns the address: a server written by hand.
func Serve(t testing.TB, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				serve(nc)
			}()
		}
	}()
	return ln.Addr().String()
}
