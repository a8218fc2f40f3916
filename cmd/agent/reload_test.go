package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outrider-sidecar/outrider/config"
	"github.com/outrider-sidecar/outrider/internal/testlog"
	"github.com/outrider-sidecar/outrider/probe"
)

// TestReloadAppliesDrainTimingsAndLogLevel runs reloads in process: the
// drain-timings hook hears of new timings only, the log level follows the
// file, and a bad file changes nothing and is counted.
func TestReloadAppliesDrainTimingsAndLogLevel(t *testing.T) {
	r, _, write := reloadingAgent(t, map[string]string{"OUTRIDER_DRAIN_DELAY": "7s"}, "drain_timeout: 20s\n")
	a, level := r.a, r.a.logLevel
	type timings struct{ delay, timeout time.Duration }
	var heard []timings
	a.onDrainTimings = func(delay, timeout time.Duration) { heard = append(heard, timings{delay, timeout}) }

	steps := []struct {
		name      string
		file      string
		heard     []timings
		level     slog.Level
		successes float64
		failures  float64
	}{
		{"new drain timeout", "drain_timeout: 30s\n", []timings{{7 * time.Second, 30 * time.Second}}, slog.LevelInfo, 1, 0},
		{"the same timings: not told again", "drain_timeout: 30s\nlog_level: debug\n", []timings{{7 * time.Second, 30 * time.Second}}, slog.LevelDebug, 2, 0},
		{"delay from the file over the environment", "drain_delay: 1s\ndrain_timeout: 30s\nlog_level: debug\n",
			[]timings{{7 * time.Second, 30 * time.Second}, {time.Second, 30 * time.Second}}, slog.LevelDebug, 3, 0},
		{"a bad file changes nothing", "drain_delay: soon\nlog_level: error\n",
			[]timings{{7 * time.Second, 30 * time.Second}, {time.Second, 30 * time.Second}}, slog.LevelDebug, 3, 1},
		{"a file left empty changes nothing", "",
			[]timings{{7 * time.Second, 30 * time.Second}, {time.Second, 30 * time.Second}}, slog.LevelDebug, 3, 2},
		{"{}: the environment again", "{}\n",
			[]timings{{7 * time.Second, 30 * time.Second}, {time.Second, 30 * time.Second}, {7 * time.Second, 25 * time.Second}}, slog.LevelInfo, 4, 2},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			write(s.file)
			r.reload("test", nil)
			if !slices.Equal(heard, s.heard) {
				t.Errorf("drain timings heard = %v, want %v", heard, s.heard)
			}
			if got := level.Level(); got != s.level {
				t.Errorf("log level = %s, want %s", got, s.level)
			}
			if got := testutil.ToFloat64(r.total.WithLabelValues("success")); got != s.successes {
				t.Errorf("successes = %g, want %g", got, s.successes)
			}
			if got := testutil.ToFloat64(r.total.WithLabelValues("failure")); got != s.failures {
				t.Errorf("failures = %g, want %g", got, s.failures)
			}
		})
	}

	t.Run("without a hook", func(t *testing.T) {
		a.onDrainTimings = nil
		write("drain_timeout: 3s\n")
		r.reload("test", nil) // must not panic
		if got := r.status().Values["OUTRIDER_DRAIN_TIMEOUT"]; got != "3s" {
			t.Errorf("drain timeout in force = %q, want 3s", got)
		}
	})
}

