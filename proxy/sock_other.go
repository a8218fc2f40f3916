//go:build !linux

package proxy

import "net"

// rawListen leaves ln as it is: client sockets stay with Go's poller.
func rawListen(ln net.Listener) (net.Listener, func()) { return ln, func() {} }

// nothingSent is false: without the proxy's poller, nothing is known.
func nothingSent(net.Conn) bool { return false }
