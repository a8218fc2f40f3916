package main

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/outrider-sidecar/outrider/internal/testbin"
)

// floodFDs is the open-file limit of the flooded outrider: hard, and soft
// below it, which outrider raises to the hard one.
const (
	floodHardFDs = 200
	floodSoftFDs = 64
	floodConns   = 300
)

// startLimitedOutrider runs bin/outrider in front of bin/echo with its
// open-file limit at floodSoftFDs (soft) and floodHardFDs (hard), set by
// the shell that execs it.
func startLimitedOutrider(t *testing.T, env ...string) (o outrider, proxyAddr string) {
	t.Helper()
	return startOutriderFromShell(t, fmt.Sprintf(`ulimit -Sn %d && ulimit -Hn %d && exec "$0"`, floodSoftFDs, floodHardFDs), env...)
}

// startOutriderFromShell runs bin/outrider in front of bin/echo, through
// /bin/sh -c script, which sets its limits and then execs it ("$0"), and
// waits for its metrics listener and its proxy to answer.
func startOutriderFromShell(t *testing.T, script string, env ...string) (o outrider, proxyAddr string) {
	t.Helper()
	appAddr := testbin.FreeAddr(t)
	startEcho(t, appAddr, 20*time.Second)
	proxyAddr = testbin.FreeAddr(t)
	metrics, admin := testbin.FreeAddr(t), testbin.FreeAddr(t)
	base := []string{
		"OUTRIDER_REGISTRY=none", "OUTRIDER_APP_ADDR=" + appAddr, "OUTRIDER_PROXY_LISTEN=" + proxyAddr,
		"OUTRIDER_METRICS_LISTEN=" + metrics, "OUTRIDER_ADMIN_LISTEN=" + admin,
		// No probe during a flood: its socket would free a descriptor
		// now and then and split the flood into several episodes.
		"OUTRIDER_PROBE_PERIOD=1h",
	}
	p := testbin.Start(t, "/bin/sh", append(base, env...), "-c", script, testbin.Outrider(t))
	o = outrider{Proc: p, metrics: "http://" + metrics, admin: "http://" + admin}
	testbin.WaitHTTP(t, o.metrics+"/healthz", http.StatusOK, 20*time.Second)
	testbin.WaitHTTP(t, "http://"+proxyAddr+"/healthz", http.StatusOK, 20*time.Second)
	return o, proxyAddr
}

// flood opens floodConns connections to addr and holds them; the returned
// func closes them all.
func flood(t *testing.T, addr string) (end func()) {
	t.Helper()
	var conns []net.Conn
	for range floodConns {
		nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("flood: %v", err)
		}
		conns = append(conns, nc)
	}
	return func() {
		for _, nc := range conns {
			nc.Close()
		}
	}
}

// serveAgainWithin polls GET / through the proxy until it answers 200 and
// returns how long that took.
func serveAgainWithin(t *testing.T, proxyAddr string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	client := &http.Client{Timeout: 200 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
	for time.Since(start) < limit {
		resp, err := client.Get("http://" + proxyAddr + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(start)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the proxy did not serve again within %s of the flood's end", limit)
	return 0
}

// waitSeries polls /metrics until series is above zero.
func waitSeries(t *testing.T, metrics, series string, limit time.Duration) float64 {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		v, _ := seriesValue(t, scrapeMetrics(t, metrics), series)
		if v > 0 || time.Now().After(deadline) {
			return v
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestConnectionFlood(t *testing.T) {
	t.Run("past the open-file limit, accepts are retried", func(t *testing.T) {
		// A connection bound far above the limit: accepts run out of
		// descriptors.
		o, proxyAddr := startLimitedOutrider(t, "OUTRIDER_PROXY_MAX_CONNS=100000")
		// Go's runtime raises it to one below the hard limit, and outrider
		// leaves it there, so that the processes it starts keep theirs.
		if want := fmt.Sprintf(`"soft":%d,"hard":%d`, floodHardFDs-1, floodHardFDs); !strings.Contains(o.Output(), want) {
			t.Errorf("the start-up log does not show the soft limit raised to one below the hard one (%s):\n%s", want, o.Output())
		}
		end := flood(t, proxyAddr)
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(o.Output(), "proxy cannot accept connections") {
			if time.Now().After(deadline) || o.Exited() {
				end()
				t.Fatalf("no accept error logged during the flood:\n%s", o.Output())
			}
			time.Sleep(10 * time.Millisecond)
		}
		// The flood lasts until the backoff has reached its cap (5 ms
		// doubling to 1 s takes 2.3 s): the slowest recovery.
		<-time.After(3 * time.Second)
		if o.Exited() {
			t.Fatalf("outrider exited during the flood:\n%s", o.Output())
		}
		end()
		took := serveAgainWithin(t, proxyAddr, 5*time.Second)
		t.Logf("serving again %v after the flood ended", took)
		// A connection closing wakes the retry; without it, the backoff's
		// cap of a second would bound the wait.
		if took > time.Second {
			t.Errorf("serving again took %v after the flood ended, want a second at most", took)
		}
		if o.Exited() {
			t.Fatalf("outrider exited during the flood:\n%s", o.Output())
		}
		if v := waitSeries(t, o.metrics, "outrider_proxy_accept_errors_total", 5*time.Second); v <= 0 {
			t.Errorf("outrider_proxy_accept_errors_total = %v, want it grown", v)
		}
		// The episode is over once accepts have gone a second without
		// failing; the next accept logs it.
		deadline = time.Now().Add(10 * time.Second)
		for !strings.Contains(o.Output(), "proxy accepting connections again") && time.Now().Before(deadline) {
			serveAgainWithin(t, proxyAddr, 5*time.Second)
			time.Sleep(50 * time.Millisecond)
		}
		out := o.Output()
		if n := strings.Count(out, "proxy cannot accept connections"); n != 1 {
			t.Errorf("the accept error was logged %d times, want once for the one episode:\n%s", n, out)
		}
		if n := strings.Count(out, "proxy accepting connections again"); n != 1 {
			t.Errorf("the recovery was logged %d times, want once:\n%s", n, out)
		}
	})
	t.Run("the default connection bound refuses the excess", func(t *testing.T) {
		// The default idle pool (128) would leave no descriptors for
		// clients under this limit, which outrider refuses to start with
		// (TestProxyIdlePoolAgainstTheOpenFileLimit); with 16 the bound
		// is (180 - 64 - 16) / 2 = 50 client connections.
		o, proxyAddr := startLimitedOutrider(t, "OUTRIDER_PROXY_MAX_IDLE_APP_CONNS=16")
		end := flood(t, proxyAddr)
		rejected := waitSeries(t, o.metrics, "outrider_proxy_connections_rejected_total", 20*time.Second)
		end()
		if rejected <= 0 {
			t.Errorf("outrider_proxy_connections_rejected_total = %v, want the connections past the bound counted", rejected)
		}
		serveAgainWithin(t, proxyAddr, 5*time.Second)
		if v, _ := seriesValue(t, scrapeMetrics(t, o.metrics), "outrider_proxy_accept_errors_total"); v != 0 {
			t.Errorf("outrider_proxy_accept_errors_total = %v, want 0: the bound keeps descriptors from running out", v)
		}
		if o.Exited() {
			t.Fatalf("outrider exited during the flood:\n%s", o.Output())
		}
	})
}
