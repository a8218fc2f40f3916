package exporter

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
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
		"User and system CPU time spent by the app's processes, in seconds.", nil, nil)
	appResidentDesc = prometheus.NewDesc("outrider_app_resident_memory_bytes",
		"Resident memory size of the app's processes, summed, in bytes.", nil, nil)
	appVirtualDesc = prometheus.NewDesc("outrider_app_virtual_memory_bytes",
		"Virtual memory size of the app's processes, summed, in bytes.", nil, nil)
	appThreadsDesc = prometheus.NewDesc("outrider_app_threads",
		"Number of threads of the app's processes.", nil, nil)
	appProcessesDesc = prometheus.NewDesc("outrider_app_processes",
		"Number of processes counted in the outrider_app_* figures: the app process and its live descendants.", nil, nil)
	appStartDesc = prometheus.NewDesc("outrider_app_start_time_seconds",
		"Start time of the app process since the Unix epoch, in seconds.", nil, nil)
	appOpenFDsDesc = prometheus.NewDesc("outrider_app_open_fds",
		"Number of open file descriptors of the app's processes.", nil, nil)
	appMaxFDsDesc = prometheus.NewDesc("outrider_app_max_fds",
		"Soft limit on the number of open file descriptors of the app process.", nil, nil)
	appIOReadDesc = prometheus.NewDesc("outrider_app_io_read_bytes_total",
		"Bytes the app's processes caused to be fetched from the storage layer.", nil, nil)
	appIOWriteDesc = prometheus.NewDesc("outrider_app_io_write_bytes_total",
		"Bytes the app's processes caused to be sent to the storage layer.", nil, nil)
	appCtxSwitchesDesc = prometheus.NewDesc("outrider_app_context_switches_total",
		"Context switches of the app's processes, by type: voluntary or nonvoluntary.", []string{"type"}, nil)
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
	// ProbeGroups returns the process groups of outrider's exec probes
	// running now; a process in one is never taken for the app by
	// Process. Nil means none. Unused when ProcRoot is the procfs of
	// another PID namespace, where their numbers differ.
	ProbeGroups func() map[int]bool
	// Addr is where the app listens, host:port.
	Addr string
	// Alone counts the process found alone; otherwise its live
	// descendants (a pre-forking server's workers) are counted too.
	Alone bool
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
	probes  func() map[int]bool
	alone   bool
	walk    int // how descendants are found: walkUnknown, walkChildren or walkScan
	log     *slog.Logger
	now     func() time.Time
	// lookTimeout bounds a scrape's wait for a look for the app process.
	lookTimeout time.Duration

	mu      sync.Mutex
	target  *target // nil while no app process is known
	why     string  // why no app process is known
	errs    map[string]uint64
	failing map[string]bool
	// read and failed say which files were read this scrape, and the
	// first error other than an exit for each; failing changes once per
	// scrape, however many processes are read.
	read   map[string]bool
	failed map[string]failure
	// buf is reused to read the status file of each thread.
	buf bytes.Buffer
	// looking delivers the look for the app process that outlived its
	// scrape's wait; nil when none is under way.
	looking chan look
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
	// members holds the processes counted at the last scrape by pid, the
	// app process included.
	members map[int]*member
	// base holds the counts of processes that ended and are not known to
	// have been reaped by another of the app's processes.
	base counts
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
		fs:          pfs,
		root:        root,
		self:        selfPID(root),
		log:         log,
		now:         time.Now,
		alone:       o.Alone,
		lookTimeout: lookTimeout,
		errs:        make(map[string]uint64, len(appFiles)),
		failing:     map[string]bool{},
		read:        map[string]bool{},
		failed:      map[string]failure{},
	}
	if c.self == os.Getpid() {
		// Probe groups are named by pids of outrider's PID namespace; a
		// procfs of another numbers its processes otherwise.
		c.probes = o.ProbeGroups
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
		host, port, err := appHostPort(o.Addr)
		if err != nil {
			return nil, err
		}
		c.finders = append(c.finders, c.fromSocket(host, port))
	}
	return c, nil
}

