package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outrider-sidecar/outrider/internal/consultest"
	"github.com/outrider-sidecar/outrider/internal/testbin"
	"github.com/outrider-sidecar/outrider/internal/testlog"
	"github.com/outrider-sidecar/outrider/shutdown"
	"github.com/outrider-sidecar/outrider/wrap"
	"github.com/prometheus/procfs"
)

// wrapped is `outrider run -- bin/echo …` registered in a test Consul.
type wrapped struct {
	*testbin.Proc
	srv            *consultest.Server
	id             string
	appAddr, proxy string
	metrics, admin string
}

func startWrapped(t *testing.T, srv *consultest.Server, id string, echoArgs ...string) *wrapped {
	t.Helper()
	w := &wrapped{srv: srv, id: id, appAddr: testbin.FreeAddr(t), proxy: testbin.FreeAddr(t)}
	metrics, admin := testbin.FreeAddr(t), testbin.FreeAddr(t)
	w.metrics, w.admin = "http://"+metrics, "http://"+admin
	env := append(replicaEnv(srv, id, w.appAddr, w.proxy),
		"OUTRIDER_METRICS_LISTEN="+metrics, "OUTRIDER_ADMIN_LISTEN="+admin,
		"OUTRIDER_DRAIN_DELAY=1s", "OUTRIDER_DRAIN_TIMEOUT=5s", "OUTRIDER_APP_STOP_TIMEOUT=5s")
	args := append([]string{"run", "--", testbin.Echo(t), "-listen", w.appAddr}, echoArgs...)
	w.Proc = testbin.Start(t, testbin.Outrider(t), env, args...)
	waitPassing(t, srv, id, 20*time.Second)
	return w
}

// inCatalog reports whether Consul's catalog holds the instance.
func (w *wrapped) inCatalog(t *testing.T) bool {
	t.Helper()
	svcs, _, err := w.srv.Client().Catalog().Service("echo", "", nil)
	if err != nil {
		t.Fatalf("consul catalog: %v", err)
	}
	for _, s := range svcs {
		if s.ServiceID == w.id {
			return true
		}
	}
	return false
}

