package wrap

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/outrider-sidecar/outrider/internal/testbin"
	"github.com/outrider-sidecar/outrider/internal/testlog"
)

func startSh(t *testing.T, script string) (*Child, *testlog.Buffer) {
	t.Helper()
	out := &testlog.Buffer{}
	c, err := Start([]string{"/bin/sh", "-c", script}, os.Environ(), nil, out, out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(c, time.Second) })
	return c, out
}

// stop stops c, giving it timeout to exit.
func stop(c *Child, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return c.Stop(ctx)
}

func waitExit(t *testing.T, c *Child) (int, string) {
	t.Helper()
	select {
	case <-c.Done():
		return c.Status()
	case <-time.After(10 * time.Second):
		t.Fatal("the child did not exit")
		return 0, ""
	}
}

func TestExitStatus(t *testing.T) {
	tests := []struct {
		name     string
		script   string
		wantCode int
		wantHow  string
	}{
		{"exit code", "exit 3", 3, "exited with status 3"},
		{"success", "true", 0, "exited with status 0"},
		{"killed by a signal", "kill -KILL $$", 137, "killed by SIGKILL"},
		{"segfault", "kill -SEGV $$", 139, "killed by SIGSEGV"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := startSh(t, tt.script)
			code, how := waitExit(t, c)
			if code != tt.wantCode || how != tt.wantHow {
				t.Errorf("got %d %q, want %d %q", code, how, tt.wantCode, tt.wantHow)
			}
		})
	}
}

func TestStartErrors(t *testing.T) {
	for _, argv := range [][]string{nil, {""}, {"/no/such/command"}} {
		if _, err := Start(argv, nil, nil, nil, nil); err == nil {
			t.Errorf("Start(%q): got no error", argv)
		}
	}
}

func TestSignalForwarded(t *testing.T) {
	// SIGUSR1, not SIGHUP: under nohup the child would start with SIGHUP
	// ignored, and a shell cannot trap a signal ignored on entry.
	c, out := startSh(t, `trap 'echo got USR1; exit 7' USR1; echo ready; while :; do sleep 0.05; done`)
	waitFor(t, func() bool { return strings.Contains(out.String(), "ready") })
	if err := c.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if code, _ := waitExit(t, c); code != 7 || !strings.Contains(out.String(), "got USR1") {
		t.Errorf("got status %d and output %q, want 7 after the trap ran", code, out.String())
	}
}

func TestStop(t *testing.T) {
	t.Run("exits on SIGTERM", func(t *testing.T) {
		c, out := startSh(t, `trap 'exit 0' TERM; echo ready; while :; do sleep 0.05; done`)
		waitFor(t, func() bool { return strings.Contains(out.String(), "ready") })
		if killed := stop(c, 5*time.Second); killed {
			t.Errorf("Stop: killed a child that exits on SIGTERM")
		}
		if code, _ := c.Status(); code != 0 {
			t.Errorf("status: got %d, want 0", code)
		}
	})
	t.Run("stopped: continued to take its SIGTERM", func(t *testing.T) {
		c, out := startSh(t, `trap 'exit 0' TERM; echo ready; while :; do sleep 0.05; done`)
		waitFor(t, func() bool { return strings.Contains(out.String(), "ready") })
		if err := c.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		if killed := stop(c, 5*time.Second); killed {
			t.Errorf("Stop: killed a stopped child that exits on SIGTERM once continued")
		}
		if code, how := c.Status(); code != 0 {
			t.Errorf("status: got %d (%s), want 0", code, how)
		}
	})
	t.Run("ignores SIGTERM: the group is killed at the timeout", func(t *testing.T) {
		c, out := startSh(t, `trap '' TERM; sleep 60 & echo "ready $!"; wait`)
		waitFor(t, func() bool { return strings.Contains(out.String(), "ready") })
		grandchild, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(out.String(), "ready ")))
		start := time.Now()
		if killed := stop(c, 300*time.Millisecond); !killed {
			t.Errorf("Stop: got no kill, want SIGKILL after the timeout")
		}
		if d := time.Since(start); d < 300*time.Millisecond {
			t.Errorf("Stop returned after %s, before the timeout", d)
		}
		if code, how := c.Status(); code != 137 {
			t.Errorf("status: got %d (%s), want 137", code, how)
		}
		// The grandchild was in the group, so it was killed too.
		waitFor(t, func() bool { return !testbin.Running(grandchild) })
	})
	t.Run("ignores SIGTERM: a cancelled wait kills the group at once", func(t *testing.T) {
		c, out := startSh(t, `trap 'echo got TERM' TERM; echo ready; while :; do sleep 0.05; done`)
		waitFor(t, func() bool { return strings.Contains(out.String(), "ready") })
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		killed := make(chan bool, 1)
		go func() { killed <- c.Stop(ctx) }()
		waitFor(t, func() bool { return strings.Contains(out.String(), "got TERM") })
		cancel()
		select {
		case k := <-killed:
			if !k {
				t.Errorf("Stop: got no kill, want SIGKILL once the wait was cancelled")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Stop still waits 5s after its context was cancelled")
		}
		if code, how := c.Status(); code != 137 {
			t.Errorf("status: got %d (%s), want 137", code, how)
		}
	})
}

