package exporter

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/procfs"
)

// userHZ is the kernel's USER_HZ, the unit of the times in /proc/<pid>/stat.
// It is 100 on every platform Go supports; procfs assumes the same.
const userHZ = 100

// The files the collector reads, named as in the file label of
// outrider_app_scrape_errors_total: stat, limits, io and fd under
// /proc/<pid>, status under each /proc/<pid>/task/<tid>, uptime is
// /proc/uptime.
const (
	fileStat   = "stat"
	fileStatus = "status"
	fileLimits = "limits"
	fileIO     = "io"
	fileFD     = "fd"
	fileUptime = "uptime"
)

// appFiles lists every file label value, so each counter exists from the
// first scrape.
var appFiles = []string{fileStat, fileStatus, fileLimits, fileIO, fileFD, fileUptime}

// Ways the app process was found, as /status reports them.
const (
	howPIDFile = "pid_file"
	howProcess = "process"
	howChild   = "child"
	howSocket  = "socket"
)

var (
	appUpDesc = prometheus.NewDesc("outrider_app_up",
		"Whether the app process was found and its stat file read (1) or not (0).", nil, nil)
	appInfoDesc = prometheus.NewDesc("outrider_app_info",
		"A metric with a constant '1' value labelled by the pid and command name of the app process.", []string{"pid", "comm"}, nil)
	appCPUDesc = prometheus.NewDesc("outrider_app_cpu_seconds_total",
		"User and system CPU time spent by the app process, in seconds.", nil, nil)
	appResidentDesc = prometheus.NewDesc("outrider_app_resident_memory_bytes",
		"Resident memory size of the app process, in bytes.", nil, nil)
	appVirtualDesc = prometheus.NewDesc("outrider_app_virtual_memory_bytes",
		"Virtual memory size of the app process, in bytes.", nil, nil)
	appThreadsDesc = prometheus.NewDesc("outrider_app_threads",
		"Number of threads of the app process.", nil, nil)
	appStartDesc = prometheus.NewDesc("outrider_app_start_time_seconds",
		"Start time of the app process since the Unix epoch, in seconds.", nil, nil)
	appOpenFDsDesc = prometheus.NewDesc("outrider_app_open_fds",
		"Number of open file descriptors of the app process.", nil, nil)
	appMaxFDsDesc = prometheus.NewDesc("outrider_app_max_fds",
		"Soft limit on the number of open file descriptors of the app process.", nil, nil)
	appIOReadDesc = prometheus.NewDesc("outrider_app_io_read_bytes_total",
		"Bytes the app process caused to be fetched from the storage layer.", nil, nil)
	appIOWriteDesc = prometheus.NewDesc("outrider_app_io_write_bytes_total",
		"Bytes the app process caused to be sent to the storage layer.", nil, nil)
	appCtxSwitchesDesc = prometheus.NewDesc("outrider_app_context_switches_total",
		"Context switches of the app process, by type: voluntary or nonvoluntary.", []string{"type"}, nil)
	appScrapeErrorsDesc = prometheus.NewDesc("outrider_app_scrape_errors_total",
		"Failed reads of an app process file, by file; the figures from that file are left out of that scrape.", []string{"file"}, nil)
)

// AppOptions says where /proc is and how to find the app process.
//
// The finders are tried in this order, and the first that finds a running
// process wins: PIDFile, Process, Child. The owner of Addr's listening
// socket is looked for only when none of them is set.
type AppOptions struct {
	// ProcRoot is where procfs is mounted; empty means /proc.
	ProcRoot string
	// PIDFile is a file holding the app's pid.
	PIDFile string
	// Process matches the app's command line, its arguments joined by
	// spaces. Of several matches the oldest process wins.
	Process *regexp.Regexp
	// Child returns the pid of the wrap-mode child, or 0 when none runs.
	Child func() int
	// Addr is where the app listens, host:port.
	Addr string
	// Log receives one line each time the app process is found or lost,
	// or a file starts or stops failing.
	Log *slog.Logger
}

