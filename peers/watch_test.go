package peers

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestNextIndex(t *testing.T) {
	tests := []struct {
		name      string
		sent, got uint64
		wantNext  uint64
		wantMoved bool
		wantReset bool
	}{
		{name: "first answer", sent: 0, got: 42, wantNext: 42, wantMoved: true},
		{name: "index moves", sent: 42, got: 43, wantNext: 43, wantMoved: true},
		{name: "index stays", sent: 42, got: 42, wantNext: 42},
		{name: "index goes backwards", sent: 42, got: 7, wantNext: 0, wantMoved: true, wantReset: true},
		{name: "zero on the first answer counts as one", sent: 0, got: 0, wantNext: 1, wantMoved: true},
		{name: "zero after one stays one", sent: 1, got: 0, wantNext: 1},
		{name: "zero after a real index is a reset", sent: 42, got: 0, wantNext: 0, wantMoved: true, wantReset: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next, moved, reset := nextIndex(tt.sent, tt.got)
			if next != tt.wantNext || moved != tt.wantMoved || reset != tt.wantReset {
				t.Errorf("nextIndex(%d, %d) = (%d, moved %v, reset %v), want (%d, moved %v, reset %v)",
					tt.sent, tt.got, next, moved, reset, tt.wantNext, tt.wantMoved, tt.wantReset)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	const lo, hi = time.Second, 8 * time.Second
	tests := []struct {
		failures int
		want     time.Duration // before jitter
	}{
		{failures: 1, want: time.Second},
		{failures: 2, want: 2 * time.Second},
		{failures: 3, want: 4 * time.Second},
		{failures: 4, want: 8 * time.Second},
		{failures: 5, want: 8 * time.Second},
		{failures: 60, want: 8 * time.Second},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d failures", tt.failures), func(t *testing.T) {
			for range 200 {
				if got := backoff(tt.failures, lo, hi); got < tt.want/2 || got > tt.want {
					t.Fatalf("backoff(%d) = %s, want within [%s, %s]", tt.failures, got, tt.want/2, tt.want)
				}
			}
		})
	}
}

// TestWatchIndexRules drives a watch through answers with chosen
// X-Consul-Index values and checks the index each next query sends.
func TestWatchIndexRules(t *testing.T) {
	const changed, unchanged = 100 * time.Millisecond, time.Second
	type step struct {
		answer    uint64        // X-Consul-Index of the answer
		wantSleep time.Duration // the wait before the next query
		wantIndex string        // the index parameter of the next query
	}
	tests := []struct {
		name       string
		steps      []step
		wantResets float64
	}{
		{name: "index moves then stays", steps: []step{
			{answer: 5, wantSleep: changed, wantIndex: "5"},
			{answer: 7, wantSleep: changed, wantIndex: "7"},
			{answer: 7, wantSleep: unchanged, wantIndex: "7"},
		}},
		{name: "index going backwards resets to a plain read", wantResets: 1, steps: []step{
			{answer: 10, wantSleep: changed, wantIndex: "10"},
			{answer: 4, wantSleep: changed, wantIndex: ""},
			{answer: 4, wantSleep: changed, wantIndex: "4"},
			{answer: 6, wantSleep: changed, wantIndex: "6"},
		}},
		{name: "zero is never sent back, it counts as one", steps: []step{
			{answer: 0, wantSleep: changed, wantIndex: "1"},
			{answer: 0, wantSleep: unchanged, wantIndex: "1"},
			{answer: 0, wantSleep: unchanged, wantIndex: "1"},
			{answer: 3, wantSleep: changed, wantIndex: "3"},
		}},
		{name: "zero after a real index is a reset, then one", wantResets: 1, steps: []step{
			{answer: 10, wantSleep: changed, wantIndex: "10"},
			{answer: 0, wantSleep: changed, wantIndex: ""},
			{answer: 0, wantSleep: changed, wantIndex: "1"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Options{MinIntervalChanged: changed, MinIntervalUnchanged: unchanged, WaitTime: 2 * time.Minute})
			got := h.get("web")
			q := h.consul.next(t)
			if q.index != "" || !q.passing {
				t.Fatalf("first query: index %q, passing %v; want a plain read of passing instances", q.index, q.passing)
			}
			for i, s := range tt.steps {
				q.reply(s.answer, entry("web-1", "10.0.0.1", "", 8080))
				if i == 0 {
					if r := wait(t, got); r.code != http.StatusOK {
						t.Fatalf("first GET: %d %s", r.code, r.body)
					}
				}
				sl := h.nextSleep(t)
				if sl.D != s.wantSleep {
					t.Errorf("after answer %d (index %d): wait %s, want %s", i, s.answer, sl.D, s.wantSleep)
				}
				h.consul.idle(t, "while the watch waits")
				h.clock.Release(sl)
				q = h.consul.next(t)
				if q.index != s.wantIndex {
					t.Errorf("after answer %d (index %d): next query sends index %q, want %q", i, s.answer, q.index, s.wantIndex)
				}
				if q.index != "" && q.wait != "120000ms" {
					t.Errorf("blocking query sends wait %q, want 120000ms", q.wait)
				}
			}
			if got := testutil.ToFloat64(h.cache.metrics.resets); got != tt.wantResets {
				t.Errorf("outrider_peers_index_resets_total = %v, want %v", got, tt.wantResets)
			}
		})
	}
}

// TestWatchBackoff makes Consul fail again and again: the waits grow,
// are capped, and start over after a success; the last known peers are
// served meanwhile.
func TestWatchBackoff(t *testing.T) {
	h := newHarness(t, Options{RetryMin: time.Second, RetryMax: 8 * time.Second, MinIntervalChanged: 100 * time.Millisecond})
	if r := h.serve(t, "web", 10, entry("web-1", "10.0.0.1", "", 8080)); r.code != http.StatusOK {
		t.Fatalf("first GET: %d %s", r.code, r.body)
	}
	h.clock.Release(h.nextSleep(t))
	q := h.consul.next(t)
	if q.index != "10" {
		t.Fatalf("second query sends index %q, want 10", q.index)
	}
	for i, want := range []time.Duration{1, 2, 4, 8, 8, 8} {
		want *= time.Second
		q.fail(http.StatusInternalServerError)
		s := h.nextSleep(t)
		if s.D < want/2 || s.D > want {
			t.Errorf("wait after failure %d: %s, want within [%s, %s]", i+1, s.D, want/2, want)
		}
		h.consul.idle(t, "while the watch backs off")
		if i == 0 {
			r := wait(t, h.get("web"))
			if r.code != http.StatusOK || r.body != `[{"id":"web-1","address":"10.0.0.1","port":8080,"tags":[],"meta":{}}]`+"\n" {
				t.Errorf("GET while Consul fails: %d %q, want 200 and the last known peers", r.code, r.body)
			}
			if w := r.header.Get("Warning"); w == "" {
				t.Errorf("GET while Consul fails: no Warning header, want the stale warning")
			}
		}
		h.clock.Release(s)
		q = h.consul.next(t)
		if q.index != "" {
			t.Errorf("query after failure %d sends index %q, want a plain read", i+1, q.index)
		}
	}
	q.reply(12, entry("web-1", "10.0.0.1", "", 8080))
	h.clock.Release(h.nextSleep(t))
	q = h.consul.next(t)
	if q.index != "12" {
		t.Errorf("query after recovery sends index %q, want 12", q.index)
	}
	q.fail(http.StatusInternalServerError)
	if s := h.nextSleep(t); s.D < 500*time.Millisecond || s.D > time.Second {
		t.Errorf("wait after the first failure since a success: %s, want within [500ms, 1s]", s.D)
	}
	if got := testutil.ToFloat64(h.cache.metrics.queries.WithLabelValues("error")); got != 7 {
		t.Errorf(`outrider_peers_queries_total{result="error"} = %v, want 7`, got)
	}
}

// TestWatchRateLimit checks the least time between two queries of a
// service, against a Consul that answers at once.
func TestWatchRateLimit(t *testing.T) {
	const changed, unchanged = 100 * time.Millisecond, time.Second
	tests := []struct {
		name      string
		answer    uint64        // after a first answer at index 10
		took      time.Duration // how long the query took on the clock
		wantSleep time.Duration // 0: the next query goes at once
	}{
		{name: "unchanged index waits the unchanged interval", answer: 10, wantSleep: unchanged},
		{name: "moved index waits the changed interval", answer: 11, wantSleep: changed},
		{name: "a query that took part of the interval waits the rest", answer: 10, took: 300 * time.Millisecond, wantSleep: 700 * time.Millisecond},
		{name: "a query that blocked longer than the interval does not wait", answer: 10, took: 5 * time.Minute},
		{name: "a change after a long block does not wait", answer: 11, took: 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Options{MinIntervalChanged: changed, MinIntervalUnchanged: unchanged})
			h.serve(t, "web", 10)
			h.clock.Release(h.nextSleep(t))
			q := h.consul.next(t)
			h.clock.Advance(tt.took)
			q.reply(tt.answer)
			if tt.wantSleep > 0 {
				s := h.nextSleep(t)
				if s.D != tt.wantSleep {
					t.Errorf("wait %s, want %s", s.D, tt.wantSleep)
				}
				h.consul.idle(t, "while the watch waits")
				h.clock.Release(s)
			}
			h.consul.next(t)
			// A wait would have been asked for before the query was sent.
			h.noSleep(t, "before the next query")
		})
	}

	t.Run("a Consul that answers at once costs one query per interval", func(t *testing.T) {
		h := newHarness(t, Options{MinIntervalChanged: changed, MinIntervalUnchanged: unchanged})
		h.serve(t, "web", 10)
		h.clock.Release(h.nextSleep(t))
		start := h.clock.Now()
		const n = 50
		for range n {
			h.consul.next(t).reply(10)
			h.clock.Release(h.nextSleep(t))
		}
		if elapsed := h.clock.Now().Sub(start); elapsed < n*unchanged {
			t.Errorf("%d queries took %s of clock time, want at least %s", n, elapsed, n*unchanged)
		}
		if got := testutil.ToFloat64(h.cache.metrics.queries.WithLabelValues("unchanged")); got != n {
			t.Errorf(`outrider_peers_queries_total{result="unchanged"} = %v, want %d`, got, n)
		}
	})
}