// TestReloadWarnsWhenTheDrainOutgrowsTheGracePeriod: a reload checks the
// drain timings against OUTRIDER_GRACE_PERIOD as start-up does, and warns
// while they do not fit.
func TestReloadWarnsWhenTheDrainOutgrowsTheGracePeriod(t *testing.T) {
	r, logs, write := reloadingAgent(t, map[string]string{"OUTRIDER_GRACE_PERIOD": "30s"}, "drain_timeout: 5s\n")

	steps := []struct {
		name string
		file string
		// warn is the warning the reload must log, "" for none.
		warn string
	}{
		{"fits exactly: no warning", "drain_timeout: 10s\n", ""},
		{"outgrows the grace period", "drain_timeout: 25s\n",
			"configuration: up to 5s to deregister + OUTRIDER_DRAIN_DELAY (5s) + OUTRIDER_DRAIN_TIMEOUT (25s) + OUTRIDER_APP_STOP_TIMEOUT (10s) = 45s does not fit in OUTRIDER_GRACE_PERIOD (30s): "},
		{"fits again", "drain_delay: 1s\ndrain_timeout: 14s\n", ""},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			before := len(logs.String())
			write(s.file)
			r.reload("test", nil)
			var warns []string
			for line := range strings.Lines(logs.String()[before:]) {
				var entry struct{ Level, Msg string }
				if err := json.Unmarshal([]byte(line), &entry); err != nil {
					t.Fatalf("log line %q: %v", line, err)
				}
				if entry.Level == "WARN" {
					warns = append(warns, entry.Msg)
				}
			}
			switch {
			case s.warn == "" && len(warns) > 0:
				t.Errorf("got warnings %q, want none", warns)
			case s.warn != "" && (len(warns) != 1 || !strings.HasPrefix(warns[0], s.warn)):
				t.Errorf("got warnings %q, want one starting %q", warns, s.warn)
			}
		})
	}
}

// TestReloadRotatesTheProbePassword: a file that changes only the
// password in the probe's URL is a change like any other. The prober's
// next probe sends the new password, and the log names OUTRIDER_PROBE as
// changed without showing either password.
func TestReloadRotatesTheProbePassword(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if user, pass, _ := r.BasicAuth(); user != "u" || pass != "new-secret" {
			http.Error(w, "wrong password", http.StatusUnauthorized)
		}
	}))
	defer app.Close()
	file := func(pass string) string {
		return "probe: http://u:" + pass + "@" + app.Listener.Addr().String() + "/healthz\nprobe_period: 20ms\n"
	}
	r, logs, write := reloadingAgent(t, map[string]string{}, file("old-secret"))
	c := r.a.cfg.Probe
	runner, err := probe.NewRunner(probeSpec(c), schedule(c), slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	r.a.prober = runner
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = runner.Run(ctx) }()
	waitVerdict := func(what string, ok func(probe.Verdict) bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for v := runner.Verdict(); !ok(v); v = runner.Verdict() {
			if time.Now().After(deadline) {
				t.Fatalf("after 5s the probe verdict is %v (%s), want %s", v.Healthy, v.Summary, what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitVerdict("a 401 for the old password", func(v probe.Verdict) bool {
		return !v.Healthy && strings.Contains(v.Summary, "401")
	})

	write(file("new-secret"))
	r.reload("test", nil)
	waitVerdict("healthy with the new password", func(v probe.Verdict) bool { return v.Healthy })
	var changed []string
	for line := range strings.Lines(logs.String()) {
		var entry struct {
			Msg     string
			Changed []string
		}
		if err := json.Unmarshal([]byte(line), &entry); err == nil && entry.Msg == "config reloaded" {
			changed = entry.Changed
		}
	}
	if !slices.Equal(changed, []string{"OUTRIDER_PROBE"}) {
		t.Errorf("reload logged changed=%q, want [OUTRIDER_PROBE]", changed)
	}
	for _, secret := range []string{"old-secret", "new-secret"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the log shows the password %q", secret)
		}
	}
}

// reloadingAgent makes an agent whose config file (first holding content)
// and environment (env, without a registry) tests reload in process. It
// returns the agent's reloader, its log and a function that rewrites the
// file.
func reloadingAgent(t *testing.T, env map[string]string, content string) (*reloader, *testlog.Buffer, func(string)) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "outrider.yaml")
	write := func(content string) { writeFile(t, file, content) }
	env["OUTRIDER_REGISTRY"], env["OUTRIDER_CONFIG_FILE"] = "none", file
	getenv := func(k string) string { return env[k] }
	write(content)
	cfg, _, err := config.LoadWithFile(getenv, "host1", nil)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testlog.Buffer{}
	level := new(slog.LevelVar)
	a := newAgent(cfg, newLogger(cfg.Log, level, logs))
	a.logLevel, a.getenv, a.hostname = level, getenv, "host1"
	r, err := newReloader(a)
	if err != nil {
		t.Fatal(err)
	}
	return r, logs, write
}

