//go:build !linux

package proxy

import (
	"net"
	"syscall"
)

// readNow reads from a non-blocking socket; see sys_linux.go.
func readNow(fd uintptr, p []byte) (int, error) { return syscall.Read(int(fd), p) }

// writeNow writes to a non-blocking socket; see sys_linux.go.
func writeNow(fd uintptr, p []byte) (int, error) { return syscall.Write(int(fd), p) }

// peekNow looks at a non-blocking socket without reading; see sys_linux.go.
func peekNow(fd uintptr) (int, error) {
	var b [1]byte
	n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return n, err
}

// listenConfig is net.Listen's: it sets keep-alive on each accepted
// connection, with the defaults keepAliveIdle and the others restate.
func listenConfig() net.ListenConfig { return net.ListenConfig{} }
