package probe

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// hangMarker is an argument no other process uses, to find the probe's:
// a sleep of a day, in seconds, with this test process's id as decimals
// so that the same test run elsewhere on the machine is not counted.
var hangMarker = "86399." + strconv.Itoa(os.Getpid())

// processCounts returns the live children of this process, and the live
// processes (anywhere) whose command line has hangMarker. Zombies are dead
// and not counted, except this process's own children, which it must reap.
func processCounts(t *testing.T) (children, marked int) {
	t.Helper()
	self := os.Getpid()
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range dirs {
		stat, err := os.ReadFile(dir + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid …; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(stat[i+1:]))
		if len(fields) < 2 {
			continue
		}
		state, ppid := fields[0], fields[1]
		if ppid == strconv.Itoa(self) {
			children++
		}
		if state == "Z" {
			continue
		}
		cmdline, _ := os.ReadFile(dir + "/cmdline")
		if bytes.Contains(cmdline, []byte(hangMarker)) {
			marked++
		}
	}
	return children, marked
}

// TestRunnerHungExecLeavesNothingBehind runs an exec probe that never
// returns, every 100ms for a minute, and counts the processes and
// goroutines it leaves: at most one probe's worth while it runs, none after.
func TestRunnerHungExecLeavesNothingBehind(t *testing.T) {
	const runFor = time.Minute
	if c, m := processCounts(t); c != 0 || m != 0 {
		t.Fatalf("before the test: %d children, %d marked processes", c, m)
	}
	// The shell starts a background sleep and waits on a foreground one:
	// both must go at each timeout.
	spec := Spec{Kind: KindExec, Command: []string{"/bin/sh", "-c", "sleep " + hangMarker + " & sleep " + hangMarker}}
	sched := Schedule{Period: 100 * time.Millisecond, Timeout: 50 * time.Millisecond, FailureThreshold: 3, SuccessThreshold: 1}
	r, err := NewRunner(spec, sched, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	baseline := runtime.NumGoroutine()
	ctx, cancel := context.WithTimeout(context.Background(), runFor)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()

	maxChildren, maxMarked, maxGoroutines := 0, 0, 0
	tick := time.NewTicker(37 * time.Millisecond)
	defer tick.Stop()
	var runErr error
	bound := time.After(runFor + 30*time.Second)
sample:
	for {
		select {
		case runErr = <-done:
			break sample
		case <-tick.C:
			c, m := processCounts(t)
			maxChildren, maxMarked = max(maxChildren, c), max(maxMarked, m)
			maxGoroutines = max(maxGoroutines, runtime.NumGoroutine())
		case <-bound:
			t.Fatal("Run did not return after its context ended")
		}
	}
	if runErr != nil {
		t.Errorf("Run = %v, want nil", runErr)
	}

	timeouts := testutil.ToFloat64(r.metrics.total.WithLabelValues("timeout"))
	t.Logf("%.0f probes timed out in %s; at most %d children, %d probe processes, %d goroutines (%d before)",
		timeouts, runFor, maxChildren, maxMarked, maxGoroutines, baseline)
	// 600 slots; a loaded machine skips some (a probe that overruns its
	// slot skips the next), but it must have probed all along.
	if timeouts < 100 {
		t.Errorf("only %.0f probes timed out in %s at a %s period", timeouts, runFor, sched.Period)
	}
	if n := testutil.ToFloat64(r.metrics.total.WithLabelValues("success")); n != 0 {
		t.Errorf("%.0f probes succeeded", n)
	}
	if v := r.Verdict(); v.Healthy || !strings.Contains(v.Output, "killed after ") {
		t.Errorf("verdict = %+v, want unhealthy, killed after the timeout", v)
	}
	// While it ran: one probe at a time, never a pile-up.
	if maxChildren > 1 {
		t.Errorf("up to %d child processes at once, want at most 1", maxChildren)
	}
	if maxMarked > 3 {
		t.Errorf("up to %d probe processes at once, want at most one probe's 3 (the shell and its two sleeps)", maxMarked)
	}
	// The runner, the exec's wait and output copy, and room for the
	// runtime's finalizer and cleanup goroutines, counted while they run.
	if maxGoroutines > baseline+8 {
		t.Errorf("up to %d goroutines, want at most %d (%d before and a few for the probe)", maxGoroutines, baseline+8, baseline)
	}

	// Once it has returned: nothing left.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, m := processCounts(t)
		g := runtime.NumGoroutine()
		if c == 0 && m == 0 && g <= baseline {
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("after Run returned: %d children, %d probe processes, %d goroutines (%d before)\n%s",
				c, m, g, baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}
