package main

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outrider-sidecar/outrider/internal/testbin"
)

// burner is a running internal/testapp/burner.
type burner struct {
	*testbin.Proc
	addr    string
	started time.Time // just before it was started
}

// startBurner starts the test app with args and waits until it is ready.
func startBurner(t *testing.T, args ...string) burner {
	t.Helper()
	bin := testbin.Build(t, "./internal/testapp/burner", "burner")
	started := time.Now()
	p := testbin.Start(t, bin, nil, args...)
	line := waitOutput(t, p, regexp.MustCompile(`ready pid=\d+ addr=(\S+)`))
	return burner{Proc: p, addr: line[1], started: started}
}

// waitOutput polls the output of p until re matches, and returns the match.
func waitOutput(t *testing.T, p *testbin.Proc, re *regexp.Regexp) []string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(p.Output()); m != nil {
			return m
		}
		if p.Exited() {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("pid %d: want output matching %q, got:\n%s", p.Pid(), re, p.Output())
	return nil
}

// exporterOutrider runs outrider without a registry or proxy, logging
// text, with env added.
func exporterOutrider(t *testing.T, env ...string) outrider {
	t.Helper()
	return startOutrider(t, 20*time.Second, append([]string{"OUTRIDER_LOG_FORMAT=text"}, env...)...)
}

// scrape GETs /metrics, fails the test unless it answers 200, and returns
// the outrider_app_* samples by name{labels}.
func (o outrider) scrape(t *testing.T) map[string]float64 {
	t.Helper()
	got := map[string]float64{}
	for line := range strings.Lines(scrapeMetrics(t, o.metrics)) {
		line = strings.TrimSuffix(line, "\n")
		if !strings.HasPrefix(line, "outrider_app_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("scrape: bad sample %q", line)
		}
		got[line[:i]] = v
	}
	return got
}

// appPID returns the pid label of outrider_app_info, or 0.
func appPID(got map[string]float64) int {
	re := regexp.MustCompile(`^outrider_app_info\{.*pid="(\d+)"`)
	for k := range got {
		if m := re.FindStringSubmatch(k); m != nil {
			pid, _ := strconv.Atoi(m[1])
			return pid
		}
	}
	return 0
}