// selfPID returns outrider's pid as the procfs at root numbers it, so
// that outrider never takes itself for the app. A procfs of another PID
// namespace (that of the host or of a parent namespace, while outrider
// runs in a namespace of its own) numbers it otherwise than getpid does;
// in one where outrider is not to be seen, self is a link that cannot be
// read, and 0 is returned. A root with no self link is no procfs (a
// fixture): getpid's.
func selfPID(root string) int {
	path := filepath.Join(root, "self")
	link, err := os.Readlink(path)
	if err != nil {
		if _, lerr := os.Lstat(path); lerr == nil {
			return 0
		}
		return os.Getpid()
	}
	pid, err := strconv.Atoi(link)
	if err != nil {
		return os.Getpid()
	}
	return pid
}

// Describe sends every descriptor the collector can emit.
func (c *AppCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		appUpDesc, appInfoDesc, appCPUDesc, appResidentDesc, appVirtualDesc,
		appThreadsDesc, appProcessesDesc, appStartDesc, appOpenFDsDesc, appMaxFDsDesc,
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
	s, ok := c.sample()
	c.settle()
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
	l := c.resolve()
	if l.err != nil {
		if l.err.Error() != c.why {
			c.log.Warn("app process not found; outrider_app_up is 0", "why", l.err.Error())
		}
		c.why = l.err.Error()
		return nil, procfs.ProcStat{}, l.unreadable
	}
	t := l.t
	c.target, c.why = t, ""
	c.log.Info("app process found", "pid", t.proc.PID, "comm", t.comm, "how", t.how, "detail", t.detail)
	return t, l.st, nil
}

func (c *AppCollector) lose(t *target, why string) {
	c.log.Info("app process lost; looking for it again", "pid", t.proc.PID, "comm", t.comm, "why", why)
	c.target = nil
}

// lookTimeout is how long a scrape waits for the app process to be
// looked for. A look reads files that can block: the command line of a
// process stuck in the kernel while it holds its memory map (what hangs
// ps), or a pid file on a network file system whose server is gone.
const lookTimeout = 2 * time.Second

// stillLooking is resolve's error while a look outlives the wait.
func (c *AppCollector) stillLooking() error {
	return fmt.Errorf("looking for the app process has taken more than %s: a file it reads does not answer "+
		"(the command line of a process stuck in the kernel, or a pid file on a network file system that is down); "+
		"the app's figures are left out until that read returns, and outrider's other metrics are served meanwhile", c.lookTimeout)
}

// look is the outcome of one look for the app process: the process and
// its stat, or err saying why none was found, with unreadable the error of
// a process found whose stat could not be read, if any.
type look struct {
	t          *target
	st         procfs.ProcStat
	unreadable error
	err        error
}

// resolve looks for the app process, waiting at most lookTimeout, so that
// a file that blocks holds up neither the scrape nor outrider's other
// metrics. A look that outlives the wait goes on alone, and no other
// starts until it ends; its outcome is then stale, and the next scrape
// starts afresh.
func (c *AppCollector) resolve() look {
	if c.looking != nil {
		select {
		case <-c.looking:
			c.looking = nil
		default:
			return look{err: c.stillLooking()}
		}
	}
	done := make(chan look, 1)
	go func() { done <- c.lookNow() }()
	wait := time.NewTimer(c.lookTimeout)
	defer wait.Stop()
	select {
	case l := <-done:
		return l
	case <-wait.C:
		c.looking = done
		return look{err: c.stillLooking()}
	}
}

// lookNow runs the finders in order and returns the first running
// process. When there is none, unreadable is the error of a process found
// but whose stat could not be read (e.g. under hidepid=1), if any. It
// reads only what does not change after NewAppCollector, so it runs
// without the lock.
func (c *AppCollector) lookNow() look {
	var unreadable error
	whys := make([]string, 0, len(c.finders))
	for _, f := range c.finders {
		pid, detail, err := f.find()
		if err != nil {
			whys = append(whys, err.Error())
			continue
		}
		var st procfs.ProcStat
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
		return look{t: &target{
			proc:       proc,
			pid:        strconv.Itoa(pid),
			comm:       st.Comm,
			how:        f.how,
			detail:     detail,
			startTicks: st.Starttime,
			members:    map[int]*member{},
		}, st: st}
	}
	return look{unreadable: unreadable, err: errors.New(strings.Join(whys, "; "))}
}

// optional is a figure that may be missing from a scrape.
type optional struct {
	v  float64
	ok bool
}