// AppCollector is a prometheus.Collector of the app process's figures,
// read from procfs at scrape time.
type AppCollector struct {
	fs      procfs.FS
	root    string
	finders []finder
	self    int
	log     *slog.Logger
	now     func() time.Time

	mu      sync.Mutex
	target  *target // nil while no app process is known
	why     string  // why no app process is known
	errs    map[string]uint64
	failing map[string]bool
	// buf is reused to read the status file of each thread.
	buf bytes.Buffer
}

// target is the app process being watched. startTicks tells it apart from
// a later process that reuses its pid.
type target struct {
	proc       procfs.Proc
	pid        string
	comm       string
	how        string
	detail     string
	startTicks uint64
	start      float64 // Unix seconds; 0 until /proc/uptime is read
	// switches holds the voluntary and nonvoluntary context switches of
	// each thread by tid, as last read; ended those of the threads since
	// gone, so that the sum never drops while the process runs.
	switches map[string][2]float64
	ended    [2]float64
}

// finder looks for the app process once.
type finder struct {
	how  string
	find func() (pid int, detail string, err error)
}

// NewAppCollector returns a collector of the app process described by o.
func NewAppCollector(o AppOptions) (*AppCollector, error) {
	root := o.ProcRoot
	if root == "" {
		root = procfs.DefaultMountPoint
	}
	pfs, err := procfs.NewFS(root)
	if err != nil {
		return nil, fmt.Errorf("open proc root %s: %w", root, err)
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &AppCollector{
		fs:      pfs,
		root:    root,
		self:    os.Getpid(),
		log:     log,
		now:     time.Now,
		errs:    make(map[string]uint64, len(appFiles)),
		failing: map[string]bool{},
	}
	if o.PIDFile != "" {
		c.finders = append(c.finders, c.fromPIDFile(o.PIDFile))
	}
	if o.Process != nil {
		c.finders = append(c.finders, c.fromCmdline(o.Process))
	}
	if o.Child != nil {
		c.finders = append(c.finders, fromChild(o.Child))
	}
	if len(c.finders) == 0 {
		port, err := appPort(o.Addr)
		if err != nil {
			return nil, err
		}
		c.finders = append(c.finders, c.fromSocket(port))
	}
	return c, nil
}

// Describe sends every descriptor the collector can emit.
func (c *AppCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		appUpDesc, appInfoDesc, appCPUDesc, appResidentDesc, appVirtualDesc,
		appThreadsDesc, appStartDesc, appOpenFDsDesc, appMaxFDsDesc,
		appIOReadDesc, appIOWriteDesc, appCtxSwitchesDesc, appScrapeErrorsDesc,
	} {
		ch <- d
	}
}

// Collect reads the app process and sends its figures; a file that cannot
// be read is left out and counted, never failing the scrape.
func (c *AppCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.read()
	emitSample(ch, s, ok)
	for _, f := range appFiles {
		ch <- constMetric(appScrapeErrorsDesc, prometheus.CounterValue, float64(c.errs[f]), f)
	}
}

// AppStatus is the app-process section of /status.
type AppStatus struct {
	Found  bool   `json:"found"`
	PID    int    `json:"pid,omitempty"`
	Comm   string `json:"comm,omitempty"`
	How    string `json:"how,omitempty"`
	Detail string `json:"detail,omitempty"`
	// Error says why no app process is known, or why its stat is unreadable.
	Error string `json:"error,omitempty"`
	// ScrapeErrors counts failed reads by file, as the metric does.
	ScrapeErrors map[string]uint64 `json:"scrape_errors"`
}

// Status finds the app process as a scrape would, without counting errors.
func (c *AppCollector) Status() AppStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := AppStatus{ScrapeErrors: make(map[string]uint64, len(appFiles))}
	for _, f := range appFiles {
		st.ScrapeErrors[f] = c.errs[f]
	}
	t, _, err := c.current()
	if t == nil {
		st.Error = c.why
		return st
	}
	st.Found, st.PID, st.Comm, st.How, st.Detail = true, t.proc.PID, t.comm, t.how, t.detail
	if err != nil {
		st.Error = err.Error()
	}
	return st
}

