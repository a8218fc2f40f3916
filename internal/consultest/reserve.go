package consultest

import (
	"fmt"
	"syscall"
)

// reservePort binds a loopback TCP socket to a port the kernel picks and
// does not listen on it; free closes it. While it is open the kernel gives
// that port to no other bind to port 0 and to no outgoing connection, yet
// a server that sets SO_REUSEADDR, as every Go listener does, can bind it
// and listen: Linux lets sockets that both set SO_REUSEADDR share a port
// as long as no other one listens on it.
func reservePort() (port int, free func(), err error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, nil, fmt.Errorf("socket: %w", err)
	}
	free = func() { _ = syscall.Close(fd) }
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		free()
		return 0, nil, fmt.Errorf("setsockopt SO_REUSEADDR: %w", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		free()
		return 0, nil, fmt.Errorf("bind: %w", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		free()
		return 0, nil, fmt.Errorf("getsockname: %w", err)
	}
	return sa.(*syscall.SockaddrInet4).Port, free, nil
}
