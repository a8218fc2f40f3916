package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/outrider-sidecar/outrider/internal/consultest"
	"github.com/outrider-sidecar/outrider/internal/loadreport"
	"github.com/outrider-sidecar/outrider/internal/testbin"
	"github.com/outrider-sidecar/outrider/shutdown"
)

// Timing of the scale-in tests: a short drain so that the tests are quick,
// long enough for a client's blocking query to see the instance leave.
const (
	scalePeriod     = 200 * time.Millisecond
	scaleDrainDelay = 2 * time.Second
)

// instance is one replica: the sample app with outrider in front of it,
// registered in Consul as service "echo".
type instance struct {
	t        *testing.T
	id       string
	appAddr  string
	proxy    string // the address registered and served
	app      *testbin.Proc
	outrider outrider
	// appStarted is when the app's process was started.
	appStarted time.Time
}

// replicaEnv is outrider's environment for one replica of service echo
// registered in srv as id, with the app on appAddr behind the proxy on
// proxy, probed over HTTP every scalePeriod.
func replicaEnv(srv *consultest.Server, id, appAddr, proxy string) []string {
	_, port, _ := strings.Cut(proxy, ":")
	return []string{
		"OUTRIDER_REGISTRY=consul", "CONSUL_HTTP_ADDR=" + srv.URL(),
		"OUTRIDER_SERVICE_NAME=echo", "OUTRIDER_SERVICE_ID=" + id,
		"OUTRIDER_SERVICE_ADDRESS=127.0.0.1", "OUTRIDER_SERVICE_PORT=" + port,
		"OUTRIDER_APP_ADDR=" + appAddr, "OUTRIDER_PROXY_LISTEN=" + proxy,
		"OUTRIDER_PROBE=http://" + appAddr + "/healthz", "OUTRIDER_PROBE_PERIOD=" + scalePeriod.String(),
		"OUTRIDER_CHECK_TTL=3s",
	}
}

// startReplicas starts n replicas and waits until Consul has them passing.
func startReplicas(t *testing.T, srv *consultest.Server, n int) []*instance {
	t.Helper()
	var ins []*instance
	for i := range n {
		ins = append(ins, startInstance(t, srv, fmt.Sprintf("echo-%d", i+1), false))
	}
	for _, in := range ins {
		waitPassing(t, srv, in.id, 20*time.Second)
	}
	return ins
}

// startInstance starts outrider first, as a native sidecar starts before
// the app, and then the app unless lateApp is set.
func startInstance(t *testing.T, srv *consultest.Server, id string, lateApp bool, env ...string) *instance {
	t.Helper()
	in := &instance{t: t, id: id, appAddr: testbin.FreeAddr(t), proxy: testbin.FreeAddr(t)}
	base := append(replicaEnv(srv, id, in.appAddr, in.proxy),
		"OUTRIDER_PROBE_TIMEOUT="+scalePeriod.String(),
		"OUTRIDER_DRAIN_DELAY="+scaleDrainDelay.String(), "OUTRIDER_DRAIN_TIMEOUT=10s",
		"OUTRIDER_LOG_FORMAT=text")
	in.outrider = startOutrider(t, 20*time.Second, append(base, env...)...)
	if !lateApp {
		in.startApp()
	}
	return in
}

func (in *instance) startApp() {
	in.t.Helper()
	in.appStarted = time.Now()
	in.app = startEcho(in.t, in.appAddr, 20*time.Second)
}

// scaleIn stops the instance as Kubernetes does: the app container's
// preStop hook calls /prestop and waits for it; then the app gets SIGTERM;
// once it has exited, the native sidecar gets SIGTERM.
func (in *instance) scaleIn() shutdown.Report {
	in.t.Helper()
	code, body := httpDo(in.t, mustRequest(in.t, http.MethodPost, in.outrider.admin+"/prestop"))
	var rep shutdown.Report
	if err := json.Unmarshal([]byte(body), &rep); err != nil || code != http.StatusOK {
		in.t.Errorf("%s: /prestop answered %d %q, want 200 and a report", in.id, code, body)
	}
	in.app.Signal(syscall.SIGTERM)
	if c := in.app.Wait(30 * time.Second); c != 0 {
		in.t.Errorf("%s: app exit status %d, want 0", in.id, c)
	}
	in.outrider.Signal(syscall.SIGTERM)
	if c := in.outrider.Wait(30 * time.Second); c != exitOK {
		in.t.Errorf("%s: outrider exit status %d, want 0", in.id, c)
	}
	return rep
}

// kill stops the instance with no drain: app and outrider killed at once.
func (in *instance) kill() {
	in.app.Signal(syscall.SIGKILL)
	in.outrider.Signal(syscall.SIGKILL)
	in.app.Wait(10 * time.Second)
	in.outrider.Wait(10 * time.Second)
}

