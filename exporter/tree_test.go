package exporter

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeProc is a process written into a fixture proc root.
type fakeProc struct {
	pid, ppid                   int
	state                       string // "S", or "Z" for a zombie
	utime, stime, cutime, cstim int    // clock ticks
	rss                         int    // pages
	ioRead                      int
	vol                         int
}

// write puts p's stat, io, status and fd under root. children lists the
// pids for its children file, written when withChildren is set.
func (p fakeProc) write(t *testing.T, root string, withChildren bool, children []int) {
	t.Helper()
	dir := filepath.Join(root, strconv.Itoa(p.pid))
	task := filepath.Join(dir, "task", strconv.Itoa(p.pid))
	if err := os.MkdirAll(task, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "fd"), 0o755); err != nil {
		t.Fatal(err)
	}
	state := p.state
	if state == "" {
		state = "S"
	}
	stat := fmt.Sprintf("%d (worker) %s %d %d %d 0 -1 4194304 1 0 0 0 %d %d %d %d 20 0 1 0 %d 1048576 %d 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
		p.pid, state, p.ppid, p.pid, p.pid, p.utime, p.stime, p.cutime, p.cstim, 60000+p.pid, p.rss)
	status := fmt.Sprintf("Name:\tworker\nvoluntary_ctxt_switches:\t%d\nnonvoluntary_ctxt_switches:\t0\n", p.vol)
	io := fmt.Sprintf("rchar: 0\nwchar: 0\nsyscr: 0\nsyscw: 0\nread_bytes: %d\nwrite_bytes: 0\ncancelled_write_bytes: 0\n", p.ioRead)
	for name, text := range map[string]string{
		filepath.Join(dir, "stat"):      stat,
		filepath.Join(dir, "io"):        io,
		filepath.Join(task, "status"):   status,
		filepath.Join(dir, "fd", "0"):   "",
		filepath.Join(dir, "cmdline"):   "worker\x00",
		filepath.Join(dir, "limits"):    "Max open files            1024                 4096                 files\n",
		filepath.Join(task, "children"): "",
	} {
		if strings.HasSuffix(name, "children") && !withChildren {
			continue
		}
		if err := os.WriteFile(name, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if withChildren {
		var b strings.Builder
		for _, c := range children {
			fmt.Fprintf(&b, "%d ", c)
		}
		if err := os.WriteFile(filepath.Join(task, "children"), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// writeTree replaces the fixture's processes with procs, root first.
func writeTree(t *testing.T, root string, withChildren bool, procs []fakeProc) {
	t.Helper()
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err == nil {
			if err := os.RemoveAll(filepath.Join(root, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, p := range procs {
		var kids []int
		for _, k := range procs {
			if k.ppid == p.pid {
				kids = append(kids, k.pid)
			}
		}
		p.write(t, root, withChildren, kids)
	}
}

// TestFixtureTree: the figures are the sums over the app process and its
// live descendants, and the counters count each worker once, whether it
// is still running, a zombie, reaped by its parent (whose cutime and io
// then hold it) or gone without being reaped.
func TestFixtureTree(t *testing.T) {
	const app = 4242
	type step struct {
		name               string
		procs              []fakeProc
		wantCPU, wantIO    float64
		wantVol            float64
		wantProcs, wantRSS float64 // wantRSS in pages
		wantCPUAlone       float64 // OUTRIDER_APP_CHILDREN=false
	}
	steps := []step{
		{name: "master, a worker and its child",
			procs: []fakeProc{
				{pid: app, ppid: 1, utime: 250, stime: 150, rss: 100, ioRead: 1000, vol: 10},
				{pid: 5001, ppid: app, utime: 100, rss: 50, ioRead: 200, vol: 5},
				{pid: 5002, ppid: 5001, utime: 50, rss: 20, ioRead: 30, vol: 2},
			},
			wantCPU: 5.5, wantIO: 1230, wantVol: 17, wantProcs: 3, wantRSS: 170, wantCPUAlone: 4},
		{name: "the worker reaps its child, which had used 80 ticks and read 40",
			procs: []fakeProc{
				{pid: app, ppid: 1, utime: 250, stime: 150, rss: 100, ioRead: 1000, vol: 10},
				{pid: 5001, ppid: app, utime: 120, cutime: 80, rss: 50, ioRead: 240, vol: 6},
			},
			wantCPU: 6, wantIO: 1240, wantVol: 18, wantProcs: 2, wantRSS: 150, wantCPUAlone: 4},
		{name: "the worker exits: a zombie until reaped",
			procs: []fakeProc{
				{pid: app, ppid: 1, utime: 250, stime: 150, rss: 100, ioRead: 1000, vol: 10},
				{pid: 5001, ppid: app, state: "Z", utime: 130, cutime: 80, ioRead: 250, vol: 7},
			},
			wantCPU: 6.1, wantIO: 1250, wantVol: 19, wantProcs: 1, wantRSS: 100, wantCPUAlone: 4},
		{name: "the master reaps it",
			procs: []fakeProc{
				{pid: app, ppid: 1, utime: 250, stime: 150, cutime: 210, rss: 100, ioRead: 1250, vol: 10},
			},
			wantCPU: 6.1, wantIO: 1250, wantVol: 19, wantProcs: 1, wantRSS: 100, wantCPUAlone: 4},
		{name: "a new worker",
			procs: []fakeProc{
				{pid: app, ppid: 1, utime: 250, stime: 150, cutime: 210, rss: 100, ioRead: 1250, vol: 10},
				{pid: 5003, ppid: app, utime: 30, rss: 50, ioRead: 100, vol: 1},
			},
			wantCPU: 6.4, wantIO: 1350, wantVol: 20, wantProcs: 2, wantRSS: 150, wantCPUAlone: 4},
		{name: "it goes without the master reaping it (SIGCHLD ignored)",
			procs: []fakeProc{
				{pid: app, ppid: 1, utime: 250, stime: 150, cutime: 210, rss: 100, ioRead: 1250, vol: 10},
			},
			wantCPU: 6.4, wantIO: 1350, wantVol: 20, wantProcs: 1, wantRSS: 100, wantCPUAlone: 4},
		{name: "the master works on",
			procs: []fakeProc{
				{pid: app, ppid: 1, utime: 300, stime: 150, cutime: 210, rss: 100, ioRead: 1300, vol: 12},
			},
			// The kernel does not tell the master's own I/O from a
			// reaped child's: in the scrape after the worker went,
			// 50 of the master's own are taken for the worker's.
			wantCPU: 6.9, wantIO: 1350, wantVol: 22, wantProcs: 1, wantRSS: 100, wantCPUAlone: 4.5},
		{name: "and on",
			procs: []fakeProc{
				{pid: app, ppid: 1, utime: 300, stime: 150, cutime: 210, rss: 100, ioRead: 1400, vol: 12},
			},
			wantCPU: 6.9, wantIO: 1450, wantVol: 22, wantProcs: 1, wantRSS: 100, wantCPUAlone: 4.5},
	}
	page := float64(os.Getpagesize())
	for _, walk := range []struct {
		name         string
		withChildren bool
		want         int
	}{
		{"stat of every process", false, walkScan},
		{"children files", true, walkChildren},
	} {
		for _, alone := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/alone=%v", walk.name, alone), func(t *testing.T) {
				root := fixture(t)
				c, _ := newCollector(t, AppOptions{ProcRoot: root, PIDFile: pidFile(t, app), Addr: "127.0.0.1:1", Alone: alone})
				for _, st := range steps {
					writeTree(t, root, walk.withChildren, st.procs)
					got := scrape(t, c)
					want := map[string]float64{
						"outrider_app_cpu_seconds_total":                        st.wantCPU,
						"outrider_app_io_read_bytes_total":                      st.wantIO,
						`outrider_app_context_switches_total{type="voluntary"}`: st.wantVol,
						"outrider_app_processes":                                st.wantProcs,
						"outrider_app_resident_memory_bytes":                    st.wantRSS * page,
						"outrider_app_open_fds":                                 st.wantProcs,
						"outrider_app_max_fds":                                  1024,
					}
					if alone {
						root := st.procs[0]
						want = map[string]float64{
							"outrider_app_cpu_seconds_total":                        st.wantCPUAlone,
							"outrider_app_io_read_bytes_total":                      float64(root.ioRead),
							`outrider_app_context_switches_total{type="voluntary"}`: float64(root.vol),
							"outrider_app_processes":                                1,
							"outrider_app_resident_memory_bytes":                    float64(root.rss) * page,
							"outrider_app_open_fds":                                 1,
						}
					}
					for k, w := range want {
						if g, ok := got[k]; !ok || fmt.Sprintf("%.6g", g) != fmt.Sprintf("%.6g", w) {
							t.Errorf("%s: %s: want %v, got %v (present %v)", st.name, k, w, g, ok)
						}
					}
					for _, f := range appFiles {
						if k := fmt.Sprintf(`outrider_app_scrape_errors_total{file=%q}`, f); got[k] != 0 {
							t.Errorf("%s: %s %v, want 0", st.name, k, got[k])
						}
					}
				}
				if !alone && c.walk != walk.want {
					t.Errorf("descendants found by walk %d, want %d", c.walk, walk.want)
				}
			})
		}
	}
}

// TestFixtureTreeMoved: a process that moves under another of the app's
// processes while a scrape walks the tree (its parent exits and the app,
// a subreaper, takes it) is counted once: the scrape that finds it listed
// under its old parent, or not listed at all, still counts it as it is.
func TestFixtureTreeMoved(t *testing.T) {
	const app, mid, worker = 4242, 5001, 5002
	before := []fakeProc{
		{pid: app, ppid: 1, utime: 100},
		{pid: mid, ppid: app, utime: 10},
		{pid: worker, ppid: mid, utime: 500},
	}
	// The app has reaped mid, and is the worker's parent.
	after := []fakeProc{
		{pid: app, ppid: 1, utime: 100, cutime: 10},
		{pid: worker, ppid: app, utime: 500},
	}
	for _, tc := range []struct {
		name  string
		procs []fakeProc
		// children overrides the children files the walk reads: those
		// read before the move.
		children map[int][]int
	}{
		{"listed under its old parent, still running",
			[]fakeProc{
				{pid: app, ppid: 1, utime: 100},
				{pid: mid, ppid: app, utime: 10},
				{pid: worker, ppid: app, utime: 500},
			},
			map[int][]int{app: {mid}, mid: {worker}}},
		{"not listed: its old parent ended mid-walk",
			after,
			map[int][]int{app: {mid}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := fixture(t)
			c, _ := newCollector(t, AppOptions{ProcRoot: root, PIDFile: pidFile(t, app), Addr: "127.0.0.1:1"})
			for i, step := range []struct {
				procs    []fakeProc
				children map[int][]int
			}{{before, nil}, {tc.procs, tc.children}, {after, nil}, {after, nil}, {after, nil}} {
				writeTree(t, root, true, step.procs)
				for pid, kids := range step.children {
					writeChildren(t, root, pid, kids)
				}
				got := scrape(t, c)
				if cpu := got["outrider_app_cpu_seconds_total"]; fmt.Sprintf("%.6g", cpu) != "6.1" {
					t.Errorf("scrape %d: cpu %v s, want 6.1: the app's 1, mid's 0.1 and the worker's 5, once", i+1, cpu)
				}
			}
		})
	}
}

// writeChildren sets the children file of pid's main thread to kids.
func writeChildren(t *testing.T, root string, pid int, kids []int) {
	t.Helper()
	var b strings.Builder
	for _, k := range kids {
		fmt.Fprintf(&b, "%d ", k)
	}
	p := filepath.Join(root, strconv.Itoa(pid), "task", strconv.Itoa(pid), "children")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestFixtureTreeUnreadableWorkerFile: a worker's file that cannot be
// read is an error, logged once, and the figure is still exported; only
// the app process's own file leaves it out.
func TestFixtureTreeUnreadableWorkerFile(t *testing.T) {
	root := fixture(t)
	writeTree(t, root, false, []fakeProc{
		{pid: 4242, ppid: 1, utime: 100, ioRead: 1000},
		{pid: 5001, ppid: 4242, utime: 100, ioRead: 200},
	})
	makeUnreadable(t, filepath.Join(root, "5001/io"))
	c, logs := newCollector(t, AppOptions{ProcRoot: root, PIDFile: pidFile(t, 4242), Addr: "127.0.0.1:1"})
	for i := 1; i <= 3; i++ {
		got := scrape(t, c)
		if got["outrider_app_io_read_bytes_total"] != 1000 || got["outrider_app_cpu_seconds_total"] != 2 || got["outrider_app_processes"] != 2 {
			t.Errorf("scrape %d: want io 1000 (the master's), cpu 2 and 2 processes, got %v", i, got)
		}
		if k := `outrider_app_scrape_errors_total{file="io"}`; got[k] != float64(i) {
			t.Errorf("scrape %d: %s %v, want %d", i, k, got[k], i)
		}
	}
	if n := logs.Count("cannot read app process file"); n != 1 {
		t.Errorf("want the failing file logged once, got %d:\n%s", n, logs.String())
	}
	if n := logs.Count("readable again"); n != 0 {
		t.Errorf("want no repair logged while the master's io reads, got %d:\n%s", n, logs.String())
	}
}

// burnerEnv makes the test binary a worker that touches the given MiB of
// memory, burns the given seconds of CPU, and then sleeps until killed.
const burnerEnv = "OUTRIDER_EXPORTER_TEST_BURN"

// burn is the worker of burnerEnv.
func burn(spec string) {
	mib, secs, _ := strings.Cut(spec, ":")
	n, _ := strconv.Atoi(mib)
	d, _ := time.ParseDuration(secs)
	mem := make([]byte, n<<20)
	for i := 0; i < len(mem); i += 4096 {
		mem[i] = 1
	}
	var start syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &start)
	for x := uint64(1); ; x = x*6364136223846793005 + 1 {
		var now syscall.Rusage
		if x%(1<<16) == 0 {
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &now)
			if time.Duration(now.Utime.Nano()+now.Stime.Nano()-start.Utime.Nano()-start.Stime.Nano()) >= d {
				break
			}
		}
	}
	fmt.Println("burnt")
	for {
		time.Sleep(time.Hour)
		mem[0]++
	}
}

// childrenOf lists the pids whose parent is pid, from every /proc/<pid>/stat.
func childrenOf(t *testing.T, pid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var kids []int
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		if ppid, ok := parsePPID(b); ok && ppid == pid {
			k, _ := strconv.Atoi(e.Name())
			kids = append(kids, k)
		}
	}
	return kids
}

// TestWorkersCounted runs a pre-forking app as a shell that starts two
// workers, each holding 64 MiB and burning 0.3 s of CPU: its figures
// count theirs, the CPU counter does not drop when a worker is killed
// and reaped, and counted alone, the shell is all there is.
func TestWorkersCounted(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	const workers, mib, burnt = 2, 64, 0.3
	cmd := exec.Command("sh", "-c", `"$0" -test.run='^$' & "$0" -test.run='^$' & wait`, os.Args[0])
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d:%gs", burnerEnv, mib, burnt))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	app := cmd.Process.Pid
	t.Cleanup(func() {
		_ = syscall.Kill(-app, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	lines := bufio.NewScanner(out)
	for range workers {
		if !lines.Scan() {
			t.Fatal("a worker did not start")
		}
	}

	c, _ := newCollector(t, AppOptions{Child: func() int { return app }, Addr: "127.0.0.1:1"})
	alone, _ := newCollector(t, AppOptions{Child: func() int { return app }, Addr: "127.0.0.1:1", Alone: true})
	got := scrape(t, c)
	if got["outrider_app_processes"] != 1+workers {
		t.Fatalf("want %d processes, got %v", 1+workers, got)
	}
	if cpu := got["outrider_app_cpu_seconds_total"]; cpu < workers*burnt {
		t.Errorf("cpu %v s, want at least the workers' %v s", cpu, workers*burnt)
	}
	if rss := got["outrider_app_resident_memory_bytes"]; rss < workers*mib<<20 {
		t.Errorf("resident %v bytes, want at least the workers' %d MiB", rss, workers*mib)
	}
	a := scrape(t, alone)
	if a["outrider_app_processes"] != 1 || a["outrider_app_cpu_seconds_total"] > burnt/2 || a["outrider_app_resident_memory_bytes"] > mib<<20 {
		t.Errorf("counted alone: want 1 process, the shell's little CPU and memory, got %v", a)
	}
	if infoPID(got) != app || infoPID(a) != app {
		t.Errorf("want pid %d in outrider_app_info", app)
	}

	// Kill a worker: the shell reaps it, and the counter holds.
	kids := childrenOf(t, app)
	if len(kids) != workers {
		t.Fatalf("want %d workers, got %v", workers, kids)
	}
	before := got["outrider_app_cpu_seconds_total"]
	rssBefore := got["outrider_app_resident_memory_bytes"]
	if err := syscall.Kill(kids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got = scrape(t, c)
		if cpu := got["outrider_app_cpu_seconds_total"]; cpu < before {
			t.Fatalf("cpu went from %v to %v when a worker exited", before, cpu)
		}
		before = got["outrider_app_cpu_seconds_total"]
		if got["outrider_app_processes"] == workers && len(childrenOf(t, app)) == workers-1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the killed worker is still counted after 10 s: %v", got)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A worker's resident memory is its 64 MiB and the test binary's own,
	// which the race detector multiplies: it is the drop that tells.
	if rss := got["outrider_app_resident_memory_bytes"]; rss > rssBefore-mib<<20 {
		t.Errorf("resident %v bytes after a worker went, %v before: want %d MiB less at least", rss, rssBefore, mib)
	}
}

// sleepers starts n sleeping processes that are not this process's
// descendants (their shell exits at once), and kills them at the end.
func sleepers(b *testing.B, n int) {
	b.Helper()
	out, err := exec.Command("sh", "-c", fmt.Sprintf(`i=0; while [ $i -lt %d ]; do sleep 600 </dev/null >/dev/null 2>&1 & echo $!; i=$((i+1)); done`, n)).Output()
	if err != nil {
		b.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		pid, _ := strconv.Atoi(f)
		pids = append(pids, pid)
	}
	b.Cleanup(func() {
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

// BenchmarkScrapeTree measures a scrape of the app process alone, and
// with its descendants found from the children files or from the stat of
// every process, on this host as it is and with 2,000 more processes,
// none of them the app's.
func BenchmarkScrapeTree(b *testing.B) {
	for _, extra := range []int{0, 2000} {
		if extra > 0 {
			sleepers(b, extra)
		}
		for _, mode := range []struct {
			name  string
			alone bool
			walk  int
		}{
			{"alone", true, walkUnknown},
			{"children-files", false, walkChildren},
			{"stat-scan", false, walkScan},
		} {
			b.Run(fmt.Sprintf("extra=%d/%s", extra, mode.name), func(b *testing.B) {
				c, _ := newCollector(b, AppOptions{Child: os.Getpid, Addr: "127.0.0.1:1", Alone: mode.alone})
				c.now = time.Now
				c.walk = mode.walk
				benchCollect(b, c)
				if c.walk != mode.walk {
					b.Fatalf("descendants found by walk %d, want %d", c.walk, mode.walk)
				}
			})
		}
	}
}
