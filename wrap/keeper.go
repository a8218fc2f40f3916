package wrap

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// KeeperCommand is the hidden command that makes outrider's binary the
// keeper of a wrapped app's process group (RunKeeper); Keep starts it.
const KeeperCommand = "keep-app-group"

// Keep starts the keeper of the child's process group: outrider's own
// binary again, idle until outrider ends. Should outrider die without
// stopping the app (SIGKILL, the OOM killer, a crash), the kernel sends
// the app alone SIGTERM; the keeper then gives the app stopTimeout to
// exit and kills its process group, as Stop does, so that a shell's
// server or an app's workers do not outlive it, still holding its port.
// Stop dismisses the keeper.
func (c *Child) Keep(stopTimeout time.Duration) error {
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("wrap: keeper of the app's process group: %w", err)
	}
	defer r.Close()
	// fd 3 reaches end of file when outrider ends; fd 4, when there is
	// one (since Linux 5.3), is the app's pidfd, readable once it exits.
	files, pidfd := []*os.File{r}, "none"
	if c.pidfd != nil {
		files, pidfd = append(files, c.pidfd), "4"
	}
	cmd := exec.Command("/proc/self/exe", KeeperCommand, strconv.Itoa(c.Pid()), stopTimeout.String(), pidfd)
	cmd.Args[0] = os.Args[0]
	cmd.Env = []string{"GOMAXPROCS=1"}
	cmd.ExtraFiles = files
	// Its own group: a SIGKILL to outrider's (kill -9 %1 in a shell, a
	// CI job's timeout) must not take the keeper with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("wrap: start the keeper of the app's process group: %w", err)
	}
	go func() { _ = cmd.Wait() }()
	// Held open until Stop, or until outrider dies.
	c.keeper = w
	return nil
}

// dismissKeeper tells the keeper that outrider has stopped the app itself.
func (c *Child) dismissKeeper() {
	if c.keeper != nil {
		_, _ = c.keeper.Write([]byte{1})
		c.keeper.Close()
		c.keeper = nil
	}
}

// RunKeeper is the keeper Keep starts, args being its own: the app's
// process group, its time to stop and its pidfd ("4" or "none"). It waits for outrider to end; unless
// outrider dismissed it first, it waits for the app to exit (the kernel
// sent it SIGTERM) for at most that time, then kills the group.
func RunKeeper(args []string) int {
	// Signals meant for outrider (a terminal's hangup, pkill outrider) are
	// not the keeper's.
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGUSR1,
		syscall.SIGUSR2, syscall.SIGPIPE, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU)
	if len(args) != 3 {
		return 2
	}
	pgid, err := strconv.Atoi(args[0])
	timeout, err2 := time.ParseDuration(args[1])
	if err != nil || err2 != nil || pgid <= 1 {
		return 2
	}
	pidfd, last := -1, 3
	if args[2] == "4" {
		pidfd, last = 4, 4
	}
	closeInherited(last)
	var b [1]byte
	if n, _ := os.NewFile(3, "outrider").Read(b[:]); n == 1 {
		return 0 // outrider stopped the app itself
	}
	awaitExit(pgid, pidfd, timeout)
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	return 0
}

// closeInherited closes the descriptors above last that the keeper
// inherited: those outrider itself inherited without close-on-exec (a
// supervisor's socket, a shell's pipe), which the app may have closed.
// Held by the keeper, they would stay open for as long as the app takes
// to stop after outrider died, and a reader waiting for end of file, or
// a client of a port, would wait with them. The keeper's own descriptors
// (the runtime's) are all close-on-exec.
func closeInherited(last int) {
	for _, fd := range inherited(last) {
		_ = unix.Close(fd)
	}
}

// CloseInheritedOnExec marks close-on-exec the descriptors above standard
// error that outrider inherited without it (a supervisor's socket, a
// shell's pipe), so that no process it starts from then on gets them: an
// exec probe's command, or what it left running (a daemon), held them
// open after outrider died, and a reader waiting for end of file waited
// for it. It is called once the wrapped app, which gets them, has started.
func CloseInheritedOnExec() {
	for _, fd := range inherited(2) {
		unix.CloseOnExec(fd)
	}
}

// inherited lists this process's descriptors above last without
// close-on-exec: Go opens its own with it, so these came from the parent.
func inherited(last int) []int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil
	}
	var fds []int
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd <= last {
			continue
		}
		if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil && flags&unix.FD_CLOEXEC == 0 {
			fds = append(fds, fd)
		}
	}
	return fds
}

// awaitExit waits for process pid, whose pidfd is fd (-1 without one), to
// exit, for at most timeout.
func awaitExit(pid, fd int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	if fd >= 0 {
		for {
			left := time.Until(deadline)
			if left <= 0 {
				return
			}
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			if _, err := unix.Poll(fds, int(left.Milliseconds())+1); !errors.Is(err, unix.EINTR) {
				return // readable (the app has exited), or the time is up
			}
		}
	}
	// Without a pidfd, look every 100ms.
	for time.Now().Before(deadline) {
		if errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}
