package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outrider-sidecar/outrider/internal/testbin"
)

// proxyAgent is bin/outrider with the proxy on, in front of bin/echo.
type proxyAgent struct {
	outrider
	proxy string // host:port
	app   *testbin.Proc
}

func startProxyAgent(t *testing.T, extraEnv ...string) *proxyAgent {
	t.Helper()
	appAddr := testbin.FreeAddr(t)
	pa := &proxyAgent{proxy: testbin.FreeAddr(t), app: startEcho(t, appAddr, 20*time.Second)}
	pa.outrider = startOutrider(t, 20*time.Second, append([]string{
		"OUTRIDER_APP_ADDR=" + appAddr,
		"OUTRIDER_PROXY_LISTEN=" + pa.proxy,
	}, extraEnv...)...)
	return pa
}

// requestsTotal reads outrider_http_requests_total{method,code} off /metrics.
func requestsTotal(t *testing.T, metrics, method, code string) float64 {
	t.Helper()
	v, _ := seriesValue(t, scrapeMetrics(t, metrics), `outrider_http_requests_total{code="`+code+`",method="`+method+`"}`)
	return v
}

// sendOnOneConnection sends n requests for path and then one for
// /status/204 over a single keep-alive connection: the proxy serves a
// connection's requests in turn, so once the last answer is in, the n
// before it have been counted.
func sendOnOneConnection(t *testing.T, proxyAddr, path string, n int) {
	t.Helper()
	nc, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(nc)
	for i := 0; i <= n; i++ {
		p := path
		if i == n {
			p = "/status/204"
		}
		fmt.Fprintf(nc, "GET %s HTTP/1.1\r\nHost: e2e\r\n\r\n", p)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

func decodeQPS(t *testing.T, body string) map[string]float64 {
	t.Helper()
	var q map[string]float64
	if err := json.Unmarshal([]byte(body), &q); err != nil {
		t.Fatalf("/v1/qps: %v in %q", err, body)
	}
	for _, k := range []string{"qps", "window_seconds", "in_flight"} {
		v, ok := q[k]
		if !ok || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			t.Errorf("/v1/qps %s: got %v (present %v), want a finite number ≥ 0", k, v, ok)
		}
	}
	return q
}

func TestProxyE2E(t *testing.T) {
	pa := startProxyAgent(t)

	code, body := httpGet(t, pa.metrics+"/v1/qps")
	if q := decodeQPS(t, body); code != 200 || q["qps"] != 0 || q["window_seconds"] != 10 {
		t.Errorf("/v1/qps before any request: got %d %s, want 200 with qps 0 over 10 s", code, body)
	}

	const n = 100
	sendOnOneConnection(t, pa.proxy, "/", n)
	if got := requestsTotal(t, pa.metrics, "GET", "200"); got != n {
		t.Errorf(`requests_total{method="GET",code="200"}: got %v, want %d`, got, n)
	}
	_, metrics := httpGet(t, pa.metrics+"/metrics")
	for _, want := range []string{
		"outrider_http_request_duration_seconds_bucket",
		"outrider_http_requests_in_flight",
		"outrider_http_requests_per_second",
		"outrider_http_request_size_bytes_count",
		"outrider_http_response_size_bytes_count",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	code, body = httpGet(t, pa.metrics+"/v1/qps")
	if q := decodeQPS(t, body); code != 200 || q["in_flight"] > 1 {
		t.Errorf("/v1/qps under no load: got %d %s", code, body)
	}

	code, body = httpGet(t, pa.admin+"/status")
	var status struct {
		Proxy struct {
			Upstream string `json:"upstream"`
			Listen   string `json:"listen"`
		} `json:"proxy"`
	}
	if err := json.Unmarshal([]byte(body), &status); err != nil || code != 200 || status.Proxy.Listen != pa.proxy {
		t.Errorf("/status proxy section: got %d %s (%v)", code, body, err)
	}

	// The app goes away: 502s, counted, and /v1/qps still answers.
	pa.app.Signal(syscall.SIGKILL)
	pa.app.Wait(10 * time.Second)
	code, body = httpGet(t, "http://"+pa.proxy+"/")
	if code != http.StatusBadGateway || len(body) > 100 {
		t.Errorf("with the app gone: got %d %q, want a 502 with a short body", code, body)
	}
	sendOnOneConnection(t, pa.proxy, "/", 3)
	if got := requestsTotal(t, pa.metrics, "GET", "502"); got < 4 {
		t.Errorf(`requests_total{method="GET",code="502"}: got %v, want at least 4`, got)
	}
	code, body = httpGet(t, pa.metrics+"/v1/qps")
	if decodeQPS(t, body); code != 200 {
		t.Errorf("/v1/qps with the app gone: got %d %s", code, body)
	}
}

func TestProxyE2EPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	code, out := runOutrider(t, []string{
		"OUTRIDER_REGISTRY=none",
		"OUTRIDER_PROXY_LISTEN=" + ln.Addr().String(),
		"OUTRIDER_METRICS_LISTEN=" + testbin.FreeAddr(t),
		"OUTRIDER_ADMIN_LISTEN=" + testbin.FreeAddr(t),
	})
	if code == exitOK || !strings.Contains(out, "OUTRIDER_PROXY_LISTEN="+ln.Addr().String()) {
		t.Errorf("exit %d, want a failure naming OUTRIDER_PROXY_LISTEN:\n%s", code, out)
	}
}

func TestProxyE2EOff(t *testing.T) {
	o := startOutrider(t, 20*time.Second)
	code, body := httpGet(t, o.metrics+"/v1/qps")
	if code != http.StatusNotFound || !strings.Contains(body, "OUTRIDER_PROXY_LISTEN=off") {
		t.Errorf("/v1/qps with the proxy off: got %d %q, want 404 saying why", code, body)
	}
}

// TestProxyKeepsAtMostMaxIdleAppConns sends requests that overlap at the
// app, each from its own client, and reads /status once they are done:
// the proxy keeps OUTRIDER_PROXY_MAX_IDLE_APP_CONNS of the app
// connections they opened, and all of them below that bound.
func TestProxyKeepsAtMostMaxIdleAppConns(t *testing.T) {
	const clients = 12
	for _, tc := range []struct {
		env  []string
		want int
	}{
		{nil, clients}, // below the default of 128
		{[]string{"OUTRIDER_PROXY_MAX_IDLE_APP_CONNS=3"}, 3},
	} {
		t.Run(fmt.Sprint(tc.env), func(t *testing.T) {
			pa := startProxyAgent(t, tc.env...)
			errs := make(chan error, clients)
			for range clients {
				go func() {
					// Its own transport: a connection of its own.
					c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
					// Long enough that the 12 overlap at the app even when a
					// loaded machine starts them late: each needs its own
					// app connection.
					resp, err := c.Get("http://" + pa.proxy + "/slow?delay=2s")
					if err == nil {
						_, err = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if err == nil && resp.StatusCode != http.StatusOK {
							err = fmt.Errorf("status %d", resp.StatusCode)
						}
					}
					errs <- err
				}()
			}
			for range clients {
				if err := <-errs; err != nil {
					t.Fatalf("GET /slow through the proxy: %v", err)
				}
			}
			var status struct {
				Proxy struct {
					UpstreamIdle int `json:"upstream_idle"`
					InFlight     int `json:"in_flight"`
				} `json:"proxy"`
			}
			deadline := time.Now().Add(5 * time.Second)
			for {
				_, body := httpGet(t, pa.admin+"/status")
				if err := json.Unmarshal([]byte(body), &status); err != nil {
					t.Fatalf("/status: %v\n%s", err, body)
				}
				if status.Proxy.UpstreamIdle == tc.want && status.Proxy.InFlight == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("/status proxy: %d idle app connections, %d in flight; want %d idle, 0 in flight", status.Proxy.UpstreamIdle, status.Proxy.InFlight, tc.want)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// TestProxyIdlePoolAgainstTheOpenFileLimit runs bin/outrider under an
// open-file limit of 200: the idle app pool must leave client connections
// some descriptors, or outrider refuses to start and says which variable
// to change; a pool larger than the clients it leaves room for is a
// warning.
func TestProxyIdlePoolAgainstTheOpenFileLimit(t *testing.T) {
	tests := []struct {
		name    string
		maxIdle string // OUTRIDER_PROXY_MAX_IDLE_APP_CONNS; "" for the default, 128
		args    []string
		code    int
		want    string
	}{
		{"check-config, the default pool", "", []string{"check-config"}, exitUsage,
			"the open-file limit (200) leaves no descriptors for client connections once 64 are kept for outrider and 128 for idle app connections (OUTRIDER_PROXY_MAX_IDLE_APP_CONNS)"},
		{"check-config, a pool of 100", "100", []string{"check-config"}, exitOK,
			"# warning: OUTRIDER_PROXY_MAX_IDLE_APP_CONNS=100 is more than the 8 client connections the open-file limit (200) allows"},
		{"check-config, a pool of 8", "8", []string{"check-config"}, exitOK,
			"OUTRIDER_PROXY_MAX_CONNS=auto allows 54 client connections"},
		{"the agent, the default pool", "", nil, exitFailed,
			"open-file limit (200) leaves no descriptors for client connections"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := proxyOnFreePorts(t)
			if tc.maxIdle != "" {
				env = append(env, "OUTRIDER_PROXY_MAX_IDLE_APP_CONNS="+tc.maxIdle)
			}
			// The shell lowers both limits; Go raises the soft one to the hard.
			args := append([]string{"-c", `ulimit -n 200 && exec "$0" "$@"`, testbin.Outrider(t)}, tc.args...)
			p := testbin.Start(t, "/bin/sh", env, args...)
			code := p.Wait(30 * time.Second)
			out := p.Output()
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d, want %d with %q:\n%s", code, tc.code, tc.want, out)
			}
		})
	}
}
