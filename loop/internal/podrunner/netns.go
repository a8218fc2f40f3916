package podrunner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// netns is a network namespace of the pod's own: a loopback interface that
// no other pod sees, so the containers of one pod talk over 127.0.0.1 and
// listen on the same ports as every other pod, as in a real pod.
type netns struct {
	f    *os.File // the namespace, /proc/<tid>/ns/net opened while in it
	host *os.File // the runner's own namespace, to return to
}

// runnerNetns opens the network namespace of the process, once. It must
// be read before any thread enters a pod's namespace: /proc/self names the
// main thread, and that thread may be lent to a pod later.
var runnerNetns = sync.OnceValues(func() (*os.File, error) {
	f, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("open the runner's network namespace: %w", err)
	}
	return f, nil
})

// newNetns makes a network namespace with its loopback interface up. It
// needs CAP_SYS_ADMIN (root), as the kubelet's container runtime does.
func newNetns() (*netns, error) {
	host, err := runnerNetns()
	if err != nil {
		return nil, err
	}
	type made struct {
		f   *os.File
		err error
	}
	ch := make(chan made, 1)
	go func() {
		runtime.LockOSThread()
		m := made{}
		m.f, m.err = unshareNetns()
		// Back to the runner's namespace, and the thread back to the
		// scheduler: a thread thrown away would take with it the processes
		// it started earlier (their parent-death signal is per thread).
		if err := unix.Setns(int(host.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- made{err: errors.Join(m.err, fmt.Errorf("leave the new network namespace: %w", err))}
			return // still locked: the thread ends with this goroutine
		}
		runtime.UnlockOSThread()
		ch <- m
	}()
	m := <-ch
	if m.err != nil {
		return nil, m.err
	}
	return &netns{f: m.f, host: host}, nil
}

// unshareNetns moves the calling thread into a new network namespace, and
// opens it and brings its loopback interface up.
func unshareNetns() (*os.File, error) {
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return nil, fmt.Errorf("unshare a network namespace (podrunner needs root): %w", err)
	}
	f, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("open the new network namespace: %w", err)
	}
	if err := loopbackUp(); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// loopbackUp sets the flags IFF_UP and IFF_RUNNING on lo, in the namespace of
// the calling thread.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bring lo up: socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring lo up: read flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP | unix.IFF_RUNNING)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring lo up: set flags: %w", err)
	}
	return nil
}

// do runs fn on a thread that is inside the namespace: sockets fn opens
// belong to it, and processes fn starts are born in it. The thread goes back
// to the runner's namespace afterwards and on to other work; if it cannot,
// it is thrown away. (It must not be thrown away otherwise: a process
// started in fn gets its parent-death signal when this thread ends.)
func (n *netns) do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(int(n.f.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter the pod's network namespace: %w", err)
			return
		}
		err := fn()
		if back := unix.Setns(int(n.host.Fd()), unix.CLONE_NEWNET); back != nil {
			// Still locked: the thread ends with this goroutine.
			errc <- errors.Join(err, fmt.Errorf("leave the pod's network namespace: %w", back))
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// dial connects to addr from inside the namespace.
func (n *netns) dial(ctx context.Context, network, addr string) (c net.Conn, err error) {
	err = n.do(func() error {
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

func (n *netns) close() { n.f.Close() }
