package exporter

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/procfs"

	"github.com/outrider-sidecar/outrider/internal/testlog"
)

// helperEnv makes the test binary, started again by a test, a small app
// that listens on the address in the variable and lives until its stdin
// closes.
const helperEnv = "OUTRIDER_EXPORTER_TEST_LISTEN"

// lookSelfEnv makes the test binary, started again, look once for a
// process whose command line matches the expression in the variable, and
// print what it found.
const lookSelfEnv = "OUTRIDER_EXPORTER_TEST_SELF"

// helperSleepsEnv makes the helper, before it listens, sleep that many
// times on a thread other than its main one: each sleep is a voluntary
// context switch of that thread.
const helperSleepsEnv = "OUTRIDER_EXPORTER_TEST_SLEEPS"

func TestMain(m *testing.M) {
	if addr := os.Getenv(helperEnv); addr != "" {
		if n, _ := strconv.Atoi(os.Getenv(helperSleepsEnv)); n > 0 {
			sleepOnAThread(n)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		fmt.Println(ln.Addr().String())
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
	if spec := os.Getenv(burnerEnv); spec != "" {
		burn(spec)
	}
	if expr := os.Getenv(lookSelfEnv); expr != "" {
		c, err := NewAppCollector(AppOptions{Process: regexp.MustCompile(expr)})
		if err != nil {
			fmt.Fprintln(os.Stderr, "look for itself:", err)
			os.Exit(1)
		}
		st := c.Status()
		fmt.Printf("getpid=%d found=%t pid=%d\n", os.Getpid(), st.Found, st.PID)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// fixtureNow is the wall clock of fixture tests; testdata/proc/uptime says
// the machine booted 1000 s before it.
var fixtureNow = time.Unix(1_800_000_000, 0)

// fixture copies testdata/proc to a fresh proc root the test may change.
func fixture(t *testing.T) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "proc")
	if err := os.CopyFS(root, os.DirFS("testdata/proc")); err != nil {
		t.Fatalf("copy fixture: %v", err)
	}
	return root
}

// pidFile writes pid to a new pid file and returns its path.
func pidFile(t *testing.T, pid int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "app.pid")
	writePID(t, path, pid)
	return path
}

func writePID(t *testing.T, path string, pid int) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func newCollector(t testing.TB, o AppOptions) (*AppCollector, *testlog.Buffer) {
	t.Helper()
	logs := &testlog.Buffer{}
	o.Log = slog.New(slog.NewTextHandler(logs, nil))
	c, err := NewAppCollector(o)
	if err != nil {
		t.Fatalf("NewAppCollector: %v", err)
	}
	c.now = func() time.Time { return fixtureNow }
	return c, logs
}

// scrape gathers c through a pedantic registry, which also checks that it
// describes what it collects, and returns each sample by name{labels}.
func scrape(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	got, err := scrapeErr(t, c)
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	return got
}

// scrapeErr is scrape that returns the gather error beside the samples
// gathered all the same.
func scrapeErr(t *testing.T, c prometheus.Collector) (map[string]float64, error) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatalf("register: %v", err)
	}
	mfs, err := reg.Gather()
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			key := mf.GetName()
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.GetCounter() != nil:
				got[key] = m.GetCounter().GetValue()
			default:
				got[key] = m.GetGauge().GetValue()
			}
		}
	}
	return got, err
}

// infoPID returns the pid label of outrider_app_info, or 0.
func infoPID(got map[string]float64) int {
	for k := range got {
		if rest, ok := strings.CutPrefix(k, `outrider_app_info{comm=`); ok {
			i := strings.Index(rest, `pid="`)
			pid, _ := strconv.Atoi(strings.TrimSuffix(rest[i+len(`pid="`):], `"}`))
			return pid
		}
	}
	return 0
}

func TestFixtureScrape(t *testing.T) {
	root := fixture(t)
	c, _ := newCollector(t, AppOptions{ProcRoot: root, PIDFile: pidFile(t, 4242), Addr: "127.0.0.1:8080"})
	got := scrape(t, c)
	page := float64(os.Getpagesize())
	want := map[string]float64{
		`outrider_app_up`: 1,
		`outrider_app_info{comm="fixture app",pid="4242"}`:         1,
		`outrider_app_cpu_seconds_total`:                           4, // (250+150) ticks
		`outrider_app_resident_memory_bytes`:                       2560 * page,
		`outrider_app_virtual_memory_bytes`:                        104857600,
		`outrider_app_threads`:                                     7,
		`outrider_app_processes`:                                   1, // its zombie child 4343 is not counted
		`outrider_app_start_time_seconds`:                          float64(fixtureNow.Unix()) - 1000 + 500,
		`outrider_app_open_fds`:                                    5,
		`outrider_app_max_fds`:                                     1024,
		`outrider_app_io_read_bytes_total`:                         4096,
		`outrider_app_io_write_bytes_total`:                        8192,
		`outrider_app_context_switches_total{type="voluntary"}`:    1123, // 123 + 1000, of two threads
		`outrider_app_context_switches_total{type="nonvoluntary"}`: 50,   // 45 + 5
		`outrider_app_scrape_errors_total{file="stat"}`:            0,
		`outrider_app_scrape_errors_total{file="status"}`:          0,
		`outrider_app_scrape_errors_total{file="limits"}`:          0,
		`outrider_app_scrape_errors_total{file="io"}`:              0,
		`outrider_app_scrape_errors_total{file="fd"}`:              0,
		`outrider_app_scrape_errors_total{file="uptime"}`:          0,
	}
	for k, w := range want {
		if g, ok := got[k]; !ok || g != w {
			t.Errorf("%s: want %v, got %v (present %v)", k, w, g, ok)
		}
	}
	if len(got) != len(want) {
		t.Errorf("want %d samples, got %d: %v", len(want), len(got), got)
	}
}

// TestFixtureCommCutMidCharacter: the kernel cuts comm at 15 bytes, which
// can split a multi-byte character. The label holds U+FFFD in its place,
// and the other figures are still scraped.
// TestFixtureMainThreadExited: an app whose main thread has exited while
// its other threads run (pthread_exit from main) shows in
// /proc/<pid>/stat as a zombie without memory, and /proc/<pid>/fd is
// empty; it was taken for an exited process, outrider_app_up 0. It runs:
// its memory and fds are those of a running thread.
func TestFixtureMainThreadExited(t *testing.T) {
	root := fixture(t)
	app := filepath.Join(root, "4242")
	stat, err := os.ReadFile(filepath.Join(app, "stat"))
	if err != nil {
		t.Fatal(err)
	}
	// The thread 4244 has the memory; the process, 7 threads, none.
	thread := strings.Replace(string(stat), "4242 (fixture app)", "4244 (fixture app)", 1)
	if err := os.WriteFile(filepath.Join(app, "task", "4244", "stat"), []byte(thread), 0o644); err != nil {
		t.Fatal(err)
	}
	zombie := strings.Replace(string(stat), ") S ", ") Z ", 1)
	zombie = strings.Replace(zombie, " 104857600 2560 ", " 0 0 ", 1)
	if err := os.WriteFile(filepath.Join(app, "stat"), []byte(zombie), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(app, "fd"), filepath.Join(app, "task", "4244", "fd")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(app, "fd"), 0o755); err != nil {
		t.Fatal(err)
	}
	c, _ := newCollector(t, AppOptions{ProcRoot: root, PIDFile: pidFile(t, 4242), Addr: "127.0.0.1:8080"})
	got := scrape(t, c)
	want := map[string]float64{
		`outrider_app_up`:                    1,
		`outrider_app_cpu_seconds_total`:     4, // of all its threads
		`outrider_app_resident_memory_bytes`: 2560 * float64(os.Getpagesize()),
		`outrider_app_virtual_memory_bytes`:  104857600,
		`outrider_app_threads`:               7,
		`outrider_app_processes`:             1,
		`outrider_app_open_fds`:              5,
	}
	for k, w := range want {
		if g, ok := got[k]; !ok || g != w {
			t.Errorf("%s: want %v, got %v (present %v)", k, w, g, ok)
		}
	}
	if st := c.Status(); !st.Found || st.PID != 4242 {
		t.Errorf("want /status to show pid 4242 found, got %+v", st)
	}
}

