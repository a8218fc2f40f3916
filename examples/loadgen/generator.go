package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/outrider-sidecar/outrider/internal/loadreport"
)

// generator sends the requests: a pacer hands out one token per request
// at the rate of the profile; workers take them.
type generator struct {
	disc    *discovery
	path    string
	workers int
	timeout time.Duration
	idle    time.Duration // a connection idle longer is not reused
	rr      atomic.Uint64
	start   time.Time // set before the workers start

	mu      sync.Mutex
	sum     loadreport.Summary
	seconds map[int64]*loadreport.Second
}

func newGenerator(d *discovery, path string, workers int, timeout, idle time.Duration) *generator {
	return &generator{disc: d, path: path, workers: workers, timeout: timeout, idle: idle,
		sum:     loadreport.Summary{Errors: map[string]int{}, Instances: map[string]*loadreport.Instance{}},
		seconds: map[int64]*loadreport.Second{}}
}

// run sends the profile's requests and returns the summary once every
// request sent has been answered or has failed.
func (g *generator) run(ctx context.Context, steps []step) loadreport.Summary {
	g.start = time.Now()
	start := g.start
	tokens := make(chan struct{}, g.workers)
	var wg sync.WaitGroup
	for range g.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := worker{g: g, conns: map[string]*clientConn{}}
			defer w.closeAll()
			for range tokens {
				w.request()
			}
		}()
	}
	g.pace(ctx, start, steps, tokens)
	close(tokens)
	wg.Wait()

	g.mu.Lock()
	defer g.mu.Unlock()
	g.sum.DurationSeconds = time.Since(start).Seconds()
	for addr, seen := range g.disc.seen() {
		g.instance(addr).FirstSeen = seen
	}
	var secs []int64
	for s := range g.seconds {
		secs = append(secs, s)
	}
	sort.Slice(secs, func(i, j int) bool { return secs[i] < secs[j] })
	for _, s := range secs {
		g.sum.PerSecond = append(g.sum.PerSecond, g.seconds[s])
	}
	return g.sum
}

// pace hands out tokens at the profile's rate, on a schedule fixed from
// start, so that a late tick is made up rather than lost.
func (g *generator) pace(ctx context.Context, start time.Time, steps []step, tokens chan<- struct{}) {
	stepStart := start
	for _, st := range steps {
		if st.rate <= 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(stepStart.Add(st.d))):
			}
			stepStart = stepStart.Add(st.d)
			continue
		}
		interval := time.Duration(float64(time.Second) / st.rate)
		n := int(st.d / interval)
		for i := range n {
			due := stepStart.Add(time.Duration(i) * interval)
			if d := time.Until(due); d > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(d):
				}
			}
			sec := g.second(time.Since(start))
			// A request waits for a free worker up to its own interval;
			// past that the client, not the server, is the limit.
			wait := time.NewTimer(interval)
			select {
			case tokens <- struct{}{}:
				g.mu.Lock()
				sec.Sent++
				sec.Offered = st.rate
				g.sum.Requests++
				g.mu.Unlock()
			case <-wait.C:
				g.mu.Lock()
				g.sum.Skipped++
				g.mu.Unlock()
			}
			wait.Stop()
		}
		stepStart = stepStart.Add(st.d)
	}
}

func (g *generator) second(since time.Duration) *loadreport.Second {
	s := int64(since / time.Second)
	g.mu.Lock()
	defer g.mu.Unlock()
	sec, ok := g.seconds[s]
	if !ok {
		sec = &loadreport.Second{Second: s, Instances: len(g.disc.current.Load().addrs)}
		g.seconds[s] = sec
	}
	return sec
}

func (g *generator) instance(addr string) *loadreport.Instance {
	in, ok := g.sum.Instances[addr]
	if !ok {
		in = &loadreport.Instance{}
		g.sum.Instances[addr] = in
	}
	return in
}

// record counts one request's outcome; kind is empty on success.
func (g *generator) record(addr string, sent time.Time, kind string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	in := g.instance(addr)
	in.Requests++
	if in.FirstRequest.IsZero() || sent.Before(in.FirstRequest) {
		in.FirstRequest = sent
	}
	if kind == "" {
		g.sum.OK++
		if in.FirstOK.IsZero() {
			in.FirstOK = time.Now()
		}
	} else {
		g.sum.Failed++
		in.Failed++
		g.sum.Errors[kind]++
	}
	if sec, ok := g.seconds[int64(sent.Sub(g.start)/time.Second)]; ok {
		if kind == "" {
			sec.OK++
		} else {
			sec.Failed++
		}
	}
}

// worker sends requests one at a time, keeping one keep-alive connection
// per instance.
type worker struct {
	g       *generator
	conns   map[string]*clientConn
	version int
}

type clientConn struct {
	nc       net.Conn
	br       *bufio.Reader
	lastUsed time.Time // when its last answer was read
}

func (w *worker) request() {
	g := w.g
	list := g.disc.current.Load()
	if list.version != w.version {
		w.forgetGone(list.addrs)
		w.version = list.version
	}
	sent := time.Now()
	if len(list.addrs) == 0 {
		g.record("(none)", sent, "no passing instance")
		return
	}
	addr := list.addrs[int(g.rr.Add(1)%uint64(len(list.addrs)))]
	g.record(addr, sent, w.send(addr))
}

// send sends one request to addr and returns "" or the failure's kind.
func (w *worker) send(addr string) string {
	c, err := w.conn(addr)
	if err != nil {
		return "dial: " + errKind(err)
	}
	deadline := time.Now().Add(w.g.timeout)
	_ = c.nc.SetDeadline(deadline)
	if _, err := io.WriteString(c.nc, "GET "+w.g.path+" HTTP/1.1\r\nHost: "+addr+"\r\nUser-Agent: loadgen\r\n\r\n"); err != nil {
		w.drop(addr)
		return "write: " + errKind(err)
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		w.drop(addr)
		return "read: " + errKind(err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		w.drop(addr)
		return "read body: " + errKind(err)
	}
	if resp.Close {
		w.drop(addr)
	}
	c.lastUsed = time.Now()
	if resp.StatusCode != http.StatusOK {
		return "status " + resp.Status
	}
	return ""
}

func (w *worker) conn(addr string) (*clientConn, error) {
	if c, ok := w.conns[addr]; ok {
		if w.g.idle <= 0 || time.Since(c.lastUsed) < w.g.idle {
			return c, nil
		}
		w.drop(addr)
	}
	nc, err := net.DialTimeout("tcp", addr, w.g.timeout)
	if err != nil {
		return nil, err
	}
	c := &clientConn{nc: nc, br: bufio.NewReader(nc), lastUsed: time.Now()}
	w.conns[addr] = c
	return c, nil
}

func (w *worker) drop(addr string) {
	if c, ok := w.conns[addr]; ok {
		_ = c.nc.Close()
		delete(w.conns, addr)
	}
}

// forgetGone closes the connections to instances no longer passing.
func (w *worker) forgetGone(addrs []string) {
	for addr := range w.conns {
		if !contains(addrs, addr) {
			w.drop(addr)
		}
	}
}

func (w *worker) closeAll() {
	for addr := range w.conns {
		w.drop(addr)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// errKind names an error by its class, so that the summary groups them.
func errKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EPIPE):
		return "broken pipe"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	default:
		s := err.Error()
		if i := strings.LastIndex(s, ": "); i >= 0 {
			s = s[i+2:]
		}
		return s
	}
}
