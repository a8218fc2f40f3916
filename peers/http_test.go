package peers

import (
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outrider-sidecar/outrider/internal/clock"
	"github.com/outrider-sidecar/outrider/internal/testlog"
)

func TestServeFirstAnswer(t *testing.T) {
	h := newHarness(t, Options{})
	got := h.get("web")
	q := h.consul.next(t)
	select {
	case r := <-got:
		t.Fatalf("GET answered %d %q before Consul did, want it to wait for the first answer", r.code, r.body)
	default:
	}
	web2 := entry("web-2", "10.0.0.2", "192.168.1.2", 9090)
	web2.Service.Tags = []string{"v2", "canary"}
	web2.Service.Meta = map[string]string{"zone": "b"}
	q.reply(17, entry("web-1", "10.0.0.1", "", 8080), web2)
	r := wait(t, got)
	const want = `[{"id":"web-1","address":"10.0.0.1","port":8080,"tags":[],"meta":{}},` +
		`{"id":"web-2","address":"192.168.1.2","port":9090,"tags":["v2","canary"],"meta":{"zone":"b"}}]` + "\n"
	if r.code != http.StatusOK || r.body != want {
		t.Errorf("GET /v1/peers/web = %d %q, want 200 %q", r.code, r.body, want)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	if idx := r.header.Get("X-Consul-Index"); idx != "17" {
		t.Errorf("X-Consul-Index = %q, want 17", idx)
	}

	// Later requests are answered from the cache, not by Consul.
	for range 20 {
		if r := wait(t, h.get("web")); r.code != http.StatusOK || r.body != want {
			t.Fatalf("GET again = %d %q, want 200 %q", r.code, r.body, want)
		}
	}
	h.consul.idle(t, "after 20 requests answered from the cache")

	// An empty service is an empty list once Consul has said so.
	if r := h.serve(t, "nobody", 3); r.code != http.StatusOK || r.body != "[]\n" {
		t.Errorf("GET /v1/peers/nobody = %d %q, want 200 []", r.code, r.body)
	}
}

// TestServeSaysWhatACLsLeftOut: an answer Consul filtered by the ACL
// token is served with Consul's own header saying so, and logged once,
// not at every query; an answer that is whole again drops the header.
func TestServeSaysWhatACLsLeftOut(t *testing.T) {
	var buf testlog.Buffer
	h := newHarness(t, Options{Log: slog.New(slog.NewTextHandler(&buf, nil)),
		MinIntervalChanged: time.Second, MinIntervalUnchanged: time.Second})
	const header = "X-Consul-Results-Filtered-By-ACLs"
	got := h.get("web")
	q := h.consul.next(t)
	q.replyFiltered(5, entry("web-1", "10.0.0.1", "", 8080))
	if r := wait(t, got); r.code != http.StatusOK || r.header.Get(header) != "true" {
		t.Errorf("GET = %d, %s %q; want 200 and %s: true", r.code, header, r.header.Get(header), header)
	}
	for index := uint64(6); index <= 7; index++ {
		h.clock.Release(h.nextSleep(t))
		h.consul.next(t).replyFiltered(index, entry("web-1", "10.0.0.1", "", 8080))
	}
	h.clock.Release(h.nextSleep(t))
	const logged = "consul left instances out of its answer for want of ACL rights"
	if n := buf.Count(logged); n != 1 {
		t.Errorf("logged %d times over 3 filtered answers, want once:\n%s", n, buf.String())
	}

	h.consul.next(t).reply(8, entry("web-1", "10.0.0.1", "", 8080), entry("web-2", "10.0.0.2", "", 8080))
	h.nextSleep(t)
	if r := wait(t, h.get("web")); r.header.Get(header) != "" || !strings.Contains(r.body, "web-2") {
		t.Errorf("GET after a whole answer = %q with %s %q, want web-2 and no header", r.body, header, r.header.Get(header))
	}
}

func TestServeBadNames(t *testing.T) {
	tests := []struct {
		name string
		path string // escaped, after /v1/peers/
	}{
		{name: "leading dash", path: "-web"},
		{name: "leading dot", path: ".web"},
		{name: "punctuation", path: "web!"},
		{name: "space", path: "we%20b"},
		{name: "escaped slash", path: "web%2Fadmin"},
		{name: "non-ascii", path: url.PathEscape("wéb")},
		{name: "query-like", path: "web%3Fpassing"},
		{name: "too long", path: strings.Repeat("a", 254)},
	}
	h := newHarness(t, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := wait(t, h.get(tt.path))
			if r.code != http.StatusBadRequest || !strings.Contains(r.body, "invalid service name") {
				t.Errorf("GET /v1/peers/%s = %d %q, want 400 invalid service name", tt.path, r.code, r.body)
			}
		})
	}
	h.consul.idle(t, "after bad names only")
	if got := testutil.ToFloat64(h.cache.metrics.watched); got != 0 {
		t.Errorf("outrider_peers_watched_services = %v, want 0", got)
	}
	// The longest valid name is accepted.
	if r := h.serve(t, strings.Repeat("a", 253), 1); r.code != http.StatusOK {
		t.Errorf("GET a 253-character name = %d %q, want 200", r.code, r.body)
	}
}