func mustRequest(t *testing.T, method, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// startLoad runs examples/loadgen against service echo in srv.
func startLoad(t *testing.T, srv *consultest.Server, rate int, d time.Duration) *testbin.Proc {
	t.Helper()
	bin := testbin.Build(t, "./examples/loadgen", "loadgen")
	return testbin.Start(t, bin, nil, "-consul", srv.HTTPAddr, "-service", "echo",
		"-rate", fmt.Sprint(rate), "-duration", d.String())
}

func loadResult(t *testing.T, p *testbin.Proc, limit time.Duration) loadreport.Summary {
	t.Helper()
	if code := p.Wait(limit); code != 0 {
		t.Fatalf("loadgen exit status %d:\n%s", code, p.Output())
	}
	var s loadreport.Summary
	out := p.Output()
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &s); err != nil {
		t.Fatalf("loadgen summary: %v\n%s", err, out)
	}
	return s
}

// TestShutdownZeroLossScaleIn is the promise: three replicas under a
// steady load from a client that never retries; two are scaled in one
// after the other as Kubernetes does it, and a new one is scaled out.
// Not one request fails. TestShutdownWithoutDrainLosesRequests is the same
// scene without the drain, and shows that this test would see a loss.
func TestShutdownZeroLossScaleIn(t *testing.T) {
	t.Parallel()
	srv := consultest.Start(t)
	ins := startReplicas(t, srv, 3)
	const rate, length = 520, 44 * time.Second
	load := startLoad(t, srv, rate, length)
	start := time.Now()
	at := func(d time.Duration) { <-time.After(time.Until(start.Add(d))) }

	at(8 * time.Second)
	rep1 := ins[0].scaleIn()
	at(18 * time.Second)
	rep2 := ins[1].scaleIn()
	// Scale out: outrider first, then the app.
	at(26 * time.Second)
	late := startInstance(t, srv, "echo-4", true)
	at(28 * time.Second)
	late.startApp()

	s := loadResult(t, load, length+30*time.Second)
	t.Logf("load: %d requests, %d ok, %d failed, %d skipped by the client; errors %v", s.Requests, s.OK, s.Failed, s.Skipped, s.Errors)
	t.Logf("scale-in 1: %+v", rep1)
	t.Logf("scale-in 2: %+v", rep2)
	for addr, in := range s.Instances {
		t.Logf("instance %s: %d requests, %d failed", addr, in.Requests, in.Failed)
	}
	if s.Failed != 0 {
		t.Errorf("failed requests: got %d (%v), want 0", s.Failed, s.Errors)
	}
	// Skipped requests are the client's own limit on a loaded machine (no
	// free worker in time), not a failure of the server; the count sent
	// must still reach the bar.
	if s.Requests < 20000 {
		t.Errorf("requests sent: got %d (%d skipped by the client), want at least 20000", s.Requests, s.Skipped)
	}
	for _, rep := range []shutdown.Report{rep1, rep2} {
		if !rep.Deregistered || rep.RequestsCut != 0 || rep.DelaySeconds < scaleDrainDelay.Seconds() {
			t.Errorf("drain report: got %+v, want deregistered, the whole delay served, nothing cut", rep)
		}
		// Clients still sent requests in the first moments of the delay:
		// without it, those would have been refused.
		if rep.RequestsDuringDelay == 0 {
			t.Logf("no request during the drain delay: the client saw the instance leave at once")
		}
	}
	// Each scaled-in replica served through its drain delay: it had traffic.
	for _, in := range ins[:2] {
		if got := s.Instances[in.proxy]; got == nil || got.Requests == 0 {
			t.Errorf("%s got no request", in.id)
		}
	}
	lateIn := s.Instances[late.proxy]
	if lateIn == nil || lateIn.FirstRequest.IsZero() {
		t.Fatalf("the scaled-out replica got no request")
	}
	first := lateIn.FirstRequest
	bound := scalePeriod + time.Second
	if d := first.Sub(late.appStarted); d > bound {
		t.Errorf("scale-out: first request %s after the app started, want within probe period + 1s = %s", d, bound)
	} else {
		t.Logf("scale-out: first request %s after the app started (bound %s)", d, bound)
	}
}

func TestShutdownWithoutDrainLosesRequests(t *testing.T) {
	t.Parallel()
	srv := consultest.Start(t)
	ins := startReplicas(t, srv, 3)
	const rate, length = 500, 12 * time.Second
	load := startLoad(t, srv, rate, length)
	<-time.After(4 * time.Second)
	ins[0].kill()
	s := loadResult(t, load, length+30*time.Second)
	t.Logf("control without drain: %d requests, %d ok, %d failed; errors %v", s.Requests, s.OK, s.Failed, s.Errors)
	if s.Failed == 0 {
		t.Errorf("failed requests without the drain: got 0, want some: the scale-in test could not see a loss")
	}
}