// current returns the app process and its stat. The known process is kept
// while it runs, and looked for again once it is gone or its pid belongs
// to a newer process. A non-nil error means a stat could not be read: the
// known process's, or that of a process found but not usable.
func (c *AppCollector) current() (*target, procfs.ProcStat, error) {
	if t := c.target; t != nil {
		st, err := t.proc.Stat()
		switch {
		case err == nil && st.Starttime == t.startTicks && !exited(st):
			return t, st, nil
		case err != nil && !gone(err):
			return t, procfs.ProcStat{}, fmt.Errorf("read %s: %w", fileStat, err)
		case err == nil && st.Starttime != t.startTicks:
			c.lose(t, "its pid now belongs to a newer process")
		default:
			c.lose(t, "it exited")
		}
	}
	t, st, unreadable, err := c.resolve()
	if err != nil {
		if err.Error() != c.why {
			c.log.Warn("app process not found; outrider_app_up is 0", "why", err.Error())
		}
		c.why = err.Error()
		return nil, procfs.ProcStat{}, unreadable
	}
	c.target, c.why = t, ""
	c.log.Info("app process found", "pid", t.proc.PID, "comm", t.comm, "how", t.how, "detail", t.detail)
	return t, st, nil
}

func (c *AppCollector) lose(t *target, why string) {
	c.log.Info("app process lost; looking for it again", "pid", t.proc.PID, "comm", t.comm, "why", why)
	c.target = nil
}

// resolve runs the finders in order and returns the first running
// process. When there is none, unreadable is the error of a process found
// but whose stat could not be read (e.g. under hidepid=1), if any.
func (c *AppCollector) resolve() (t *target, st procfs.ProcStat, unreadable, err error) {
	whys := make([]string, 0, len(c.finders))
	for _, f := range c.finders {
		pid, detail, err := f.find()
		if err != nil {
			whys = append(whys, err.Error())
			continue
		}
		proc, err := c.fs.Proc(pid)
		if err == nil {
			st, err = proc.Stat()
		}
		if err != nil {
			if !gone(err) {
				unreadable = err
			}
			whys = append(whys, fmt.Sprintf("pid %d (%s %s) cannot be read: %v", pid, f.how, detail, err))
			continue
		}
		if exited(st) {
			whys = append(whys, fmt.Sprintf("pid %d (%s %s) has exited", pid, f.how, detail))
			continue
		}
		return &target{
			proc:       proc,
			pid:        strconv.Itoa(pid),
			comm:       st.Comm,
			how:        f.how,
			detail:     detail,
			startTicks: st.Starttime,
		}, st, nil, nil
	}
	return nil, procfs.ProcStat{}, unreadable, errors.New(strings.Join(whys, "; "))
}

// optional is a figure that may be missing from a scrape.
type optional struct {
	v  float64
	ok bool
}

// sample is one reading of the app process.
type sample struct {
	pid, comm                   string
	cpu, resident, virtual, thr float64
	start                       optional
	voluntary, nonvoluntary     optional
	maxFDs, openFDs             optional
	ioRead, ioWrite             optional
}

// read takes a sample of the app process; ok is false when there is none
// or its stat is unreadable.
func (c *AppCollector) read() (sample, bool) {
	t, st, err := c.current()
	if t == nil {
		if err != nil {
			c.errs[fileStat]++
		}
		return sample{}, false
	}
	if !c.check(fileStat, t, err) {
		return sample{}, false
	}
	s := sampleStat(t, st)
	if t.start == 0 {
		c.startTime(t)
	}
	if t.start != 0 {
		s.start = optional{t.start, true}
	}
	// status and limits are parsed here for the two figures needed:
	// procfs parses every line, which costs most of a scrape.
	if vol, nonvol, err := c.ctxSwitches(t); c.check(fileStatus, t, err) {
		s.voluntary, s.nonvoluntary = optional{vol, true}, optional{nonvol, true}
	}
	text, err := c.readPID(t, fileLimits)
	var maxFDs float64
	if err == nil {
		maxFDs, err = parseMaxFDs(text)
	}
	if c.check(fileLimits, t, err) {
		s.maxFDs = optional{maxFDs, true}
	}
	if pio, err := t.proc.IO(); c.check(fileIO, t, err) {
		s.ioRead = optional{float64(pio.ReadBytes), true}
		s.ioWrite = optional{float64(pio.WriteBytes), true}
	}
	if n, err := t.proc.FileDescriptorsLen(); c.check(fileFD, t, err) {
		s.openFDs = optional{float64(n), true}
	}
	return s, true
}