// TestServeRefusesQueryParameters: the endpoint has no filters and no
// blocking queries, so a parameter that would ask for one (as Consul's own
// API takes them) is refused rather than answered with every instance at
// once.
func TestServeRefusesQueryParameters(t *testing.T) {
	h := newHarness(t, Options{})
	blue := entry("web-1", "10.0.0.1", "", 8080)
	blue.Service.Tags = []string{"blue"}
	green := entry("web-2", "10.0.0.2", "", 8080)
	green.Service.Tags = []string{"green"}
	if r := h.serve(t, "web", 5, blue, green); r.code != http.StatusOK {
		t.Fatalf("GET /v1/peers/web = %d %q, want 200", r.code, r.body)
	}
	tests := []struct {
		name     string
		path     string // after /v1/peers/
		wantCode int
		wantBody string
	}{
		{name: "tag filter", path: "web?tag=blue", wantCode: http.StatusBadRequest, wantBody: `query parameters ["tag"]`},
		{name: "blocking query", path: "web?index=5&wait=5m", wantCode: http.StatusBadRequest, wantBody: `query parameters ["index" "wait"]`},
		{name: "datacenter", path: "web?dc=eu", wantCode: http.StatusBadRequest, wantBody: `query parameters ["dc"]`},
		{name: "flag", path: "web?passing", wantCode: http.StatusBadRequest, wantBody: `query parameters ["passing"]`},
		{name: "unreadable query", path: "web?%zz", wantCode: http.StatusBadRequest, wantBody: `query parameters ["%zz"]`},
		{name: "service not watched yet", path: "api?tag=blue", wantCode: http.StatusBadRequest, wantBody: `query parameters ["tag"]`},
		{name: "empty query", path: "web?", wantCode: http.StatusOK, wantBody: `"web-2"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := wait(t, h.get(tt.path))
			if r.code != tt.wantCode || !strings.Contains(r.body, tt.wantBody) {
				t.Errorf("GET /v1/peers/%s = %d %q, want %d and %q", tt.path, r.code, r.body, tt.wantCode, tt.wantBody)
			}
		})
	}
	h.consul.idle(t, "after requests with query parameters")
	if got := testutil.ToFloat64(h.cache.metrics.watched); got != 1 {
		t.Errorf("outrider_peers_watched_services = %v, want 1", got)
	}
	if got := testutil.ToFloat64(h.cache.metrics.requests.WithLabelValues("400")); got != 6 {
		t.Errorf(`outrider_peers_requests_total{code="400"} = %v, want 6`, got)
	}
}

func TestServeTooManyServices(t *testing.T) {
	h := newHarness(t, Options{MaxServices: 2})
	for _, s := range []string{"a", "b"} {
		if r := h.serve(t, s, 1); r.code != http.StatusOK {
			t.Fatalf("GET %s = %d %q, want 200", s, r.code, r.body)
		}
	}
	r := wait(t, h.get("c"))
	if r.code != http.StatusTooManyRequests || !strings.Contains(r.body, "too many watched services: 2 already") {
		t.Errorf("GET a third service = %d %q, want 429 naming the bound", r.code, r.body)
	}
	h.consul.idle(t, "after a refused service")
	if r := wait(t, h.get("a")); r.code != http.StatusOK {
		t.Errorf("GET a watched service at the bound = %d %q, want 200", r.code, r.body)
	}
	if got := testutil.ToFloat64(h.cache.metrics.watched); got != 2 {
		t.Errorf("outrider_peers_watched_services = %v, want 2", got)
	}
	if got := testutil.ToFloat64(h.cache.metrics.requests.WithLabelValues("429")); got != 1 {
		t.Errorf(`outrider_peers_requests_total{code="429"} = %v, want 1`, got)
	}
}

func TestServeFirstWait(t *testing.T) {
	tests := []struct {
		name     string
		run      bool
		consul   func(q *fakeQuery) // what Consul does with the first query
		wantCode int
		wantBody string
	}{
		{
			name: "Consul does not answer", run: true,
			consul:   func(*fakeQuery) {},
			wantCode: http.StatusGatewayTimeout,
			wantBody: `no peers for service "web" yet: Consul has not answered within 5s`,
		},
		{
			name: "Consul fails", run: true,
			consul:   func(q *fakeQuery) { q.fail(http.StatusForbidden) },
			wantCode: http.StatusServiceUnavailable,
			wantBody: `Consul has not answered within 5s; last error: consul health query for service "web" at index 0: Unexpected response code: 403`,
		},
		{
			name:     "the cache is not running",
			wantCode: http.StatusServiceUnavailable,
			wantBody: `service "web": the peer cache is not running`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := Options{FirstWait: 5 * time.Second, RetryMin: time.Second, RetryMax: time.Second}
			var h *harness
			if tt.run {
				h = newHarness(t, opts)
			} else {
				h = startHarness(t, opts)
			}
			got := h.get("web")
			if tt.consul != nil {
				q := h.consul.next(t)
				tt.consul(q)
				if q.index != "" {
					t.Errorf("first query sends index %q, want a plain read", q.index)
				}
			}
			if tt.wantCode == http.StatusServiceUnavailable && tt.run {
				h.nextSleep(t) // the watch backs off; the handler waits on
			}
			select {
			case r := <-got:
				t.Fatalf("GET answered %d %q before its wait ended", r.code, r.body)
			default:
			}
			h.clock.Release(h.nextFirstWait(t))
			r := wait(t, got)
			if r.code != tt.wantCode || !strings.Contains(r.body, tt.wantBody) {
				t.Errorf("GET = %d %q, want %d containing %q", r.code, r.body, tt.wantCode, tt.wantBody)
			}
		})
	}
}

func TestIdleWatches(t *testing.T) {
	const idle = 10 * time.Minute
	t.Run("a request after the idle time starts a fresh watch", func(t *testing.T) {
		h := newHarness(t, Options{IdleAfter: idle})
		h.serve(t, "web", 5, entry("web-1", "10.0.0.1", "", 8080))
		h.nextSleep(t) // the old watch waits, and is never released
		h.clock.Advance(idle)
		got := h.get("web")
		q := h.consul.next(t)
		if q.index != "" {
			t.Errorf("query after the idle time sends index %q, want a plain read by a new watch", q.index)
		}
		q.reply(6)
		if r := wait(t, got); r.code != http.StatusOK || r.body != "[]\n" {
			t.Errorf("GET = %d %q, want 200 [] from the new watch", r.code, r.body)
		}
		if got := testutil.ToFloat64(h.cache.metrics.watched); got != 1 {
			t.Errorf("outrider_peers_watched_services = %v, want 1", got)
		}
	})

	t.Run("an idle watch makes room for another service", func(t *testing.T) {
		h := newHarness(t, Options{IdleAfter: idle, MaxServices: 1})
		h.serve(t, "a", 5)
		h.clock.Advance(idle - time.Second)
		if r := wait(t, h.get("b")); r.code != http.StatusTooManyRequests {
			t.Fatalf("GET b before a is idle = %d %q, want 429", r.code, r.body)
		}
		h.clock.Advance(time.Second)
		if r := h.serve(t, "b", 7); r.code != http.StatusOK {
			t.Fatalf("GET b once a is idle = %d %q, want 200", r.code, r.body)
		}
		if r := wait(t, h.get("a")); r.code != http.StatusTooManyRequests {
			t.Errorf("GET a after it was stopped = %d %q, want 429: b holds the only place", r.code, r.body)
		}
	})

	t.Run("a watch that wakes idle stops without querying", func(t *testing.T) {
		h := newHarness(t, Options{IdleAfter: idle})
		h.serve(t, "web", 5)
		s := h.nextSleep(t)
		h.clock.Advance(idle)
		h.clock.Release(s)
		deadline := time.Now().Add(bound)
		for len(h.cache.Status()) != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("watch still listed %s after waking idle: %+v", bound, h.cache.Status())
			}
			select {
			case q := <-h.consul.queries:
				t.Fatalf("idle watch sent a query at index %q, want none", q.index)
			case <-time.After(time.Millisecond):
			}
		}
		h.consul.idle(t, "after the idle watch stopped")
		if got := testutil.ToFloat64(h.cache.metrics.watched); got != 0 {
			t.Errorf("outrider_peers_watched_services = %v, want 0", got)
		}
	})
}

// TestRunStopsWatches checks that Run owns the watches: when its context
// ends it cancels their queries and returns only once they have stopped.
func TestRunStopsWatches(t *testing.T) {
	h := newHarness(t, Options{})
	services := []string{"a", "b", "c"}
	for _, s := range services {
		h.serve(t, s, 5)
	}
	// Take every watch's rate-limit wait before releasing any: a release
	// moves the shared fake clock, and a watch that had not asked yet would
	// then find its interval over and ask for no wait at all.
	var sleeps []*clock.Wait
	for range services {
		sleeps = append(sleeps, h.nextSleep(t))
	}
	for _, s := range sleeps {
		h.clock.Release(s)
	}
	var blocking []*fakeQuery
	for range services {
		q := h.consul.next(t)
		if q.index != "5" {
			t.Fatalf("query for %s sends index %q, want a blocking query at 5", q.service, q.index)
		}
		blocking = append(blocking, q)
	}
	h.stop()
	for _, q := range blocking {
		// The fake sees the client hang up a moment after it does.
		select {
		case <-q.ctx.Done():
		case <-time.After(bound):
			t.Errorf("blocking query for %s still open %s after Run returned", q.service, bound)
		}
	}
	if got := testutil.ToFloat64(h.cache.metrics.watched); got != 0 {
		t.Errorf("outrider_peers_watched_services = %v after Run returned, want 0", got)
	}
	got := h.get("a")
	h.clock.Release(h.nextFirstWait(t))
	if r := wait(t, got); r.code != http.StatusServiceUnavailable || !strings.Contains(r.body, "not running") {
		t.Errorf("GET after Run returned = %d %q, want 503 not running", r.code, r.body)
	}
}

func TestMetricsLint(t *testing.T) {
	h := newHarness(t, Options{})
	h.serve(t, "web", 5, entry("web-1", "10.0.0.1", "", 8080))
	wait(t, h.get("-bad"))
	problems, err := testutil.GatherAndLint(h.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
	m := h.cache.metrics
	for _, c := range []prometheus.Collector{m.watched, m.queries, m.resets, m.requests} {
		problems, err := testutil.CollectAndLint(c)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("metric %s: %s", p.Metric, p.Text)
		}
	}
	const want = `
# HELP outrider_peers_requests_total Requests to /v1/peers/{service}, by HTTP status code.
# TYPE outrider_peers_requests_total counter
outrider_peers_requests_total{code="200"} 1
outrider_peers_requests_total{code="400"} 1
outrider_peers_requests_total{code="429"} 0
outrider_peers_requests_total{code="503"} 0
outrider_peers_requests_total{code="504"} 0
# HELP outrider_peers_watched_services Services whose passing instances outrider keeps in its peer cache.
# TYPE outrider_peers_watched_services gauge
outrider_peers_watched_services 1
`
	if err := testutil.GatherAndCompare(h.reg, strings.NewReader(want),
		"outrider_peers_requests_total", "outrider_peers_watched_services"); err != nil {
		t.Error(err)
	}
}

func TestNewRefusesDuplicateMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	client, err := consul.NewClient(consul.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(client.Health(), reg, Options{}); err != nil {
		t.Fatalf("first New: %v", err)
	}
	if _, err := New(client.Health(), reg, Options{}); err == nil || !strings.Contains(err.Error(), "register peer cache metrics") {
		t.Errorf("second New on the same registry: error %v, want a registration error", err)
	}
}
