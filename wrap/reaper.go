package wrap

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ReapOrphans reaps the zombies that the kernel hands to outrider when it
// runs as PID 1 of its namespace (or as a subreaper): processes whose parent
// died before them. It runs until ctx ends.
//
// outrider also has children of its own (the wrapped app, exec probes), and
// their owners wait for them; reaping one of those first would steal its
// exit status. A zombie is therefore reaped only once it has stayed a
// zombie for grace: an owner reaps its child as soon as it exits.
func ReapOrphans(ctx context.Context, grace time.Duration) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGCHLD)
	defer signal.Stop(sigs)
	tick := time.NewTicker(grace / 2)
	defer tick.Stop()
	seen := map[int]time.Time{}
	for {
		reapOld(seen, grace, time.Now())
		select {
		case <-ctx.Done():
			return
		case <-sigs:
		case <-tick.C:
		}
	}
}

// reapOld reaps the waitable children that have been zombies for grace,
// and notes the time it first saw the others.
func reapOld(seen map[int]time.Time, grace time.Duration, now time.Time) {
	for {
		pid := peekZombie()
		if pid <= 0 {
			return
		}
		first, ok := seen[pid]
		if !ok {
			seen[pid] = now
			return
		}
		if now.Sub(first) < grace {
			return
		}
		var ws syscall.WaitStatus
		_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		delete(seen, pid)
	}
}

// peekZombie returns the pid of a child that has exited, without reaping
// it, or 0 when there is none.
func peekZombie() int {
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil); err != nil {
		return 0
	}
	return siginfoPid(&info)
}

// siginfoPid reads si_pid, which x/sys/unix leaves in the padding of
// Siginfo: on 64-bit Linux it follows si_signo, si_errno, si_code and a
// 4-byte hole, at offset 16. WNOHANG with nothing to report leaves it 0.
func siginfoPid(info *unix.Siginfo) int {
	return int(*(*int32)(unsafe.Add(unsafe.Pointer(info), 16)))
}
