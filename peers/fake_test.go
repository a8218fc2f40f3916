package peers

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outrider-sidecar/outrider/internal/clock"
)

// bound is how long a test waits for something that should happen at
// once; it only turns a hang into a failure.
const bound = 10 * time.Second

// fakeConsul answers /v1/health/service/{service} with what the test
// chooses, one query at a time.
type fakeConsul struct {
	srv     *httptest.Server
	queries chan *fakeQuery
}

// fakeQuery is one health query that waits for the test's answer.
type fakeQuery struct {
	service string
	index   string // the index parameter; "" for a plain read
	wait    string
	passing bool
	ctx     context.Context // done when the client gives up
	answers chan fakeAnswer
}

type fakeAnswer struct {
	status   int
	index    uint64
	entries  []*consul.ServiceEntry
	filtered bool // what the ACL token may not read was left out
}

func newFakeConsul(t *testing.T) *fakeConsul {
	f := &fakeConsul{queries: make(chan *fakeQuery, 64)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/health/service/{service}", func(w http.ResponseWriter, r *http.Request) {
		q := &fakeQuery{
			service: r.PathValue("service"),
			index:   r.URL.Query().Get("index"),
			wait:    r.URL.Query().Get("wait"),
			passing: r.URL.Query().Has("passing"),
			ctx:     r.Context(),
			answers: make(chan fakeAnswer, 1),
		}
		f.queries <- q
		var a fakeAnswer
		select {
		case a = <-q.answers:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("X-Consul-Index", strconv.FormatUint(a.index, 10))
		// As Consul sends them: consul/api reads the headers after these
		// only when these parse.
		w.Header().Set("X-Consul-LastContact", "0")
		w.Header().Set("X-Consul-KnownLeader", "true")
		if a.filtered {
			w.Header().Set("X-Consul-Results-Filtered-By-ACLs", "true")
		}
		if a.status != http.StatusOK {
			w.WriteHeader(a.status)
			_, _ = io.WriteString(w, "fake consul error")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(a.entries)
	})
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

// next returns the next query the fake received.
func (f *fakeConsul) next(t *testing.T) *fakeQuery {
	t.Helper()
	select {
	case q := <-f.queries:
		return q
	case <-time.After(bound):
		t.Fatalf("no query reached the fake Consul within %s", bound)
		return nil
	}
}

// idle fails the test if a query is waiting at the fake now.
func (f *fakeConsul) idle(t *testing.T, why string) {
	t.Helper()
	select {
	case q := <-f.queries:
		t.Fatalf("%s: got a query for %q at index %q, want none", why, q.service, q.index)
	default:
	}
}

func (q *fakeQuery) reply(index uint64, entries ...*consul.ServiceEntry) {
	q.answers <- fakeAnswer{status: http.StatusOK, index: index, entries: entries}
}

// replyFiltered answers as Consul does when the ACL token may not read
// every instance: what it may, marked filtered.
func (q *fakeQuery) replyFiltered(index uint64, entries ...*consul.ServiceEntry) {
	q.answers <- fakeAnswer{status: http.StatusOK, index: index, entries: entries, filtered: true}
}

func (q *fakeQuery) fail(status int) {
	q.answers <- fakeAnswer{status: status}
}

func entry(id, nodeAddr, addr string, port int) *consul.ServiceEntry {
	return &consul.ServiceEntry{
		Node:    &consul.Node{Node: "node-" + id, Address: nodeAddr},
		Service: &consul.AgentService{ID: id, Service: "web", Address: addr, Port: port},
	}
}

// harness is a Cache running against a fake Consul on a fake clock, with
// its handler mounted the way cmd/agent mounts it.
type harness struct {
	consul *fakeConsul
	// clock holds every wait until the test releases it; the waits of
	// firstWait (the handlers') are told apart from the others (the
	// watches') by their length.
	clock     *clock.Fake
	firstWait time.Duration
	cache     *Cache
	reg       *prometheus.Registry
	url       string
	stop      func() // cancels Run and waits for it
}

func newHarness(t *testing.T, opts Options) *harness {
	t.Helper()
	h := startHarness(t, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.cache.Run(ctx) }()
	var once sync.Once
	h.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v, want nil", err)
				}
			case <-time.After(bound):
				t.Errorf("Run did not return within %s of its context ending", bound)
			}
		})
	}
	t.Cleanup(h.stop)
	return h
}

// startHarness builds the harness without running the cache.
func startHarness(t *testing.T, opts Options) *harness {
	t.Helper()
	if opts.FirstWait == 0 {
		// Longer than any other wait, so that the fake clock tells them apart.
		opts.FirstWait = time.Hour
	}
	h := &harness{
		consul:    newFakeConsul(t),
		clock:     clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)),
		firstWait: opts.FirstWait,
		reg:       prometheus.NewRegistry(),
	}
	h.clock.HoldWaits()
	opts.Clock = h.clock
	client, err := consul.NewClient(&consul.Config{Address: h.consul.srv.URL})
	if err != nil {
		t.Fatalf("consul client: %v", err)
	}
	h.cache, err = New(client.Health(), h.reg, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /v1/peers/{service}", h.cache)
	web := httptest.NewServer(mux)
	t.Cleanup(web.Close)
	t.Cleanup(h.clock.Stop)
	h.url = web.URL + "/v1/peers/"
	return h
}

type response struct {
	code   int
	body   string
	header http.Header
	err    error
}

// get asks for the peers of service in the background.
func (h *harness) get(service string) <-chan response {
	out := make(chan response, 1)
	go func() {
		resp, err := http.Get(h.url + service)
		if err != nil {
			out <- response{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		out <- response{code: resp.StatusCode, body: string(b), header: resp.Header, err: err}
	}()
	return out
}

func wait(t *testing.T, c <-chan response) response {
	t.Helper()
	select {
	case r := <-c:
		if r.err != nil {
			t.Fatalf("GET: %v", r.err)
		}
		return r
	case <-time.After(bound):
		t.Fatalf("no answer from the peers handler within %s", bound)
		return response{}
	}
}

// serve starts a watch of service with a first answer of index and
// entries, and returns the first response.
func (h *harness) serve(t *testing.T, service string, index uint64, entries ...*consul.ServiceEntry) response {
	t.Helper()
	got := h.get(service)
	q := h.consul.next(t)
	if q.service != service {
		t.Fatalf("query for %q, want %q", q.service, service)
	}
	q.reply(index, entries...)
	r := wait(t, got)
	h.nextFirstWait(t) // the bound on the first answer, unused
	return r
}

func (h *harness) isFirstWait(w *clock.Wait) bool { return w.D == h.firstWait }

func (h *harness) isSleep(w *clock.Wait) bool { return w.D != h.firstWait }

// nextSleep returns the next wait a watch asked for.
func (h *harness) nextSleep(t *testing.T) *clock.Wait {
	t.Helper()
	return h.clock.NextWaitFunc(t, h.isSleep)
}

// nextFirstWait returns the next first-answer wait a handler started.
func (h *harness) nextFirstWait(t *testing.T) *clock.Wait {
	t.Helper()
	return h.clock.NextWaitFunc(t, h.isFirstWait)
}

// noSleep fails the test if a watch is waiting on the clock now.
func (h *harness) noSleep(t *testing.T, why string) {
	t.Helper()
	if s, ok := h.clock.TakeWait(h.isSleep); ok {
		t.Fatalf("%s: a watch waits %s, want no wait", why, s.D)
	}
}