func TestFixtureCommCutMidCharacter(t *testing.T) {
	root := fixture(t)
	comm := string([]byte("заказысервис")[:15]) // 7 letters and half of one
	stat := filepath.Join(root, "4242/stat")
	b, err := os.ReadFile(stat)
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.Replace(b, []byte("(fixture app)"), []byte("("+comm+")"), 1)
	if err := os.WriteFile(stat, b, 0o644); err != nil {
		t.Fatal(err)
	}
	c, _ := newCollector(t, AppOptions{ProcRoot: root, PIDFile: pidFile(t, 4242), Addr: "127.0.0.1:8080"})
	got, err := scrapeErr(t, c)
	if err != nil {
		t.Errorf("gather: %v", err)
	}
	for _, m := range []string{
		fmt.Sprintf(`outrider_app_info{comm=%q,pid="4242"}`, "заказыс\uFFFD"),
		"outrider_app_cpu_seconds_total",
		"outrider_app_resident_memory_bytes",
		"outrider_app_virtual_memory_bytes",
		"outrider_app_threads",
		`outrider_app_context_switches_total{type="voluntary"}`,
	} {
		if _, ok := got[m]; !ok {
			t.Errorf("want %s, it is missing: %v", m, got)
		}
	}
}

// TestEmitSampleBadLabel: a sample whose label Prometheus refuses costs
// that one metric, reported as invalid, not the ones after it.
func TestEmitSampleBadLabel(t *testing.T) {
	ch := make(chan prometheus.Metric, 32)
	emitSample(ch, sample{pid: "4242", comm: "bad\xd0", cpu: 4, resident: 8, virtual: 16, thr: 2}, true)
	close(ch)
	var invalid int
	written := map[string]bool{}
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			invalid++
			continue
		}
		written[m.Desc().String()] = true
	}
	if invalid != 1 {
		t.Errorf("got %d invalid metrics, want 1 (outrider_app_info)", invalid)
	}
	for _, d := range []*prometheus.Desc{appUpDesc, appCPUDesc, appResidentDesc, appVirtualDesc, appThreadsDesc} {
		if !written[d.String()] {
			t.Errorf("want %s sent after the bad label, it is missing", d)
		}
	}
}