// waitApp scrapes until outrider reports the app process pid.
func (o outrider) waitApp(t *testing.T, pid int) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var got map[string]float64
	for time.Now().Before(deadline) {
		got = o.scrape(t)
		if got["outrider_app_up"] == 1 && appPID(got) == pid {
			return got
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("want outrider_app_up 1 for pid %d, got %v", pid, got)
	return nil
}

// appStatus returns the app_process section of /status.
func (o outrider) appStatus(t *testing.T) map[string]any {
	t.Helper()
	resp, err := http.Get(o.admin + "/status")
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		App map[string]any `json:"app_process"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("status: %v", err)
	}
	return body.App
}

// vmRSS reads VmRSS of pid from /proc, in bytes.
func vmRSS(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`VmRSS:\s+(\d+) kB`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no VmRSS in /proc/%d/status", pid)
	}
	kb, _ := strconv.ParseFloat(string(m[1]), 64)
	return kb * 1024
}

func TestExporterAppFigures(t *testing.T) {
	const memMiB, open = 64, 5
	app := startBurner(t, "-listen", "127.0.0.1:0", "-mem", strconv.Itoa(memMiB), "-open", strconv.Itoa(open))
	o := exporterOutrider(t, "OUTRIDER_APP_ADDR="+app.addr)
	got := o.waitApp(t, app.Pid())

	t.Run("resident memory", func(t *testing.T) {
		got := o.scrape(t)
		rss, want := got["outrider_app_resident_memory_bytes"], vmRSS(t, app.Pid())
		t.Logf("resident memory %.0f, VmRSS %.0f", rss, want)
		if math.Abs(rss-want) > want/10 {
			t.Errorf("want resident memory within 10%% of VmRSS %.0f, got %.0f", want, rss)
		}
		if rss < memMiB<<20 {
			t.Errorf("want resident memory at least the %d MiB touched, got %.0f", memMiB, rss)
		}
		if got["outrider_app_virtual_memory_bytes"] < rss {
			t.Errorf("want virtual memory ≥ resident %.0f, got %.0f", rss, got["outrider_app_virtual_memory_bytes"])
		}
	})
	t.Run("threads and limits", func(t *testing.T) {
		if got["outrider_app_threads"] < 1 {
			t.Errorf("want threads ≥ 1, got %v", got["outrider_app_threads"])
		}
		if got["outrider_app_max_fds"] < got["outrider_app_open_fds"] || got["outrider_app_open_fds"] < 3 {
			t.Errorf("want 3 ≤ open fds ≤ max fds, got %v and %v", got["outrider_app_open_fds"], got["outrider_app_max_fds"])
		}
	})
	t.Run("start time", func(t *testing.T) {
		start := got["outrider_app_start_time_seconds"]
		real := float64(app.started.UnixNano()) / 1e9
		t.Logf("start time %.3f, started at %.3f", start, real)
		if math.Abs(start-real) > 1 {
			t.Errorf("want start time within 1 s of %.3f, got %.3f", real, start)
		}
	})
	t.Run("open fds", func(t *testing.T) {
		before := o.scrape(t)["outrider_app_open_fds"]
		for round := 1; round <= 2; round++ {
			app.Signal(syscall.SIGUSR1)
			waitOutput(t, app.Proc, regexp.MustCompile(fmt.Sprintf(`(?m)^opened %d$`, round*open)))
			if got := o.scrape(t)["outrider_app_open_fds"]; got != before+float64(round*open) {
				t.Errorf("after opening %d files: want open fds %v, got %v", round*open, before+float64(round*open), got)
			}
		}
	})
	t.Run("cpu", func(t *testing.T) {
		before := o.scrape(t)["outrider_app_cpu_seconds_total"]
		app.Signal(syscall.SIGUSR2)
		waitOutput(t, app.Proc, regexp.MustCompile(`(?m)^burning$`))
		defer app.Signal(syscall.SIGUSR2)
		deadline := time.Now().Add(20 * time.Second)
		for {
			after := o.scrape(t)["outrider_app_cpu_seconds_total"]
			if after >= before+0.2 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("want CPU seconds to grow by 0.2 while burning, got %v then %v", before, after)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	t.Run("status", func(t *testing.T) {
		st := o.appStatus(t)
		if st["found"] != true || st["pid"] != float64(app.Pid()) || st["how"] != "socket" {
			t.Errorf("want app_process found pid %d by socket, got %v", app.Pid(), st)
		}
	})
}

func TestExporterDiscovery(t *testing.T) {
	tag := fmt.Sprintf("e2e-%d", time.Now().UnixNano())
	pidFile := filepath.Join(t.TempDir(), "app.pid")
	tests := []struct {
		name    string
		args    []string // of the burner
		env     func(app burner) []string
		wantHow string
	}{
		{
			name:    "pid file",
			args:    []string{"-pidfile", pidFile},
			env:     func(burner) []string { return []string{"OUTRIDER_APP_PID_FILE=" + pidFile} },
			wantHow: "pid_file",
		},
		{
			name:    "command line",
			args:    []string{"-tag", tag},
			env:     func(burner) []string { return []string{"OUTRIDER_APP_PROCESS=burner .*-tag " + tag} },
			wantHow: "process",
		},
		{
			name:    "socket ipv4",
			args:    []string{"-listen", "127.0.0.1:0"},
			env:     func(app burner) []string { return []string{"OUTRIDER_APP_ADDR=" + app.addr} },
			wantHow: "socket",
		},
		{
			name:    "socket ipv6",
			args:    []string{"-listen", "[::1]:0"},
			env:     func(app burner) []string { return []string{"OUTRIDER_APP_ADDR=" + app.addr} },
			wantHow: "socket",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app := startBurner(t, tt.args...)
			o := exporterOutrider(t, tt.env(app)...)
			o.waitApp(t, app.Pid())
			if st := o.appStatus(t); st["pid"] != float64(app.Pid()) || st["how"] != tt.wantHow {
				t.Errorf("want pid %d found by %s, got %v", app.Pid(), tt.wantHow, st)
			}
		})
	}
}

func TestExporterRestartAndMissingApp(t *testing.T) {
	addr := testbin.FreeAddr(t)
	o := exporterOutrider(t, "OUTRIDER_APP_ADDR="+addr)

	// No app yet: the scrape succeeds and says so.
	got := o.scrape(t)
	if got["outrider_app_up"] != 0 || appPID(got) != 0 {
		t.Fatalf("want outrider_app_up 0 with no app, got %v", got)
	}
	if st := o.appStatus(t); st["found"] != false || !strings.Contains(fmt.Sprint(st["error"]), "no socket listens on port") {
		t.Errorf("want app_process not found with the reason, got %v", st)
	}

	first := startBurner(t, "-listen", addr)
	got = o.scrape(t)
	if got["outrider_app_up"] != 1 || appPID(got) != first.Pid() {
		t.Fatalf("want the first app, pid %d, on the next scrape; got %v", first.Pid(), got)
	}

	first.Signal(syscall.SIGTERM)
	first.Wait(20 * time.Second)
	if got := o.scrape(t); got["outrider_app_up"] != 0 {
		t.Fatalf("want outrider_app_up 0 once the app exited, got %v", got)
	}

	second := startBurner(t, "-listen", addr)
	got = o.scrape(t)
	if got["outrider_app_up"] != 1 || appPID(got) != second.Pid() {
		t.Fatalf("want the restarted app, pid %d, on the next scrape; got %v", second.Pid(), got)
	}
}

// An exec probe whose command matches OUTRIDER_APP_PROCESS (python
// check.py for a Python app) is never taken for the app: not while the
// app is down, when it would report the app up, and not over the app
// when it is the older of the two.
func TestExporterSkipsExecProbes(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	tag := strconv.FormatInt(time.Now().UnixNano()%1e9, 10)
	// The probe runs for 30 s of every period: the scrapes find it.
	probeArgs := sleep + " 30 0." + tag
	o := exporterOutrider(t,
		"OUTRIDER_APP_ADDR="+testbin.FreeAddr(t),
		"OUTRIDER_PROBE=exec:"+probeArgs,
		"OUTRIDER_PROBE_TIMEOUT=40s",
		"OUTRIDER_APP_PROCESS=^("+regexp.QuoteMeta(probeArgs)+"|\\S*burner .*-tag "+tag+")$",
	)
	probePID := waitChild(t, o.Pid(), probeArgs)

	for range 5 {
		if got := o.scrape(t); got["outrider_app_up"] != 0 || appPID(got) != 0 {
			t.Fatalf("the exec probe (pid %d) runs, the app does not: want outrider_app_up 0, got %v", probePID, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := o.appStatus(t); st["found"] != false || !strings.Contains(fmt.Sprint(st["error"]), "exec probes") {
		t.Errorf("want app_process not found, saying the exec probes were left out; got %v", st)
	}

	app := startBurner(t, "-tag", tag)
	o.waitApp(t, app.Pid())
	if !testbin.Running(probePID) {
		t.Fatalf("the exec probe (pid %d) ended before the app was found: the app was not chosen over it", probePID)
	}
}

// waitChild waits until a child of parent runs with the command line
// args (its arguments joined by spaces), and returns its pid.
func waitChild(t *testing.T, parent int, args string) int {
	t.Helper()
	var child int
	waitFor(t, 20*time.Second, fmt.Sprintf("a child of pid %d that runs %q", parent, args), func() bool {
		child = childRunning(parent, args)
		return child != 0
	})
	return child
}

// childRunning returns the pid of a child of parent whose command line is
// args, or 0.
func childRunning(parent int, args string) int {
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		_, after, _ := strings.Cut(string(stat), ") ")
		fields := strings.Fields(after) // state, ppid, …
		if len(fields) > 1 && fields[1] == strconv.Itoa(parent) &&
			strings.TrimSuffix(strings.ReplaceAll(string(cmdline), "\x00", " "), " ") == args {
			return pid
		}
	}
	return 0
}

// An exec probe's command does not outlive an outrider that is killed
// while it runs: nothing would be left to enforce its timeout.
func TestExecProbeEndsWithOutrider(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	probeArgs := fmt.Sprintf("%s 60 0.%d", sleep, time.Now().UnixNano()%1e9)
	o := exporterOutrider(t,
		"OUTRIDER_APP_ADDR="+testbin.FreeAddr(t),
		"OUTRIDER_PROBE=exec:"+probeArgs,
		"OUTRIDER_PROBE_TIMEOUT=90s",
	)
	probePID := waitChild(t, o.Pid(), probeArgs)

	o.Signal(syscall.SIGKILL)
	o.Wait(20 * time.Second)
	waitFor(t, 10*time.Second, fmt.Sprintf("the exec probe's command (pid %d) to end after outrider was killed", probePID),
		func() bool { return !testbin.Running(probePID) })
}