// appPid reads the child's pid from outrider's "app started" log line.
func (w *wrapped) appPid(t *testing.T) int {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(w.Output()))
	for sc.Scan() {
		var line struct {
			Msg    string `json:"msg"`
			AppPid int    `json:"app_pid"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "app started" {
			return line.AppPid
		}
	}
	t.Fatalf("no \"app started\" line in the output:\n%s", w.Output())
	return 0
}

// TestWrapDeregistersBeforeStoppingTheApp: in wrap mode, SIGTERM makes
// outrider leave the catalog first, serve through the drain, and only then
// pass SIGTERM on to the app; it exits with the app's status.
func TestWrapDeregistersBeforeStoppingTheApp(t *testing.T) {
	t.Parallel()
	srv := consultest.Start(t)
	w := startWrapped(t, srv, "echo-wrapped", "-exit-code", "3")
	if code, body := httpGet(t, "http://"+w.proxy+"/"); code != http.StatusOK {
		t.Fatalf("through the proxy: got %d %q", code, body)
	}
	if v, _ := seriesValue(t, scrapeMetrics(t, w.metrics), "outrider_app_up"); v != 1 {
		t.Errorf("outrider_app_up of the wrapped child: got %v, want 1", v)
	}

	// The instance left the catalog after the latest query that found it
	// began, and before the first that did not returned. Timed from the
	// latter, a query slow to answer on a loaded machine ate into the
	// drain delay the test checks; the former is a bound no latency moves
	// later.
	type leftAt struct{ after, before time.Time }
	gone := make(chan leftAt, 1)
	after := time.Now()
	if !w.inCatalog(t) {
		t.Fatalf("%s is not in the catalog before SIGTERM", w.id)
	}
	go func() {
		for {
			asked := time.Now()
			if !w.inCatalog(t) {
				gone <- leftAt{after, time.Now()}
				return
			}
			after = asked
			<-time.After(5 * time.Millisecond)
		}
	}()
	w.Signal(syscall.SIGTERM)
	code := w.Wait(30 * time.Second)
	left := <-gone
	if code != 3 {
		t.Errorf("outrider's exit status: got %d, want the app's, 3", code)
	}
	sigAt := echoStopTime(t, w.Output())
	t.Logf("left the catalog between %s and %s, the app got SIGTERM at %s (%s after the first)",
		left.after.Format(time.StampMicro), left.before.Format(time.StampMicro), sigAt.Format(time.StampMicro), sigAt.Sub(left.after))
	if !left.before.Before(sigAt) {
		t.Errorf("the app got SIGTERM at %s, before the instance had left the catalog at %s", sigAt, left.before)
	}
	if d := sigAt.Sub(left.after); d < 900*time.Millisecond {
		t.Errorf("the app got SIGTERM %s after deregistration, want after the 1s drain delay", d)
	}
}

// echoStopTime finds when echo logged its stop signal, in its own output
// (passed through outrider untouched).
func echoStopTime(t *testing.T, out string) time.Time {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, "stop signal received") {
			continue
		}
		at, err := time.ParseInLocation("2006/01/02 15:04:05.000000", line[:26], time.Local)
		if err != nil {
			t.Fatalf("echo's stop line %q: %v", line, err)
		}
		return at
	}
	t.Fatalf("echo did not log its stop signal:\n%s", out)
	return time.Time{}
}

// TestWrapChildCrashIsDeregistered: an app that dies on its own leaves the
// catalog within a second, and outrider exits with its status.
func TestWrapChildCrashIsDeregistered(t *testing.T) {
	t.Parallel()
	srv := consultest.Start(t)
	w := startWrapped(t, srv, "echo-crash")
	pid := w.appPid(t)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	took := regEventually(t, 5*time.Second, "instance gone from the catalog", func() (bool, string) {
		return !w.inCatalog(t), "still there"
	})
	t.Logf("deregistered %s after the app died", took)
	if took > time.Second {
		t.Errorf("deregistered %s after the app died, want within 1s", took)
	}
	if code := w.Wait(10 * time.Second); code != 128+int(syscall.SIGKILL) {
		t.Errorf("exit status: got %d, want %d (killed by SIGKILL)", code, 128+int(syscall.SIGKILL))
	}
}

// TestWrapAppStopsWhenOutriderIsKilled: outrider killed with no chance to
// stop the app (SIGKILL, the OOM killer) leaves no app behind. The kernel
// sends the app SIGTERM, so a supervisor that starts outrider again finds
// the app's port free, not an orphan still serving on it.
func TestWrapAppStopsWhenOutriderIsKilled(t *testing.T) {
	t.Parallel()
	srv := consultest.Start(t)
	w := startWrapped(t, srv, "echo-orphan")
	pid := w.appPid(t)
	echo := testbin.Echo(t)
	t.Cleanup(func() {
		// The app outlived outrider if the test failed: kill it, and only
		// it (its PID may be another process's by now).
		if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); exe == echo {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	// Not w.Wait: an orphaned app would hold outrider's output pipes open.
	w.Signal(syscall.SIGKILL)
	took := regEventually(t, 10*time.Second, "the app to exit after outrider was killed", func() (bool, string) {
		return !testbin.Running(pid), fmt.Sprintf("pid %d still runs", pid)
	})
	t.Logf("the app exited %s after outrider was killed", took)
	if nc, err := net.DialTimeout("tcp", w.appAddr, time.Second); err == nil {
		nc.Close()
		t.Errorf("the app's port %s still accepts connections", w.appAddr)
	}
}

// TestWrapForwardsSignals: SIGHUP to outrider reaches the app, and
// outrider keeps running.
func TestWrapForwardsSignals(t *testing.T) {
	t.Parallel()
	// A test process started with SIGHUP ignored (nohup go test) would
	// start outrider so, which then leaves SIGHUP alone
	// (TestWrapKeepsSIGHUPIgnoredUnderNohup): caught here, it is at its
	// default in the processes this one starts.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGHUP)
	dir := t.TempDir()
	marker := filepath.Join(dir, "hup")
	appAddr := testbin.FreeAddr(t)
	script := fmt.Sprintf(`trap 'echo got-hup > %s' HUP; %s -listen %s & wait; wait`, marker, testbin.Echo(t), appAddr)
	p := testbin.Start(t, testbin.Outrider(t), []string{"OUTRIDER_REGISTRY=none", "OUTRIDER_PROXY_LISTEN=off",
		"OUTRIDER_METRICS_LISTEN=" + testbin.FreeAddr(t), "OUTRIDER_ADMIN_LISTEN=" + testbin.FreeAddr(t),
		"OUTRIDER_APP_ADDR=" + appAddr, "OUTRIDER_DRAIN_DELAY=0s"}, "run", "--", "/bin/sh", "-c", script)
	testbin.WaitHTTP(t, "http://"+appAddr+"/healthz", http.StatusOK, 20*time.Second)
	p.Signal(syscall.SIGHUP)
	regEventually(t, 5*time.Second, "the app got SIGHUP", func() (bool, string) {
		b, err := os.ReadFile(marker)
		return err == nil && strings.TrimSpace(string(b)) == "got-hup", fmt.Sprint(err)
	})
	if p.Exited() {
		t.Fatalf("outrider exited on SIGHUP:\n%s", p.Output())
	}
	p.Signal(syscall.SIGTERM)
	// The shell has no TERM trap: it dies of it, and outrider says so.
	if code := p.Wait(20 * time.Second); code != 128+int(syscall.SIGTERM) {
		t.Errorf("exit status: got %d, want %d (the shell killed by SIGTERM)", code, 128+int(syscall.SIGTERM))
	}
}

// TestWrapKeepsSIGHUPIgnoredUnderNohup: outrider started with SIGHUP
// ignored (nohup, so that the app outlives the login session) neither
// catches SIGHUP nor passes it on, and the app inherits the ignore, as if
// nohup had started it: the hangup at logout leaves both running. The app
// then takes a SIGUSR1 that is passed on, and exits 7 on it; had the
// SIGHUP reached it, it would have died of it (129).
func TestWrapKeepsSIGHUPIgnoredUnderNohup(t *testing.T) {
	t.Parallel()
	script := `trap 'exit 7' USR1; echo app-ready $$; while :; do sleep 0.05; done`
	// sh ignores SIGHUP as nohup does, then becomes outrider.
	p := testbin.Start(t, "/bin/sh", []string{"OUTRIDER_REGISTRY=none", "OUTRIDER_PROXY_LISTEN=off",
		"OUTRIDER_METRICS_LISTEN=" + testbin.FreeAddr(t), "OUTRIDER_ADMIN_LISTEN=" + testbin.FreeAddr(t),
		"OUTRIDER_APP_ADDR=" + testbin.FreeAddr(t), "OUTRIDER_DRAIN_DELAY=0s"},
		"-c", `trap '' HUP && exec "$0" "$@"`, testbin.Outrider(t), "run", "--", "/bin/sh", "-c", script)
	var ready string
	regEventually(t, 20*time.Second, "the app started", func() (bool, string) {
		ready = outputLine(p.Output(), "app-ready ")
		return ready != "", "no app-ready line"
	})
	app, err := strconv.Atoi(strings.TrimPrefix(ready, "app-ready "))
	if err != nil {
		t.Fatalf("app pid from %q: %v", ready, err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-app, syscall.SIGKILL) })
	if !ignores(t, app, syscall.SIGHUP) {
		t.Errorf("the app does not ignore SIGHUP, which outrider was started with ignored")
	}
	// In this order: outrider hears and passes on SIGHUP before SIGUSR1,
	// and SIGHUP's default action kills at once.
	p.Signal(syscall.SIGHUP)
	p.Signal(syscall.SIGUSR1)
	if code := p.Wait(20 * time.Second); code != 7 {
		t.Errorf("exit status: got %d, want the app's 7 on SIGUSR1 (129: SIGHUP reached the app and killed it)", code)
	}
}

// ignores reports whether process pid ignores sig, from its /proc status.
func ignores(t *testing.T, pid int, sig syscall.Signal) bool {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if hex, ok := strings.CutPrefix(line, "SigIgn:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
			if err != nil {
				t.Fatalf("SigIgn of pid %d: %v", pid, err)
			}
			return mask&(1<<(uint(sig)-1)) != 0
		}
	}
	t.Fatalf("no SigIgn line in the status of pid %d", pid)
	return false
}

// TestWrapSignalDuringAppStop: while outrider gives an app that ignores
// SIGTERM its OUTRIDER_APP_STOP_TIMEOUT, a further SIGTERM or SIGINT kills
// the app's group at once, and other signals still reach the app.
func TestWrapSignalDuringAppStop(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		sig      syscall.Signal
		wantCode int
	}{
		{"SIGTERM again: killed at once", syscall.SIGTERM, 128 + int(syscall.SIGKILL)},
		{"SIGINT (Ctrl-C twice): killed at once", syscall.SIGINT, 128 + int(syscall.SIGKILL)},
		{"SIGUSR1: passed on to the app", syscall.SIGUSR1, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			script := `trap 'echo app-got-term' TERM; trap 'exit 7' USR1; echo app-ready $$; while :; do sleep 0.05; done`
			p := testbin.Start(t, testbin.Outrider(t), []string{"OUTRIDER_REGISTRY=none", "OUTRIDER_PROXY_LISTEN=off",
				"OUTRIDER_METRICS_LISTEN=" + testbin.FreeAddr(t), "OUTRIDER_ADMIN_LISTEN=" + testbin.FreeAddr(t),
				"OUTRIDER_APP_ADDR=" + testbin.FreeAddr(t), "OUTRIDER_DRAIN_DELAY=0s", "OUTRIDER_APP_STOP_TIMEOUT=60s"},
				"run", "--", "/bin/sh", "-c", script)
			var ready string
			regEventually(t, 20*time.Second, "the app started", func() (bool, string) {
				ready = outputLine(p.Output(), "app-ready ")
				return ready != "", "no app-ready line"
			})
			// Should outrider leave the app behind, the app must not
			// outlive the test: it holds the output pipe open.
			if app, err := strconv.Atoi(strings.TrimPrefix(ready, "app-ready ")); err == nil {
				t.Cleanup(func() { _ = syscall.Kill(-app, syscall.SIGKILL) })
			}
			p.Signal(syscall.SIGTERM)
			regEventually(t, 10*time.Second, "the app got SIGTERM after the drain", func() (bool, string) {
				return outputLine(p.Output(), "app-got-term") != "", "no app-got-term line"
			})
			p.Signal(tt.sig)
			// Far less than the 60s the app has to stop.
			if code := p.Wait(10 * time.Second); code != tt.wantCode {
				t.Errorf("exit status: got %d, want %d", code, tt.wantCode)
			}
		})
	}
}

// outputLine returns the first line of out that starts with prefix, or "".
// A marker is matched at the start of a line because outrider's log
// quotes the app's command, markers and all.
func outputLine(out, prefix string) string {
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, prefix) {
			return line
		}
	}
	return ""
}

// TestWrapAsPID1ReapsOrphans: as PID 1 of a new PID namespace (a
// container's entrypoint), outrider reaps the orphans the kernel hands it.
// The app's shell leaves a short-lived orphan behind; it must turn zombie
// under outrider (the test sees it, so the test can fail) and be reaped.
func TestWrapAsPID1ReapsOrphans(t *testing.T) {
	t.Parallel()
	appAddr := testbin.FreeAddr(t)
	script := fmt.Sprintf("(sleep 0.3 &); exec %s -listen %s", testbin.Echo(t), appAddr)
	cmd := exec.Command(testbin.Outrider(t), "run", "--", "/bin/sh", "-c", script)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "OUTRIDER_REGISTRY=none", "OUTRIDER_PROXY_LISTEN=off",
		"OUTRIDER_METRICS_LISTEN=" + testbin.FreeAddr(t), "OUTRIDER_ADMIN_LISTEN=" + testbin.FreeAddr(t),
		"OUTRIDER_APP_ADDR=" + appAddr, "OUTRIDER_DRAIN_DELAY=0s"}
	out := &testlog.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start outrider in a new PID namespace: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("outrider's output:\n%s", out.String())
		}
	})
	pid := cmd.Process.Pid
	start := time.Now()
	// Only the orphaned sleep counts: any other short-lived child (the
	// app's shell, were it to die early) would make the test go on before
	// the orphan it arranged has been seen and reaped.
	sawOrphan := false
	for time.Since(start) < 6*time.Second {
		z := zombieChildren(t, pid)
		if slices.ContainsFunc(z, func(z zombieChild) bool { return z.comm == "sleep" }) {
			sawOrphan = true
		} else if sawOrphan && len(z) == 0 {
			break
		}
		<-time.After(20 * time.Millisecond)
	}
	if !sawOrphan {
		t.Fatalf("the orphaned sleep never became a zombie under outrider: the test cannot tell whether it reaps")
	}
	if z := zombieChildren(t, pid); len(z) > 0 {
		t.Errorf("zombies left under outrider (PID 1 of its namespace) after %s: %v", time.Since(start), z)
	}
	if !strings.Contains(out.String(), "running as PID 1") {
		t.Errorf("outrider did not say it runs as PID 1:\n%s", out.String())
	}
	// The app must be the echo server, not the shell still on its way to
	// exec it, when SIGTERM comes: a shell dies of the signal (exit 143).
	testbin.WaitHTTP(t, "http://"+appAddr+"/", http.StatusOK, 10*time.Second)
	// As PID 1 it needs no keeper of the app's group: its namespace dies
	// with it.
	if k := keepers(t, pid); len(k) > 0 {
		t.Errorf("outrider as PID 1 started a keeper of the app's group: pids %v", k)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		if c := cmd.ProcessState.ExitCode(); c != 0 {
			t.Errorf("exit status: got %d, want the app's 0", c)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("outrider did not stop on SIGTERM")
	}
}

// zombieChild is a zombie process, by PID and command name.
type zombieChild struct {
	pid  int
	comm string
}

func (z zombieChild) String() string { return fmt.Sprintf("%d (%s)", z.pid, z.comm) }

// zombieChildren lists the zombie children of parent, as this (outer)
// namespace sees them.
func zombieChildren(t *testing.T, parent int) []zombieChild {
	t.Helper()
	var out []zombieChild
	for _, st := range childrenWhere(t, parent, func(_ procfs.Proc, st procfs.ProcStat) bool { return st.State == "Z" }) {
		out = append(out, zombieChild{st.PID, st.Comm})
	}
	return out
}

// childrenWhere lists the children of parent that keep accepts, as this
// (outer) namespace sees them.
func childrenWhere(t *testing.T, parent int, keep func(procfs.Proc, procfs.ProcStat) bool) []procfs.ProcStat {
	t.Helper()
	procs, err := procfs.AllProcs()
	if err != nil {
		t.Fatal(err)
	}
	var out []procfs.ProcStat
	for _, p := range procs {
		if st, err := p.Stat(); err == nil && st.PPID == parent && keep(p, st) {
			out = append(out, st)
		}
	}
	return out
}

// pidsOf lists the PIDs of procs.
func pidsOf(procs []procfs.ProcStat) []int {
	out := make([]int, len(procs))
	for i, st := range procs {
		out[i] = st.PID
	}
	return out
}

// TestWrapAppExitDuringADrain: when the app exits on its own during a
// drain that /prestop or /drain started (no signal yet), the drain is cut
// short at once, /prestop answers with the aborted report, and outrider
// leaves with the app's status without waiting out the drain delay.
func TestWrapAppExitDuringADrain(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, method, path string
		wantCode           int // the endpoint's answer
	}{
		{"/prestop, waiting for the drain", http.MethodPost, "/prestop", http.StatusInternalServerError},
		{"/drain, answered at once", http.MethodPost, "/drain", http.StatusAccepted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			marker := filepath.Join(t.TempDir(), "exit")
			script := fmt.Sprintf(`echo app-ready; while [ ! -e %s ]; do sleep 0.05; done; exit 3`, marker)
			admin := testbin.FreeAddr(t)
			p := testbin.Start(t, testbin.Outrider(t), []string{"OUTRIDER_REGISTRY=none", "OUTRIDER_PROXY_LISTEN=off",
				"OUTRIDER_METRICS_LISTEN=" + testbin.FreeAddr(t), "OUTRIDER_ADMIN_LISTEN=" + admin,
				"OUTRIDER_APP_ADDR=" + testbin.FreeAddr(t), "OUTRIDER_DRAIN_DELAY=60s"},
				"run", "--", "/bin/sh", "-c", script)
			regEventually(t, 20*time.Second, "the app started", func() (bool, string) {
				return outputLine(p.Output(), "app-ready") != "", "no app-ready line"
			})
			type answer struct {
				code int
				body string
			}
			answered := make(chan answer, 1)
			go func() {
				resp, err := http.Post("http://"+admin+tt.path, "", nil)
				if err != nil {
					answered <- answer{body: err.Error()}
					return
				}
				defer resp.Body.Close()
				var b strings.Builder
				_, _ = io.Copy(&b, resp.Body)
				answered <- answer{resp.StatusCode, b.String()}
			}()
			regEventually(t, 10*time.Second, "the drain started", func() (bool, string) {
				return strings.Contains(p.Output(), "drain started"), "no drain started line"
			})
			if err := os.WriteFile(marker, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			code := p.Wait(30 * time.Second)
			if took := time.Since(start); code != 3 || took > 2*time.Second {
				t.Errorf("outrider exited %d after %s, want the app's 3 at once", code, took.Round(10*time.Millisecond))
			}
			a := <-answered
			var rep shutdown.Report
			if a.code != tt.wantCode || (tt.path == "/prestop" && (json.Unmarshal([]byte(a.body), &rep) != nil || !rep.Aborted)) {
				t.Errorf("%s: got %d %q, want %d (and for /prestop the aborted report)", tt.path, a.code, a.body, tt.wantCode)
			}
		})
	}
}

// TestWrapAppKeepsItsOpenFileLimit: outrider raises its own soft
// open-file limit for the proxy, and the wrapped app still gets the one
// outrider was started with, as from a shell: an app that uses select()
// breaks on descriptors above 1,024.
func TestWrapAppKeepsItsOpenFileLimit(t *testing.T) {
	t.Parallel()
	// sh lowers the soft limit, then becomes outrider.
	p := testbin.Start(t, "/bin/sh", []string{"OUTRIDER_REGISTRY=none", "OUTRIDER_PROXY_LISTEN=" + testbin.FreeAddr(t),
		"OUTRIDER_METRICS_LISTEN=" + testbin.FreeAddr(t), "OUTRIDER_ADMIN_LISTEN=" + testbin.FreeAddr(t),
		"OUTRIDER_APP_ADDR=" + testbin.FreeAddr(t), "OUTRIDER_DRAIN_DELAY=0s"},
		"-c", `ulimit -Sn 256 && exec "$0" "$@"`, testbin.Outrider(t), "run", "--", "/bin/sh", "-c", `echo "app soft limit $(ulimit -Sn)"`)
	if code := p.Wait(20 * time.Second); code != 0 {
		t.Fatalf("exit status %d:\n%s", code, p.Output())
	}
	out := p.Output()
	if !strings.Contains(out, "app soft limit 256\n") {
		t.Errorf("the app did not get the soft limit of 256:\n%s", out)
	}
	if !regexp.MustCompile(`"client connection bound","soft":[0-9]{3,}`).MatchString(out) || strings.Contains(out, `"soft":256,`) {
		t.Errorf("outrider did not raise its own limit:\n%s", out)
	}
}

// TestWrapCommandThatCannotRun: outrider exits as a shell would for a
// command it cannot start, 127 not found and 126 not executable, so a
// supervisor tells a wrong command from an app that ran and failed.
func TestWrapCommandThatCannotRun(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notExec := filepath.Join(dir, "app.sh")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		command string
		want    int
	}{
		{"no-such-app-on-the-path", 127},
		{filepath.Join(dir, "missing"), 127},
		{notExec, 126},
		{dir, 126},
	}
	for _, tt := range tests {
		code, out := runOutrider(t, []string{"OUTRIDER_REGISTRY=none", "OUTRIDER_PROXY_LISTEN=off",
			"OUTRIDER_METRICS_LISTEN=127.0.0.1:0", "OUTRIDER_ADMIN_LISTEN=127.0.0.1:0", "OUTRIDER_APP_ADDR=" + testbin.FreeAddr(t)},
			"run", "--", tt.command)
		if code != tt.want || !strings.Contains(out, "outrider cannot start") {
			t.Errorf("outrider run -- %s: exit %d, want %d and the reason:\n%s", tt.command, code, tt.want, out)
		}
	}
}

// TestWrapAppGetsNoneOfOutridersOwnSecrets: the wrapped app gets
// outrider's environment without its admin token and probe credentials,
// and with the probe URL's password masked; CONSUL_HTTP_TOKEN it gets, as
// an app's own Consul client reads that name too.
func TestWrapAppGetsNoneOfOutridersOwnSecrets(t *testing.T) {
	t.Parallel()
	p := testbin.Start(t, testbin.Outrider(t), []string{"OUTRIDER_REGISTRY=none", "OUTRIDER_PROXY_LISTEN=off",
		"OUTRIDER_METRICS_LISTEN=" + testbin.FreeAddr(t), "OUTRIDER_ADMIN_LISTEN=" + testbin.FreeAddr(t),
		"OUTRIDER_APP_ADDR=" + testbin.FreeAddr(t), "OUTRIDER_DRAIN_DELAY=0s",
		"OUTRIDER_ADMIN_TOKEN=admin-s3cr3t-0123456789", "OUTRIDER_PROBE_HEADERS=Authorization: Bearer hdr-s3cr3t",
		"OUTRIDER_PROBE=http://u:probe-s3cr3t@127.0.0.1:1/healthz", "CONSUL_HTTP_TOKEN=consul-token", "APP_SETTING=kept"},
		"run", "--", "env")
	if code := p.Wait(20 * time.Second); code != 0 {
		t.Fatalf("exit status %d:\n%s", code, p.Output())
	}
	out := p.Output()
	for _, want := range []string{"APP_SETTING=kept\n", "CONSUL_HTTP_TOKEN=consul-token\n", "OUTRIDER_PROBE=http://u:xxxxx@127.0.0.1:1/healthz\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("the app's environment lacks %q:\n%s", want, out)
		}
	}
	for _, secret := range []string{"admin-s3cr3t", "hdr-s3cr3t", "probe-s3cr3t"} {
		if strings.Contains(out, secret) {
			t.Errorf("the app's environment holds %q:\n%s", secret, out)
		}
	}
}

// TestWrapAppGroupStopsWhenOutriderIsKilled: with outrider killed, the
// kernel's SIGTERM reaches the app process alone; an app that is a shell
// running the server, or a parent of workers, must not leave them serving
// behind it. Once the app is gone, what it started is killed with its
// process group, as when outrider stops the app itself; also when the
// SIGKILL went to outrider's whole process group, as kill -9 %1 in a
// shell or a CI job's timeout sends it.
func TestWrapAppGroupStopsWhenOutriderIsKilled(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		kill func(pid int) error
	}{
		{"outrider", func(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }},
		{"outrider's process group", func(pid int) error { return syscall.Kill(-pid, syscall.SIGKILL) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			appAddr := testbin.FreeAddr(t)
			pidFile := filepath.Join(t.TempDir(), "server.pid")
			echo := testbin.Echo(t)
			// The shell waits for its server, which is the shell's child.
			script := fmt.Sprintf(`%s -listen %s & echo $! > %s; wait`, echo, appAddr, pidFile)
			metrics := testbin.FreeAddr(t)
			p := testbin.Start(t, testbin.Outrider(t), []string{"OUTRIDER_REGISTRY=none", "OUTRIDER_PROXY_LISTEN=off",
				"OUTRIDER_APP_ADDR=" + appAddr, "OUTRIDER_METRICS_LISTEN=" + metrics,
				"OUTRIDER_ADMIN_LISTEN=" + testbin.FreeAddr(t), "OUTRIDER_APP_STOP_TIMEOUT=3s"},
				"run", "--", "/bin/sh", "-c", script)
			// The server answering says nothing of outrider, which starts
			// the keeper once it has started the app, nor of the shell,
			// which writes the server's pid once it has started it: wait
			// for outrider's /healthz too, served once its start-up is
			// done, and for the pid.
			testbin.WaitHTTP(t, "http://"+appAddr+"/healthz", http.StatusOK, 20*time.Second)
			testbin.WaitHTTP(t, "http://"+metrics+"/healthz", http.StatusOK, 20*time.Second)
			var server int
			regEventually(t, 10*time.Second, "the shell to write the server's pid", func() (bool, string) {
				raw, err := os.ReadFile(pidFile)
				if err != nil {
					return false, err.Error()
				}
				server, err = strconv.Atoi(strings.TrimSpace(string(raw)))
				return err == nil, fmt.Sprintf("%q", raw)
			})
			t.Cleanup(func() {
				// The server outlived outrider if the test failed: kill it,
				// and only it (its PID may be another process's by now).
				if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", server)); exe == echo {
					_ = syscall.Kill(server, syscall.SIGKILL)
				}
			})
			if k := keepers(t, p.Pid()); len(k) != 1 {
				t.Errorf("keepers of the app's group under outrider: got pids %v, want one", k)
			}
			if err := tc.kill(p.Pid()); err != nil {
				t.Fatal(err)
			}
			took := regEventually(t, 10*time.Second, "the shell's server to exit after outrider was killed", func() (bool, string) {
				return !testbin.Running(server), fmt.Sprintf("pid %d still runs", server)
			})
			t.Logf("the server exited %s after outrider was killed", took)
			// Its stat says Z once its main thread has exited, and its
			// other threads may hold the listener a moment more.
			regEventually(t, 2*time.Second, "the app's port to close", func() (bool, string) {
				nc, err := net.DialTimeout("tcp", appAddr, time.Second)
				if err != nil {
					return true, ""
				}
				nc.Close()
				return false, appAddr + " still accepts connections"
			})
		})
	}
}

// keepers lists the children of parent that keep the app's group
// (wrap.KeeperCommand).
func keepers(t *testing.T, parent int) []int {
	t.Helper()
	return pidsOf(childrenWhere(t, parent, func(p procfs.Proc, _ procfs.ProcStat) bool {
		args, err := p.CmdLine()
		return err == nil && len(args) > 1 && args[1] == wrap.KeeperCommand
	}))
}

// TestWrapKeeperHoldsNoInheritedDescriptor: a descriptor outrider
// inherited without close-on-exec (a supervisor's socket, a shell's pipe)
// is not held by the keeper of the app's group. The app has closed its
// copy and takes its time to stop once outrider is killed: the reader of
// the pipe must see end of file when outrider dies, not once the keeper
// has killed the app at OUTRIDER_APP_STOP_TIMEOUT.
func TestWrapKeeperHoldsNoInheritedDescriptor(t *testing.T) {
	t.Parallel()
	// The app closes the pipe and ignores SIGTERM, so that only the
	// keeper's kill, 10s after outrider's death, ends it.
	var app int
	run := startWithInheritedPipe(t, []string{"run", "--", "/bin/sh", "-c", `exec 5>&-; trap "" TERM; exec sleep 60`},
		[]string{"OUTRIDER_APP_STOP_TIMEOUT=10s"}, func() {
			// The app, holding outrider's output, would outlive the test by
			// the keeper's 10s.
			if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", app)); app > 0 && strings.HasSuffix(exe, "/sleep") {
				_ = syscall.Kill(-app, syscall.SIGKILL)
			}
		})
	regEventually(t, 10*time.Second, "the app to run sleep and a keeper to start", func() (bool, string) {
		if len(keepers(t, run.pid)) != 1 {
			return false, "no keeper"
		}
		if apps := childrenNamed(t, run.pid, "sleep"); len(apps) == 1 {
			app = apps[0]
			return true, ""
		}
		return false, "the app has not run sleep yet"
	})
	if !run.endOfFileOnKill(t) {
		t.Errorf("the pipe outrider inherited is still open 3s after outrider was killed, which the app had closed: the keeper holds it")
	}
}

// inheritedPipeRun is outrider started with the write end of a pipe as its
// fd 5, inherited without close-on-exec, as a supervisor's socket or a
// shell's pipe is; r is the read end.
type inheritedPipeRun struct {
	cmd *exec.Cmd
	pid int
	out *testlog.Buffer
	r   *os.File
}

// startWithInheritedPipe starts outrider with args and env, in a process
// group of its own and the pipe as fd 5 (past the keeper's own 3 and 4).
// The cleanup kills outrider, then calls killRest for what it left.
func startWithInheritedPipe(t *testing.T, args, env []string, killRest func()) *inheritedPipeRun {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	cmd := exec.Command(testbin.Outrider(t), args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "OUTRIDER_REGISTRY=none", "OUTRIDER_PROXY_LISTEN=off",
		"OUTRIDER_METRICS_LISTEN=" + testbin.FreeAddr(t), "OUTRIDER_ADMIN_LISTEN=" + testbin.FreeAddr(t),
		"OUTRIDER_APP_ADDR=" + testbin.FreeAddr(t)}, env...)
	out := &testlog.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.ExtraFiles = []*os.File{nil, nil, w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		killRest()
		<-done
		if t.Failed() {
			t.Logf("outrider's output:\n%s", out.String())
		}
	})
	return &inheritedPipeRun{cmd: cmd, pid: cmd.Process.Pid, out: out, r: r}
}

// endOfFileOnKill kills outrider and reports whether the pipe reached end
// of file within 3s: whether nothing it started holds the pipe.
func (run *inheritedPipeRun) endOfFileOnKill(t *testing.T) bool {
	eof := make(chan time.Time, 1)
	go func() {
		_, _ = io.Copy(io.Discard, run.r)
		eof <- time.Now()
	}()
	killed := time.Now()
	_ = run.cmd.Process.Kill()
	select {
	case at := <-eof:
		t.Logf("the pipe reached end of file %s after outrider was killed", at.Sub(killed).Round(time.Millisecond))
		return true
	case <-time.After(3 * time.Second):
		return false
	}
}

// childrenNamed lists the children of parent whose command is comm.
func childrenNamed(t *testing.T, parent int, comm string) []int {
	t.Helper()
	return pidsOf(childrenWhere(t, parent, func(_ procfs.Proc, st procfs.ProcStat) bool { return st.Comm == comm }))
}

// TestExecProbeHoldsNoInheritedDescriptor: a descriptor outrider
// inherited without close-on-exec (a supervisor's socket, a shell's pipe)
// is not passed to an exec probe's command, which runs in a process group
// of its own and so lives on after outrider is killed: the reader of the
// pipe must see end of file when outrider dies, not when the probe's
// command ends. A wrapped app still gets the descriptor.
func TestExecProbeHoldsNoInheritedDescriptor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
	}{
		{"sidecar", nil},
		// The app says whether it got fd 5, closes it and waits.
		{"wrap", []string{"run", "--", "/bin/sh", "-c",
			`if [ -e /proc/$$/fd/5 ]; then echo app-fd-5 held; else echo app-fd-5 missing; fi; exec 5>&-; exec sleep 60`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var probe int
			run := startWithInheritedPipe(t, tc.args, []string{"OUTRIDER_PROBE=exec:sleep 30", "OUTRIDER_PROBE_TIMEOUT=60s"}, func() {
				if probe > 0 {
					_ = syscall.Kill(-probe, syscall.SIGKILL)
				}
			})
			regEventually(t, 10*time.Second, "the exec probe to run", func() (bool, string) {
				probes := pidsOf(childrenWhere(t, run.pid, func(p procfs.Proc, _ procfs.ProcStat) bool {
					args, err := p.CmdLine()
					return err == nil && slices.Equal(args, []string{"sleep", "30"})
				}))
				if len(probes) != 1 {
					return false, fmt.Sprintf("probes running: %v", probes)
				}
				probe = probes[0]
				return true, ""
			})
			// The app's own line, not outrider's log of its command, which
			// quotes the markers: the app may answer after the probe runs.
			if tc.args != nil {
				var said string
				regEventually(t, 10*time.Second, "the app to say whether it got fd 5", func() (bool, string) {
					said = outputLine(run.out.String(), "app-fd-5 ")
					return said != "", "no app-fd-5 line"
				})
				if said != "app-fd-5 held" {
					t.Errorf("the wrapped app did not get the descriptor outrider inherited: %q", said)
				}
			}
			if !run.endOfFileOnKill(t) {
				t.Errorf("the pipe outrider inherited is still open 3s after outrider was killed: the exec probe's command holds it")
			}
		})
	}
}

// TestWrapFailureDrainsBeforeStoppingTheApp: when outrider stops because
// one of its parts failed, not on a signal, the app is stopped only once
// the proxy has drained: a request in flight is answered by an app that
// has not been told to stop. The app was stopped at once, under it (an
// app that exits at SIGTERM failed the request). The agent runs in the
// test's process, with a part that fails when told.
func TestWrapFailureDrainsBeforeStoppingTheApp(t *testing.T) {
	appAddr, proxyAddr := testbin.FreeAddr(t), testbin.FreeAddr(t)
	env := map[string]string{
		"OUTRIDER_REGISTRY": "none", "OUTRIDER_SERVICE_NAME": "echo",
		"OUTRIDER_APP_ADDR": appAddr, "OUTRIDER_PROXY_LISTEN": proxyAddr,
		"OUTRIDER_METRICS_LISTEN": testbin.FreeAddr(t), "OUTRIDER_ADMIN_LISTEN": testbin.FreeAddr(t),
		"OUTRIDER_PROBE":         "http://" + appAddr + "/healthz",
		"OUTRIDER_DRAIN_TIMEOUT": "10s", "OUTRIDER_APP_STOP_TIMEOUT": "5s",
	}
	var logs testlog.Buffer
	a, ok := agentFromEnv(func(k string) string { return env[k] }, &logs)
	if !ok {
		t.Fatalf("configuration refused:\n%s", logs.String())
	}
	a.wrapMode, a.childArgv = true, []string{testbin.Echo(t), "-listen", appAddr}
	if err := a.build(); err != nil {
		t.Fatal(err)
	}
	fail := make(chan struct{})
	a.addContext("broken", func(ctx context.Context) error {
		select {
		case <-fail:
			return errors.New("failed on purpose")
		case <-ctx.Done():
			return nil
		}
	})
	code := make(chan int, 1)
	go func() { code <- a.run() }()
	testbin.WaitHTTP(t, "http://"+proxyAddr+"/healthz", 200, 20*time.Second)

	answer := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + proxyAddr + "/slow?delay=2s")
		if err != nil {
			answer <- err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		answer <- fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}()
	waitFor(t, 10*time.Second, "the request to be in flight", func() bool { return a.proxy.InFlight() == 1 })
	close(fail)
	// Until the answer comes, the app has not been told to stop: it
	// still accepts connections (echo closes its listener at SIGTERM).
	got := ""
	for got == "" {
		select {
		case got = <-answer:
		case <-time.After(20 * time.Millisecond):
			c, err := net.DialTimeout("tcp", appAddr, time.Second)
			if err == nil {
				c.Close()
				continue
			}
			// The app may stop once outrider relayed the answer, before
			// this goroutine hears of it: the client then has it within
			// moments. Stopped under the request, the app would have
			// stopped up to 2 s before the answer.
			select {
			case got = <-answer:
			case <-time.After(500 * time.Millisecond):
				t.Fatalf("the app stopped accepting (%v) while a request was in flight: it was stopped under it", err)
			}
		}
	}
	if got != "200 slept 2s" {
		t.Errorf("the request in flight when outrider failed: got %q, want 200 slept 2s", got)
	}
	select {
	case got := <-code:
		if got != exitFailed {
			t.Errorf("exit status %d, want %d", got, exitFailed)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("outrider did not stop after its part failed")
	}
	if !a.child.Exited() {
		t.Error("the app still runs after outrider stopped")
	}
	if want := "broken: failed on purpose"; !strings.Contains(logs.String(), want) {
		t.Errorf("log lacks %q:\n%s", want, logs.String())
	}
}