// makeUnreadable turns a file into a directory, or a directory into a
// file, under root. procfs then fails to read it even as root, which a
// mode of 000 would not do; it stands for EACCES without CAP_SYS_PTRACE or
// a hidepid mount.
func makeUnreadable(t *testing.T, path string) {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(path); err != nil {
		t.Fatal(err)
	}
	if info.IsDir() {
		err = os.WriteFile(path, nil, 0o444)
	} else {
		err = os.Mkdir(path, 0o555)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func TestFixtureUnreadableFile(t *testing.T) {
	tests := []struct {
		name        string
		file        string // under the proc root
		garbage     bool   // write garbage into file instead
		errFile     string
		wantMissing []string
	}{
		{name: "status garbage", file: "4242/task/4244/status", garbage: true, errFile: "status",
			wantMissing: []string{`outrider_app_context_switches_total{type="voluntary"}`, `outrider_app_context_switches_total{type="nonvoluntary"}`}},
		{name: "limits garbage", file: "4242/limits", garbage: true, errFile: "limits",
			wantMissing: []string{"outrider_app_max_fds"}},
		{name: "io", file: "4242/io", errFile: "io",
			wantMissing: []string{"outrider_app_io_read_bytes_total", "outrider_app_io_write_bytes_total"}},
		{name: "fd", file: "4242/fd", errFile: "fd",
			wantMissing: []string{"outrider_app_open_fds"}},
		{name: "limits", file: "4242/limits", errFile: "limits",
			wantMissing: []string{"outrider_app_max_fds"}},
		{name: "status", file: "4242/task/4242/status", errFile: "status",
			wantMissing: []string{`outrider_app_context_switches_total{type="voluntary"}`, `outrider_app_context_switches_total{type="nonvoluntary"}`}},
		{name: "task", file: "4242/task", errFile: "status",
			wantMissing: []string{`outrider_app_context_switches_total{type="voluntary"}`, `outrider_app_context_switches_total{type="nonvoluntary"}`}},
		{name: "uptime", file: "uptime", errFile: "uptime",
			wantMissing: []string{"outrider_app_start_time_seconds"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := fixture(t)
			if tt.garbage {
				if err := os.WriteFile(filepath.Join(root, tt.file), []byte("garbage\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			} else {
				makeUnreadable(t, filepath.Join(root, tt.file))
			}
			c, logs := newCollector(t, AppOptions{ProcRoot: root, PIDFile: pidFile(t, 4242), Addr: "127.0.0.1:8080"})
			for scrapes := 1; scrapes <= 3; scrapes++ {
				got := scrape(t, c)
				if got["outrider_app_up"] != 1 {
					t.Fatalf("scrape %d: want outrider_app_up 1, got %v", scrapes, got["outrider_app_up"])
				}
				for _, m := range tt.wantMissing {
					if v, ok := got[m]; ok {
						t.Errorf("scrape %d: want %s left out, got %v", scrapes, m, v)
					}
				}
				for _, m := range []string{"outrider_app_cpu_seconds_total", "outrider_app_threads", "outrider_app_resident_memory_bytes"} {
					if _, ok := got[m]; !ok {
						t.Errorf("scrape %d: want %s, it is missing", scrapes, m)
					}
				}
				key := fmt.Sprintf(`outrider_app_scrape_errors_total{file=%q}`, tt.errFile)
				if got[key] != float64(scrapes) {
					t.Errorf("scrape %d: want %s %d, got %v", scrapes, key, scrapes, got[key])
				}
			}
			if n := logs.Count("cannot read app process file"); n != 1 {
				t.Errorf("want the failing file logged once in 3 scrapes, got %d times:\n%s", n, logs.String())
			}

			// Readable again: the figures come back, and that is logged once.
			restore(t, root, tt.file)
			got := scrape(t, c)
			for _, m := range tt.wantMissing {
				if _, ok := got[m]; !ok {
					t.Errorf("after repair: want %s, it is missing", m)
				}
			}
			if n := logs.Count("app process file readable again"); n != 1 {
				t.Errorf("want the repair logged once, got %d times", n)
			}
		})
	}
}

// restore puts the fixture's file back under root.
func restore(t *testing.T, root, file string) {
	t.Helper()
	dst := filepath.Join(root, file)
	if err := os.RemoveAll(dst); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join("testdata/proc", file)
	info, err := os.Stat(src)
	if err != nil {
		t.Fatal(err)
	}
	if info.IsDir() {
		err = os.CopyFS(dst, os.DirFS(src))
	} else {
		var b []byte
		if b, err = os.ReadFile(src); err == nil {
			err = os.WriteFile(dst, b, 0o644)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
}

func TestFixtureUnreadableStatOnFind(t *testing.T) {
	root := fixture(t)
	makeUnreadable(t, filepath.Join(root, "4242/stat"))
	c, _ := newCollector(t, AppOptions{ProcRoot: root, PIDFile: pidFile(t, 4242), Addr: "127.0.0.1:8080"})
	got := scrape(t, c)
	if got["outrider_app_up"] != 0 || got[`outrider_app_scrape_errors_total{file="stat"}`] != 1 {
		t.Errorf("want up 0 and one stat error, got %v", got)
	}
	if st := c.Status(); st.Found || !strings.Contains(st.Error, "pid 4242 (pid_file ") || !strings.Contains(st.Error, "cannot be read") {
		t.Errorf("want status not found, naming the unreadable pid, got %+v", st)
	}
	if got := scrape(t, c)[`outrider_app_scrape_errors_total{file="stat"}`]; got != 2 {
		t.Errorf("want 2 stat errors after 2 scrapes and a status, got %v", got)
	}
}

func TestFixtureUnreadableStat(t *testing.T) {
	root := fixture(t)
	c, _ := newCollector(t, AppOptions{ProcRoot: root, PIDFile: pidFile(t, 4242), Addr: "127.0.0.1:8080"})
	if got := scrape(t, c); got["outrider_app_up"] != 1 {
		t.Fatalf("want outrider_app_up 1 before, got %v", got["outrider_app_up"])
	}
	makeUnreadable(t, filepath.Join(root, "4242/stat"))
	got := scrape(t, c)
	if got["outrider_app_up"] != 0 {
		t.Errorf("want outrider_app_up 0 with stat unreadable, got %v", got["outrider_app_up"])
	}
	if got[`outrider_app_scrape_errors_total{file="stat"}`] != 1 {
		t.Errorf("want one stat error, got %v", got[`outrider_app_scrape_errors_total{file="stat"}`])
	}
	st := c.Status()
	if !st.Found || st.PID != 4242 || st.Error == "" {
		t.Errorf("want status found pid 4242 with the stat error, got %+v", st)
	}
}

func TestFixtureVanished(t *testing.T) {
	t.Run("between scrapes", func(t *testing.T) {
		root := fixture(t)
		c, logs := newCollector(t, AppOptions{ProcRoot: root, PIDFile: pidFile(t, 4242), Addr: "127.0.0.1:8080"})
		if got := scrape(t, c); got["outrider_app_up"] != 1 {
			t.Fatalf("want outrider_app_up 1 before, got %v", got["outrider_app_up"])
		}
		if err := os.RemoveAll(filepath.Join(root, "4242")); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			got := scrape(t, c)
			if got["outrider_app_up"] != 0 || len(got) != 1+len(appFiles) {
				t.Errorf("want only outrider_app_up 0 and the error counters, got %v", got)
			}
		}
		if st := c.Status(); st.Found || !strings.Contains(st.Error, "pid 4242") {
			t.Errorf("want status not found naming pid 4242, got %+v", st)
		}
		if n := logs.Count("app process lost"); n != 1 {
			t.Errorf("want the loss logged once, got %d", n)
		}
		if n := logs.Count("app process not found"); n != 1 {
			t.Errorf("want not-found logged once in 3 scrapes, got %d", n)
		}
	})
	t.Run("mid scrape", func(t *testing.T) {
		// stat was read, then the process went: every later file is gone.
		root := fixture(t)
		for _, f := range []string{"status", "task", "limits", "io", "fd"} {
			if err := os.RemoveAll(filepath.Join(root, "4242", f)); err != nil {
				t.Fatal(err)
			}
		}
		c, logs := newCollector(t, AppOptions{ProcRoot: root, PIDFile: pidFile(t, 4242), Addr: "127.0.0.1:8080"})
		got := scrape(t, c)
		if got["outrider_app_up"] != 1 || got["outrider_app_threads"] != 7 {
			t.Errorf("want up 1 and the stat figures, got %v", got)
		}
		for _, f := range []string{"status", "limits", "io", "fd"} {
			if k := fmt.Sprintf(`outrider_app_scrape_errors_total{file=%q}`, f); got[k] != 1 {
				t.Errorf("want %s 1, got %v", k, got[k])
			}
		}
		for _, m := range []string{"outrider_app_open_fds", "outrider_app_max_fds", "outrider_app_io_read_bytes_total"} {
			if _, ok := got[m]; ok {
				t.Errorf("want %s left out", m)
			}
		}
		if n := logs.Count("cannot read app process file"); n != 0 {
			t.Errorf("want an exit mid-scrape not logged as a failing file, got %d lines", n)
		}
	})
	t.Run("pid reused", func(t *testing.T) {
		root := fixture(t)
		c, logs := newCollector(t, AppOptions{ProcRoot: root, PIDFile: pidFile(t, 4242), Addr: "127.0.0.1:8080"})
		before := scrape(t, c)["outrider_app_start_time_seconds"]
		stat := filepath.Join(root, "4242/stat")
		b, err := os.ReadFile(stat)
		if err != nil {
			t.Fatal(err)
		}
		// A newer process with the same pid: started 600 s after boot.
		if err := os.WriteFile(stat, bytes.Replace(b, []byte(" 50000 "), []byte(" 60000 "), 1), 0o644); err != nil {
			t.Fatal(err)
		}
		after := scrape(t, c)["outrider_app_start_time_seconds"]
		if after-before != 100 {
			t.Errorf("want the newer process's start time, 100 s later; got %v then %v", before, after)
		}
		if n := logs.Count("its pid now belongs to a newer process"); n != 1 {
			t.Errorf("want the reuse logged once, got %d", n)
		}
	})
}

// TestFixtureContextSwitchesNeverDrop: a thread that ends keeps its
// counts in the sums, and a tid taken by a newer thread adds the newer
// one's, so the counters do not drop while the process runs.
func TestFixtureContextSwitchesNeverDrop(t *testing.T) {
	const vol, nonvol = `outrider_app_context_switches_total{type="voluntary"}`, `outrider_app_context_switches_total{type="nonvoluntary"}`
	writeStatus := func(t *testing.T, root, tid string, v, n int) {
		t.Helper()
		dir := filepath.Join(root, "4242/task", tid)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		text := fmt.Sprintf("Name:\tfixture app\nvoluntary_ctxt_switches:\t%d\nnonvoluntary_ctxt_switches:\t%d\n", v, n)
		if err := os.WriteFile(filepath.Join(dir, "status"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	type step struct {
		change              func(t *testing.T, root string)
		wantVol, wantNonvol float64
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{name: "a thread ends", steps: []step{
			{change: func(*testing.T, string) {}, wantVol: 1123, wantNonvol: 50},
			{change: func(t *testing.T, root string) { writeStatus(t, root, "4244", 1500, 7) }, wantVol: 1623, wantNonvol: 52},
			{change: func(t *testing.T, root string) { _ = os.RemoveAll(filepath.Join(root, "4242/task/4244")) }, wantVol: 1623, wantNonvol: 52},
			{change: func(t *testing.T, root string) { writeStatus(t, root, "4242", 200, 50) }, wantVol: 1700, wantNonvol: 57},
		}},
		{name: "a new thread starts", steps: []step{
			{change: func(*testing.T, string) {}, wantVol: 1123, wantNonvol: 50},
			{change: func(t *testing.T, root string) { writeStatus(t, root, "4250", 3, 1) }, wantVol: 1126, wantNonvol: 51},
		}},
		{name: "a tid is taken by a newer thread", steps: []step{
			{change: func(*testing.T, string) {}, wantVol: 1123, wantNonvol: 50},
			{change: func(t *testing.T, root string) { writeStatus(t, root, "4244", 10, 1) }, wantVol: 1133, wantNonvol: 51},
			{change: func(t *testing.T, root string) { writeStatus(t, root, "4244", 20, 1) }, wantVol: 1143, wantNonvol: 51},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := fixture(t)
			c, _ := newCollector(t, AppOptions{ProcRoot: root, PIDFile: pidFile(t, 4242), Addr: "127.0.0.1:8080"})
			for i, st := range tt.steps {
				st.change(t, root)
				got := scrape(t, c)
				if got[vol] != st.wantVol || got[nonvol] != st.wantNonvol {
					t.Errorf("scrape %d: want voluntary %v and nonvoluntary %v, got %v and %v", i+1, st.wantVol, st.wantNonvol, got[vol], got[nonvol])
				}
			}
		})
	}
}

func TestFixtureDiscovery(t *testing.T) {
	tests := []struct {
		name    string
		opts    AppOptions
		pidFile int    // when not 0, a pid file holding it is set in opts
		remove  string // removed from the fixture first
		wantPID int
		wantHow string
		wantErr string
	}{
		{name: "pid file", opts: AppOptions{Addr: "127.0.0.1:1"}, pidFile: 4242, wantPID: 4242, wantHow: howPIDFile},
		{name: "pid file first", opts: AppOptions{Process: regexp.MustCompile(`fixture`), Addr: "127.0.0.1:1"}, pidFile: 4242, wantPID: 4242, wantHow: howPIDFile},
		{name: "pid of no process", opts: AppOptions{Addr: "127.0.0.1:8080"}, pidFile: 99, wantErr: "pid 99 (pid_file "},
		{name: "pid of a zombie", opts: AppOptions{Addr: "127.0.0.1:8080"}, pidFile: 4343, wantErr: "has exited"},
		{name: "regexp when the pid file is missing", opts: AppOptions{PIDFile: "testdata/missing.pid", Process: regexp.MustCompile(`--serve`), Addr: "127.0.0.1:1"}, wantPID: 4242, wantHow: howProcess},
		{name: "regexp picks the oldest", opts: AppOptions{Process: regexp.MustCompile(`^fixture-app `), Addr: "127.0.0.1:1"}, wantPID: 17, wantHow: howProcess},
		{name: "regexp no match", opts: AppOptions{Process: regexp.MustCompile(`java`), Addr: "127.0.0.1:8080"},
			wantErr: `no process but outrider and its exec probes has a command line matching "java"`},
		{name: "child", opts: AppOptions{Child: func() int { return 4242 }, Addr: "127.0.0.1:8080"}, wantPID: 4242, wantHow: howChild},
		{name: "child not running", opts: AppOptions{Child: func() int { return 0 }, Addr: "127.0.0.1:8080"},
			wantErr: "the wrap-mode child is not running"},
		{name: "socket ipv4, shared by two, oldest wins", opts: AppOptions{Addr: "127.0.0.1:8080"}, wantPID: 17, wantHow: howSocket},
		{name: "socket ipv6", opts: AppOptions{Addr: "[::1]:9090"}, wantPID: 4242, wantHow: howSocket},
		{name: "socket nobody listens", opts: AppOptions{Addr: "127.0.0.1:8081"}, wantErr: "no socket listens on port 8081"},
		{name: "socket on another address", opts: AppOptions{Addr: "127.0.0.1:9090"},
			wantErr: "no socket listens on port 9090 for 127.0.0.1, only on ::1: set OUTRIDER_APP_ADDR to the address the app listens on"},
		{name: "socket owner not visible", opts: AppOptions{Addr: "127.0.0.1:80"}, wantErr: "no visible process owns the socket listening on port 80"},
		{name: "socket table missing", opts: AppOptions{Addr: "127.0.0.1:8080"}, remove: "net", wantErr: "a procfs mount?"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := fixture(t)
			if tt.remove != "" {
				if err := os.RemoveAll(filepath.Join(root, tt.remove)); err != nil {
					t.Fatal(err)
				}
			}
			o := tt.opts
			o.ProcRoot = root
			if tt.pidFile != 0 {
				o.PIDFile = pidFile(t, tt.pidFile)
			}
			c, _ := newCollector(t, o)
			got := c.Status()
			if got.PID != tt.wantPID || got.How != tt.wantHow || !strings.Contains(got.Error, tt.wantErr) {
				t.Errorf("want pid %d how %q error containing %q, got %+v", tt.wantPID, tt.wantHow, tt.wantErr, got)
			}
			if up := scrape(t, c)["outrider_app_up"]; (up == 1) != (tt.wantPID != 0) {
				t.Errorf("want outrider_app_up %v, got %v", tt.wantPID != 0, up)
			}
		})
	}
}

func TestLint(t *testing.T) {
	tests := []struct {
		name string
		opts AppOptions
	}{
		{name: "found", opts: AppOptions{Addr: "127.0.0.1:8080"}},
		{name: "not found", opts: AppOptions{Addr: "127.0.0.1:8081"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.opts
			o.ProcRoot = fixture(t)
			c, _ := newCollector(t, o)
			problems, err := testutil.CollectAndLint(c)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range problems {
				t.Errorf("lint: %s: %s", p.Metric, p.Text)
			}
		})
	}
}

func TestNewAppCollectorErrors(t *testing.T) {
	tests := []struct {
		name    string
		opts    AppOptions
		wantErr string
	}{
		{name: "no proc root", opts: AppOptions{ProcRoot: "testdata/nope", Addr: "127.0.0.1:8080"}, wantErr: "open proc root testdata/nope"},
		{name: "bad address", opts: AppOptions{ProcRoot: "testdata/proc", Addr: "localhost"}, wantErr: `app address "localhost"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewAppCollector(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("want error containing %q, got %v", tt.wantErr, err)
			}
		})
	}
}

// netTCPHeader is the first line of /proc/net/tcp.
const netTCPHeader = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"

func TestNoListener(t *testing.T) {
	addrs := func(ss ...string) []netip.Addr {
		var as []netip.Addr
		for _, s := range ss {
			as = append(as, netip.MustParseAddr(s))
		}
		return as
	}
	host := netip.MustParseAddr("127.0.0.1")
	tests := []struct {
		name      string
		elsewhere []netip.Addr
		want      string
	}{
		{"nothing on the port", nil, "no socket listens on port 9090"},
		{"one address", addrs("::1"), "no socket listens on port 9090 for 127.0.0.1, only on ::1: set OUTRIDER_APP_ADDR to the address the app listens on"},
		{"workers sharing an address are named once", addrs("::1", "::1", "::1", "::1"), "for 127.0.0.1, only on ::1: set"},
		{"each address once, in order", addrs("::1", "10.1.2.3", "::1", "10.1.2.3"), "only on 10.1.2.3, ::1: set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := slices.Clone(tt.elsewhere)
			got := noListener(host, 9090, tt.elsewhere).Error()
			if !strings.Contains(got, tt.want) {
				t.Errorf("got %q, want it to contain %q", got, tt.want)
			}
			if !slices.Equal(tt.elsewhere, in) {
				t.Errorf("the addresses passed in changed: %v, were %v", tt.elsewhere, in)
			}
		})
	}
}

func TestParseListeners(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		host    string // the app's IP; none: any address
		port    int
		want    []uint64
		other   string // the addresses listening on port for other hosts
		wantErr string
	}{
		{name: "ipv4 listener", port: 8080,
			text: netTCPHeader + "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 77 1 0 100 0 0 10 0\n",
			want: []uint64{77}},
		{name: "ipv6 listener", port: 8080,
			text: netTCPHeader + "   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 78 1 0 100 0 0 10 0\n",
			want: []uint64{78}},
		{name: "established is not listening", port: 8080,
			text: netTCPHeader + "   0: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 79 1 0 20 4 30 10 -1\n"},
		{name: "other port", port: 8081,
			text: netTCPHeader + "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 77 1 0 100 0 0 10 0\n"},
		{name: "ipv4 listener, its host", host: "127.0.0.1", port: 8080,
			text: netTCPHeader + "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 77 1 0 100 0 0 10 0\n",
			want: []uint64{77}},
		{name: "ipv4 listener, another host", host: "::1", port: 8080,
			text:  netTCPHeader + "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 77 1 0 100 0 0 10 0\n",
			other: "[127.0.0.1]"},
		{name: "ipv6 listener, its host", host: "::1", port: 8080,
			text: netTCPHeader + "   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 78 1 0 100 0 0 10 0\n",
			want: []uint64{78}},
		{name: "ipv6 listener, an ipv4 host", host: "127.0.0.1", port: 8080,
			text:  netTCPHeader + "   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 78 1 0 100 0 0 10 0\n",
			other: "[::1]"},
		{name: "0.0.0.0 takes ipv4 hosts", host: "127.0.0.1", port: 8080,
			text: netTCPHeader + "   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 79 1 0 100 0 0 10 0\n",
			want: []uint64{79}},
		{name: "0.0.0.0 does not take ipv6 hosts", host: "::1", port: 8080,
			text:  netTCPHeader + "   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 79 1 0 100 0 0 10 0\n",
			other: "[0.0.0.0]"},
		{name: ":: takes ipv4 hosts", host: "127.0.0.1", port: 8080,
			text: netTCPHeader + "   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 80 1 0 100 0 0 10 0\n",
			want: []uint64{80}},
		{name: "ipv4 mapped into ipv6", host: "127.0.0.1", port: 8080,
			text: netTCPHeader + "   0: 0000000000000000FFFF00000100007F:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 81 1 0 100 0 0 10 0\n",
			want: []uint64{81}},
		{name: "a name takes any address", port: 8080,
			text: netTCPHeader + "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 77 1 0 100 0 0 10 0\n" +
				"   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 78 1 0 100 0 0 10 0\n",
			want: []uint64{77, 78}},
		{name: "bad address", host: "127.0.0.1", port: 8080, text: netTCPHeader + "   0: 0100007G:1F90 00000000:0000 0A 0 0 0 0 0 77\n",
			wantErr: `line 2: local address "0100007G:1F90": bad address`},
		{name: "header only", port: 8080, text: netTCPHeader},
		{name: "short line", port: 8080, text: netTCPHeader + "   0: 0100007F:1F90 00000000:0000 0A\n",
			wantErr: "line 2: 4 fields, want at least 10"},
		{name: "bad port", port: 8080, text: netTCPHeader + "   0: 0100007F:XYZ 00000000:0000 0A 0 0 0 0 0 77\n",
			wantErr: `line 2: local address "0100007F:XYZ": bad port`},
		{name: "bad inode", port: 8080, text: netTCPHeader + "   0: 0100007F:1F90 00000000:0000 0A 0 0 0 0 0 x\n",
			wantErr: `line 2: inode "x" is not a number`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var host netip.Addr
			if tt.host != "" {
				host = netip.MustParseAddr(tt.host)
			}
			got, other, err := parseListeners(strings.NewReader(tt.text), host, tt.port)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("want error %q, got %v", tt.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("want %v, got %v", tt.want, got)
			}
			if want := cmp.Or(tt.other, "[]"); fmt.Sprint(other) != want {
				t.Errorf("want other addresses %s, got %v", want, other)
			}
		})
	}
}

// TestParseListenersBusyNamespace reads a /proc/net/tcp of a busy pod:
// tens of thousands of connections, one listener. The file is read at every
// scrape until the app is found, so it must not cost memory in proportion.
func TestParseListenersBusyNamespace(t *testing.T) {
	var b strings.Builder
	b.WriteString(netTCPHeader)
	for i := range 20000 {
		fmt.Fprintf(&b, "%4d: 0100007F:1F90 0100007F:%04X 01 00000000:00000000 00:00000000 00000000  1000        0 %d 1 0 20 4 30 10 -1\n", i, i%0xFFFF, 1000+i)
	}
	b.WriteString("20000: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 77 1 0 100 0 0 10 0\n")
	text := b.String()
	var got []uint64
	allocs := testing.AllocsPerRun(5, func() {
		var err error
		if got, _, err = parseListeners(strings.NewReader(text), netip.MustParseAddr("127.0.0.1"), 8080); err != nil {
			t.Fatal(err)
		}
	})
	if fmt.Sprint(got) != "[77]" {
		t.Errorf("want [77], got %v", got)
	}
	// The scanner's buffer and the one match; not a string per line.
	if allocs > 10 {
		t.Errorf("%.0f allocations for %d lines, want at most 10", allocs, 20001)
	}
}

func TestParseSocketInode(t *testing.T) {
	tests := []struct {
		link   string
		want   uint64
		wantOK bool
	}{
		{link: "socket:[12345]", want: 12345, wantOK: true},
		{link: "/dev/null"},
		{link: "pipe:[12345]"},
		{link: "socket:[12345"},
		{link: "socket:[x]"},
	}
	for _, tt := range tests {
		t.Run(tt.link, func(t *testing.T) {
			got, ok := parseSocketInode(tt.link)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("want %d %v, got %d %v", tt.want, tt.wantOK, got, ok)
			}
		})
	}
}

func TestParsePID(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		want    int
		wantErr string
	}{
		{name: "with newline", text: "4242\n", want: 4242},
		{name: "spaces", text: "  17 ", want: 17},
		{name: "empty", text: "", wantErr: `"" is not a pid (want a whole number of 1 or more)`},
		{name: "zero", text: "0", wantErr: `"0" is not a pid (want a whole number of 1 or more)`},
		{name: "words", text: "app 12", wantErr: `"app 12" is not a pid (want a whole number of 1 or more)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parsePID(tt.text)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("want error %q, got %v", tt.wantErr, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("want %d, got %d %v", tt.want, got, err)
			}
		})
	}
}

// TestPIDFileNotAPIDFile: a pid file that is a named pipe, a directory
// or a long file is refused at once, with a short reason that says what
// to name: a named pipe held the scrape, and /status, until a writer
// came, and a long file was read whole and quoted whole in every log
// line and in /status.
func TestPIDFileNotAPIDFile(t *testing.T) {
	tests := []struct {
		name    string
		make    func(t *testing.T, path string)
		wantErr string
	}{
		{name: "named pipe", make: func(t *testing.T, path string) {
			if err := syscall.Mkfifo(path, 0o600); err != nil {
				t.Fatal(err)
			}
		}, wantErr: "is not a regular file (a pipe): name the file the app writes its pid to"},
		{name: "directory", make: func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o755); err != nil {
				t.Fatal(err)
			}
		}, wantErr: "is not a regular file (a directory)"},
		{name: "a log", make: func(t *testing.T, path string) {
			if err := os.WriteFile(path, bytes.Repeat([]byte("GET / 200\n"), 100_000), 0o644); err != nil {
				t.Fatal(err)
			}
		}, wantErr: "holds more than 64 bytes, which no pid takes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "app.pid")
			tt.make(t, path)
			c, logs := newCollector(t, AppOptions{PIDFile: path, Addr: "127.0.0.1:1"})
			done := make(chan map[string]float64, 1)
			go func() { done <- scrape(t, c) }()
			select {
			case got := <-done:
				if got["outrider_app_up"] != 0 {
					t.Errorf("want outrider_app_up 0, got %v", got)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the scrape still waits after 5 s")
			}
			st := c.Status()
			if !strings.Contains(st.Error, tt.wantErr) || len(st.Error) > 200 {
				t.Errorf("want a short error with %q, got %d bytes: %.300s", tt.wantErr, len(st.Error), st.Error)
			}
			if n := len(logs.String()); n > 500 {
				t.Errorf("want a short log, got %d bytes: %.300s", n, logs.String())
			}
		})
	}
}

// TestPIDFileOfAGoneApp: a pid file written well before its pid's
// process started is stale (the app that wrote it is gone, its pid
// reused) and is not followed: the other process's figures would pass for
// the app's. One that seems older by less than a minute (a network file
// system's clock) is followed.
func TestPIDFileOfAGoneApp(t *testing.T) {
	pid, _ := startHelper(t, "127.0.0.1:0")
	path := pidFile(t, pid)
	hourAgo := time.Now().Add(-time.Hour)
	if err := os.Chtimes(path, hourAgo, hourAgo); err != nil {
		t.Fatal(err)
	}
	c, _ := newCollector(t, AppOptions{PIDFile: path, Addr: "127.0.0.1:1"})
	if got := scrape(t, c); got["outrider_app_up"] != 0 {
		t.Errorf("stale pid file: want outrider_app_up 0, got %v", got)
	}
	if st, want := c.Status(), fmt.Sprintf("names pid %d, which started at", pid); !strings.Contains(st.Error, want) || len(st.Error) > 250 {
		t.Errorf("stale pid file: want a short error with %q, got %q", want, st.Error)
	}
	halfAMinuteAgo := time.Now().Add(-30 * time.Second)
	if err := os.Chtimes(path, halfAMinuteAgo, halfAMinuteAgo); err != nil {
		t.Fatal(err)
	}
	if got := infoPID(scrape(t, c)); got != pid {
		t.Errorf("pid file 30 s older than its process: want pid %d, got %d", pid, got)
	}
}

func TestParseUptime(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		want    float64
		wantErr bool
	}{
		{name: "two figures", text: "1000.25 1800.00\n", want: 1000.25},
		{name: "empty", text: "", wantErr: true},
		{name: "garbage", text: "abc 1", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseUptime(tt.text)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("want %v (error %v), got %v %v", tt.want, tt.wantErr, got, err)
			}
		})
	}
}

func TestParseCtxSwitches(t *testing.T) {
	tests := []struct {
		name       string
		text       string
		wantVol    float64
		wantNonvol float64
		wantErr    string
	}{
		{name: "both", text: "Name:\tapp\nThreads:\t7\nvoluntary_ctxt_switches:\t123\nnonvoluntary_ctxt_switches:\t45\n", wantVol: 123, wantNonvol: 45},
		{name: "no trailing newline", text: "voluntary_ctxt_switches:\t1\nnonvoluntary_ctxt_switches:\t0", wantVol: 1},
		{name: "missing", text: "Name:\tapp\n", wantErr: "parse status: no voluntary_ctxt_switches and nonvoluntary_ctxt_switches lines"},
		{name: "garbage", text: "voluntary_ctxt_switches:\tmany\n", wantErr: `parse status: voluntary_ctxt_switches "many" is not a number`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vol, nonvol, err := parseCtxSwitches(tt.text)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("want error %q, got %v", tt.wantErr, err)
				}
				return
			}
			if err != nil || vol != tt.wantVol || nonvol != tt.wantNonvol {
				t.Errorf("want %v %v, got %v %v %v", tt.wantVol, tt.wantNonvol, vol, nonvol, err)
			}
		})
	}
}

