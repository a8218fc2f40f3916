// Package peers serves the passing instances of Consul services from a
// local cache that Consul blocking queries keep fresh: discovery for apps
// that have no Consul client.
//
// A service is watched from the first request for it on, by one goroutine
// that Cache.Run owns; a watch nobody asked for in a long while stops.
package peers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	consul "github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outrider-sidecar/outrider/internal/clock"
)

// Health is the part of the Consul health API a Cache needs;
// *consul.Health has it.
type Health interface {
	Service(service, tag string, passingOnly bool, q *consul.QueryOptions) ([]*consul.ServiceEntry, *consul.QueryMeta, error)
}

// Clock is the time source of a Cache; tests pass one they drive. The
// rate limit and the backoff of the watches go through its After.
type Clock = clock.Clock

// Options tunes a Cache. A zero field takes the default named beside it.
type Options struct {
	// MaxServices is the most services watched at once (64). A request
	// for one more is refused with 429 until a watch expires.
	MaxServices int
	// IdleAfter stops a watch that no request asked for this long (10m).
	IdleAfter time.Duration
	// FirstWait bounds how long the first request for a service waits
	// for Consul's first answer (5s).
	FirstWait time.Duration
	// WaitTime is how long one blocking query may wait in Consul (5m).
	WaitTime time.Duration
	// MinIntervalChanged is the least time between the starts of two
	// queries for a service after its index moved (100ms): a service that
	// changes all the time costs at most ten queries a second.
	MinIntervalChanged time.Duration
	// MinIntervalUnchanged is the least time between the starts of two
	// queries when the index did not move (1s), so that a Consul that
	// answers at once without a change cannot make a hot loop.
	MinIntervalUnchanged time.Duration
	// RetryMin and RetryMax bound the exponential backoff after a failed
	// query (500ms, 15s); each wait is jittered down to half its value.
	RetryMin, RetryMax time.Duration
	// Clock is the time source (the system clock).
	Clock Clock
	// Log receives state changes, never one line per query (discarded).
	Log *slog.Logger
}

func (o Options) withDefaults() Options {
	setInt := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	setDur := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	setInt(&o.MaxServices, 64)
	setDur(&o.IdleAfter, 10*time.Minute)
	setDur(&o.FirstWait, 5*time.Second)
	setDur(&o.WaitTime, 5*time.Minute)
	setDur(&o.MinIntervalChanged, 100*time.Millisecond)
	setDur(&o.MinIntervalUnchanged, time.Second)
	setDur(&o.RetryMin, 500*time.Millisecond)
	setDur(&o.RetryMax, 15*time.Second)
	if o.RetryMax < o.RetryMin {
		o.RetryMax = o.RetryMin
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}

// ErrTooManyServices is returned when MaxServices services are watched
// already and none of them is idle.
var ErrTooManyServices = errors.New("too many watched services")

// Peer is one passing instance of a service.
type Peer struct {
	ID      string            `json:"id"`
	Address string            `json:"address"`
	Port    int               `json:"port"`
	Tags    []string          `json:"tags"`
	Meta    map[string]string `json:"meta"`
}

// Cache holds the passing instances of the services asked for, each kept
// fresh by its own watch. The zero value is not usable; call New.
type Cache struct {
	health  Health
	opts    Options
	log     *slog.Logger
	metrics *metrics
	// asks carries requests for a new watch from handlers to Run, which
	// owns every watch goroutine.
	asks chan ask

	mu      sync.Mutex
	watches map[string]*watch
}

type ask struct {
	service string
	reply   chan askReply
}

type askReply struct {
	w   *watch
	err error
}

// New returns a cache that queries health and registers its metrics
// with reg. Nothing is watched until Run runs and a request asks.
func New(health Health, reg prometheus.Registerer, opts Options) (*Cache, error) {
	opts = opts.withDefaults()
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Cache{
		health:  health,
		opts:    opts,
		log:     opts.Log,
		metrics: m,
		asks:    make(chan ask),
		watches: map[string]*watch{},
	}, nil
}

// Run starts the watches that requests ask for until ctx ends, then stops
// them all and waits for them. It returns nil.
func (c *Cache) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		wg.Wait()
		c.mu.Lock()
		clear(c.watches)
		c.metrics.watched.Set(0)
		c.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case a := <-c.asks:
			w, err := c.startWatch(ctx, &wg, a.service)
			a.reply <- askReply{w: w, err: err}
		}
	}
}