// ctxSwitches returns the context switches of every thread of t, from
// /proc/<pid>/task/<tid>/status: /proc/<pid>/status has its main
// thread's alone. A thread that has ended keeps the counts it had at the
// last read, and a tid whose counts went down now belongs to a newer
// thread, so the sums never drop while the process runs; the switches a
// thread made after the last read before it ended are not counted.
func (c *AppCollector) ctxSwitches(t *target) (vol, nonvol float64, err error) {
	dir := filepath.Join(c.root, t.pid, "task")
	tids, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, err
	}
	now := make(map[string][2]float64, len(tids))
	for _, tid := range tids {
		err := c.readInto(filepath.Join(dir, tid.Name(), fileStatus))
		if gone(err) {
			continue // the thread ended since the directory was read
		}
		if err != nil {
			return 0, 0, err
		}
		v, n, err := parseCtxSwitches(c.buf.String())
		if err != nil {
			return 0, 0, fmt.Errorf("thread %s: %w", tid.Name(), err)
		}
		now[tid.Name()] = [2]float64{v, n}
	}
	for tid, last := range t.switches {
		if cur, ok := now[tid]; !ok || cur[0] < last[0] || cur[1] < last[1] {
			t.ended[0] += last[0]
			t.ended[1] += last[1]
		}
	}
	t.switches = now
	vol, nonvol = t.ended[0], t.ended[1]
	for _, cur := range now {
		vol += cur[0]
		nonvol += cur[1]
	}
	return vol, nonvol, nil
}

// readInto reads the file at path into c.buf.
func (c *AppCollector) readInto(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	c.buf.Reset()
	_, err = c.buf.ReadFrom(f)
	return err
}

// readPID reads the file name of the target's /proc/<pid>.
func (c *AppCollector) readPID(t *target, name string) (string, error) {
	data, err := os.ReadFile(filepath.Join(c.root, t.pid, name))
	return string(data), err
}

// sampleStat turns /proc/<pid>/stat into figures.
func sampleStat(t *target, st procfs.ProcStat) sample {
	return sample{
		pid:      t.pid,
		comm:     labelValue(st.Comm),
		cpu:      float64(st.UTime+st.STime) / userHZ,
		resident: float64(st.ResidentMemory()),
		virtual:  float64(st.VirtualMemory()),
		thr:      float64(st.NumThreads),
	}
}

// startTime sets t.start from its start ticks and the boot time. It is
// worked out once per process, so the figure never jitters.
func (c *AppCollector) startTime(t *target) {
	data, err := os.ReadFile(filepath.Join(c.root, fileUptime))
	var up float64
	if err == nil {
		up, err = parseUptime(string(data))
	}
	if !c.check(fileUptime, t, err) {
		return
	}
	boot := float64(c.now().UnixNano())/1e9 - up
	t.start = boot + float64(t.startTicks)/userHZ
}

// check counts err against file and logs when the file starts or stops
// failing; it reports whether the read succeeded. A process that exits
// mid-scrape is counted but not logged: the next scrape looks for it again.
func (c *AppCollector) check(file string, t *target, err error) bool {
	if err == nil {
		if c.failing[file] {
			c.failing[file] = false
			c.log.Info("app process file readable again", "file", file, "pid", t.proc.PID)
		}
		return true
	}
	c.errs[file]++
	if !gone(err) && !c.failing[file] {
		c.failing[file] = true
		c.log.Warn("cannot read app process file; its figures are left out until it can be read",
			"file", file, "pid", t.proc.PID, "err", err)
	}
	return false
}

