// Package rawloop holds what the bench's raw-socket proxies (cmd/goloop,
// cmd/uringloop) share around their loops: the command line, the
// listening sockets and the wait for a signal to stop.
package rawloop

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"syscall"
)

// soReusePort is SO_REUSEPORT, which package syscall lacks.
const soReusePort = 0xf

// Start runs one loop on the listening socket ln, in front of the app at
// app, or says why it cannot.
type Start func(ln int, app *syscall.SockaddrInet4) error

// Main serves the command name: it reads -listen and -app, starts one
// loop per P, each on a listening socket of its own on the same port
// (SO_REUSEPORT: the kernel spreads connections over them), and returns
// on SIGTERM or SIGINT. flags are added to the listening sockets' type,
// such as SOCK_NONBLOCK.
func Main(name string, flags int, start Start) {
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve on (IPv4)")
	app := flag.String("app", "127.0.0.1:8081", "address of the app (IPv4)")
	flag.Parse()
	fail := func(err error) {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(2)
	}
	la, err := Addr(*listen)
	if err != nil {
		fail(fmt.Errorf("-listen: %w", err))
	}
	aa, err := Addr(*app)
	if err != nil {
		fail(fmt.Errorf("-app: %w", err))
	}
	for range runtime.GOMAXPROCS(0) {
		ln, err := Listen(la, flags)
		if err != nil {
			fail(err)
		}
		if err := start(ln, aa); err != nil {
			fail(err)
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}

// Addr parses an IPv4 address and port.
func Addr(s string) (*syscall.SockaddrInet4, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil || !ap.Addr().Is4() {
		return nil, fmt.Errorf("%q is not an IPv4 address and port", s)
	}
	return &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}, nil
}

// Listen opens a listening socket at la that shares its port
// (SO_REUSEPORT) and hands TCP_NODELAY to the connections it accepts;
// flags are added to its type.
func Listen(la *syscall.SockaddrInet4, flags int) (int, error) {
	ln, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC|flags, 0)
	if err != nil {
		return -1, fmt.Errorf("listening socket: %w", err)
	}
	for _, o := range [][2]int{{syscall.SOL_SOCKET, syscall.SO_REUSEADDR}, {syscall.SOL_SOCKET, soReusePort}, {syscall.IPPROTO_TCP, syscall.TCP_NODELAY}} {
		if err := syscall.SetsockoptInt(ln, o[0], o[1], 1); err != nil {
			syscall.Close(ln)
			return -1, fmt.Errorf("setsockopt: %w", err)
		}
	}
	if err := syscall.Bind(ln, la); err != nil {
		syscall.Close(ln)
		return -1, fmt.Errorf("bind %d.%d.%d.%d:%d: %w", la.Addr[0], la.Addr[1], la.Addr[2], la.Addr[3], la.Port, err)
	}
	if err := syscall.Listen(ln, 4096); err != nil {
		syscall.Close(ln)
		return -1, fmt.Errorf("listen: %w", err)
	}
	return ln, nil
}
