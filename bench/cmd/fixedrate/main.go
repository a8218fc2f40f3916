// Command fixedrate sends HTTP/1.1 GET requests at a fixed rate over
// keep-alive connections and logs how long each took: the bench's
// fixed-rate row (docs/benchmarks.md), which measures the latency a proxy
// adds when it is not saturated.
//
// Each connection has an OS thread of its own that sleeps until its next
// request is due (clock_nanosleep), writes the request and blocks in
// read until the answer is whole, with no event loop or scheduler between
// the socket and the clock. A request is timed from its write to its
// answer's last byte. The connections' schedules are staggered evenly,
// so requests go out one at a time at the rate asked for rather than in
// bursts. A request whose answer came after its successor was due is
// sent late, not skipped: the log shows when each was sent.
//
// h2load's timing script did this job before. At 5,000 requests per
// second over 50 connections its requests left in bursts, and its median
// for the sample app alone was 1.3-1.5 ms, where wrk measures 0.08 ms at
// the same app: the tool's floor hid the few tenths of a millisecond a
// proxy adds.
//
// Usage:
//
//	fixedrate -url http://127.0.0.1:8080/ -rate 5000 -connections 50 -duration 4s -log requests.log
//
// The log has one line per answered request, tab-separated, as h2load's
// --log-file: the time it was sent (µs since the epoch), the status code
// and its duration (µs). The summary printed at the end:
//
//	requests: 20000 total, 20000 done, 20000 succeeded, 0 failed
//	rate: 4999.8 req/s over 4.000s
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/outrider-sidecar/outrider/bench/internal/h1"
)

func main() {
	rawURL := flag.String("url", "", "the URL to GET, http://IP:PORT/PATH (required)")
	rate := flag.Float64("rate", 5000, "requests per second, over all connections")
	conns := flag.Int("connections", 50, "keep-alive connections")
	duration := flag.Duration("duration", 4*time.Second, "how long to send")
	logPath := flag.String("log", "", "file to log each request to (required)")
	timeout := flag.Duration("timeout", 5*time.Second, "one answer's limit")
	flag.Parse()

	cfg, err := newConfig(*rawURL, *rate, *conns, *duration, *timeout)
	if err != nil {
		fail(err)
	}
	if *logPath == "" {
		fail(errors.New("-log is required"))
	}
	res := run(cfg)
	if err := writeLog(*logPath, res.logs); err != nil {
		fail(err)
	}
	fmt.Print(res.summary())
	for _, e := range res.errs {
		fmt.Fprintln(os.Stderr, "fixedrate:", e)
	}
	if res.done == 0 {
		os.Exit(1)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "fixedrate:", err)
	os.Exit(2)
}

// config is a run's schedule and target.
type config struct {
	addr     netip.AddrPort
	request  []byte
	conns    int
	interval time.Duration // between two requests on one connection
	perConn  int           // requests each connection sends
	timeout  time.Duration
}

// newConfig checks the flags and works out the schedule.
func newConfig(rawURL string, rate float64, conns int, duration, timeout time.Duration) (config, error) {
	var c config
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return c, fmt.Errorf("-url %q: want http://IP:PORT/PATH", rawURL)
	}
	c.addr, err = netip.ParseAddrPort(u.Host)
	if err != nil {
		return c, fmt.Errorf("-url %q: the host must be an IP address and a port: %v", rawURL, err)
	}
	if conns < 1 {
		return c, fmt.Errorf("-connections %d: want at least 1", conns)
	}
	if rate <= 0 {
		return c, fmt.Errorf("-rate %v: want a positive rate", rate)
	}
	if duration <= 0 || timeout <= 0 {
		return c, fmt.Errorf("-duration %v, -timeout %v: want positive durations", duration, timeout)
	}
	c.conns = conns
	c.interval = time.Duration(float64(conns) / rate * float64(time.Second))
	c.perConn = int(duration.Seconds() * rate / float64(conns))
	if c.perConn < 1 || c.interval <= 0 {
		return c, fmt.Errorf("-rate %v over -connections %d for -duration %v: want at least one request per connection", rate, conns, duration)
	}
	c.timeout = timeout
	path := u.RequestURI()
	c.request = []byte("GET " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: fixedrate\r\n\r\n")
	return c, nil
}

// entry is one answered request.
type entry struct {
	sent   time.Time
	status int
	took   time.Duration
}

// result is what a run measured.
type result struct {
	total, done, succeeded int
	elapsed                time.Duration
	logs                   []entry
	errs                   []error
}

func (r result) summary() string {
	return fmt.Sprintf("requests: %d total, %d done, %d succeeded, %d failed\nrate: %.1f req/s over %.3fs\n",
		r.total, r.done, r.succeeded, r.total-r.done,
		float64(r.done)/r.elapsed.Seconds(), r.elapsed.Seconds())
}