// waitPassing waits until Consul reports the instance passing.
func waitPassing(t *testing.T, srv *consultest.Server, id string, limit time.Duration) {
	t.Helper()
	cc := srv.Client()
	regEventually(t, limit, id+" passing in consul", func() (bool, string) {
		entries, _, err := cc.Health().Service("echo", "", true, nil)
		if err != nil {
			return false, err.Error()
		}
		for _, e := range entries {
			if e.Service.ID == id {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d passing, not %s", len(entries), id)
	})
}

// TestShutdownFinishesSlowRequestsAndCutsTunnels: a 3 s request in flight
// when the drain starts completes with 200; a WebSocket still open at the
// drain timeout is closed and counted as cut.
func TestShutdownFinishesSlowRequestsAndCutsTunnels(t *testing.T) {
	t.Parallel()
	appAddr, proxyAddr := testbin.FreeAddr(t), testbin.FreeAddr(t)
	startEcho(t, appAddr, 20*time.Second)
	o := startOutrider(t, 20*time.Second, "OUTRIDER_APP_ADDR="+appAddr, "OUTRIDER_PROXY_LISTEN="+proxyAddr,
		"OUTRIDER_DRAIN_DELAY=500ms", "OUTRIDER_DRAIN_TIMEOUT=5s", "OUTRIDER_PROBE_PERIOD=200ms")
	testbin.WaitHTTP(t, o.metrics+"/ready", http.StatusOK, 10*time.Second)

	ws := dialWebSocket(t, proxyAddr)
	type result struct {
		code int
		body string
		err  error
	}
	slow := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + proxyAddr + "/slow?delay=3s")
		if err != nil {
			slow <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		slow <- result{resp.StatusCode, string(b), err}
	}()
	regEventually(t, 5*time.Second, "slow request in flight", func() (bool, string) {
		v, _ := seriesValue(t, scrapeMetrics(t, o.metrics), "outrider_http_requests_in_flight")
		return v == 1, fmt.Sprint(v)
	})

	prestop := make(chan result, 1)
	start := time.Now()
	go func() {
		resp, err := http.Post(o.admin+"/prestop", "", nil)
		if err != nil {
			prestop <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		prestop <- result{resp.StatusCode, string(b), err}
	}()
	regEventually(t, 5*time.Second, "/ready says draining", func() (bool, string) {
		code, body := httpGet(t, o.metrics+"/ready")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "draining"), body
	})
	if v, _ := seriesValue(t, scrapeMetrics(t, o.metrics), "outrider_draining"); v != 1 {
		t.Errorf("outrider_draining while draining: got %v, want 1", v)
	}

	if r := <-slow; r.err != nil || r.code != 200 || r.body != "slept 3s\n" {
		t.Errorf("slow request: got %d %q %v, want 200 \"slept 3s\"", r.code, r.body, r.err)
	}
	// The tunnel is still open after the slow request; the timeout cuts it.
	if _, err := ws.br.ReadByte(); err == nil {
		t.Errorf("websocket: got data, want it closed at the drain timeout")
	}
	elapsed := time.Since(start)
	r := <-prestop
	var rep shutdown.Report
	if err := json.Unmarshal([]byte(r.body), &rep); err != nil {
		t.Fatalf("/prestop: %d %q: %v", r.code, r.body, err)
	}
	t.Logf("drain report after %s: %+v", elapsed, rep)
	if r.code != http.StatusInternalServerError || rep.RequestsCut != 1 || rep.TunnelsCut != 1 || rep.RequestsFinished < 1 {
		t.Errorf("/prestop: got %d %+v, want 500 with the slow request finished and 1 tunnel cut", r.code, rep)
	}
	if elapsed < 5*time.Second {
		t.Errorf("the tunnel was cut after %s, before delay + timeout", elapsed)
	}
	if v, _ := seriesValue(t, scrapeMetrics(t, o.metrics), "outrider_drain_requests_cut_total"); v != 1 {
		t.Errorf("outrider_drain_requests_cut_total: got %v, want 1", v)
	}
}

type wsConn struct {
	nc net.Conn
	br *bufio.Reader
}

func dialWebSocket(t *testing.T, addr string) wsConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(60 * time.Second))
	fmt.Fprintf(nc, "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("websocket handshake: %v %v", resp, err)
	}
	// One message each way: the tunnel works.
	msg := []byte("hi")
	frame := []byte{0x81, 0x80 | byte(len(msg)), 0, 0, 0, 0}
	frame = append(frame, msg...) // zero mask
	if _, err := nc.Write(frame); err != nil {
		t.Fatal(err)
	}
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		t.Fatalf("websocket echo: %v", err)
	}
	got := make([]byte, h[1]&0x7f)
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "hi" {
		t.Fatalf("websocket echo: got %q %v", got, err)
	}
	return wsConn{nc: nc, br: br}
}

