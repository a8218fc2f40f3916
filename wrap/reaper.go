package wrap

import (
	"bytes"
	"context"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
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
	procParent := parent
	if self, err := os.Readlink("/proc/self"); err == nil {
		if n, err := strconv.Atoi(self); err == nil {
			procParent = n
		}
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var zs []zombie
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		ppid, state, start, ok := parseStat(stat)
		if !ok || ppid != procParent || state != 'Z' {
			continue
		}
		if procParent != parent {
			if pid = innermostPid(e.Name()); pid <= 0 {
				continue
			}
		}
		zs = append(zs, zombie{pid: pid, start: start})
	}
	return zs
}

// innermostPid reads the number of /proc/<name>'s process in its own, the
// innermost, PID namespace: the last field of NSpid in its status.
func innermostPid(name string) int {
	status, err := os.ReadFile("/proc/" + name + "/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				return 0
			}
			n, _ := strconv.Atoi(f[len(f)-1])
			return n
		}
	}
	return 0
}

// parseStat reads the parent pid, the state and the start time from the
// contents of /proc/PID/stat. The command name, in parentheses, may hold
// spaces and parentheses, so the fields are counted from its last ')'.
func parseStat(stat []byte) (ppid int, state byte, start uint64, ok bool) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, 0, 0, false
	}
	// After the name: state (field 3), ppid (4), ..., starttime (22).
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 20 || len(f[0]) != 1 {
		return 0, 0, 0, false
	}
	ppid, err1 := strconv.Atoi(f[1])
	start, err2 := strconv.ParseUint(f[19], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, 0, false
	}
	return ppid, f[0][0], start, true
}