// sample is one reading of the app's processes.
type sample struct {
	pid, comm                   string
	cpu, resident, virtual, thr float64
	procs                       float64
	start                       optional
	voluntary, nonvoluntary     optional
	maxFDs, openFDs             optional
	ioRead, ioWrite             optional
}

// counts are the counters of one process. cpu includes reaped, the CPU
// time of the children it has reaped (0 when the app process is counted
// alone), and the I/O includes theirs, as the kernel adds a reaped
// child's to its parent's /proc/<pid>/io.
type counts struct {
	cpu, reaped     float64
	ioRead, ioWrite float64
	vol, nonvol     float64
}

func (a counts) plus(b counts) counts {
	return counts{a.cpu + b.cpu, a.reaped + b.reaped, a.ioRead + b.ioRead, a.ioWrite + b.ioWrite, a.vol + b.vol, a.nonvol + b.nonvol}
}

// member is one of the app's processes, as last read. startTicks tells
// it apart from a later process that reuses its pid.
type member struct {
	ppid       int
	startTicks uint64
	last       counts
	gauges     gauges
	// switches holds the voluntary and nonvoluntary context switches of
	// each thread by tid, as last read; ended those of the threads since
	// gone, so that the sum never drops while the process runs.
	switches map[string][2]float64
	ended    [2]float64
	// pending holds the CPU and I/O of descendants that ended at this
	// scrape ([0]) and at the one before ([1]), which this process has not
	// been seen to reap: the kernel adds them to its cutime, cstime and io
	// when it does.
	pending [2]counts
}

// gauges are the gauges of one process; a zombie has none.
type gauges struct {
	resident, virtual, threads, fds float64
	fdsOK                           bool
}

// reading is one scrape's figures of one process.
type reading struct {
	m      *member
	counts counts
	gauges gauges
	zombie bool
	// fds is where its open fds are counted: the process, or a running
	// thread of it when its main thread has exited.
	fds procfs.Proc
}

// failure is the first error, other than the process's exit, in reading
// a file in one scrape.
type failure struct {
	pid int
	err error
}

// sample takes a sample of the app's processes; ok is false when there
// is none or the app process's stat is unreadable.
func (c *AppCollector) sample() (sample, bool) {
	clear(c.read)
	clear(c.failed)
	t, st, err := c.current()
	if t == nil {
		if err != nil {
			c.errs[fileStat]++
		}
		return sample{}, false
	}
	if !c.check(fileStat, t.proc.PID, err) {
		return sample{}, false
	}
	s := sample{pid: t.pid, comm: labelValue(st.Comm)}
	if t.start == 0 {
		c.startTime(t)
	}
	if t.start != 0 {
		s.start = optional{t.start, true}
	}
	// limits is parsed here for the one figure needed: procfs parses
	// every line.
	text, err := c.readPID(t, fileLimits)
	var maxFDs float64
	if err == nil {
		maxFDs, err = parseMaxFDs(text)
	}
	if c.check(fileLimits, t.proc.PID, err) {
		s.maxFDs = optional{maxFDs, true}
	}

	root, ok := c.readRoot(t, st)
	live := map[int]*reading{t.proc.PID: root}
	if !c.alone {
		c.readDescendants(t, live)
	}
	t.account(live)

	var total counts
	for _, r := range live {
		total = total.plus(r.counts).plus(r.m.pending[0]).plus(r.m.pending[1])
		if r.zombie {
			continue
		}
		s.procs++
		s.resident += r.gauges.resident
		s.virtual += r.gauges.virtual
		s.thr += r.gauges.threads
		s.openFDs.v += r.gauges.fds
	}
	total = total.plus(t.base)
	s.cpu = total.cpu
	if ok.status {
		s.voluntary, s.nonvoluntary = optional{total.vol, true}, optional{total.nonvol, true}
	}
	if ok.io {
		s.ioRead, s.ioWrite = optional{total.ioRead, true}, optional{total.ioWrite, true}
	}
	s.openFDs.ok = ok.fd
	return s, true
}

// rootOK says which of the app process's files were read: a figure is
// left out when its file could not be read for the app process.
type rootOK struct{ io, status, fd bool }