func TestParseMaxFDs(t *testing.T) {
	const header = "Limit                     Soft Limit           Hard Limit           Units     \n"
	tests := []struct {
		name    string
		text    string
		want    float64
		wantErr string
	}{
		{name: "soft limit", text: header + "Max processes             96365                96365                processes \nMax open files            1024                 524288               files     \n", want: 1024},
		{name: "unlimited", text: header + "Max open files            unlimited            unlimited            files     \n", want: unlimited},
		{name: "missing", text: header, wantErr: `parse limits: no "Max open files" line`},
		{name: "garbage", text: header + "Max open files            lots                 524288               files     \n", wantErr: `parse limits: max open files "lots" is not a number`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMaxFDs(tt.text)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("want error %q, got %v", tt.wantErr, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("want %v, got %v %v", tt.want, got, err)
			}
		})
	}
}

func TestOldest(t *testing.T) {
	tests := []struct {
		name string
		in   []candidate
		want int
	}{
		{name: "one", in: []candidate{{pid: 5, startTicks: 9}}, want: 5},
		{name: "earliest start", in: []candidate{{pid: 5, startTicks: 9}, {pid: 900, startTicks: 3}, {pid: 7, startTicks: 4}}, want: 900},
		{name: "same tick, lower pid", in: []candidate{{pid: 12, startTicks: 3}, {pid: 11, startTicks: 3}}, want: 11},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := oldest(tt.in).pid; got != tt.want {
				t.Errorf("want %d, got %d", tt.want, got)
			}
		})
	}
}