// TestReapOrphans makes the test process a subreaper, so that an orphaned
// grandchild becomes its child when the middle process exits.
func TestReapOrphans(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("PR_SET_CHILD_SUBREAPER: %v", err)
	}
	t.Cleanup(func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		ReapOrphans(ctx, 100*time.Millisecond)
	}()
	t.Cleanup(func() { cancel(); <-done })

	// The middle shell starts a short sleep in the background and exits:
	// the sleep is orphaned, becomes ours, and turns zombie when it ends.
	c, out := startSh(t, `sleep 0.2 & echo $!`)
	waitExit(t, c)
	orphan, err := strconv.Atoi(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatalf("orphan pid from %q: %v", out.String(), err)
	}
	// Reaped: the pid is gone from /proc, not left a zombie.
	waitFor(t, func() bool {
		_, err := os.Stat("/proc/" + strconv.Itoa(orphan))
		return os.IsNotExist(err)
	})
	// Our own child was reaped by its owner, with its status intact.
	if code, _ := c.Status(); code != 0 {
		t.Errorf("own child's status: got %d, want 0", code)
	}

	// Many orphans that end together are all reaped about a grace later,
	// not one a grace after another (40 × 100 ms).
	c, out = startSh(t, `for i in $(seq 40); do sleep 0.2 & echo $!; done`)
	waitExit(t, c)
	orphans := strings.Fields(out.String())
	if len(orphans) != 40 {
		t.Fatalf("orphan pids: got %q", out.String())
	}
	start := time.Now()
	waitFor(t, func() bool {
		for _, pid := range orphans {
			if _, err := os.Stat("/proc/" + pid); err == nil {
				return false
			}
		}
		return true
	})
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("40 orphans reaped in %v, want all within a few graces", took)
	}
}

func TestReapOldWaitsForOwnersAndForgetsWhatTheyReaped(t *testing.T) {
	const grace = time.Second
	t0 := time.Unix(1_800_000_000, 0)
	// The pids are not our children: a reap attempt fails harmlessly,
	// and what the test checks is what reapOld remembers.
	a, b := zombie{pid: 1 << 30, start: 7}, zombie{pid: 1<<30 + 1, start: 9}
	reused := zombie{pid: a.pid, start: 8}
	seen := map[zombie]time.Time{}
	steps := []struct {
		at      time.Duration
		zombies []zombie
		want    map[zombie]time.Time
	}{
		{0, []zombie{a, b}, map[zombie]time.Time{a: t0, b: t0}},
		// Not yet a grace: kept.
		{500 * time.Millisecond, []zombie{a, b}, map[zombie]time.Time{a: t0, b: t0}},
		// b's owner reaped it: forgotten.
		{600 * time.Millisecond, []zombie{a}, map[zombie]time.Time{a: t0}},
		// a's pid now names another process: a new zombie, seen afresh.
		{700 * time.Millisecond, []zombie{reused}, map[zombie]time.Time{reused: t0.Add(700 * time.Millisecond)}},
		// A grace after it was first seen: reaped, so forgotten.
		{1700 * time.Millisecond, []zombie{reused}, map[zombie]time.Time{}},
	}
	for _, st := range steps {
		reapOld(seen, st.zombies, grace, t0.Add(st.at))
		if len(seen) != len(st.want) {
			t.Fatalf("at %v: seen %v, want %v", st.at, seen, st.want)
		}
		for z, first := range st.want {
			if !seen[z].Equal(first) {
				t.Fatalf("at %v: seen %v, want %v", st.at, seen, st.want)
			}
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
