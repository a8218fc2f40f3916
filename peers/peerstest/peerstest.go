// Package peerstest reads /v1/peers/{service} for tests of the peer cache
// and of the agent that serves it.
package peerstest

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/outrider-sidecar/outrider/peers"
)

// List GETs u and decodes the peers; anything but 200 fails the test.
func List(t testing.TB, u string) []peers.Peer {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", u, resp.Status)
	}
	var out []peers.Peer
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("GET %s: decode: %v", u, err)
	}
	return out
}

// WaitIDs polls u until it lists exactly ids (sorted), and returns how
// long that took; it fails the test after limit.
func WaitIDs(t testing.TB, u string, ids []string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var got []string
	for time.Since(start) < limit {
		got = got[:0]
		for _, p := range List(t, u) {
			got = append(got, p.ID)
		}
		slices.Sort(got)
		if slices.Equal(got, ids) {
			return time.Since(start)
		}
		<-time.After(5 * time.Millisecond)
	}
	t.Fatalf("GET %s lists %v after %s, want %v", u, got, limit, ids)
	return 0
}
