package main

import (
	"bufio"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outrider-sidecar/outrider/internal/testbin"
)

// outrider is a running bin/outrider with its metrics and admin listeners
// on free loopback ports.
type outrider struct {
	*testbin.Proc
	metrics, admin string // base URLs, http://host:port
}

// launchOutrider starts bin/outrider without a registry or proxy, with
// its listeners on free ports; env adds to or overrides that. It does not
// wait for outrider to answer.
func launchOutrider(t *testing.T, env ...string) outrider {
	t.Helper()
	metrics, admin := testbin.FreeAddr(t), testbin.FreeAddr(t)
	base := []string{
		"OUTRIDER_REGISTRY=none", "OUTRIDER_PROXY_LISTEN=off",
		"OUTRIDER_METRICS_LISTEN=" + metrics, "OUTRIDER_ADMIN_LISTEN=" + admin,
		// Tests that stop outrider wait for no drain delay unless they ask.
		"OUTRIDER_DRAIN_DELAY=0s",
	}
	p := testbin.Start(t, testbin.Outrider(t), append(base, env...))
	return outrider{Proc: p, metrics: "http://" + metrics, admin: "http://" + admin}
}

// proxyOnFreePorts is the environment of an outrider without a registry
// whose proxy, metrics and admin listeners and app are on free loopback
// ports (nothing answers at the app's): enough to start, or to check its
// configuration.
func proxyOnFreePorts(t *testing.T) []string {
	return []string{
		"OUTRIDER_REGISTRY=none",
		"OUTRIDER_PROXY_LISTEN=" + testbin.FreeAddr(t),
		"OUTRIDER_APP_ADDR=" + testbin.FreeAddr(t),
		"OUTRIDER_METRICS_LISTEN=" + testbin.FreeAddr(t),
		"OUTRIDER_ADMIN_LISTEN=" + testbin.FreeAddr(t),
	}
}

// startOutrider is launchOutrider, then waits up to limit for /healthz to
// answer 200.
func startOutrider(t *testing.T, limit time.Duration, env ...string) outrider {
	t.Helper()
	o := launchOutrider(t, env...)
	testbin.WaitHTTP(t, o.metrics+"/healthz", http.StatusOK, limit)
	return o
}

// startEcho starts the sample app on addr and waits up to limit until it
// answers.
func startEcho(t *testing.T, addr string, limit time.Duration) *testbin.Proc {
	t.Helper()
	app := testbin.Start(t, testbin.Echo(t), nil, "-listen", addr)
	testbin.WaitHTTP(t, "http://"+addr+"/healthz", http.StatusOK, limit)
	return app
}

// httpGet GETs url and returns the status code and body; a transport
// error fails the test.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return httpDo(t, req)
}

// httpDo sends req and returns the status code and body; a transport
// error fails the test.
func httpDo(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL, err)
	}
	return resp.StatusCode, string(b)
}

// scrapeMetrics GETs /metrics from the base URL metrics; anything but 200
// fails the test.
func scrapeMetrics(t *testing.T, metrics string) string {
	t.Helper()
	code, body := httpGet(t, metrics+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET %s/metrics = %d, want 200: %s", metrics, code, body)
	}
	return body
}

// seriesValue returns the value of one series of a /metrics body, named
// as /metrics writes it (e.g. `outrider_consul_errors_total{op="heartbeat"}`),
// and whether it is there.
func seriesValue(t *testing.T, body, series string) (float64, bool) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if ok && name == series {
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return v, true
		}
	}
	return 0, false
}

// waitFor polls cond every 50ms until it holds, failing the test after
// limit with what it was waiting for.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