// run sends every connection's requests, each connection on a thread of
// its own, and gathers what they measured.
func run(c config) result {
	// Every connection's thread blocks in system calls; with a P each,
	// none waits for a P when its call returns.
	runtime.GOMAXPROCS(max(runtime.GOMAXPROCS(0), c.conns+1))
	start := time.Now().Add(50 * time.Millisecond)
	per := make([]connResult, c.conns)
	var wg sync.WaitGroup
	for i := range per {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			offset := time.Duration(int64(c.interval) * int64(i) / int64(c.conns))
			per[i] = runConn(c, start.Add(offset))
		}()
	}
	wg.Wait()
	r := result{total: c.conns * c.perConn, elapsed: time.Since(start)}
	for _, p := range per {
		r.logs = append(r.logs, p.logs...)
		r.errs = append(r.errs, p.errs...)
	}
	r.done = len(r.logs)
	for _, e := range r.logs {
		if e.status >= 200 && e.status < 400 {
			r.succeeded++
		}
	}
	sort.Slice(r.logs, func(i, j int) bool { return r.logs[i].sent.Before(r.logs[j].sent) })
	return r
}

// connResult is what one connection measured.
type connResult struct {
	logs []entry
	errs []error
}

// runConn sends c.perConn requests, the first at first and then every
// c.interval, on one connection, dialed again after a failure.
func runConn(c config, first time.Time) connResult {
	var res connResult
	res.logs = make([]entry, 0, c.perConn)
	buf := make([]byte, 64<<10)
	fd := -1
	defer func() {
		if fd >= 0 {
			syscall.Close(fd)
		}
	}()
	for k := 0; k < c.perConn; k++ {
		sleepUntil(first.Add(time.Duration(k) * c.interval))
		if fd < 0 {
			var err error
			if fd, err = dial(c.addr, c.timeout); err != nil {
				res.errs = append(res.errs, err)
				continue
			}
		}
		e, err := exchange(fd, c.request, buf)
		if err != nil {
			res.errs = append(res.errs, err)
			syscall.Close(fd)
			fd = -1
			continue
		}
		res.logs = append(res.logs, e)
	}
	return res
}

// sleepUntil sleeps, blocking its thread, until t.
func sleepUntil(t time.Time) {
	for {
		d := time.Until(t)
		if d <= 0 {
			return
		}
		ts := syscall.NsecToTimespec(int64(d))
		if err := syscall.Nanosleep(&ts, nil); err == nil {
			return
		}
	}
}

// dial opens a blocking TCP connection to addr, with Nagle's algorithm
// off and reads that give up after timeout.
func dial(addr netip.AddrPort, timeout time.Duration) (int, error) {
	family := syscall.AF_INET
	if addr.Addr().Is6() {
		family = syscall.AF_INET6
	}
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	var sa syscall.Sockaddr
	if family == syscall.AF_INET {
		sa = &syscall.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}
	} else {
		sa = &syscall.SockaddrInet6{Port: int(addr.Port()), Addr: addr.Addr().As16()}
	}
	tv := syscall.NsecToTimeval(int64(timeout))
	for _, err := range []error{
		syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1),
		syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv),
		syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_SNDTIMEO, &tv),
		connect(fd, sa),
	} {
		if err != nil {
			syscall.Close(fd)
			return -1, fmt.Errorf("connect to %v: %w", addr, err)
		}
	}
	return fd, nil
}

// connect connects fd to sa. A connect interrupted by a signal (Go's
// scheduler preempts with them) goes on in the kernel: it is asked again
// until it is done.
func connect(fd int, sa syscall.Sockaddr) error {
	for {
		switch err := syscall.Connect(fd, sa); err {
		case syscall.EINTR, syscall.EALREADY:
			time.Sleep(50 * time.Microsecond)
		case syscall.EISCONN:
			return nil
		default:
			return err
		}
	}
}

// exchange writes req on fd and reads its answer whole.
func exchange(fd int, req, buf []byte) (entry, error) {
	e := entry{sent: time.Now()}
	for b := req; len(b) > 0; {
		n, err := syscall.Write(fd, b)
		if err == syscall.EINTR {
			// Go's scheduler preempts with signals.
			continue
		}
		if err != nil {
			return e, fmt.Errorf("write: %w", err)
		}
		b = b[n:]
	}
	f := h1.Framer{Resp: true}
	var head []byte // the status line's first bytes
	for {
		n, err := syscall.Read(fd, buf)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			if errors.Is(err, syscall.EAGAIN) {
				err = errors.New("no answer within -timeout")
			}
			return e, fmt.Errorf("read: %w", err)
		}
		if n == 0 {
			return e, errors.New("read: the connection closed before the answer was whole")
		}
		if len(head) < 12 {
			head = append(head, buf[:min(n, 12-len(head))]...)
		}
		if _, ends := f.Scan(buf[:n]); ends > 0 {
			e.took = time.Since(e.sent)
			break
		}
	}
	status, err := parseStatus(head)
	if err != nil {
		return e, err
	}
	e.status = status
	return e, nil
}

// parseStatus reads the status code of a status line's first 12 bytes,
// "HTTP/1.1 200".
func parseStatus(b []byte) (int, error) {
	if len(b) < 12 || string(b[:5]) != "HTTP/" || b[8] != ' ' {
		return 0, fmt.Errorf("answer %q: want a status line", b)
	}
	code, err := strconv.Atoi(string(b[9:12]))
	if err != nil {
		return 0, fmt.Errorf("answer %q: want a status code", b)
	}
	return code, nil
}

// writeLog writes one line per answered request to path.
func writeLog(path string, logs []entry) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for _, e := range logs {
		fmt.Fprintf(w, "%d\t%d\t%d\n", e.sent.UnixMicro(), e.status, e.took.Microseconds())
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}
