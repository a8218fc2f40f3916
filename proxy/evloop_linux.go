package proxy

import (
	"math"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// The event loop serves keep-alive connections between and during plain
// exchanges without a goroutine of their own (see docs/proxy.md, "The
// event loop").
//
// The loops accept client connections too, and serve a new connection's
// first request when it is plain and an idle app connection is at hand
// (evaccept_linux.go). Every other request is served by a goroutine as
// before. When that goroutine would wait for the connection's next
// request, with an app connection pinned, it parks the connection in a
// loop and exits. The loop reads the next head, and for a
// plain request whose body came with its head it sends the request to the
// app, waits for the answer among its other connections, and relays an
// answer that came whole in one read. Anything else hands the connection
// back to a goroutine at the step it reached: a head that is not whole
// or not plain, an answer that is not whole, an interim answer, a write
// to the client that would wait, an app connection that failed or closed,
// a client gone while its request waits. The grammar, the rewriting and
// the counters are the goroutine path's own functions.
//
// Why: a goroutine parks and wakes twice per request (once for the app's
// answer, once for the next request), and the pinned app connection must
// be peeked at before each reuse, as nothing else would notice an app
// that closed it or sent stray bytes. In the loop a batch of ready
// connections is served from one wait, and the pinned app connection
// stays registered while idle, so its close or stray bytes show up as an
// event. Measured with bench/compare.sh against the goroutine path:
// about an eighth less CPU per small request at one core.
//
// Each loop's epoll instance is itself waited for through Go's poller
// (the loop goroutine parks on its descriptor). A loop that has served a
// batch waits for the next in its own epoll instance, for a millisecond
// at most and holding its P, while no goroutine serves a connection
// (hold); otherwise, and once that millisecond passed, it parks, so the
// goroutines that serve what a loop hands them run as before.

// States of a connection in a loop.
const (
	evIdle  = iota // waiting for its next request
	evAwait        // its request sent, waiting for the app's answer
	evDial         // its request read, waiting for a dial to the app (dialFor)
)

// connEv is a connection's state in a loop; owned by the loop while
// parked is set.
type connEv struct {
	// home is the loop the connection parks in, chosen when a loop
	// accepts it or on its first park, and kept: its sockets stay
	// registered there while a goroutine has the connection.
	home     *evLoop
	cfd, afd int
	state    int
	// readable is set when the client's socket may hold bytes not read
	// yet: it is read once the answer is written.
	readable bool
	// sent is how much of the request in c.out the app's socket took.
	sent int
	// writing makes writeClient write without waiting, leaving what the
	// socket did not take in pend (a buffer of its own, from pendBufs).
	writing bool
	pend    []byte
	pendBP  *[]byte
	// since is when the connection last went idle, for the idle timeout,
	// or, waiting for the app's answer, when its request was sent.
	since time.Time
	idx   int // in l.conns
	// fresh is set while a connection the loop accepted has not had its
	// first request served: a goroutine it is handed to serves it as a
	// new connection's (the HTTP/2 preface is looked for there).
	fresh bool
	// dialStart is when a dial for it began (evDial); dialUp and dialErr
	// are that dial's result, set by the dialing goroutine before it lists
	// the connection in the loop's dialed.
	dialStart time.Time
	dialUp    *upConn
	dialErr   error
}

var pendBufs = sync.Pool{New: func() any { b := make([]byte, 0, copyBufSize); return &b }}

// evLoop is one event loop: an epoll instance and the goroutine that
// waits for it.
type evLoop struct {
	p      *Proxy
	ls     *evLoops
	epfd   int
	file   *os.File // epfd, for Go's poller
	rc     syscall.RawConn
	wakeFd int // an eventfd: written to make the loop look at drain and cut
	pollFn func(fd uintptr) bool
	events []syscall.EpollEvent
	// byFd maps the descriptors registered to their connection.
	byFd  []*conn
	conns []*conn // every connection parked here
	// load counts the connections parked here or on their way, from the
	// moment they are given to the loop (assign).
	load atomic.Int32
	tick time.Duration
	now  time.Time
	// swept is when sweep last ran.
	swept time.Time
	// looked is when the loop last came back from Go's poller, after
	// which the scheduler had a look at the network; a loop that holds
	// passes through it once per holdFor (pass), and passed is set until
	// it is back.
	looked time.Time
	passed bool
	passes atomic.Int64 // for tests

	// Accepting (evaccept_linux.go): lnOn is set while the listener is
	// registered here; acceptFn is acceptFrom, made once; sa and acceptErr
	// are acceptFrom's.
	lnOn      bool
	acceptFn  func(fd uintptr)
	sa        syscall.RawSockaddrAny
	acceptErr error
	appMark   *conn // byFd's mark of an app connection in idleApps

	mu sync.Mutex
	// idleApps are idle app connections the loop keeps for the connections
	// it accepts, registered here and watched (see keepApp).
	idleApps []*upConn
	in       []*conn // parked, or their dial ended, not yet taken in by the loop
	spare    []*conn
	dials    atomic.Int64 // dials started by the loop, for tests
	done     chan struct{}
}

// evLoops are a proxy's loops, one per P.
type evLoops struct {
	loops []*evLoop
	// The listener the loops accept from, once listen was called: lnFd is
	// its descriptor (-1 before), accepting is set while the loops accept
	// rather than Serve, and failed is where a loop tells Serve to take
	// accepting back.
	lnRC      syscall.RawConn
	lnFd      int
	accepting atomic.Bool
	failed    chan struct{}
}

// startEvLoops starts one loop per P, which accept from ln once Serve has
// them (see evLoops.waitFailure).
func startEvLoops(p *Proxy, ln net.Listener) (*evLoops, error) {
	n := runtime.GOMAXPROCS(0)
	ls := &evLoops{lnFd: -1, failed: make(chan struct{}, 1)}
	ls.setListener(ln)
	for range n {
		l, err := newEvLoop(p, ls)
		if err != nil {
			ls.stop()
			return nil, err
		}
		ls.loops = append(ls.loops, l)
	}
	return ls, nil
}

// park hands c, whose goroutine is done with it, to its loop: on its
// first park, the loop with the fewest connections.
func (ls *evLoops) park(c *conn) {
	l := c.ev.home
	if l == nil {
		l = ls.assign(nil)
		c.ev.home = l
	} else {
		l.load.Add(1)
	}
	l.park(c)
}

// assign picks the loop a connection is given to, and counts it there:
// l (which may be nil) unless another loop has at least two fewer, so
// that a loop that accepts a burst of connections, or that a new
// connection wakes time after time (EPOLLEXCLUSIVE wakes the first loop
// waiting), serves its share of them and hands the rest on. The count
// is taken only if no one changed it since it was read: connections
// assigned at the same moment do not all go to the same loop.
func (ls *evLoops) assign(l *evLoop) *evLoop {
	for {
		best, least := l, int32(math.MaxInt32)
		for _, o := range ls.loops {
			if n := o.load.Load(); n < least {
				best, least = o, n
			}
		}
		if l != nil {
			if n := l.load.Load(); n <= least+1 {
				best, least = l, n
			}
		}
		if best.load.CompareAndSwap(least, least+1) {
			return best
		}
	}
}

// wake makes every loop look at the drain and at cut connections.
func (ls *evLoops) wake() {
	if ls == nil {
		return
	}
	for _, l := range ls.loops {
		l.wake()
	}
}

// stop ends the loops; no connection is parked any more.
func (ls *evLoops) stop() {
	if ls == nil {
		return
	}
	for _, l := range ls.loops {
		_ = l.file.Close()
		<-l.done
		_ = syscall.Close(l.wakeFd)
	}
}

func newEvLoop(p *Proxy, ls *evLoops) (*evLoop, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	wfd, _, e := syscall.RawSyscall(syscall.SYS_EVENTFD2, 0, syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if e != 0 {
		_ = syscall.Close(epfd)
		return nil, os.NewSyscallError("eventfd2", e)
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | epollET, Fd: int32(wfd)}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, int(wfd), &ev); err != nil {
		_ = syscall.Close(epfd)
		_ = syscall.Close(int(wfd))
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	// Non-blocking, so that os.NewFile hands it to Go's poller.
	if err := syscall.SetNonblock(epfd, true); err != nil {
		_ = syscall.Close(epfd)
		_ = syscall.Close(int(wfd))
		return nil, os.NewSyscallError("fcntl", err)
	}
	f := os.NewFile(uintptr(epfd), "epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		_ = syscall.Close(int(wfd))
		return nil, err
	}
	l := &evLoop{p: p, ls: ls, appMark: &conn{ev: connEv{cfd: -1, afd: -1}}, epfd: epfd, file: f, rc: rc, wakeFd: int(wfd),
		events: make([]syscall.EpollEvent, 128), done: make(chan struct{})}
	l.pollFn = l.poll
	l.acceptFn = l.acceptFrom
	// The idle timeout is kept to within an eighth.
	l.tick = min(max(p.cfg.IdleTimeout/8, 5*time.Millisecond), time.Second)
	go l.run()
	return l, nil
}

// epollET is EPOLLET, which package syscall spells as a negative number.
const epollET = 1 << 31

// run waits for events through Go's poller and handles them, and every
// tick closes the connections idle for too long.
func (l *evLoop) run() {
	defer close(l.done)
	defer l.closeIdleApps()
	l.swept = time.Now()
	_ = l.file.SetReadDeadline(l.swept.Add(l.tick))
	for {
		err := l.rc.Read(l.pollFn)
		if err != nil && !isTimeout(err) {
			// Closed by stop.
			return
		}
		// The deadline passed while the loop waited: nothing came for a
		// tick. (A busy loop sweeps from poll.)
		l.now = time.Now()
		l.sweep()
		_ = l.file.SetReadDeadline(l.swept.Add(l.tick))
	}
}

// wake makes the loop look at the drain and at cut connections.
//
// The eventfd is edge-triggered in the loop's epoll set, and every write
// to an eventfd wakes its waiters, so each wake is an event even though
// the loop never reads the counter back: woken saves that read, a system
// call per wake (a pass is one a millisecond under load). The counter,
// one per wake, would take half a million years to fill at a million
// wakes a second (TestUnreadEventfdWakesEachTime).
func (l *evLoop) wake() {
	one := uint64(1)
	_, _, _ = syscall.RawSyscall(syscall.SYS_WRITE, uintptr(l.wakeFd), uintptr(unsafe.Pointer(&one)), 8)
}

// park lists c, with its pinned app connection, for the loop to take in,
// and wakes the loop. Called by c's goroutine, which must not touch c
// afterwards: the loop may serve it, hand it back or close it at once.
func (l *evLoop) park(c *conn) {
	ev := &c.ev
	ev.cfd = c.br.fd()
	ev.afd = c.up.br.fd()
	ev.state = evIdle
	ev.readable = false
	ev.since = c.now
	c.state.Store(stateIdle)
	l.enqueue(c)
}

// enqueue lists c for the loop to take in, and wakes the loop.
func (l *evLoop) enqueue(c *conn) {
	l.mu.Lock()
	l.in = append(l.in, c)
	l.mu.Unlock()
	l.wake()
}

// takeIn lists the connections parked since the last batch and registers
// their sockets; a socket readable already is reported by the next wait.
// Only the loop registers, so no event comes before it knows the
// connection. It goes on with those whose dial ended, too.
func (l *evLoop) takeIn() {
	l.mu.Lock()
	l.spare, l.in = l.in, l.spare[:0]
	l.mu.Unlock()
	for _, c := range l.spare {
		if c.ev.state == evDial {
			// Its dial ended (dialEnded).
			l.dialDone(c)
			continue
		}
		if c.nc == nil {
			// Accepted by another loop.
			l.takeNew(c)
			continue
		}
		c.ev.idx = len(l.conns)
		l.conns = append(l.conns, c)
		l.setFd(c.ev.cfd, c)
		l.setFd(c.ev.afd, c)
		if !l.register(c.br, c.ev.cfd) || !l.register(c.up.br, c.ev.afd) {
			l.handBack(c, resumeServe)
		}
	}
	clear(l.spare)
}

// register adds a socket to the epoll instance, or, when it is there
// already (its connection was parked here before), arms it again, which
// reports it if it is readable. A socket registered in another loop
// (an app connection from the pool) is moved.
func (l *evLoop) register(r *reader, fd int) bool {
	e := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | epollET, Fd: int32(fd)}
	op := syscall.EPOLL_CTL_ADD
	switch r.evl {
	case l:
		op = syscall.EPOLL_CTL_MOD
	case nil:
	default:
		r.unregister()
	}
	if err := syscall.EpollCtl(l.epfd, op, fd, &e); err != nil {
		return false
	}
	r.evl = l
	return true
}

// unregister takes a socket that stays open, such as an app connection
// going back to the pool, out of the loop it was registered in.
func (r *reader) unregister() {
	if r.evl != nil {
		_ = syscall.EpollCtl(r.evl.epfd, syscall.EPOLL_CTL_DEL, r.fd(), nil)
		r.evl = nil
	}
}

func (l *evLoop) setFd(fd int, c *conn) {
	for len(l.byFd) <= fd {
		l.byFd = append(l.byFd, nil)
	}
	l.byFd[fd] = c
}

// epollNow returns the events ready, without waiting.
func epollNow(ep int, events []syscall.EpollEvent) int {
	return epollWait(ep, events, 0)
}

// epollWait waits up to msec milliseconds for events, with a raw system
// call (the runtime does not know the thread waits), and returns how many
// came; 0 on an error, EINTR among them.
func epollWait(ep int, events []syscall.EpollEvent, msec int) int {
	n, _, e := syscall.RawSyscall6(sysEpollWait, uintptr(ep), uintptr(unsafe.Pointer(&events[0])),
		uintptr(len(events)), uintptr(msec), 0, 0)
	if e != 0 {
		return 0
	}
	return int(n)
}

// poll handles the events ready until there are none; it returns false
// to have Go's poller wait for the next.
//
// The app's side of a batch goes first: an idle app connection that the
// app closed or sent bytes nobody asked for must be seen before a request
// from the same batch is sent on it. (Bytes that come while a request is
// being sent cannot be told from its answer, by a goroutine's peek
// either.)
//
// While no goroutine serves a connection or dials, the loop waits for
// its next batch in its own epoll_wait, for up to holdFor, keeping its P
// (see hold). Otherwise it looks without waiting, and parks on Go's
// poller when nothing is ready. Either way, it passes through Go's poller
// once per holdFor (see pass).
//
// The loop yields between batches. Under load a batch is ready every
// time it looks, so without yielding it would keep its P until the
// scheduler preempts it, 10 ms later, while goroutines on that P wait:
// first requests, connections handed back, the other loops. That wait
// showed in the p99 of small answers at two cores: yielding cut it to
// 0.50-0.95x of what it was, depending on the machine, for at most a
// few percent of throughput at one core (docs/proxy.md). While it holds,
// no goroutine of the proxy waits for the P.
//
// It yields only when another batch is ready, not after the last: the
// wait for Go's poller yields anyway. With an idle P, a yield wakes a
// thread to take the loop's goroutine, and the thread that yielded goes
// to sleep; at a fixed 5,000 requests per second at two cores, yields
// before waiting were a quarter of outrider's CPU. So the loop yields
// after it took a batch in and before it serves it. Events taken in may
// be stale by the time they are served (so they may with two loops
// running at once). Each handler reads the socket itself; a stale hang-up
// or readable mark costs at most a hand-off to a goroutine, which reads
// the socket's own state, or an idle app connection closed.
func (l *evLoop) poll(_ uintptr) bool {
	for first := true; ; first = false {
		var n int
		switch {
		case first:
			if n = epollNow(l.epfd, l.events); n == 0 {
				return false
			}
			if l.passed {
				// Back from a pass: what Go's poller found ready runs now.
				l.passed = false
				runtime.Gosched()
			}
			l.now = time.Now()
			l.looked = l.now
		case l.now.Sub(l.looked) >= holdFor:
			l.pass()
			return false
		case l.p.workers.busy.Load() == 0 && !l.p.pool.dialsInFlight():
			if n = l.hold(); n == 0 {
				return false
			}
			l.now = time.Now()
		default:
			if n = epollNow(l.epfd, l.events); n == 0 {
				return false
			}
			runtime.Gosched()
			l.now = time.Now()
		}
		if l.now.Sub(l.swept) > l.tick {
			l.sweep()
		}
		events := l.events[:n]
		listener := false
		for _, e := range events {
			switch c := l.owner(int(e.Fd)); {
			case int(e.Fd) == l.wakeFd:
				l.woken()
			case int(e.Fd) == l.ls.lnFd:
				listener = true
			case c == l.appMark:
				l.idleAppEvent(int(e.Fd))
			case c != nil && int(e.Fd) == c.ev.afd:
				l.appEvent(c, e.Events)
			}
		}
		for _, e := range events {
			if c := l.owner(int(e.Fd)); c != nil && int(e.Fd) == c.ev.cfd {
				l.clientEvent(c, e.Events)
			}
		}
		// New connections last: one may get the number of a descriptor
		// closed in this batch, whose events above were the old one's.
		if listener {
			l.accept()
		}
	}
}

// holdFor bounds a loop's wait in its own epoll_wait (hold), and is how
// often a loop that holds its P passes through Go's poller (pass).
const holdFor = time.Millisecond

// hold waits up to holdFor for events in the loop's own epoll instance
// and returns how many came; 0 when none did, or a signal cut the wait
// short (the runtime's preemption and stop-the-world signal a thread so).
//
// The wait is a raw system call: the loop keeps its P, as an nginx worker
// keeps its CPU, and an event wakes the loop's own thread, not Go's
// poller, which would then wake a thread for the loop's goroutine. Per
// wake that saves two calls of Go's poller (one that finds nothing as
// the loop parks, one that waits) and, often, a futex to wake a thread
// (docs/benchmarks-log.md, "A loop that holds its P for a millisecond").
// A loop holds only while no goroutine serves a connection
// (workers.busy) and no dial is under way (a loop's, see dialFor, or a
// goroutine's): such a goroutine would wait for the P. It never holds
// longer than holdFor without passing through Go's poller (pass).
func (l *evLoop) hold() int {
	return epollWait(l.epfd, l.events, int(holdFor/time.Millisecond))
}

// pass parks the loop on Go's poller for a moment, so that the scheduler
// looks at the network, runs the P's timers, and runs the goroutines it
// finds ready (poll yields to them when it is back). Without it, while
// every P holds, no thread would look at Go's poller but the runtime's
// monitor, every 10 ms at best: the rest of the agent (probes, Consul,
// /metrics) waited for it, and a /metrics scrape under full load took
// up to 0.75 s at one core (docs/benchmarks-log.md, "A loop that holds
// its P for a millisecond"). A loop that does not hold but always finds
// a batch ready never parks either, and its yields do not make the
// scheduler look (it looks only when nothing is runnable): goroutines
// waiting for a socket, the dials to the app of a burst of new clients
// among them, waited for the monitor as well. The wake makes the loop's
// epoll instance ready for Go's poller, so the park ends at its first
// look.
func (l *evLoop) pass() {
	l.passed = true
	l.passes.Add(1)
	l.wake()
}

// owner returns the connection parked here whose socket fd is, or nil.
// Events of a socket whose connection a goroutine has now are not the
// loop's: the socket is armed again when the connection is parked.
func (l *evLoop) owner(fd int) *conn {
	if fd < 0 || fd >= len(l.byFd) {
		return nil
	}
	return l.byFd[fd]
}

// woken handles a wake: parked connections are taken in and, while the
// proxy drains, idle ones are closed and those cut by the drain too.
func (l *evLoop) woken() {
	l.takeIn()
	if !l.p.draining.Load() {
		l.listenOn()
		return
	}
	l.listenOff()
	for i := len(l.conns) - 1; i >= 0; i-- {
		switch c := l.conns[i]; {
		case c.ev.state == evDial:
			// Its dialing goroutine holds it: cut when the dial ends.
		case c.cut.Load():
			l.cut(c)
		case c.ev.state == evIdle:
			l.closeIdle(c)
		}
	}
}

// closeIdle closes c, idle in the loop while the proxy drains, unless
// bytes of a next request reached it first (buffered, or in the socket
// with their event still to come): that request is served, with
// "Connection: close", as its client sent it before it could know of the
// drain and would lose it.
func (l *evLoop) closeIdle(c *conn) {
	fd := c.ev.cfd
	if len(c.br.buffered()) > 0 || peekFd(uintptr(fd)) == peekData {
		l.serveClient(c, true, false)
		if l.owner(fd) != c || c.ev.state != evIdle {
			// Handed to a goroutine, closed, or waiting for the app's
			// answer, after which it closes.
			return
		}
	}
	l.drop(c)
}

// sweep closes the connections idle for longer than the idle timeout,
// and hands to a goroutine those that waited a tick for the app's answer.
// The loop sets no deadline on that wait: an app that answers slowly, or
// stalls within an answer it began, is then read with the goroutine's
// deadline, and what came of the answer is relayed as it comes.
func (l *evLoop) sweep() {
	l.swept = l.now
	limit := l.now.Add(-l.p.cfg.IdleTimeout)
	slow := l.now.Add(-l.tick)
	for i := len(l.conns) - 1; i >= 0; i-- {
		switch c := l.conns[i]; {
		case c.ev.state == evIdle && c.ev.since.Before(limit):
			l.drop(c)
		case c.ev.state == evAwait && c.ev.since.Before(slow):
			l.handBack(c, resumeAnswer)
		}
	}
}

// release takes c out of the loop. Its sockets stay registered (a
// goroutine may park it here again), but their events are not the loop's
// until then. An app connection that goes back to the pool is taken out.
func (l *evLoop) release(c *conn) {
	ev := &c.ev
	last := l.conns[len(l.conns)-1]
	l.conns[ev.idx] = last
	last.ev.idx = ev.idx
	l.conns[len(l.conns)-1] = nil
	l.conns = l.conns[:len(l.conns)-1]
	l.load.Add(-1)
	l.byFd[ev.cfd] = nil
	l.forgetApp(c)
}

// forgetApp stops mapping c's app socket to c: the app connection is
// closed, or c leaves the loop.
func (l *evLoop) forgetApp(c *conn) {
	if ev := &c.ev; ev.afd >= 0 {
		l.byFd[ev.afd] = nil
		ev.afd = -1
	}
}

// drop closes c, which is not in an exchange, as its goroutine would:
// nothing the loop does leaves it lingering or with bytes to write.
func (l *evLoop) drop(c *conn) {
	l.release(c)
	if u := c.up; u != nil && !l.p.draining.Load() && l.keepApp(u) {
		c.up = nil
	}
	c.parked.Store(false)
	c.end()
	c.recycle()
}

// cut ends c for a drain that ran out of time.
func (l *evLoop) cut(c *conn) {
	l.release(c)
	c.parked.Store(false)
	endCut(c)
}

// endCut closes a connection the drain cut while a loop held it; a
// request waiting for the app is counted as its client's, gone.
func endCut(c *conn) {
	if c.ev.state == evAwait {
		c.dropUpstream()
		c.o.code = CodeClientGone
		c.finishForward()
	}
	c.linger = false
	c.dropPend()
	c.end()
	c.recycle()
}

// handBack gives c to a goroutine, which resumes it at the step named.
// The drain's cut is read under the lock that cutOff takes: cutOff
// either found c parked, and the cut is seen here, or found it not, and
// cut it as a goroutine's.
func (l *evLoop) handBack(c *conn, from int) {
	l.release(c)
	if c.nc == nil && !l.adopt(c) {
		// Out of descriptors, most likely: the connection is closed.
		c.parked.Store(false)
		if c.ev.state == evAwait {
			c.dropUpstream()
			c.o.code = CodeClientGone
			c.finishForward()
		}
		c.end()
		c.recycle()
		return
	}
	if from == resumeServe && c.ev.fresh {
		from = resumeFirst
	}
	c.ev.fresh = false
	p := c.p
	p.mu.Lock()
	c.parked.Store(false)
	cut := c.cut.Load()
	p.mu.Unlock()
	if cut {
		endCut(c)
		return
	}
	if from != resumeWrite && c.up != nil {
		// A request or an answer the loop does not serve whole, not an
		// app connection that was closed.
		c.unparked = keepUnparked
	}
	c.resumeFrom = from
	p.workers.serve(c)
}

// clientEvent handles an event on c's client socket.
func (l *evLoop) clientEvent(c *conn, events uint32) {
	if c.ev.state == evDial {
		// Read after the exchange, as a request sent before this one's
		// answer is; a client that left is found then too.
		c.ev.readable = true
		return
	}
	if c.ev.state == evAwait {
		if events&(syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
			// The client may be gone: the goroutine's checks decide.
			l.handBack(c, resumeAnswer)
			return
		}
		// A request sent before this one's answer: read it after.
		c.ev.readable = true
		return
	}
	l.serveClient(c, true, events&(syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0)
}

// serveClient serves c's next request when it is plain: it sends it to
// the app and waits for the answer. read says whether to read the client
// socket first, and hup whether the event that says so also said the
// client shut its side down: the read that finds the end then comes after
// the exchange, as no event will announce it.
func (l *evLoop) serveClient(c *conn, read, hup bool) {
	ev := &c.ev
	if read {
		emptied, err := c.br.readFd(uintptr(ev.cfd), c.p.cfg.MaxHeaderBytes)
		switch {
		case err == syscall.EAGAIN:
			ev.readable = false
		case err == errHeadTooLarge:
			l.handBack(c, resumeServe)
			return
		case err != nil && len(c.br.buffered()) > 0:
			// The end after requests read before it (pipelined, then the
			// client shut its side down): a goroutine answers them and
			// then finds the end.
			l.handBack(c, resumeServe)
			return
		case err != nil:
			// The end or a reset: nothing to answer.
			l.drop(c)
			return
		default:
			// A read that filled the buffer may have left bytes, which no
			// new event will announce.
			ev.readable = !emptied || hup
		}
	}
	if len(c.br.buffered()) == 0 {
		return
	}
	// Anything but a whole plain head is the goroutine's: a partial head
	// needs the head's deadline, a refused one an answer that may wait.
	h := &c.req
	n, err := parseRequest(c.br.buffered(), h, c.p.cfg.MaxHeaderFields)
	if err != nil {
		l.handBack(c, resumeServe)
		return
	}
	c.headLen = n
	if !c.plain() || h.methodClass == methodCONNECT {
		l.handBack(c, resumeServe)
		return
	}
	if c.up == nil && !l.takeApp(c) {
		if !l.dialFor(c) {
			l.handBack(c, resumeServe)
		}
		return
	}
	if len(c.up.br.buffered()) > 0 {
		l.handBack(c, resumeServe)
		return
	}
	c.state.Store(stateActive)
	c.startForward()
	l.send(c)
}

// send sends c's request, whose forward has started, to the app, and
// waits for the answer.
func (l *evLoop) send(c *conn) {
	ev := &c.ev
	c.prepareRequest()
	ev.state = evAwait
	ev.since = l.now
	ev.sent = 0
	for ev.sent < len(c.out) {
		n, err := writeNow(uintptr(ev.afd), c.out[ev.sent:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			// The socket is full, or the app connection failed: the
			// goroutine sends the rest, or retries on another.
			l.handBack(c, resumeAnswer)
			return
		}
		ev.sent += n
	}
}

// appEvent handles an event on c's app socket; events are the event's
// flags.
func (l *evLoop) appEvent(c *conn, events uint32) {
	ev := &c.ev
	u := c.up
	if ev.state != evAwait {
		// An idle app connection that became readable was closed by the
		// app or got bytes nobody asked for: it is not reused.
		l.forgetApp(c)
		c.dropUpstream()
		l.handBack(c, resumeServe)
		return
	}
	emptied, err := u.br.readFd(uintptr(ev.afd), maxResponseHead)
	if err == syscall.EAGAIN {
		return
	}
	buf := u.br.buffered()
	if err != nil || len(buf) == 0 {
		l.handBack(c, resumeAnswer)
		return
	}
	// More of the answer is announced by the next event, unless the app
	// closed or reset the connection: no event follows those, and the
	// read that finds the end is a goroutine's.
	more := emptied && events&(syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) == 0
	n, perr := parseResponse(buf, &c.resp, maxResponseFields)
	if perr == errNeedMore && more {
		return
	}
	resp := &c.resp
	plain := perr == nil && resp.status >= 200 && !resp.otherCoding && !resp.chunked && !resp.lengthAndCoding
	whole := c.bodiless() || (resp.contentLength >= 0 && int64(len(buf)-n) >= resp.contentLength)
	if plain && !whole && more && resp.contentLength >= 0 && int64(n)+resp.contentLength <= int64(len(u.br.buf)) {
		// The rest of a body the buffer holds, written by the app after
		// the head: the head is parsed again when it comes.
		return
	}
	if !plain || !whole {
		// Read on, relay a body as it comes, pass an interim answer on,
		// refuse a bad head: the goroutine's steps.
		l.handBack(c, resumeAnswer)
		return
	}
	c.respHeadLen = n
	ev.writing = true
	c.relayAnswer(u)
	ev.writing = false
	if c.up == nil {
		l.forgetApp(c)
	}
	if len(ev.pend) > 0 {
		l.handBack(c, resumeWrite)
		return
	}
	l.endExchange(c)
}

// endExchange counts the exchange just relayed and readies c for its next
// request, in the loop or in a goroutine.
func (l *evLoop) endExchange(c *conn) {
	ev := &c.ev
	ev.fresh = false
	keep := c.finishForward()
	switch {
	case !keep && c.linger:
		// Closed with bytes of a next request unread (see
		// lingerIfUnread): a goroutine lingers, as the loop cannot wait.
		l.handBack(c, resumeLinger)
		return
	case !keep:
		l.drop(c)
		return
	case c.up == nil:
		// The app connection was not kept: the goroutine gets another
		// (and while the proxy drains, closes c or serves what came).
		l.handBack(c, resumeServe)
		return
	}
	ev.state = evIdle
	ev.since = c.now
	c.state.Store(stateIdle)
	if c.p.draining.Load() {
		// The answer kept c alive: the drain began since.
		l.closeIdle(c)
		return
	}
	if ev.readable || len(c.br.buffered()) > 0 {
		l.serveClient(c, ev.readable, false)
	}
}

// bodiless reports whether the answer to c's request has no body whatever
// it says: HEAD, 204 and 304.
func (c *conn) bodiless() bool {
	return c.req.methodClass == methodHEAD || c.resp.status == 204 || c.resp.status == 304
}

// writeNowPend writes b to the client without waiting, keeping what the
// socket does not take in c.ev.pend; it is how writeClient writes for a
// loop.
func (c *conn) writeNowPend(b []byte) error {
	ev := &c.ev
	if len(ev.pend) == 0 {
		for len(b) > 0 {
			n, err := writeNow(uintptr(ev.cfd), b)
			if err == syscall.EINTR {
				continue
			}
			if err == syscall.EAGAIN {
				break
			}
			if err != nil {
				return err
			}
			b = b[n:]
		}
		if len(b) == 0 {
			return nil
		}
	}
	if ev.pendBP == nil {
		ev.pendBP = pendBufs.Get().(*[]byte)
		ev.pend = (*ev.pendBP)[:0]
	}
	ev.pend = append(ev.pend, b...)
	return nil
}

// writePend writes what a loop left to write to the client, waiting as
// a goroutine does.
func (c *conn) writePend() error {
	ev := &c.ev
	if ev.pendBP == nil {
		return nil
	}
	err := c.writeClient(ev.pend, time.Now())
	c.dropPend()
	return err
}

// dropPend gives the buffer of what was left to write back.
func (c *conn) dropPend() {
	ev := &c.ev
	if ev.pendBP != nil && cap(ev.pend) <= 64<<10 {
		*ev.pendBP = ev.pend[:0]
		pendBufs.Put(ev.pendBP)
	}
	ev.pend, ev.pendBP = nil, nil
}