// emitSample sends the figures of s; up is 0 when ok is false.
func emitSample(ch chan<- prometheus.Metric, s sample, ok bool) {
	if !ok {
		ch <- constMetric(appUpDesc, prometheus.GaugeValue, 0)
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- constMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- constMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(appUpDesc, 1)
	gauge(appInfoDesc, 1, s.pid, s.comm)
	counter(appCPUDesc, s.cpu)
	gauge(appResidentDesc, s.resident)
	gauge(appVirtualDesc, s.virtual)
	gauge(appThreadsDesc, s.thr)
	if s.start.ok {
		gauge(appStartDesc, s.start.v)
	}
	if s.voluntary.ok {
		counter(appCtxSwitchesDesc, s.voluntary.v, "voluntary")
		counter(appCtxSwitchesDesc, s.nonvoluntary.v, "nonvoluntary")
	}
	if s.maxFDs.ok {
		gauge(appMaxFDsDesc, s.maxFDs.v)
	}
	if s.openFDs.ok {
		gauge(appOpenFDsDesc, s.openFDs.v)
	}
	if s.ioRead.ok {
		counter(appIOReadDesc, s.ioRead.v)
		counter(appIOWriteDesc, s.ioWrite.v)
	}
}

// constMetric is prometheus.NewConstMetric whose error becomes an invalid
// metric: the registry reports it, and the collector's other metrics are
// still sent, where MustNewConstMetric's panic would end Collect.
func constMetric(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) prometheus.Metric {
	m, err := prometheus.NewConstMetric(d, t, v, labels...)
	if err != nil {
		return prometheus.NewInvalidMetric(d, err)
	}
	return m
}

// labelValue makes a string read from /proc a valid label value. The
// kernel cuts comm at 15 bytes, which can split a multi-byte character,
// and Prometheus refuses a label value that is not valid UTF-8.
func labelValue(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// exited reports whether the process has exited and waits to be reaped
// (a zombie): it has no memory or descriptors left to report.
func exited(st procfs.ProcStat) bool { return st.State == "Z" || st.State == "X" }

// gone reports whether err means the process no longer exists.
func gone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH)
}

// appPort returns the port of the app address host:port.
func appPort(addr string) (int, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, fmt.Errorf("app address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return 0, fmt.Errorf("app address %q: port %q is not 0-65535", addr, p)
	}
	return port, nil
}

// parseUptime returns the first figure of /proc/uptime, the seconds since
// boot.
func parseUptime(s string) (float64, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return 0, fmt.Errorf("parse uptime %q: empty", s)
	}
	up, err := strconv.ParseFloat(f[0], 64)
	if err != nil || up < 0 {
		return 0, fmt.Errorf("parse uptime %q: want seconds since boot", s)
	}
	return up, nil
}

// parseCtxSwitches returns the voluntary and nonvoluntary context switches
// from the text of /proc/<pid>/status.
func parseCtxSwitches(s string) (vol, nonvol float64, err error) {
	var seen int
	for line := range strings.Lines(s) {
		name, value, ok := strings.Cut(line, ":")
		var dst *float64
		switch {
		case !ok:
			continue
		case name == "voluntary_ctxt_switches":
			dst = &vol
		case name == "nonvoluntary_ctxt_switches":
			dst = &nonvol
		default:
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(value), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("parse status: %s %q is not a number", name, strings.TrimSpace(value))
		}
		*dst = float64(n)
		seen++
	}
	if seen != 2 {
		return 0, 0, errors.New("parse status: no voluntary_ctxt_switches and nonvoluntary_ctxt_switches lines")
	}
	return vol, nonvol, nil
}

// unlimited is the figure of an "unlimited" limit, as procfs reports it.
const unlimited = float64(math.MaxUint64)

// parseMaxFDs returns the soft limit of "Max open files" from the text of
// /proc/<pid>/limits.
func parseMaxFDs(s string) (float64, error) {
	for line := range strings.Lines(s) {
		rest, ok := strings.CutPrefix(line, "Max open files")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			break
		}
		if f[0] == "unlimited" {
			return unlimited, nil
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse limits: max open files %q is not a number", f[0])
		}
		return float64(n), nil
	}
	return 0, errors.New("parse limits: no \"Max open files\" line")
}