// sleepOnAThread sleeps n times on a thread of its own, never the main
// one, and returns once it is done; the thread lives on.
func sleepOnAThread(n int) {
	done := make(chan struct{})
	var sleeper func()
	sleeper = func() {
		// Locked and never unlocked: the thread is neither reused nor ended.
		runtime.LockOSThread()
		if syscall.Gettid() == os.Getpid() {
			// The main thread: keep it, so the next try lands elsewhere.
			go sleeper()
			select {}
		}
		for range n {
			ts := syscall.Timespec{Nsec: 10_000}
			_ = syscall.Nanosleep(&ts, nil)
		}
		close(done)
		select {}
	}
	go sleeper()
	<-done
}

// startHelper starts this test binary as an app listening on addr, and
// returns its pid and the address it bound. env is added to the helper's.
func startHelper(t *testing.T, addr string, env ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), helperEnv+"="+addr), env...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	// A group of its own, as an exec probe's command has.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("helper did not start: %v", err)
	}
	return cmd.Process.Pid, strings.TrimSpace(line)
}

func TestDiscoverRealProcess(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	pid4, addr4 := startHelper(t, "127.0.0.1:0")
	pid6, addr6 := startHelper(t, "[::1]:0")
	// The path of this test binary is unique to this run of go test.
	self := "^" + regexp.QuoteMeta(os.Args[0]) + "( |$)"
	tests := []struct {
		name    string
		opts    AppOptions
		wantPID int
		wantHow string
	}{
		{name: "pid file", opts: AppOptions{PIDFile: pidFile(t, pid4), Addr: "127.0.0.1:1"}, wantPID: pid4, wantHow: howPIDFile},
		// Both helpers and this test share the command line: this
		// process is the oldest but is never chosen.
		{name: "regexp skips outrider itself", opts: AppOptions{Process: regexp.MustCompile(self), Addr: "127.0.0.1:1"}, wantPID: pid4, wantHow: howProcess},
		// The older helper leads an exec probe's group here.
		{name: "regexp skips exec probes", opts: AppOptions{Process: regexp.MustCompile(self), ProbeGroups: func() map[int]bool { return map[int]bool{pid4: true} }, Addr: "127.0.0.1:1"}, wantPID: pid6, wantHow: howProcess},
		{name: "child", opts: AppOptions{Child: func() int { return pid6 }, Addr: "127.0.0.1:1"}, wantPID: pid6, wantHow: howChild},
		{name: "socket ipv4", opts: AppOptions{Addr: addr4}, wantPID: pid4, wantHow: howSocket},
		{name: "socket ipv6", opts: AppOptions{Addr: addr6}, wantPID: pid6, wantHow: howSocket},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := newCollector(t, tt.opts)
			c.now = time.Now
			got := scrape(t, c)
			if got["outrider_app_up"] != 1 || infoPID(got) != tt.wantPID {
				t.Fatalf("want up 1 and pid %d, got %v", tt.wantPID, got)
			}
			if st := c.Status(); st.How != tt.wantHow || st.PID != tt.wantPID {
				t.Errorf("want pid %d found by %s, got %+v", tt.wantPID, tt.wantHow, st)
			}
			if got["outrider_app_open_fds"] < 4 || got["outrider_app_threads"] < 1 || got["outrider_app_max_fds"] < 1 {
				t.Errorf("want real figures, got %v", got)
			}
		})
	}
}