// readRoot reads the app process, whose stat is st.
func (c *AppCollector) readRoot(t *target, st procfs.ProcStat) (*reading, rootOK) {
	m := t.members[t.proc.PID]
	if m == nil {
		m = &member{startTicks: st.Starttime}
	}
	r := &reading{m: m, counts: m.last}
	c.statFigures(r, t.proc, st)
	ok, _ := c.readFiles(t.proc, r, true)
	return r, ok
}

// readFiles puts the figures of the io, status and fd files of proc, whose
// reading r is, in r; ok says which were read, and a counter not read
// keeps its last value. For a descendant (root false), a file gone because the
// process has exited meanwhile ends the reading (ended) and is no error;
// the app process's is counted, and the next scrape looks for it again. A
// zombie has no fd figure.
func (c *AppCollector) readFiles(proc procfs.Proc, r *reading, root bool) (ok rootOK, ended bool) {
	exitedNow := func(err error) bool { return !root && gone(err) }
	pio, err := proc.IO()
	if exitedNow(err) {
		return ok, true
	}
	if ok.io = c.check(fileIO, proc.PID, err); ok.io {
		r.counts.ioRead, r.counts.ioWrite = float64(pio.ReadBytes), float64(pio.WriteBytes)
	}
	vol, nonvol, err := c.ctxSwitches(r.m, proc.PID)
	if exitedNow(err) {
		return ok, true
	}
	if ok.status = c.check(fileStatus, proc.PID, err); ok.status {
		r.counts.vol, r.counts.nonvol = vol, nonvol
	}
	if r.zombie {
		return ok, false
	}
	n, err := r.fds.FileDescriptorsLen()
	if exitedNow(err) {
		return ok, true
	}
	if ok.fd = c.check(fileFD, proc.PID, err); ok.fd {
		r.gauges.fds = float64(n)
	}
	return ok, false
}

// readDescendants adds the app process's live descendants to live. One
// that exits while it is read is left out, as if it had exited before,
// and its exit is no error. One whose stat cannot be read is left out; one
// whose other files cannot be read counts the error and keeps the counts
// last read, so that the sums never drop.
func (c *AppCollector) readDescendants(t *target, live map[int]*reading) {
	kids, err := c.descendants(t.proc.PID)
	if err != nil {
		if !gone(err) {
			c.check(fileStat, t.proc.PID, fmt.Errorf("find the descendants: %w", err))
		}
		// Keep those of the last scrape as they were: dropping them
		// would count them anew on the next.
		for pid, m := range t.members {
			if _, ok := live[pid]; !ok {
				live[pid] = &reading{m: m, counts: m.last, gauges: m.gauges}
			}
		}
		return
	}
	for _, k := range kids {
		if _, ok := live[k.ppid]; !ok {
			continue // its parent was not read
		}
		if _, ok := live[k.pid]; ok {
			continue // listed twice, as it moved mid-walk
		}
		if r, ok := c.readDescendant(t, k, live); ok {
			live[k.pid] = r
		}
	}
	// A process of the last scrape that the walk did not list may have
	// moved under another of the app's processes while the walk ran: its
	// parent exited and a subreaper among them took it, or the thread
	// that started it ended. Left out, it would count as ended, and again
	// in full once listed. Oldest first: a parent started before its
	// children.
	var missed []int
	for pid := range t.members {
		if _, ok := live[pid]; !ok {
			missed = append(missed, pid)
		}
	}
	slices.SortFunc(missed, func(a, b int) int {
		return cmp.Or(cmp.Compare(t.members[a].startTicks, t.members[b].startTicks), cmp.Compare(a, b))
	})
	for _, pid := range missed {
		if r, ok := c.readDescendant(t, kin{pid: pid}, live); ok {
			live[pid] = r
		}
	}
}

// readDescendant reads one descendant of the app process, listed as a
// child of k.ppid; ok is false when it has gone or cannot be read, or
// when its parent now is none of the processes in live.
func (c *AppCollector) readDescendant(t *target, k kin, live map[int]*reading) (r *reading, ok bool) {
	proc, err := c.fs.Proc(k.pid)
	var st procfs.ProcStat
	if err == nil {
		st, err = proc.Stat()
	}
	if err != nil {
		if !gone(err) {
			c.check(fileStat, k.pid, err)
		}
		return nil, false
	}
	if _, ok := live[st.PPID]; !ok {
		return nil, false // it left the tree, or its pid was reused outside it
	}
	m := t.members[k.pid]
	if m == nil || m.startTicks != st.Starttime {
		m = &member{startTicks: st.Starttime}
	}
	m.ppid = st.PPID
	r = &reading{m: m, counts: m.last}
	c.statFigures(r, proc, st)
	if _, ended := c.readFiles(proc, r, false); ended {
		return nil, false
	}
	return r, true
}