// TestShutdownTriggersJoinOneDrain: `outrider prestop` and /prestop called
// at once run one drain and both get its report; a wrong token gets 401
// and drains nothing.
func TestShutdownTriggersJoinOneDrain(t *testing.T) {
	t.Parallel()
	admin := testbin.FreeAddr(t)
	env := []string{"OUTRIDER_ADMIN_LISTEN=" + admin, "OUTRIDER_ADMIN_TOKEN=s3cret-token",
		"OUTRIDER_DRAIN_DELAY=1s", "OUTRIDER_DRAIN_TIMEOUT=2s"}
	o := startOutrider(t, 20*time.Second, env...)
	o.admin = "http://" + admin

	req := mustRequest(t, http.MethodPost, o.admin+"/prestop")
	req.Header.Set("Authorization", "Bearer wrong")
	if code, _ := httpDo(t, req); code != http.StatusUnauthorized {
		t.Errorf("/prestop with a wrong token: got %d, want 401", code)
	}
	if v, _ := seriesValue(t, scrapeMetrics(t, o.metrics), "outrider_draining"); v != 0 {
		t.Errorf("outrider_draining after a refused /prestop: got %v, want 0", v)
	}

	var wg sync.WaitGroup
	var cliOut []byte
	var cliErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		cmd := exec.Command(testbin.Outrider(t), "prestop")
		cmd.Env = env
		cliOut, cliErr = cmd.CombinedOutput()
	}()
	var httpCode int
	var httpBody string
	go func() {
		defer wg.Done()
		req := mustRequest(t, http.MethodGet, o.admin+"/prestop")
		req.Header.Set("Authorization", "Bearer s3cret-token")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			httpBody = err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		httpCode, httpBody = resp.StatusCode, string(b)
	}()
	wg.Wait()
	if cliErr != nil || !strings.Contains(string(cliOut), "drained in ") {
		t.Errorf("outrider prestop: %v, output %q; want exit 0 and the report", cliErr, cliOut)
	}
	var rep shutdown.Report
	if err := json.Unmarshal([]byte(httpBody), &rep); err != nil || httpCode != http.StatusOK || !rep.OK() {
		t.Errorf("GET /prestop: got %d %q, want 200 and a clean report", httpCode, httpBody)
	}
	if n := strings.Count(o.Output(), "drain started"); n != 1 {
		t.Errorf("drains started: got %d, want 1\n%s", n, o.Output())
	}
	if strings.Contains(o.Output(), "s3cret-token") || strings.Contains(string(cliOut), "s3cret-token") {
		t.Errorf("the admin token was printed")
	}
	// SIGTERM after the preStop drain: nothing left to drain, exit 0 at once.
	o.Signal(syscall.SIGTERM)
	if code := o.Wait(5 * time.Second); code != exitOK {
		t.Errorf("exit status after SIGTERM: got %d, want 0", code)
	}
}

// TestShutdownPrestopWithoutAgent: `outrider prestop` with nobody
// listening says so and fails; as systemd's ExecStop= after outrider has
// exited on its own (EXIT_CODE set), it says that instead and succeeds,
// as there is nothing left to drain.
func TestShutdownPrestopWithoutAgent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		env      []string
		answer   func(net.Conn) // what listens at the admin address; nil for nothing
		wantCode int
		want     string
	}{
		{name: "no agent", wantCode: exitFailed, want: "no drain: cannot reach the agent's admin listener"},
		{name: "the agent goes away", answer: func(c net.Conn) { _, _ = c.Read(make([]byte, 512)) },
			wantCode: exitFailed, want: "the agent closed the connection before its drain was done (it exited or was killed"},
		{name: "another server", answer: func(c net.Conn) { _, _ = io.WriteString(c, "SSH-2.0-OpenSSH_9.2\r\n") },
			wantCode: exitFailed, want: "no drain: what listens at OUTRIDER_ADMIN_LISTEN did not answer as outrider does"},
		{name: "systemd says the agent exited", env: []string{"SERVICE_RESULT=exit-code", "EXIT_CODE=exited", "EXIT_STATUS=2"},
			wantCode: exitOK, want: "no drain: the agent had already exited (EXIT_CODE=exited, EXIT_STATUS=2)"},
		{name: "systemd says the agent was killed", env: []string{"SERVICE_RESULT=signal", "EXIT_CODE=killed", "EXIT_STATUS=KILL"},
			wantCode: exitOK, want: "no drain: the agent had already exited (EXIT_CODE=killed, EXIT_STATUS=KILL)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addr := testbin.FreeAddr(t)
			if tc.answer != nil {
				addr = testbin.Serve(t, tc.answer)
			}
			env := append([]string{"OUTRIDER_ADMIN_LISTEN=" + addr}, tc.env...)
			code, out := runOutrider(t, env, "prestop")
			if code != tc.wantCode || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d, output %q; want exit %d and %q", code, out, tc.wantCode, tc.want)
			}
		})
	}
}

