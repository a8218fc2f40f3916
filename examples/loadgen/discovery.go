package main

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	consul "github.com/hashicorp/consul/api"
)

// instances is one answer of the discovery: the passing instances'
// addresses, sorted, and a version that changes with every new answer.
type instances struct {
	version int
	addrs   []string
}

// discovery keeps the passing instances of a service from a Consul
// blocking query on /v1/health/service/<name>?passing.
type discovery struct {
	client  *consul.Client
	service string
	current atomic.Pointer[instances]
	first   chan struct{}
	once    sync.Once

	mu        sync.Mutex
	firstSeen map[string]time.Time
	lastErr   error
}

func newDiscovery(addr, service string) *discovery {
	cfg := consul.DefaultConfig()
	cfg.Address = addr
	c, err := consul.NewClient(cfg)
	if err != nil {
		fail("loadgen: consul client for %s: %v", addr, err)
	}
	d := &discovery{client: c, service: service, first: make(chan struct{}), firstSeen: map[string]time.Time{}}
	d.current.Store(&instances{})
	return d
}

// run follows the service until ctx ends.
func (d *discovery) run(ctx context.Context) {
	var index uint64
	version := 0
	for ctx.Err() == nil {
		q := (&consul.QueryOptions{WaitIndex: index, WaitTime: 30 * time.Second}).WithContext(ctx)
		entries, meta, err := d.client.Health().Service(d.service, "", true, q)
		if err != nil {
			d.mu.Lock()
			d.lastErr = err
			d.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		// Consul's index rules: never go backwards, never wait on 0.
		if meta.LastIndex < index || meta.LastIndex == 0 {
			index = 0
		} else {
			index = meta.LastIndex
		}
		addrs := make([]string, 0, len(entries))
		for _, e := range entries {
			host := e.Service.Address
			if host == "" {
				host = e.Node.Address
			}
			addrs = append(addrs, net.JoinHostPort(host, strconv.Itoa(e.Service.Port)))
		}
		slices.Sort(addrs)
		now := time.Now()
		d.mu.Lock()
		for _, a := range addrs {
			if _, ok := d.firstSeen[a]; !ok {
				d.firstSeen[a] = now
			}
		}
		d.mu.Unlock()
		if old := d.current.Load(); !slices.Equal(old.addrs, addrs) {
			version++
			d.current.Store(&instances{version: version, addrs: addrs})
		}
		if len(addrs) > 0 {
			d.once.Do(func() { close(d.first) })
		}
	}
}

// waitFirst waits until at least one instance is passing.
func (d *discovery) waitFirst(ctx context.Context, limit time.Duration) error {
	select {
	case <-d.first:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(limit):
		d.mu.Lock()
		defer d.mu.Unlock()
		return fmt.Errorf("no passing instance of %q in Consul after %s (last error: %v)", d.service, limit, d.lastErr)
	}
}

func (d *discovery) seen() map[string]time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]time.Time, len(d.firstSeen))
	for k, v := range d.firstSeen {
		out[k] = v
	}
	return out
}