// statFigures puts the figures of proc's stat, st, in r. Of a process
// whose main thread has exited while others run, /proc/<pid>/stat has the
// CPU time of all its threads but no memory, and /proc/<pid>/fd is empty:
// the memory and the fds are a running thread's, which shares them.
func (c *AppCollector) statFigures(r *reading, proc procfs.Proc, st procfs.ProcStat) {
	r.counts.cpu = float64(st.UTime+st.STime) / userHZ
	r.counts.reaped = 0
	if !c.alone {
		r.counts.reaped = float64(st.CUTime+st.CSTime) / userHZ
		r.counts.cpu += r.counts.reaped
	}
	r.zombie = exited(st)
	r.fds = proc
	mem := st
	if !r.zombie && zombieState(st) {
		th, tst, ok := c.runningThread(proc)
		if !ok {
			// Its last threads ended since its stat was read.
			r.zombie = true
			return
		}
		r.fds, mem = th, tst
	}
	if !r.zombie {
		r.gauges = gauges{
			resident: float64(mem.ResidentMemory()),
			virtual:  float64(mem.VirtualMemory()),
			threads:  float64(st.NumThreads),
		}
	}
}

// runningThread returns a thread of proc other than its main one that
// has not exited, and its stat.
func (c *AppCollector) runningThread(proc procfs.Proc) (procfs.Proc, procfs.ProcStat, bool) {
	tids, err := readNames(filepath.Join(c.root, strconv.Itoa(proc.PID), "task"))
	if err != nil {
		return procfs.Proc{}, procfs.ProcStat{}, false
	}
	for _, name := range tids {
		tid, err := strconv.Atoi(name)
		if err != nil || tid == proc.PID {
			continue
		}
		th, err := proc.Thread(tid)
		if err != nil {
			continue
		}
		if st, err := th.Stat(); err == nil && !zombieState(st) {
			return th, st, true
		}
	}
	return procfs.Proc{}, procfs.ProcStat{}, false
}

// account records the processes read this scrape. A process that has
// ended leaves its last counts to the nearest ancestor still running, as
// pending: when that ancestor reaps it (a pre-forking master waits for its
// workers), the kernel adds the child's CPU time and I/O to the
// ancestor's own, and that growth cancels the pending counts; until then
// the pending counts stand in for them, and no count is counted twice or
// dropped. A reap shows at the latest on the scrape after the one where
// the child was last seen (it may happen mid-scrape), so pending counts
// still there after that go to the base: the ancestor ignores SIGCHLD, or
// the child had left the tree. The context switches of a child are never
// added to its parent's, so an ended process's go to the base at once.
func (t *target) account(live map[int]*reading) {
	for pid, m := range t.members {
		if r, ok := live[pid]; ok && r.m == m {
			continue
		}
		ended := m.last.plus(m.pending[0]).plus(m.pending[1])
		t.base.vol += ended.vol
		t.base.nonvol += ended.nonvol
		ended.vol, ended.nonvol = 0, 0
		if a := t.survivor(m, live); a != nil {
			a.pending[0] = a.pending[0].plus(ended)
		} else {
			t.base = t.base.plus(ended)
		}
	}
	members := make(map[int]*member, len(live))
	for pid, r := range live {
		m := r.m
		if t.members[pid] == m {
			reaped := counts{
				cpu:     max(0, r.counts.reaped-m.last.reaped),
				ioRead:  max(0, r.counts.ioRead-m.last.ioRead),
				ioWrite: max(0, r.counts.ioWrite-m.last.ioWrite),
			}
			for i := len(m.pending) - 1; i >= 0; i-- {
				m.pending[i], reaped = cancel(m.pending[i], reaped)
			}
		}
		t.base = t.base.plus(m.pending[1])
		m.pending = [2]counts{{}, m.pending[0]}
		m.last, m.gauges = r.counts, r.gauges
		members[pid] = m
	}
	t.members = members
}