// TestShutdownSecondSignalCutsShort: a second SIGTERM during the drain
// delay ends the drain at once, and outrider says so and exits non-zero.
func TestShutdownSecondSignalCutsShort(t *testing.T) {
	t.Parallel()
	o := startOutrider(t, 20*time.Second, "OUTRIDER_DRAIN_DELAY=30s", "OUTRIDER_LOG_FORMAT=text")
	o.Signal(syscall.SIGTERM)
	regEventually(t, 5*time.Second, "drain started", func() (bool, string) {
		return strings.Contains(o.Output(), "drain started"), ""
	})
	start := time.Now()
	o.Signal(syscall.SIGTERM)
	code := o.Wait(10 * time.Second)
	if code == exitOK || time.Since(start) > 5*time.Second {
		t.Errorf("after a second signal: exit %d after %s, want non-zero at once", code, time.Since(start))
	}
	if !strings.Contains(o.Output(), "drain cut short") {
		t.Errorf("output does not say the drain was cut short:\n%s", o.Output())
	}
}

// TestShutdownGracePeriodWarning: check-config warns when the drain cannot
// fit in the platform's grace period.
func TestShutdownGracePeriodWarning(t *testing.T) {
	t.Parallel()
	code, out := runOutrider(t, []string{"OUTRIDER_REGISTRY=none", "OUTRIDER_GRACE_PERIOD=30s"}, "check-config")
	if code != exitOK || !strings.Contains(out, "# warning: up to 5s to deregister + OUTRIDER_DRAIN_DELAY (5s) + OUTRIDER_DRAIN_TIMEOUT (25s) + OUTRIDER_APP_STOP_TIMEOUT (10s) = 45s does not fit in OUTRIDER_GRACE_PERIOD (30s)") {
		t.Errorf("exit %d, output:\n%s\nwant exit 0 and the warning", code, out)
	}
}

// TestShutdownTakesReloadedTimings: a drain delay changed in the config
// file is the delay of the next drain.
func TestShutdownTakesReloadedTimings(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "outrider.yaml")
	writeFile(t, file, "drain_delay: 0s\n")
	o := startOutrider(t, 20*time.Second, "OUTRIDER_CONFIG_FILE="+file, "OUTRIDER_DRAIN_DELAY=0s")
	replaceFile(t, file, "drain_delay: 1500ms\ndrain_timeout: 2s\n")
	waitMetric(t, o.metrics, `outrider_config_reload_total{result="success"}`, 1, 10*time.Second)
	code, body := httpDo(t, mustRequest(t, http.MethodPost, o.admin+"/prestop"))
	var rep shutdown.Report
	if err := json.Unmarshal([]byte(body), &rep); err != nil || code != http.StatusOK {
		t.Fatalf("/prestop: %d %q", code, body)
	}
	if rep.DelaySeconds < 1.5 || rep.DelaySeconds > 3 {
		t.Errorf("drain delay served: got %.2fs, want the reloaded 1.5s", rep.DelaySeconds)
	}
}

// TestShutdownPrestopWaitsForALengthenedDrain: a drain lengthened by the
// config file past what the environment gives is waited for to its end,
// by the admin server's answer and by `outrider prestop`.
func TestShutdownPrestopWaitsForALengthenedDrain(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "outrider.yaml")
	writeFile(t, file, "log_level: info\n")
	env := []string{"OUTRIDER_CONFIG_FILE=" + file, "OUTRIDER_DRAIN_DELAY=0s", "OUTRIDER_DRAIN_TIMEOUT=0s"}
	o := startOutrider(t, 20*time.Second, env...)
	// Longer than the environment's timings with any margin an answer's
	// deadline was given from them (10 s on the server, 15 s in the hook).
	replaceFile(t, file, "drain_delay: 16s\n")
	waitMetric(t, o.metrics, `outrider_config_reload_total{result="success"}`, 1, 10*time.Second)
	cmd := exec.Command(testbin.Outrider(t), "prestop")
	cmd.Env = append(env, "OUTRIDER_ADMIN_LISTEN="+strings.TrimPrefix(o.admin, "http://"))
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "drained in 16.") {
		t.Errorf("outrider prestop after %s: %v, output %q; want exit 0 and the 16 s drain's report", time.Since(start).Round(time.Second), err, out)
	}
}

