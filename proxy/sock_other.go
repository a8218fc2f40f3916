//go:build !linux

package proxy

import "net"

// rawListen leaves ln as it is: client sockets stay with Go's poller.
func rawListen(ln net.Listener) (net.Listener, func()) { return ln, func() {} }