// cancel takes the growth of a process's reaped CPU and I/O off pending
// counts, and returns what is left of both.
func cancel(pending, growth counts) (counts, counts) {
	for _, f := range []func(*counts) *float64{
		func(c *counts) *float64 { return &c.cpu },
		func(c *counts) *float64 { return &c.ioRead },
		func(c *counts) *float64 { return &c.ioWrite },
	} {
		p, g := f(&pending), f(&growth)
		n := min(*p, *g)
		*p -= n
		*g -= n
	}
	return pending, growth
}

// survivor returns the nearest ancestor of m, as last read, that is
// still running, or nil.
func (t *target) survivor(m *member, live map[int]*reading) *member {
	for range len(t.members) {
		p := t.members[m.ppid]
		if p == nil {
			return nil
		}
		if r, ok := live[m.ppid]; ok && r.m == p {
			return p
		}
		m = p
	}
	return nil
}

// ctxSwitches returns the context switches of every thread of the process
// pid, from /proc/<pid>/task/<tid>/status: /proc/<pid>/status has its
// main thread's alone. A thread that has ended keeps the counts it had at
// the last read, and a tid whose counts went down now belongs to a newer
// thread, so the sums never drop while the process runs; the switches a
// thread made after the last read before it ended are not counted.
func (c *AppCollector) ctxSwitches(m *member, pid int) (vol, nonvol float64, err error) {
	dir := filepath.Join(c.root, strconv.Itoa(pid), "task")
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
	for tid, last := range m.switches {
		if cur, ok := now[tid]; !ok || cur[0] < last[0] || cur[1] < last[1] {
			m.ended[0] += last[0]
			m.ended[1] += last[1]
		}
	}
	m.switches = now
	vol, nonvol = m.ended[0], m.ended[1]
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

// startTime sets t.start from its start ticks and the boot time. It is
// worked out once per process, so the figure never jitters.
func (c *AppCollector) startTime(t *target) {
	data, err := os.ReadFile(filepath.Join(c.root, fileUptime))
	var up float64
	if err == nil {
		up, err = parseUptime(string(data))
	}
	if !c.check(fileUptime, t.proc.PID, err) {
		return
	}
	boot := float64(c.now().UnixNano())/1e9 - up
	t.start = boot + float64(t.startTicks)/userHZ
}

// check counts err against file and reports whether the read succeeded.
// The first error of a scrape other than an exit is kept for settle to
// log: a process that exits mid-scrape is counted but not logged, and the
// next scrape looks for it again.
func (c *AppCollector) check(file string, pid int, err error) bool {
	if err == nil {
		c.read[file] = true
		return true
	}
	c.errs[file]++
	if _, ok := c.failed[file]; !ok && !gone(err) {
		c.failed[file] = failure{pid, err}
	}
	return false
}

// settle logs each file that started failing this scrape, or that was
// read again after failing; once per change, however many of the app's
// processes were read.
func (c *AppCollector) settle() {
	for _, file := range appFiles {
		f, bad := c.failed[file]
		switch {
		case bad && !c.failing[file]:
			c.failing[file] = true
			c.log.Warn("cannot read app process file; its figures are left out until it can be read",
				"file", file, "pid", f.pid, "err", f.err)
		case !bad && c.read[file] && c.failing[file]:
			c.failing[file] = false
			c.log.Info("app process file readable again", "file", file)
		}
	}
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
	gauge(appProcessesDesc, s.procs)
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
// (a zombie): it has no memory or descriptors left to report. A process
// whose main thread has exited shows as a zombie too, while its other
// threads still run; its thread count, which counts the main one until
// the process is reaped, tells it apart.
func exited(st procfs.ProcStat) bool { return zombieState(st) && st.NumThreads <= 1 }

// zombieState reports whether the thread or process of the stat st has
// exited: its state is that of a zombie.
func zombieState(st procfs.ProcStat) bool { return st.State == "Z" || st.State == "X" }

// gone reports whether err means the process no longer exists.
func gone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH)
}

// appHostPort returns the IP and the port of the app address host:port;
// the IP is not valid when the host is a name.
func appHostPort(addr string) (netip.Addr, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("app address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return netip.Addr{}, 0, fmt.Errorf("app address %q: port %q is not 0-65535", addr, p)
	}
	// A name (localhost) leaves the host invalid: any address matches.
	host, _ := netip.ParseAddr(h)
	return host.WithZone(""), port, nil
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