// TestShutdownDrainEndpointAnswersAtOnce: POST /drain starts the drain and
// answers 202 before it is done; /ready turns 503, and /prestop joins the
// same drain and gives its report.
func TestShutdownDrainEndpointAnswersAtOnce(t *testing.T) {
	t.Parallel()
	o := startOutrider(t, 20*time.Second, "OUTRIDER_DRAIN_DELAY=2s")
	start := time.Now()
	code, body := httpDo(t, mustRequest(t, http.MethodPost, o.admin+"/drain"))
	if took := time.Since(start); code != http.StatusAccepted || took > time.Second {
		t.Fatalf("POST /drain: %d %q after %v, want 202 at once", code, body, took)
	}
	if code, _ := httpGet(t, o.metrics+"/ready"); code != http.StatusServiceUnavailable {
		t.Errorf("/ready while draining: got %d, want 503", code)
	}
	code, body = httpDo(t, mustRequest(t, http.MethodPost, o.admin+"/prestop"))
	var rep shutdown.Report
	if err := json.Unmarshal([]byte(body), &rep); err != nil || code != http.StatusOK || rep.Trigger != "drain" {
		t.Errorf("/prestop after /drain: %d %q, want 200 and the report of the drain /drain started", code, body)
	}
	if n := strings.Count(o.Output(), "drain started"); n != 1 {
		t.Errorf("drains started: got %d, want 1", n)
	}
}

// TestShutdownAppRestartedAfterPrestop: Kubernetes runs the app container's
// preStop hook before a liveness restart too, and then starts the app
// again in the same pod. Once the app is back, outrider exits 1 so that it
// is restarted as well and registers the app again; after a drain /drain
// started (an operator's), or off Kubernetes, it stays drained.
func TestShutdownAppRestartedAfterPrestop(t *testing.T) {
	t.Parallel()
	srv := consultest.Start(t)
	for _, tc := range []struct {
		name, path string
		kubernetes string // KUBERNETES_SERVICE_HOST, which the kubelet sets
		wantExit   bool
	}{
		{name: "prestop", path: "/prestop", kubernetes: "127.0.0.1", wantExit: true},
		{name: "drain", path: "/drain", kubernetes: "127.0.0.1", wantExit: false},
		// Off Kubernetes nothing restarts a container after a preStop
		// hook: a /prestop by hand stays drained.
		{name: "prestop off Kubernetes", path: "/prestop", kubernetes: "", wantExit: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := startInstance(t, srv, "echo-restarted-"+strings.ReplaceAll(tc.name, " ", "-"), false, "OUTRIDER_DRAIN_DELAY=0s",
				"OUTRIDER_GRACE_PERIOD=60s", "KUBERNETES_SERVICE_HOST="+tc.kubernetes)
			waitPassing(t, srv, in.id, 20*time.Second)
			if code, body := httpDo(t, mustRequest(t, http.MethodPost, in.outrider.admin+tc.path)); code >= 300 {
				t.Fatalf("POST %s: %d %q", tc.path, code, body)
			}
			testbin.WaitHTTP(t, in.outrider.admin+"/status", http.StatusOK, 5*time.Second)
			waitFor(t, 10*time.Second, "/ready to say the drain is done", func() bool {
				_, body := httpGet(t, in.outrider.metrics+"/ready")
				return strings.Contains(body, "draining: drained; waiting to be stopped")
			})

			// The kubelet kills the app container and starts it again.
			in.app.Signal(syscall.SIGKILL)
			in.app.Wait(10 * time.Second)
			waitFor(t, 10*time.Second, "the probe to see the app gone", func() bool {
				_, body := httpGet(t, in.outrider.metrics+"/ready")
				return strings.Contains(body, "app: probe failed")
			})
			in.startApp()

			if !tc.wantExit {
				time.Sleep(10 * scalePeriod)
				if in.outrider.Exited() {
					t.Fatalf("outrider exited after a /drain drain when the app came back:\n%s", in.outrider.Output())
				}
				in.outrider.Signal(syscall.SIGTERM)
				if c := in.outrider.Wait(20 * time.Second); c != exitOK {
					t.Errorf("outrider exit status %d after SIGTERM, want 0", c)
				}
				return
			}
			if c := in.outrider.Wait(20 * time.Second); c != exitFailed {
				t.Errorf("outrider exit status %d once the app came back, want %d", c, exitFailed)
			}
			if out := in.outrider.Output(); !strings.Contains(out, "the app is back after a preStop drain") {
				t.Errorf("outrider's log does not say why it stopped:\n%s", out)
			}
		})
	}
}