// TestFileReloadLoadsTheConfirmedContent: a reload that the file's watch
// triggers loads the content the watch confirmed, not the file as it is
// by then: a writer may have truncated it again to write it anew, or
// changed it, and the watch, which counts the confirmed content as
// loaded, would not report the file coming back to it.
func TestFileReloadLoadsTheConfirmedContent(t *testing.T) {
	r, _, write := reloadingAgent(t, map[string]string{}, "service_tags: [blue]\n")
	for _, now := range []string{"", "service_tags: [gre", "service_tags: [red]\n"} {
		write(now)
		r.fileChanged([]byte("service_tags: [green]\nlog_level: debug\n"))
		st := r.status()
		if st.Values["OUTRIDER_SERVICE_TAGS"] != "green" || st.Values["OUTRIDER_LOG_LEVEL"] != "debug" || st.LastError != "" {
			t.Errorf("with the file holding %q now: tags %q, log level %q, last error %q; want the confirmed green and debug, no error",
				now, st.Values["OUTRIDER_SERVICE_TAGS"], st.Values["OUTRIDER_LOG_LEVEL"], st.LastError)
		}
	}
	// Confirmed empty, it is refused as a file read empty is.
	r.fileChanged([]byte{})
	if st := r.status(); st.Values["OUTRIDER_SERVICE_TAGS"] != "green" || !strings.Contains(st.LastError, "the file is empty") {
		t.Errorf("after an empty content: tags %q, last error %q; want green kept and the file refused as empty", st.Values["OUTRIDER_SERVICE_TAGS"], st.LastError)
	}
}

// TestReloadRefusesAnEmptyFile: a config file truncated to nothing (a
// writer caught between truncate and write, a full disk) does not clear
// the tags: the reload fails, says why in /status and keeps them.
func TestReloadRefusesAnEmptyFile(t *testing.T) {
	r, logs, write := reloadingAgent(t, map[string]string{}, "service_tags: [blue]\n")
	for _, content := range []string{"", "# service_tags: [green]\n", "---\n"} {
		write(content)
		r.reload("test", nil)
		st := r.status()
		want := r.cur.ConfigFile + ": the file is empty (or only comments or ---); write {} to clear every setting"
		if st.Values["OUTRIDER_SERVICE_TAGS"] != "blue" || st.LastError != want {
			t.Errorf("after a reload of %q: tags %q, last error %q; want blue and %q", content, st.Values["OUTRIDER_SERVICE_TAGS"], st.LastError, want)
		}
	}
	if got := testutil.ToFloat64(r.total.WithLabelValues("failure")); got != 3 {
		t.Errorf("failures = %g, want 3", got)
	}
	if !strings.Contains(logs.String(), "config reload failed; keeping the running configuration") {
		t.Errorf("log %q does not say the reload failed", logs)
	}
}

