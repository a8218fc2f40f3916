package peers

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	consul "github.com/hashicorp/consul/api"
)

// watch is the cached answer for one service and the state its
// goroutine shares with the handlers.
type watch struct {
	service string
	cancel  context.CancelFunc
	// ready is closed at the first answer from Consul.
	ready chan struct{}
	// asked is when a request last asked for the service; Cache.mu guards it.
	asked time.Time

	mu       sync.Mutex
	answered bool
	peers    []Peer
	index    uint64
	updated  time.Time
	err      error // of the last query; nil after an answer
	// filtered is set when Consul left out of the last answer what the
	// ACL token may not read.
	filtered bool
}

type watchState struct {
	ready    bool
	peers    []Peer
	index    uint64
	updated  time.Time
	err      error
	filtered bool
}

func (w *watch) snapshot() watchState {
	w.mu.Lock()
	defer w.mu.Unlock()
	return watchState{ready: w.answered, peers: w.peers, index: w.index, updated: w.updated, err: w.err, filtered: w.filtered}
}

func (w *watch) answer(a answer, index uint64, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.peers, w.filtered, w.index, w.updated, w.err = a.peers, a.filtered, index, now, nil
	if !w.answered {
		w.answered = true
		close(w.ready)
	}
}

func (w *watch) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.err = err
}

// watch keeps w fresh with blocking queries until ctx ends or w expires.
func (c *Cache) watch(ctx context.Context, w *watch) {
	log := c.log.With("service", w.service)
	clock := c.opts.Clock
	// index is what the next query sends: 0 for a plain read (the first
	// one, after a reset, after an error), else the last answer's index.
	var index uint64
	failures := 0
	filtered := false // the last answer was, as logged
	for ctx.Err() == nil && !c.expire(w) {
		start := clock.Now()
		ans, got, err := c.query(ctx, w.service, index)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failures++
			c.metrics.queries.WithLabelValues("error").Inc()
			w.fail(err)
			if failures == 1 {
				log.Warn("consul health query failed; serving the last known peers and retrying with backoff", "err", err)
			}
			// A Consul that restarted empty has an index far below ours and
			// would hold a query on ours until WaitTime; read afresh instead.
			index = 0
			if !sleep(ctx, clock, backoff(failures, c.opts.RetryMin, c.opts.RetryMax)) {
				return
			}
			continue
		}
		if failures > 0 {
			log.Info("consul health query works again", "failed_attempts", failures)
			failures = 0
		}
		next, moved, reset := nextIndex(index, got)
		if reset {
			c.metrics.resets.Inc()
			log.Info("consul index went backwards; reading afresh", "sent", index, "got", got)
		}
		minInterval := c.opts.MinIntervalUnchanged
		if moved {
			minInterval = c.opts.MinIntervalChanged
			c.metrics.queries.WithLabelValues("changed").Inc()
		} else {
			c.metrics.queries.WithLabelValues("unchanged").Inc()
		}
		if ans.filtered && !filtered {
			log.Warn("consul left instances out of its answer for want of ACL rights: the token needs service:read on the service and node:read on its nodes")
		}
		filtered = ans.filtered
		w.answer(ans, max(got, 1), clock.Now())
		index = next
		if !sleep(ctx, clock, minInterval-clock.Now().Sub(start)) {
			return
		}
	}
}

// query asks Consul once for the passing instances of service, blocking
// while its index is still index (a plain read when index is 0).
func (c *Cache) query(ctx context.Context, service string, index uint64) (answer, uint64, error) {
	// Consul adds up to WaitTime/16 of jitter; past that and a margin the
	// connection is dead, not blocking.
	ctx, cancel := context.WithTimeout(ctx, c.opts.WaitTime+c.opts.WaitTime/16+10*time.Second)
	defer cancel()
	q := &consul.QueryOptions{WaitIndex: index, WaitTime: c.opts.WaitTime}
	entries, meta, err := c.health.Service(service, "", true, q.WithContext(ctx))
	if err != nil {
		return answer{}, 0, fmt.Errorf("consul health query for service %q at index %d: %w", service, index, err)
	}
	return answer{peers: peersOf(entries), filtered: meta.ResultsFilteredByACLs}, meta.LastIndex, nil
}

// answer is what one health query found.
type answer struct {
	peers []Peer
	// filtered is set when Consul left out what the ACL token may not
	// read (X-Consul-Results-Filtered-By-ACLs).
	filtered bool
}

// nextIndex applies Consul's rules for blocking-query indexes to the index
// sent and the one received: an index below 1 counts as 1, so a buggy 0
// never turns the next query into a plain read; an index that goes
// backwards resets the next query to a plain read (0). moved reports
// whether the state may have changed since sent.
func nextIndex(sent, got uint64) (next uint64, moved, reset bool) {
	got = max(got, 1)
	switch {
	case sent == 0:
		return got, true, false
	case got < sent:
		return 0, true, true
	default:
		return got, got != sent, false
	}
}

// backoff is the wait after the given number of consecutive failures:
// lo doubled for each failure after the first, capped at hi, and
// jittered into [d/2, d] so that many watches do not retry together.
func backoff(failures int, lo, hi time.Duration) time.Duration {
	d := lo
	for i := 1; i < failures && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	return d/2 + rand.N(d/2+1)
}

// sleep waits d on clock and reports whether ctx is still live.
func sleep(ctx context.Context, clock Clock, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	select {
	case <-ctx.Done():
		return false
	case <-clock.After(d):
		return true
	}
}

// peersOf turns Consul's health entries into peers. An instance without
// a service address is reached at its node's address, as Consul's DNS does.
func peersOf(entries []*consul.ServiceEntry) []Peer {
	out := make([]Peer, 0, len(entries))
	for _, e := range entries {
		if e == nil || e.Service == nil {
			continue
		}
		p := Peer{
			ID:      e.Service.ID,
			Address: e.Service.Address,
			Port:    e.Service.Port,
			Tags:    e.Service.Tags,
			Meta:    e.Service.Meta,
		}
		if p.Address == "" && e.Node != nil {
			p.Address = e.Node.Address
		}
		if p.Tags == nil {
			p.Tags = []string{}
		}
		if p.Meta == nil {
			p.Meta = map[string]string{}
		}
		out = append(out, p)
	}
	return out
}