// TestShutdownAppRestartedQuicklyAfterPrestop: an app container restarted
// within its probe's failure threshold never looks unhealthy to outrider.
// Once the grace period since the preStop drain began is over, the pod is
// not being deleted, and outrider, still there with the app healthy,
// exits 1 to be restarted with it.
func TestShutdownAppRestartedQuicklyAfterPrestop(t *testing.T) {
	t.Parallel()
	srv := consultest.Start(t)
	const grace = 4 * time.Second
	in := startInstance(t, srv, "echo-restarted-quickly", false, "OUTRIDER_DRAIN_DELAY=0s",
		"OUTRIDER_GRACE_PERIOD="+grace.String(), "OUTRIDER_PROBE_FAILURE_THRESHOLD=100", "KUBERNETES_SERVICE_HOST=127.0.0.1")
	waitPassing(t, srv, in.id, 20*time.Second)
	start := time.Now()
	if code, body := httpDo(t, mustRequest(t, http.MethodPost, in.outrider.admin+"/prestop")); code != http.StatusOK {
		t.Fatalf("POST /prestop: %d %q", code, body)
	}
	in.app.Signal(syscall.SIGKILL)
	in.app.Wait(10 * time.Second)
	in.startApp()
	if c := in.outrider.Wait(grace + 20*time.Second); c != exitFailed {
		t.Fatalf("outrider exit status %d, want %d once the grace period was over with the app back", c, exitFailed)
	}
	if took := time.Since(start); took < grace {
		t.Errorf("outrider stopped %s after /prestop, before the grace period (%s) was over", took, grace)
	}
	out := in.outrider.Output()
	if !strings.Contains(out, "the app is back after a preStop drain") {
		t.Errorf("outrider's log does not say why it stopped:\n%s", out)
	}
	if strings.Contains(out, "probe failed") && strings.Contains(out, "now unhealthy") {
		t.Logf("the probe saw the app down, which this test means to avoid:\n%s", out)
	}
}

// TestShutdownRequestsThatDrainNothing: HEAD on /prestop, which the GET
// route would take, gets 405; a web page's form POST to /drain and image
// GET of /prestop get 403, and a page on a DNS name rebound to loopback
// gets 421. None starts a drain.
func TestShutdownRequestsThatDrainNothing(t *testing.T) {
	t.Parallel()
	o := startOutrider(t, 20*time.Second)
	u, err := url.Parse(o.admin)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		method string
		path   string
		host   string
		header map[string]string
		want   int
	}{
		{name: "HEAD /prestop", method: http.MethodHead, path: "/prestop", want: http.StatusMethodNotAllowed},
		{name: "a page's form", method: http.MethodPost, path: "/drain",
			header: map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example", "Content-Type": "text/plain"},
			want:   http.StatusForbidden},
		{name: "a page's image", method: http.MethodGet, path: "/prestop",
			header: map[string]string{"Sec-Fetch-Site": "cross-site"}, want: http.StatusForbidden},
		{name: "a rebound name", method: http.MethodPost, path: "/drain", host: "evil.example:" + u.Port(),
			header: map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "http://evil.example:" + u.Port()},
			want:   http.StatusMisdirectedRequest},
	}
	for _, tt := range tests {
		req := mustRequest(t, tt.method, o.admin+tt.path)
		for k, v := range tt.header {
			req.Header.Set(k, v)
		}
		if tt.host != "" {
			req.Host = tt.host
		}
		if code, body := httpDo(t, req); code != tt.want {
			t.Errorf("%s: %d %q, want %d", tt.name, code, body, tt.want)
		}
	}
	_, body := httpGet(t, o.admin+"/status")
	var st struct {
		Drain struct {
			Started bool `json:"started"`
		} `json:"drain"`
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("/status: %v: %q", err, body)
	}
	if st.Drain.Started || strings.Contains(o.Output(), "drain started") {
		t.Errorf("a refused request started the drain: /status %s", body)
	}
}

// TestShutdownExitsDespiteSilentConnections: a connection to the metrics
// or admin listener that has sent no request, or half of one, does not
// hold outrider's exit after the drain (it held each server's shutdown
// for 5 s).
func TestShutdownExitsDespiteSilentConnections(t *testing.T) {
	t.Parallel()
	o := startOutrider(t, 20*time.Second)
	for _, base := range []string{o.metrics, o.admin} {
		for _, sent := range []string{"", "GET /metrics HTTP/1.1\r\n"} {
			dialBound(t, strings.TrimPrefix(base, "http://"), sent)
		}
	}
	// The servers have taken the connections in: a request on a new one
	// is answered after them.
	if code, _ := httpGet(t, o.metrics+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d, want 200", code)
	}
	if code, _ := httpGet(t, o.admin+"/status"); code != http.StatusOK {
		t.Fatalf("/status = %d, want 200", code)
	}
	start := time.Now()
	o.Signal(syscall.SIGTERM)
	code := o.Wait(20 * time.Second)
	if took := time.Since(start); code != exitOK || took > 3*time.Second {
		t.Errorf("exit %d %s after SIGTERM, want 0 within 3 s:\n%s", code, took.Round(time.Millisecond), o.Output())
	}
}