// TestReloadRefusesSettingsTheProbeWouldIgnore: a file that turns an http
// probe into a tcp one while the environment gives it headers would have
// them ignored: the reload fails, names the variable and the file's
// probe, says how the file clears the headers, and keeps the http probe.
func TestReloadRefusesSettingsTheProbeWouldIgnore(t *testing.T) {
	r, _, write := reloadingAgent(t, map[string]string{"OUTRIDER_PROBE_HEADERS": "Authorization: Bearer s3cr3t"},
		"probe: http://127.0.0.1:8080/healthz\n")
	write("probe: tcp://127.0.0.1:8080\n")
	r.reload("test", nil)
	st := r.status()
	if st.Values["OUTRIDER_PROBE"] != "http://127.0.0.1:8080/healthz" {
		t.Errorf("after the reload the probe is %q, want the http one kept", st.Values["OUTRIDER_PROBE"])
	}
	for _, want := range []string{
		`OUTRIDER_PROBE_HEADERS="(hidden)" is set, but the config file's probe (`,
		`"tcp://127.0.0.1:8080" is a tcp probe, which sends no headers (only an http or https probe does): write probe_headers: "" in the config file, or change its probe`,
	} {
		if !strings.Contains(st.LastError, want) {
			t.Errorf("last error %q, want one containing %q", st.LastError, want)
		}
	}
	if got := testutil.ToFloat64(r.total.WithLabelValues("failure")); got != 1 {
		t.Errorf("failures = %g, want 1", got)
	}
}

// TestConfigFileThatIsNotAFile: a config file that is a named pipe or a
// pipe (a shell's <(…)) is refused at once, naming the variable and the
// path, by start-up and check-config, rather than read empty or waited on
// for a writer; one swapped in while outrider runs fails the reload,
// which /status shows, and the running configuration is kept.
func TestConfigFileThatIsNotAFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	if _, err := pw.WriteString("service_tags: [blue]\n"); err != nil {
		t.Fatal(err)
	}
	pw.Close() // as <(…) does once its command is done
	pipe := fmt.Sprintf("/proc/self/fd/%d", pr.Fd())
	refusal := func(path string) string {
		return `OUTRIDER_CONFIG_FILE="` + path + `" is not a regular file (a pipe); point it at a file`
	}
	// within runs f, failing the test when it blocks.
	within := func(t *testing.T, what string, f func()) {
		t.Helper()
		done := make(chan struct{})
		go func() { defer close(done); f() }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s still blocked after 5s", what)
		}
	}

	for _, path := range []string{fifo, pipe} {
		env := map[string]string{"OUTRIDER_REGISTRY": "none", "OUTRIDER_CONFIG_FILE": path}
		getenv := func(k string) string { return env[k] }
		t.Run("start-up "+filepath.Base(path), func(t *testing.T) {
			var stderr strings.Builder
			var ok bool
			within(t, "start-up", func() { _, ok = agentFromEnv(getenv, &stderr) })
			if want := "outrider: configuration: " + refusal(path) + "\n"; ok || stderr.String() != want {
				t.Errorf("start-up: ok=%v, stderr %q; want it refused with %q", ok, stderr.String(), want)
			}
		})
		t.Run("check-config "+filepath.Base(path), func(t *testing.T) {
			var stdout, stderr strings.Builder
			var code int
			within(t, "check-config", func() { code = checkConfig(getenv, &stdout, &stderr) })
			if want := "outrider: configuration: " + refusal(path) + "\n"; code != exitUsage || stderr.String() != want {
				t.Errorf("check-config: exit %d, stderr %q; want %d and %q", code, stderr.String(), exitUsage, want)
			}
		})
	}

	t.Run("swapped in while running", func(t *testing.T) {
		r, _, write := reloadingAgent(t, map[string]string{}, "service_tags: [blue]\n")
		write("service_tags: [green]\n")
		file := r.cur.ConfigFile
		if err := os.Rename(fifo, file); err != nil {
			t.Fatal(err)
		}
		within(t, "the reload", func() { r.fileChanged(nil) })
		var st reloadStatus
		within(t, "/status", func() { st = r.status() })
		if st.Values["OUTRIDER_SERVICE_TAGS"] != "blue" || st.LastError != refusal(file) {
			t.Errorf("after the reload: tags %q, last error %q; want blue and %q", st.Values["OUTRIDER_SERVICE_TAGS"], st.LastError, refusal(file))
		}
	})
}

