package wrap

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/procfs"
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
	seen := map[zombie]time.Time{}
	self := os.Getpid()
	for {
		reapOld(seen, zombieChildren(self), grace, time.Now())
		select {
		case <-ctx.Done():
			return
		case <-sigs:
		case <-tick.C:
		}
	}
}

// zombie is a child that has exited and is not yet reaped. Its start time
// tells it from a later process given the same pid.
type zombie struct {
	pid   int
	start uint64
}

// reapOld reaps the zombies that have been zombies for grace, notes the
// time it first saw the others, and forgets those that are gone (their
// owner reaped them).
func reapOld(seen map[zombie]time.Time, zombies []zombie, grace time.Duration, now time.Time) {
	current := make(map[zombie]bool, len(zombies))
	for _, z := range zombies {
		current[z] = true
		first, ok := seen[z]
		if !ok {
			seen[z] = now
			continue
		}
		if now.Sub(first) < grace {
			continue
		}
		var ws syscall.WaitStatus
		_, _ = syscall.Wait4(z.pid, &ws, syscall.WNOHANG, nil)
		delete(seen, z)
	}
	for z := range seen {
		if !current[z] {
			delete(seen, z)
		}
	}
}

// zombieChildren lists the children of process parent that are zombies,
// from /proc. /proc may show another PID namespace than outrider's (one
// made without a /proc of its own, as a test does): /proc/self then gives
// outrider's number there, and a child's NSpid its number in outrider's
// namespace, the one wait takes.
func zombieChildren(parent int) []zombie {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return nil
	}
	procParent := parent
	if self, err := fs.Self(); err == nil {
		procParent = self.PID
	}
	procs, err := fs.AllProcs()
	if err != nil {
		return nil
	}
	var zs []zombie
	for _, p := range procs {
		st, err := p.Stat()
		if err != nil || st.PPID != procParent || st.State != "Z" {
			continue // gone meanwhile, or not a zombie child
		}
		pid := p.PID
		if procParent != parent {
			status, err := p.NewStatus()
			if err != nil || len(status.NSpids) == 0 {
				continue
			}
			pid = int(status.NSpids[len(status.NSpids)-1])
		}
		zs = append(zs, zombie{pid: pid, start: st.Starttime})
	}
	return zs
}