// TestShutdownKeepAlivePoolLosesNoPost: a pool of keep-alive connections
// (Go's http.Transport, which does not retry a POST on a connection closed
// under it) sends POSTs through outrider at a steady rate while it drains.
// Through the drain delay every answer says "Connection: close", so the
// pool leaves its connections one answer at a time, and none is closed
// idle under a POST being sent on it when the proxy stops accepting. What
// may fail is only new connections as the listener closes, after the
// delay: a dial refused, or one whose handshake the kernel completed but
// that outrider never accepted, reset. A client that follows Consul has
// stopped dialing the instance by then, and one with a second instance
// sends those requests there.
func TestShutdownKeepAlivePoolLosesNoPost(t *testing.T) {
	t.Parallel()
	srv := consultest.Start(t)
	in := startInstance(t, srv, "echo-1", false)
	waitPassing(t, srv, in.id, 20*time.Second)

	const workers = 16
	client := &http.Client{
		Transport: &http.Transport{MaxIdleConnsPerHost: workers},
		Timeout:   10 * time.Second,
	}
	var (
		mu                    sync.Mutex
		drainStarted, stopped bool
		sent, keptInDelay     int
		refused               int
		lost, raced           []string
		racedAt               []time.Time
		wg                    sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if stopped {
					mu.Unlock()
					return
				}
				inDelay := drainStarted
				mu.Unlock()
				var got, reused bool
				trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { got, reused = true, i.Reused }}
				req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace),
					http.MethodPost, "http://"+in.proxy+"/echo", strings.NewReader("hello"))
				if err != nil {
					t.Error(err)
					return
				}
				resp, err := client.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				mu.Lock()
				sent++
				switch {
				case err != nil && !got:
					refused++
				case err != nil && !reused && drainStarted:
					raced, racedAt = append(raced, err.Error()), append(racedAt, time.Now())
				case err != nil:
					lost = append(lost, err.Error())
				case resp.StatusCode != http.StatusOK:
					lost = append(lost, resp.Status)
				case inDelay && drainStarted && !resp.Close:
					keptInDelay++
				}
				mu.Unlock()
				if err != nil && !got {
					time.Sleep(50 * time.Millisecond)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	time.Sleep(time.Second)
	// /drain answers once the drain has begun; /prestop joins it and
	// answers when it is done.
	if code, body := httpDo(t, mustRequest(t, http.MethodPost, in.outrider.admin+"/drain")); code != http.StatusAccepted {
		t.Fatalf("POST /drain: %d %s", code, body)
	}
	mu.Lock()
	drainStarted = true
	mu.Unlock()
	code, body := httpDo(t, mustRequest(t, http.MethodPost, in.outrider.admin+"/prestop"))
	// Past the listener's close, so that the pool meets it.
	time.Sleep(500 * time.Millisecond)
	mu.Lock()
	stopped = true
	mu.Unlock()
	wg.Wait()
	t.Logf("%d POSTs, %d lost, %d dials refused and %d new connections reset as the listener closed; /prestop: %d %s",
		sent, len(lost), refused, len(raced), code, body)
	if code != http.StatusOK {
		t.Errorf("/prestop answered %d %s, want 200", code, body)
	}
	var rep shutdown.Report
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatalf("/prestop's report %q: %v", body, err)
	}
	// Timed from the drain's start as outrider reports it: the delay
	// begins then or later (after the deregistration), and the test's
	// own sight of /drain's answer may lag it.
	for i, at := range racedAt {
		if into := at.Sub(rep.Started); into < time.Duration(rep.DelaySeconds*float64(time.Second)) {
			t.Errorf("a POST on a new connection failed %s into the drain, within its delay (%.1fs): %s", into.Round(time.Millisecond), rep.DelaySeconds, raced[i])
		}
	}
	if keptInDelay > 0 {
		t.Errorf("%d answers during the drain kept their connection alive, want Connection: close on each", keptInDelay)
	}
	if len(lost) > 0 {
		t.Errorf("%d POSTs lost on connections outrider had served before, e.g. %s", len(lost), lost[0])
	}
}
