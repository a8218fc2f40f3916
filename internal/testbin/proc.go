package testbin

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outrider-sidecar/outrider/internal/consultest"
	"github.com/outrider-sidecar/outrider/internal/testlog"
)

// Proc is a process started by a test. It is killed when the test ends,
// and its output is logged when the test fails.
type Proc struct {
	Cmd  *exec.Cmd
	t    testing.TB
	out  *testlog.Buffer
	done chan struct{}
	err  error
}

// Start runs bin with args and env added to a minimal environment.
func Start(t testing.TB, bin string, env []string, args ...string) *Proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir()}, env...)
	out := &testlog.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	p := &Proc{Cmd: cmd, t: t, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			t.Logf("output of %s:\n%s", bin, p.Output())
		}
	})
	return p
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) {
	_ = p.Cmd.Process.Signal(sig)
}

// Wait waits up to limit for the process to exit and returns its exit code;
// it fails the test if the process is still running then.
func (p *Proc) Wait(limit time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(limit):
		p.t.Fatalf("process %d still running after %s", p.Pid(), limit)
	}
	return p.Cmd.ProcessState.ExitCode()
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Output is what the process wrote to stdout and stderr so far.
func (p *Proc) Output() string { return p.out.String() }

// WaitHTTP polls url until it answers want, failing the test after limit.
func WaitHTTP(t testing.TB, url string, want int, limit time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	last := "no answer"
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("GET %s: want %d within %s, last: %s", url, want, limit, last)
}

// FreeAddr returns a loopback host:port that was free a moment ago and
// that no earlier call in this process returned (consultest.FreePorts).
func FreeAddr(t testing.TB) string {
	t.Helper()
	return "127.0.0.1:" + strconv.Itoa(consultest.FreePorts(t, 1)[0])
}

// RefusingAddr returns a loopback host:port where every connection is
// refused until the test ends. It holds a socket bound to the port but not
// listening, so no listener of this or another process can be given the
// port meanwhile: with FreeAddr, a proxy could be handed the "dead" app's
// port for itself and forward to itself.
func RefusingAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("refusing address: socket: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("refusing address: bind: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("refusing address: getsockname: %v", err)
	}
	return "127.0.0.1:" + strconv.Itoa(sa.(*syscall.SockaddrInet4).Port)
}

// Running reports whether pid is a process that has not exited: one that
// is gone, or a zombie, has. A process whose main thread has exited shows
// as a zombie while its other threads run, as a Go program killed by a
// signal does for a moment, its sockets still open: it runs until its
// thread count is down to the main thread's. (Read by hand, not with
// procfs: the deploy and loop modules use this package too.)
func Running(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state and num_threads follow the command name, which ends at
	// the last ')'.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 18 {
		return false
	}
	if f[0] != "Z" && f[0] != "X" {
		return true
	}
	threads, _ := strconv.Atoi(f[17])
	return threads > 1
}
