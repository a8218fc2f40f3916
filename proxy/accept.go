package proxy

import (
	"context"
	"errors"
	"net"
	"syscall"
	"time"
)

// Bounds of the wait between failed accepts, as net/http's server has.
const (
	acceptRetryMin = 5 * time.Millisecond
	acceptRetryMax = time.Second
)

// acceptQuiet is how long accepts must go without failing before an
// episode of failures is over: while descriptors are scarce, accepts
// succeed and fail by turns, and that is still one episode.
const acceptQuiet = time.Second

// temporaryAcceptError reports whether a failed accept may succeed later:
// out of descriptors or kernel memory, or a connection that was reset
// before it could be taken. The listener itself is fine.
func temporaryAcceptError(err error) bool {
	for _, errno := range []syscall.Errno{
		syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EPROTO,
		syscall.EAGAIN, syscall.EINTR, syscall.EPERM,
	} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// acceptRetry is the state of one episode of failed accepts: it backs off
// from acceptRetryMin, doubling to acceptRetryMax, and logs the episode's
// start and end once each, not every failure. A client connection that
// closes meanwhile frees a descriptor and cuts the wait short.
type acceptRetry struct {
	quiet    time.Duration // acceptQuiet; tests shorten it
	active   bool
	delay    time.Duration // the next wait; 0 after an accept succeeded
	failed   int
	since    time.Time
	lastFail time.Time
}

// wait logs the start of an episode and sleeps the next backoff step, or
// until a connection closes, ctx ends or the proxy stops.
func (r *acceptRetry) wait(ctx context.Context, p *Proxy, ln net.Listener, err error) {
	now := time.Now()
	r.failed++
	r.lastFail = now
	switch {
	case !r.active:
		r.active, r.since, r.delay = true, now, acceptRetryMin
		p.acceptFailing.Store(true)
		p.cfg.Log.Warn("proxy cannot accept connections; retrying with backoff until it can",
			"listen", ln.Addr().String(), "err", err)
	case r.delay == 0:
		r.delay = acceptRetryMin
	default:
		r.delay = min(2*r.delay, acceptRetryMax)
	}
	t := time.NewTimer(r.delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-p.acceptWake:
	case <-ctx.Done():
	case <-p.stop:
	}
}

// accepted notes an accept that succeeded; the episode ends, and is
// logged as over, once accepts have not failed for the quiet time.
func (r *acceptRetry) accepted(p *Proxy, ln net.Listener) {
	if !r.active {
		return
	}
	r.delay = 0
	quiet := r.quiet
	if quiet == 0 {
		quiet = acceptQuiet
	}
	if time.Since(r.lastFail) < quiet {
		return
	}
	p.acceptFailing.Store(false)
	p.cfg.Log.Info("proxy accepting connections again", "listen", ln.Addr().String(),
		"failed_accepts", r.failed, "after", r.lastFail.Sub(r.since).Round(time.Millisecond).String())
	*r = acceptRetry{quiet: r.quiet}
}