// TestDiscoverBySocketOfTheAppAddress: an older process listening on
// 127.0.0.1 at the port of an app listening on [::1] is not taken for the
// app (it was, matched by port alone, when a Prometheus of another test
// happened to get that port).
func TestDiscoverBySocketOfTheAppAddress(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Fatal("no /proc: the app's figures are read from it")
	}
	older, addr4 := startHelper(t, "127.0.0.1:0")
	_, port, err := net.SplitHostPort(addr4)
	if err != nil {
		t.Fatal(err)
	}
	pid6, addr6 := startHelper(t, "[::1]:"+port)
	c, _ := newCollector(t, AppOptions{Addr: addr6})
	c.now = time.Now
	if got := scrape(t, c); got["outrider_app_up"] != 1 || infoPID(got) != pid6 {
		t.Fatalf("want up 1 and pid %d (the older process on %s is %d), got %v", pid6, addr4, older, got)
	}
}

// TestContextSwitchesOfAllThreads: the counts are the whole process's,
// not its main thread's alone, which is all /proc/<pid>/status tells.
func TestContextSwitchesOfAllThreads(t *testing.T) {
	const sleeps = 2000
	pid, _ := startHelper(t, "127.0.0.1:0", helperSleepsEnv+"="+strconv.Itoa(sleeps))
	c, _ := newCollector(t, AppOptions{PIDFile: pidFile(t, pid), Addr: "127.0.0.1:1"})
	c.now = time.Now
	got := scrape(t, c)
	if infoPID(got) != pid {
		t.Fatalf("want pid %d, got %v", pid, got)
	}
	const key = `outrider_app_context_switches_total{type="voluntary"}`
	if got[key] < sleeps {
		t.Errorf("%s: want at least the %d sleeps of a second thread, got %v", key, sleeps, got[key])
	}
}

