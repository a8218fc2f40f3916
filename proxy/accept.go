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

// acceptRetry is the state of one run of failed accepts (an episode): it
// backs off from acceptRetryMin, doubling to acceptRetryMax, and logs the
// episode's start and end once each, not every failure.
type acceptRetry struct {
	delay  time.Duration
	failed int
	since  time.Time
}

// wait logs the start of an episode and sleeps the next backoff step, or
// until ctx ends or the proxy stops.
func (r *acceptRetry) wait(ctx context.Context, p *Proxy, ln net.Listener, err error) {
	r.failed++
	if r.delay == 0 {
		r.delay, r.since = acceptRetryMin, time.Now()
		p.cfg.Log.Warn("proxy cannot accept connections; retrying with backoff until it can",
			"listen", ln.Addr().String(), "err", err)
	} else {
		r.delay = min(2*r.delay, acceptRetryMax)
	}
	t := time.NewTimer(r.delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	case <-p.stop:
	}
}

// recovered ends an episode after an accept succeeded.
func (r *acceptRetry) recovered(p *Proxy, ln net.Listener) {
	if r.delay == 0 {
		return
	}
	p.cfg.Log.Info("proxy accepting connections again", "listen", ln.Addr().String(),
		"failed_accepts", r.failed, "after", time.Since(r.since).Round(time.Millisecond).String())
	*r = acceptRetry{}
}
