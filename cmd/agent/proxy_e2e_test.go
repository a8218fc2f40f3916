package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outrider-sidecar/outrider/internal/testbin"
)

// proxyAgent is bin/outrider with the proxy on, in front of bin/echo.
type proxyAgent struct {
	proxy, metrics, admin string
	app                   *testbin.Proc
	agent                 *testbin.Proc
}

func startProxyAgent(t *testing.T, extraEnv ...string) *proxyAgent {
	t.Helper()
	appAddr := testbin.FreeAddr(t)
	app := testbin.Start(t, testbin.Echo(t), nil, "-listen", appAddr)
	testbin.WaitHTTP(t, "http://"+appAddr+"/healthz", 200, 20*time.Second)
	pa := &proxyAgent{proxy: testbin.FreeAddr(t), metrics: testbin.FreeAddr(t), admin: testbin.FreeAddr(t), app: app}
	env := append([]string{
		"OUTRIDER_REGISTRY=none",
		"OUTRIDER_APP_ADDR=" + appAddr,
		"OUTRIDER_PROXY_LISTEN=" + pa.proxy,
		"OUTRIDER_METRICS_LISTEN=" + pa.metrics,
		"OUTRIDER_ADMIN_LISTEN=" + pa.admin,
	}, extraEnv...)
	pa.agent = testbin.Start(t, testbin.Outrider(t), env)
	testbin.WaitHTTP(t, "http://"+pa.metrics+"/healthz", 200, 20*time.Second)
	return pa
}

// proxyGet fetches url and returns its status and body.
func proxyGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// requestsTotal reads outrider_http_requests_total{method,code} off /metrics.
func requestsTotal(t *testing.T, metricsAddr, method, code string) float64 {
	t.Helper()
	_, body := proxyGet(t, "http://"+metricsAddr+"/metrics")
	re := regexp.MustCompile(`(?m)^outrider_http_requests_total\{code="` + code + `",method="` + method + `"\} (\S+)$`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
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

	code, body := proxyGet(t, "http://"+pa.metrics+"/v1/qps")
	if q := decodeQPS(t, body); code != 200 || q["qps"] != 0 || q["window_seconds"] != 10 {
		t.Errorf("/v1/qps before any request: got %d %s, want 200 with qps 0 over 10 s", code, body)
	}

	const n = 100
	sendOnOneConnection(t, pa.proxy, "/", n)
	if got := requestsTotal(t, pa.metrics, "GET", "200"); got != n {
		t.Errorf(`requests_total{method="GET",code="200"}: got %v, want %d`, got, n)
	}
	_, metrics := proxyGet(t, "http://"+pa.metrics+"/metrics")
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
	code, body = proxyGet(t, "http://"+pa.metrics+"/v1/qps")
	if q := decodeQPS(t, body); code != 200 || q["in_flight"] > 1 {
		t.Errorf("/v1/qps under no load: got %d %s", code, body)
	}

	code, body = proxyGet(t, "http://"+pa.admin+"/status")
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
	code, body = proxyGet(t, "http://"+pa.proxy+"/")
	if code != http.StatusBadGateway || len(body) > 100 {
		t.Errorf("with the app gone: got %d %q, want a 502 with a short body", code, body)
	}
	sendOnOneConnection(t, pa.proxy, "/", 3)
	if got := requestsTotal(t, pa.metrics, "GET", "502"); got < 4 {
		t.Errorf(`requests_total{method="GET",code="502"}: got %v, want at least 4`, got)
	}
	code, body = proxyGet(t, "http://"+pa.metrics+"/v1/qps")
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
	metrics := testbin.FreeAddr(t)
	testbin.Start(t, testbin.Outrider(t), []string{
		"OUTRIDER_REGISTRY=none",
		"OUTRIDER_PROXY_LISTEN=off",
		"OUTRIDER_METRICS_LISTEN=" + metrics,
		"OUTRIDER_ADMIN_LISTEN=" + testbin.FreeAddr(t),
	})
	testbin.WaitHTTP(t, "http://"+metrics+"/healthz", 200, 20*time.Second)
	code, body := proxyGet(t, "http://"+metrics+"/v1/qps")
	if code != http.StatusNotFound || !strings.Contains(body, "OUTRIDER_PROXY_LISTEN=off") {
		t.Errorf("/v1/qps with the proxy off: got %d %q, want 404 saying why", code, body)
	}
}