func TestKeepsTargetUntilItExits(t *testing.T) {
	pidA, _ := startHelper(t, "127.0.0.1:0")
	pidB, _ := startHelper(t, "127.0.0.1:0")
	path := pidFile(t, pidA)
	c, logs := newCollector(t, AppOptions{PIDFile: path, Addr: "127.0.0.1:1"})
	if got := infoPID(scrape(t, c)); got != pidA {
		t.Fatalf("want pid %d, got %d", pidA, got)
	}
	// While A runs it is not looked for again, even if the pid file moves on.
	writePID(t, path, pidB)
	if got := infoPID(scrape(t, c)); got != pidA {
		t.Fatalf("want pid %d kept while it runs, got %d", pidA, got)
	}
	if err := syscall.Kill(pidA, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Nobody reaps A before the test ends: it stays a zombie, which is
	// an exited process all the same.
	waitZombie(t, pidA)
	if got := infoPID(scrape(t, c)); got != pidB {
		t.Fatalf("want pid %d on the scrape after %d exited, got %d", pidB, pidA, got)
	}
	if n := logs.Count("app process found"); n != 2 {
		t.Errorf("want 2 finds logged, got %d", n)
	}
}

// TestNeverItselfInAnotherPIDNamespace: outrider in a PID namespace of
// its own, reading the procfs of the namespace above (the host's /proc, or
// one mounted as OUTRIDER_PROC_ROOT), has another pid there than getpid
// says, and still never takes itself for the app.
func TestNeverItselfInAnotherPIDNamespace(t *testing.T) {
	mark := fmt.Sprintf("nsself-%d", os.Getpid())
	cmd := exec.Command(os.Args[0], "-test.run=^$", mark)
	cmd.Env = append(os.Environ(), lookSelfEnv+"="+regexp.QuoteMeta(mark))
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	out, err := cmd.CombinedOutput()
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) {
		t.Skipf("cannot start a process in a new PID namespace: %v", err)
	}
	if err != nil {
		t.Fatalf("test binary in a new PID namespace: %v\n%s", err, out)
	}
	// Its pid in its own namespace is 1: the check is worth nothing if
	// /proc were that namespace's.
	if want := "getpid=1 found=false pid=0\n"; string(out) != want {
		t.Errorf("want %q, got %q", want, out)
	}
}

