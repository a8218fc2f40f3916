// Package wrap runs the app as outrider's child process: the co-process
// form on a VM and the container-entrypoint form, where outrider starts
// the app, passes signals on, stops it after the drain and leaves with its
// exit status.
package wrap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// Child is the app started by outrider.
type Child struct {
	cmd  *exec.Cmd
	done chan struct{}
	// Set before done is closed.
	status int
	how    string
	// pidfd refers to the app process, for the keeper; nil without one.
	pidfd *os.File
	// keeper is the keeper's pipe (Keep), nil without a keeper.
	keeper *os.File
}

// Start runs argv as a child in its own process group, with env and the
// given standard streams passed through untouched. Should outrider die
// without stopping it (SIGKILL, a crash), the kernel sends the child
// SIGTERM, so that a supervisor restarting outrider does not find the old
// app still holding its port; what the child started goes with its
// process group once Keep has started the keeper.
func Start(argv []string, env []string, stdin io.Reader, stdout, stderr io.Writer) (*Child, error) {
	if len(argv) == 0 || argv[0] == "" {
		return nil, errors.New("wrap: no command to run (usage: outrider run -- CMD ARGS…)")
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	// Its own group, so that stopping it reaches whatever it started, and
	// a terminal's Ctrl-C reaches outrider alone, which drains first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	c := &Child{cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go c.run(started)
	if err := <-started; err != nil {
		return nil, fmt.Errorf("wrap: start %q: %w", argv[0], err)
	}
	return c, nil
}

// StartFailureStatus is the exit status a shell gives a command that
// Start could not run: 127 when it was not found, 126 when it was found
// and cannot be executed (no permission, not an executable, a
// directory), 1 for anything else. A supervisor then tells a wrong
// command from an app that ran and failed.
func StartFailureStatus(err error) int {
	switch {
	case errors.Is(err, exec.ErrNotFound), errors.Is(err, fs.ErrNotExist):
		return 127
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.ENOEXEC), errors.Is(err, syscall.EISDIR):
		return 126
	}
	return 1
}

// run starts the child and reaps it; the Child owns this goroutine and
// Done tells when it ends. The kernel sends the parent-death signal when
// the thread that started the child ends, not the process, and Go ends a
// thread whose locked goroutine returns: this goroutine keeps its own
// thread locked from the start to the reap, so no other goroutine's
// return ends it early, and it ends with this one.
func (c *Child) run(started chan<- error) {
	runtime.LockOSThread()
	if err := c.cmd.Start(); err != nil {
		started <- err
		return
	}
	// Opened before the app is reaped, so that it is the app's.
	if fd, err := unix.PidfdOpen(c.cmd.Process.Pid, 0); err == nil {
		c.pidfd = os.NewFile(uintptr(fd), "app pidfd")
	}
	started <- nil
	err := c.cmd.Wait()
	c.status, c.how = exitStatus(c.cmd.ProcessState)
	if c.cmd.ProcessState == nil && err != nil {
		// wait4 failed: say why, rather than "unknown".
		c.how = "could not be waited for: " + err.Error()
	}
	close(c.done)
}

// exitStatus maps how a process ended to a shell-style status: its exit
// code, or 128 + the signal that killed it.
func exitStatus(ps *os.ProcessState) (int, string) {
	if ps == nil {
		return 1, "unknown"
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), "killed by " + signalName(ws.Signal())
	}
	return ps.ExitCode(), fmt.Sprintf("exited with status %d", ps.ExitCode())
}

// Pid returns the child's process ID.
func (c *Child) Pid() int { return c.cmd.Process.Pid }

// Done returns a channel closed when the child has exited and been reaped.
func (c *Child) Done() <-chan struct{} { return c.done }

// Exited reports whether the child has exited.
func (c *Child) Exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// Status returns the child's shell-style exit status (128 + signal when a
// signal killed it) and how it ended, in words. Valid once Done is closed.
func (c *Child) Status() (int, string) { return c.status, c.how }

// Signal sends sig to the child.
func (c *Child) Signal(sig os.Signal) error {
	if c.Exited() {
		return nil
	}
	if err := c.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("wrap: signal %s to pid %d: %w", sig, c.Pid(), err)
	}
	return nil
}

// Stop sends the child SIGTERM (then SIGCONT, should it be stopped) and
// waits for it to exit until ctx is done, then kills its whole process
// group, and waits for it. It reports whether the kill was needed. ctx's
// deadline is the app's time to stop; cancelling ctx cuts that time short.
func (c *Child) Stop(ctx context.Context) (killed bool) {
	if c.Exited() {
		c.killGroup()
		return false
	}
	_ = c.Signal(syscall.SIGTERM)
	// A stopped app (SIGSTOP, or SIGTTIN from reading a terminal it does
	// not own) would keep the SIGTERM pending until the kill: continue
	// it, as systemd does.
	_ = c.Signal(syscall.SIGCONT)
	select {
	case <-c.done:
		// Whatever it left running in its group goes with it.
		c.killGroup()
		return false
	case <-ctx.Done():
	}
	c.killGroup()
	<-c.done
	return true
}

// killGroup sends SIGKILL to the child's process group, and dismisses
// the keeper, whose work that was.
func (c *Child) killGroup() {
	_ = syscall.Kill(-c.Pid(), syscall.SIGKILL)
	c.dismissKeeper()
}

// signalName names s the way operators write it: "SIGTERM".
func signalName(s syscall.Signal) string {
	if name := unix.SignalName(s); name != "" {
		return name
	}
	return fmt.Sprintf("signal %d", int(s))
}
