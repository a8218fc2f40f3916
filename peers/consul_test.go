package peers_test

import (
	"context"
	"io"
	"log"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outrider-sidecar/outrider/internal/consultest"
	"github.com/outrider-sidecar/outrider/peers"
	"github.com/outrider-sidecar/outrider/peers/peerstest"
)

// bound only turns a hang into a failure.
const bound = 10 * time.Second

// TestCacheFollowsConsul runs a Cache against a real Consul through a
// proxy that counts the health queries.
func TestCacheFollowsConsul(t *testing.T) {
	srv := consultest.Start(t)
	admin := srv.Client().Agent()

	target, err := url.Parse(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	var (
		queries atomic.Int64
		mu      sync.Mutex
		indexes []string // of each health query, the index it blocks on
	)
	forward := httputil.NewSingleHostReverseProxy(target)
	forward.ErrorLog = log.New(io.Discard, "", 0) // the cancelled query at the end
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/health/service/") {
			queries.Add(1)
			mu.Lock()
			indexes = append(indexes, r.URL.Query().Get("index"))
			mu.Unlock()
		}
		forward.ServeHTTP(w, r)
	}))
	t.Cleanup(proxy.Close)

	client, err := consul.NewClient(&consul.Config{Address: proxy.URL})
	if err != nil {
		t.Fatal(err)
	}
	cache, err := peers.New(client.Health(), prometheus.NewRegistry(), peers.Options{})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /v1/peers/{service}", cache)
	web := httptest.NewServer(mux)
	t.Cleanup(web.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cache.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(bound):
			t.Errorf("Run did not return within %s", bound)
		}
	})

	// The first instance has no address of its own and no check.
	if err := admin.ServiceRegister(&consul.AgentServiceRegistration{ID: "web-1", Name: "web", Port: 8080, Tags: []string{"v1"}}); err != nil {
		t.Fatalf("register web-1: %v", err)
	}
	got := peerstest.List(t, web.URL+"/v1/peers/web")
	want := []peers.Peer{{ID: "web-1", Address: "127.0.0.1", Port: 8080, Tags: []string{"v1"}, Meta: map[string]string{}}}
	if !peersEqual(got, want) {
		t.Fatalf("first GET = %+v, want %+v", got, want)
	}

	steps := []struct {
		name    string
		do      func() error
		wantIDs []string
	}{
		{
			name: "a second instance registers, passing",
			do: func() error {
				return admin.ServiceRegister(&consul.AgentServiceRegistration{
					ID: "web-2", Name: "web", Address: "10.1.2.3", Port: 9090, Meta: map[string]string{"zone": "b"},
					Check: &consul.AgentServiceCheck{CheckID: "web-2-ttl", TTL: "1m", Status: consul.HealthPassing},
				})
			},
			wantIDs: []string{"web-1", "web-2"},
		},
		{
			name:    "its check turns critical",
			do:      func() error { return admin.UpdateTTL("web-2-ttl", "down", consul.HealthCritical) },
			wantIDs: []string{"web-1"},
		},
		{
			name:    "its check passes again",
			do:      func() error { return admin.UpdateTTL("web-2-ttl", "up", consul.HealthPassing) },
			wantIDs: []string{"web-1", "web-2"},
		},
		{
			name:    "it deregisters",
			do:      func() error { return admin.ServiceDeregister("web-2") },
			wantIDs: []string{"web-1"},
		},
	}
	for _, s := range steps {
		before := queries.Load()
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		took := peerstest.WaitIDs(t, web.URL+"/v1/peers/web", s.wantIDs, time.Second)
		t.Logf("%s: seen after %s, %d health queries", s.name, took.Round(time.Millisecond), queries.Load()-before)
	}

	// Quiet: many requests, no change of ours in Consul, hardly any
	// query. Each query is a blocking one, on an index the one before it
	// did not ask for: the cache asks again only when Consul's index for
	// the service moved (after the last change, which it waits
	// MinIntervalChanged to follow, or a move of Consul's own, such as its
	// anti-entropy sync, which a loaded machine can put in these 2 s), and
	// never for a request to outrider.
	mu.Lock()
	before := len(indexes)
	mu.Unlock()
	requests := 0
	for start := time.Now(); time.Since(start) < 2*time.Second; requests++ {
		peerstest.List(t, web.URL+"/v1/peers/web")
	}
	mu.Lock()
	quiet := slices.Clone(indexes[before:])
	last := indexes[max(before-1, 0)]
	mu.Unlock()
	t.Logf("quiet 2s: %d requests to outrider, health queries to Consul on the indexes %q (before them: %q); %d queries in all", requests, quiet, last, queries.Load())
	if len(quiet) > 3 {
		t.Errorf("%d health queries during 2s without changes, want at most a few", len(quiet))
	}
	for _, idx := range quiet {
		if idx == "" || idx == "0" || idx == last {
			t.Errorf("health query on the index %q after one on %q: want each a blocking query on an index not asked for before", idx, last)
		}
		last = idx
	}
}

func peersEqual(a, b []peers.Peer) bool {
	return slices.EqualFunc(a, b, func(x, y peers.Peer) bool {
		return x.ID == y.ID && x.Address == y.Address && x.Port == y.Port &&
			slices.Equal(x.Tags, y.Tags) && maps.Equal(x.Meta, y.Meta)
	})
}