// TestReloadKeepsTheStartUpAddress: with a registry and neither
// OUTRIDER_SERVICE_ADDRESS nor POD_IP (a VM), the address registered is
// the interface address found at start-up. A reload does not look for it
// again, so it reloads the tags even when the host has no address at
// that moment, and keeps the address and the ID made from the start-up
// host name.
func TestReloadKeepsTheStartUpAddress(t *testing.T) {
	file := filepath.Join(t.TempDir(), "outrider.yaml")
	write := func(content string) { writeFile(t, file, content) }
	env := map[string]string{"OUTRIDER_SERVICE_NAME": "web", "OUTRIDER_CONFIG_FILE": file}
	getenv := func(k string) string { return env[k] }
	write("service_tags: [blue]\n")
	cfg, _, err := config.LoadWithFile(getenv, "host1", func() (string, error) { return "192.0.2.7", nil })
	if err != nil {
		t.Fatal(err)
	}
	a := newAgent(cfg, slog.New(slog.DiscardHandler))
	a.getenv, a.hostname = getenv, "host1"
	r, err := newReloader(a)
	if err != nil {
		t.Fatal(err)
	}

	// A host whose interface has lost its address since the start: a
	// reload that looked it up again would fail.
	lookups := 0
	defer func(saved func() (string, error)) { interfaceAddr = saved }(interfaceAddr)
	interfaceAddr = func() (string, error) {
		lookups++
		return "", errors.New("no non-loopback interface address")
	}
	write("service_tags: [green]\n")
	r.reload("test", nil)
	if lookups != 0 {
		t.Errorf("the reload looked the interface address up %d times, want none", lookups)
	}
	st := r.status()
	if st.LastError != "" || st.Values["OUTRIDER_SERVICE_TAGS"] != "green" {
		t.Errorf("after the reload: tags %q, last error %q; want green and no error", st.Values["OUTRIDER_SERVICE_TAGS"], st.LastError)
	}
	if got := [2]string{r.cur.Service.Address, r.cur.Service.ID}; got != [2]string{"192.0.2.7", "web-host1"} {
		t.Errorf("address and ID after the reload = %q, want the start-up ones [192.0.2.7 web-host1]", got)
	}
}

func TestReloadMetricsLint(t *testing.T) {
	a := newAgent(config.Config{}, slog.New(slog.DiscardHandler))
	r, err := newReloader(a)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []prometheus.Collector{r.total, r.lastSuccess} {
		problems, err := testutil.CollectAndLint(c)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
	if got := testutil.ToFloat64(r.lastSuccess); got != float64(a.started.UnixNano())/1e9 {
		t.Errorf("last success = %v, want the start time %v", got, float64(a.started.UnixNano())/1e9)
	}
}

// TestReloadSeesAChangeDuringStartUp: the config file changes after
// outrider read it at start-up but before its watch is set up (a
// ConfigMap update while the components are wired). The change is still
// reloaded, rather than waiting for the next one.
func TestReloadSeesAChangeDuringStartUp(t *testing.T) {
	file := filepath.Join(t.TempDir(), "outrider.yaml")
	write := func(content string) { writeFile(t, file, content) }
	env := map[string]string{"OUTRIDER_REGISTRY": "none", "OUTRIDER_CONFIG_FILE": file}
	write("drain_timeout: 20s\n")
	a, ok := agentFromEnv(func(k string) string { return env[k] }, io.Discard)
	if !ok {
		t.Fatal("agentFromEnv failed")
	}
	write("drain_timeout: 30s\n")
	if err := a.addReload(); err != nil {
		t.Fatal(err)
	}
	var got string
	a.addContext("test", func(ctx context.Context) error {
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			status := a.status["config"]().(reloadStatus)
			if got = status.Values["OUTRIDER_DRAIN_TIMEOUT"]; got == "30s" {
				break
			}
		}
		return errors.New("done")
	})
	_ = a.group.Run()
	if got != "30s" {
		t.Errorf("drain timeout in force 5s after the change = %q, want 30s", got)
	}
}