// waitZombie polls /proc until pid has exited and is not yet reaped.
// A process killed by a signal shows its main thread as a zombie while
// its other threads are still on their way out; it has exited once its
// thread count has come down to the main thread's.
func waitZombie(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var st procfs.ProcStat
		p, err := procfs.NewProc(pid)
		if err == nil {
			st, err = p.Stat()
		}
		if err == nil && st.State == "Z" && st.NumThreads <= 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d not a zombie after 10 s: %+v %v", pid, st, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func BenchmarkScrape(b *testing.B) {
	// The benchmark process itself is the app: the files read are real.
	c, _ := newCollector(b, AppOptions{Child: os.Getpid, Addr: "127.0.0.1:1"})
	c.now = time.Now
	benchCollect(b, c)
}

// benchCollect scrapes c b.N times, reporting the CPU time a scrape takes
// beside the wall time.
func benchCollect(b *testing.B, c *AppCollector) {
	ch := make(chan prometheus.Metric, 64)
	var before, after syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		c.Collect(ch)
		for len(ch) > 0 {
			<-ch
		}
	}
	b.StopTimer()
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
}

func TestDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/metrics-app.md")
	if err != nil {
		t.Fatal(err)
	}
	c, _ := newCollector(t, AppOptions{ProcRoot: "testdata/proc", Addr: "127.0.0.1:8080"})
	ch := make(chan *prometheus.Desc, 32)
	c.Describe(ch)
	close(ch)
	re := regexp.MustCompile(`fqName: ("(?:[^"\\]|\\.)*"), help: ("(?:[^"\\]|\\.)*")`)
	for d := range ch {
		m := re.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read name and help from %s", d)
		}
		name, _ := strconv.Unquote(m[1])
		help, _ := strconv.Unquote(m[2])
		t.Run(name, func(t *testing.T) {
			row := regexp.MustCompile("(?m)^\\| `" + regexp.QuoteMeta(name) + "` \\|.*\\| " + regexp.QuoteMeta(help) + " \\|$")
			if !row.Match(doc) {
				t.Errorf("docs/metrics-app.md: want a row for %s with the help %q", name, help)
			}
		})
	}
}

// TestDocumentedBenchmarkCommands: each `go test -bench` command of
// docs/metrics-app.md runs the benchmarks whose results follow it, and no
// other, so a copy of it gives what the page shows.
func TestDocumentedBenchmarkCommands(t *testing.T) {
	doc, err := os.ReadFile("../docs/metrics-app.md")
	if err != nil {
		t.Fatal(err)
	}
	var defined []string
	files, err := filepath.Glob("*_test.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`(?m)^func (Benchmark\w*)\(b \*testing\.B\)`).FindAllSubmatch(b, -1) {
			defined = append(defined, string(m[1]))
		}
	}
	command := regexp.MustCompile(`(?m)^go test .*-bench '?([^' ]+)'? .*\./exporter/\n((?:Benchmark.*\n)+)`)
	commands := command.FindAllSubmatch(doc, -1)
	if len(commands) == 0 {
		t.Fatal("docs/metrics-app.md shows no go test -bench command with results")
	}
	for _, c := range commands {
		pattern := string(c[1])
		shown := map[string]bool{}
		for _, line := range strings.Split(strings.TrimSpace(string(c[2])), "\n") {
			name, _, _ := strings.Cut(strings.Fields(line)[0], "/")
			if i := strings.LastIndex(name, "-"); i >= 0 {
				name = name[:i] // the -GOMAXPROCS suffix
			}
			shown[name] = true
		}
		// go test matches the part of the pattern before a '/' against
		// the top-level names.
		top, _, _ := strings.Cut(pattern, "/")
		re := regexp.MustCompile(top)
		for _, name := range defined {
			if re.MatchString(name) != shown[name] {
				t.Errorf("docs/metrics-app.md: -bench %s runs %s: %v; the results the page shows for it hold %s: %v", pattern, name, re.MatchString(name), name, shown[name])
			}
		}
	}
}

// A look for the app that blocks (here a command line that is a named
// pipe with no writer, as a stuck process's cmdline blocks its reader)
// holds up no scrape past the wait; the scrapes meanwhile say why, and
// once the read returns the app is found.
func TestLookThatBlocks(t *testing.T) {
	root := fixture(t)
	cmdline := filepath.Join(root, "4242", "cmdline")
	if err := os.Remove(cmdline); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(cmdline, 0o644); err != nil {
		t.Fatal(err)
	}
	c, _ := newCollector(t, AppOptions{ProcRoot: root, Process: regexp.MustCompile(`--serve`)})
	c.lookTimeout = 100 * time.Millisecond

	for i := range 2 {
		start := time.Now()
		got := scrapeWithin(t, c, 5*time.Second)
		if got["outrider_app_up"] != 0 {
			t.Fatalf("scrape %d: want outrider_app_up 0 while the look blocks, got %v", i, got)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("scrape %d took %s, want about the 100ms wait", i, took)
		}
	}
	if st := c.Status(); st.Found || !strings.Contains(st.Error, "has taken more than 100ms") {
		t.Errorf("want the app not found, saying the look takes too long; got %+v", st)
	}

	// The stuck read returns.
	pipe, err := os.OpenFile(cmdline, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pipe.WriteString("fixture-app\x00--serve\x00"); err != nil {
		t.Fatal(err)
	}
	pipe.Close()
	if err := os.Remove(cmdline); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cmdline, []byte("fixture-app\x00--serve\x00"), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := scrapeWithin(t, c, 5*time.Second)
		if got["outrider_app_up"] == 1 && infoPID(got) == 4242 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("want pid 4242 once the read returned, got %v", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// scrapeWithin is scrape, failing the test if it takes longer than limit.
func scrapeWithin(t *testing.T, c prometheus.Collector, limit time.Duration) map[string]float64 {
	t.Helper()
	type result struct {
		got map[string]float64
		err error
	}
	done := make(chan result, 1)
	go func() {
		got, err := scrapeErr(t, c)
		done <- result{got, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("gather: %v", r.err)
		}
		return r.got
	case <-time.After(limit):
		t.Fatalf("a scrape took longer than %s", limit)
		return nil
	}
}

// Probe groups name processes as outrider's PID namespace numbers them:
// through the procfs of another namespace they are not applied, since a
// pid there that equals a probe's would be another process.
func TestProbeGroupsOnlyInOwnNamespace(t *testing.T) {
	probes := func() map[int]bool { return map[int]bool{4242: true} }
	tests := []struct {
		name    string
		self    string // where the root's self link points; "" for none
		wantPID int
	}{
		{name: "outrider's namespace", wantPID: 0},
		{name: "another namespace", self: "999", wantPID: 4242},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := fixture(t)
			if tt.self != "" {
				if err := os.Symlink(tt.self, filepath.Join(root, "self")); err != nil {
					t.Fatal(err)
				}
			}
			c, _ := newCollector(t, AppOptions{ProcRoot: root, Process: regexp.MustCompile(`--serve`), ProbeGroups: probes})
			if got := scrape(t, c); infoPID(got) != tt.wantPID {
				t.Errorf("want pid %d, got %v", tt.wantPID, got)
			}
		})
	}
}