// startWatch returns the watch of service, starting one if there is none
// and the bound allows it.
func (c *Cache) startWatch(ctx context.Context, wg *sync.WaitGroup, service string) (*watch, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.opts.Clock.Now()
	if w := c.liveLocked(service, now); w != nil {
		return w, nil
	}
	if len(c.watches) >= c.opts.MaxServices {
		for _, w := range c.watches {
			if now.Sub(w.asked) >= c.opts.IdleAfter {
				c.stopLocked(w, now)
			}
		}
	}
	if len(c.watches) >= c.opts.MaxServices {
		return nil, fmt.Errorf("watch service %q: %w: %d already, the most allowed; a watch stops after %s without requests",
			service, ErrTooManyServices, len(c.watches), c.opts.IdleAfter)
	}
	wctx, cancel := context.WithCancel(ctx)
	w := &watch{service: service, asked: now, ready: make(chan struct{}), cancel: cancel}
	c.watches[service] = w
	c.metrics.watched.Set(float64(len(c.watches)))
	c.log.Info("watching a service for peer requests", "service", service)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer cancel()
		c.watch(wctx, w)
	}()
	return w, nil
}

// lookup returns the live watch of service, or nil.
func (c *Cache) lookup(service string) *watch {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.liveLocked(service, c.opts.Clock.Now())
}

// liveLocked returns the watch of service and notes the request, or nil
// if there is none. A watch idle for IdleAfter is stopped here if its
// goroutine has not noticed yet, so that a request never revives a watch
// that is about to stop. c.mu is held.
func (c *Cache) liveLocked(service string, now time.Time) *watch {
	w := c.watches[service]
	if w == nil {
		return nil
	}
	if now.Sub(w.asked) >= c.opts.IdleAfter {
		c.stopLocked(w, now)
		return nil
	}
	w.asked = now
	return w
}

// stopLocked removes w and cancels its goroutine. c.mu is held.
func (c *Cache) stopLocked(w *watch, now time.Time) {
	if c.watches[w.service] != w {
		return
	}
	delete(c.watches, w.service)
	w.cancel()
	c.metrics.watched.Set(float64(len(c.watches)))
	c.log.Info("stopped watching an idle service", "service", w.service, "idle", now.Sub(w.asked).String())
}

// expire stops w if no request asked for it in IdleAfter and reports
// whether it did.
func (c *Cache) expire(w *watch) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.opts.Clock.Now()
	if now.Sub(w.asked) < c.opts.IdleAfter {
		return false
	}
	c.stopLocked(w, now)
	return true
}

// ServiceStatus is what Status tells about one watched service.
type ServiceStatus struct {
	Service   string    `json:"service"`
	Ready     bool      `json:"ready"`
	Instances int       `json:"instances"`
	Index     uint64    `json:"index"`
	Updated   time.Time `json:"updated,omitzero"`
	LastError string    `json:"last_error,omitempty"`
}

// Status describes every watched service, for /status.
func (c *Cache) Status() []ServiceStatus {
	c.mu.Lock()
	ws := make([]*watch, 0, len(c.watches))
	for _, w := range c.watches {
		ws = append(ws, w)
	}
	c.mu.Unlock()
	out := make([]ServiceStatus, 0, len(ws))
	for _, w := range ws {
		s := w.snapshot()
		st := ServiceStatus{Service: w.service, Ready: s.ready, Instances: len(s.peers), Index: s.index, Updated: s.updated}
		if s.err != nil {
			st.LastError = s.err.Error()
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b ServiceStatus) int { return strings.Compare(a.Service, b.Service) })
	return out
}
