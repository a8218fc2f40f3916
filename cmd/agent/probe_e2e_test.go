package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/outrider-sidecar/outrider/internal/testbin"
)

// probeWaitReady polls url until it answers code with a body containing
// want, and returns that body.
func probeWaitReady(t *testing.T, url string, code int, want string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, body := httpGet(t, url)
		if got == code && strings.Contains(body, want) {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s = %d %q, want %d with %q", url, got, body, code, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// probeWaitMetrics polls /metrics at base until its body holds every
// string of want, and fails the test after 10 s naming those it lacks.
// The prober hands a verdict to /ready before it sets
// outrider_app_healthy, so a scrape right after /ready turned may still
// find the gauge's old value.
func probeWaitMetrics(t *testing.T, base string, want ...string) {
	t.Helper()
	regEventually(t, 10*time.Second, "/metrics to hold "+strings.Join(want, ", "), func() (bool, string) {
		_, m := httpGet(t, base+"/metrics")
		var lacks []string
		for _, w := range want {
			if !strings.Contains(m, w) {
				lacks = append(lacks, w)
			}
		}
		return len(lacks) == 0, fmt.Sprintf("/metrics lacks %q", lacks)
	})
}

// TestProbeReadyFollowsTheApp starts outrider before the app, then kills
// and restarts the app, and watches /ready follow it.
func TestProbeReadyFollowsTheApp(t *testing.T) {
	const (
		period           = 200 * time.Millisecond
		timeout          = 500 * time.Millisecond
		failureThreshold = 3
		// slack is the generous allowance of a loaded machine on top of
		// what the thresholds promise.
		slack = 3 * time.Second
	)
	appAddr := testbin.FreeAddr(t)
	outrider := startOutrider(t, 10*time.Second,
		"OUTRIDER_APP_ADDR="+appAddr,
		"OUTRIDER_PROBE=http://"+appAddr+"/healthz",
		"OUTRIDER_PROBE_PERIOD="+period.String(),
		"OUTRIDER_PROBE_TIMEOUT="+timeout.String(),
		"OUTRIDER_PROBE_FAILURE_THRESHOLD="+strconv.Itoa(failureThreshold),
	)
	ready := outrider.metrics + "/ready"

	// Before the app runs, outrider is not ready, and once the failure
	// threshold is reached it says why.
	probeWaitReady(t, ready, http.StatusServiceUnavailable, "app: probe failed: GET http://"+appAddr+"/healthz: dial tcp "+appAddr)

	// The app comes up: ready.
	app := startEcho(t, appAddr, 10*time.Second)
	up := time.Now()
	testbin.WaitHTTP(t, ready, http.StatusOK, 10*time.Second)
	t.Logf("/ready turned 200 %s after the app answered", time.Since(up).Round(time.Millisecond))
	probeWaitMetrics(t, outrider.metrics, "outrider_app_healthy 1", "outrider_probe_success 1", `outrider_probe_total{result="success"} `,
		"outrider_probe_duration_seconds_count ")
	var status struct {
		Probe struct {
			Probe   string `json:"probe"`
			Healthy bool   `json:"healthy"`
		} `json:"probe"`
	}
	if _, s := httpGet(t, outrider.admin+"/status"); json.Unmarshal([]byte(s), &status) != nil ||
		!status.Probe.Healthy || status.Probe.Probe != "http://"+appAddr+"/healthz" {
		t.Errorf("/status probe section = %+v, want healthy, probing http://%s/healthz:\n%s", status.Probe, appAddr, s)
	}

	// The app dies: not ready within failure_threshold × period + timeout.
	// Timed from the kill, not from the test seeing the app gone: that
	// comes later on a loaded machine, and counted against the lower bound
	// below it made an outrider that waited for three failures look like
	// one that did not.
	killed := time.Now()
	app.Signal(syscall.SIGKILL)
	app.Wait(10 * time.Second)
	promise := failureThreshold*period + timeout
	testbin.WaitHTTP(t, ready, http.StatusServiceUnavailable, promise+slack)
	took := time.Since(killed)
	t.Logf("/ready turned 503 %s after the app was killed (promise %s)", took.Round(time.Millisecond), promise)
	// Three failures in a row take at least two periods: one is not enough.
	if least := (failureThreshold-1)*period - 50*time.Millisecond; took < least {
		t.Errorf("/ready turned 503 %s after the kill, sooner than %d failures in a row allow (%s)", took, failureThreshold, least)
	}
	if code, body := httpGet(t, ready); code != http.StatusServiceUnavailable || !strings.Contains(body, "app: probe failed: GET http://"+appAddr+"/healthz: dial tcp "+appAddr) {
		t.Errorf("/ready after the kill = %d %q, want 503 with the probe's reason", code, body)
	}
	probeWaitMetrics(t, outrider.metrics, "outrider_app_healthy 0")

	// The app is back: ready again.
	startEcho(t, appAddr, 10*time.Second)
	up = time.Now()
	testbin.WaitHTTP(t, ready, http.StatusOK, 10*time.Second)
	t.Logf("/ready turned 200 %s after the restarted app answered", time.Since(up).Round(time.Millisecond))

	outrider.Signal(syscall.SIGTERM)
	if code := outrider.Wait(10 * time.Second); code != exitOK {
		t.Errorf("exit code after SIGTERM = %d, want 0", code)
	}
	// Each transition is logged once: found unhealthy before the app
	// started, healthy, unhealthy after the kill, healthy again.
	log := outrider.Output()
	for _, w := range []struct {
		line string
		n    int
	}{
		{`"msg":"app is healthy"`, 2},
		{`"msg":"app is unhealthy"`, 2},
		{`"failures_in_a_row":3`, 2},
	} {
		if got := strings.Count(log, w.line); got != w.n {
			t.Errorf("log has %d lines with %s, want %d:\n%s", got, w.line, w.n, log)
		}
	}
}

// TestProbeExecVerdictInReady runs an exec probe through outrider: its
// exit status reaches /ready and /metrics, its output only the admin
// listener's /status.
func TestProbeExecVerdictInReady(t *testing.T) {
	o := startOutrider(t, 10*time.Second,
		"OUTRIDER_PROBE=exec:/bin/ls /nonexistent-outrider-probe",
		"OUTRIDER_PROBE_PERIOD=100ms", "OUTRIDER_PROBE_FAILURE_THRESHOLD=1",
	)
	ready := o.metrics + "/ready"
	body := probeWaitReady(t, ready, http.StatusServiceUnavailable, "app: probe failed: exec /bin/ls: exit status ")
	if strings.Contains(body, "nonexistent-outrider-probe") {
		t.Errorf("/ready = %q shows the command's output on the public listener", body)
	}
	if _, s := httpGet(t, o.admin+"/status"); !strings.Contains(s, "nonexistent-outrider-probe") {
		t.Errorf("/status lacks the command's output:\n%s", s)
	}
	if _, m := httpGet(t, o.metrics+"/metrics"); !strings.Contains(m, `outrider_probe_total{result="failure"} `) ||
		!strings.Contains(m, "outrider_probe_success 0") {
		t.Errorf("/metrics lacks the failed probes")
	}
}

// TestProbeBadSpecStopsStartUp checks that a probe outrider cannot run
// stops it before it starts, with exit status 2 and the variable named.
func TestProbeBadSpecStopsStartUp(t *testing.T) {
	tests := []struct {
		name  string
		probe string
		want  string
	}{
		{name: "unknown scheme", probe: "ftp://x",
			want: `outrider: configuration: OUTRIDER_PROBE="ftp://x" unknown scheme "ftp" (want http, https, tcp, grpc or exec)`},
		{name: "exec without a command", probe: "exec:",
			want: `outrider: configuration: OUTRIDER_PROBE="exec:" exec: names no command (want exec:/path/to/cmd arg…)`},
		{name: "http without a host", probe: "http://",
			want: `outrider: configuration: OUTRIDER_PROBE="http://" http URL has no host (want e.g. http://127.0.0.1:8080/healthz)`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := launchOutrider(t, "OUTRIDER_PROBE="+tc.probe)
			code := p.Wait(30 * time.Second)
			out := p.Output()
			if code != exitUsage {
				t.Errorf("exit code = %d, want %d", code, exitUsage)
			}
			if strings.TrimSpace(out) != tc.want {
				t.Errorf("output = %q, want exactly %q", out, tc.want)
			}
		})
	}
}

// TestReadyHidesTheAppsHealthBody makes the app's health check fail with
// a body that names a secret: /ready on the public metrics listener names
// the condition and the probe's outcome, never the body, which the admin
// listener's /status keeps.
func TestReadyHidesTheAppsHealthBody(t *testing.T) {
	const secret = "db-password-hunter2"
	// An app whose health check fails and says why in its body.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "cannot reach the database with "+secret, http.StatusServiceUnavailable)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	o := startOutrider(t, 10*time.Second,
		"OUTRIDER_APP_ADDR="+ln.Addr().String(),
		"OUTRIDER_PROBE=http://"+ln.Addr().String()+"/healthz",
		"OUTRIDER_PROBE_PERIOD=100ms", "OUTRIDER_PROBE_FAILURE_THRESHOLD=1",
	)
	body := probeWaitReady(t, o.metrics+"/ready", http.StatusServiceUnavailable,
		"app: probe failed: GET http://"+ln.Addr().String()+"/healthz: 503 Service Unavailable")
	if strings.Contains(body, secret) {
		t.Errorf("/ready = %q shows the app's health body on the public listener", body)
	}
	if _, s := httpGet(t, o.admin+"/status"); !strings.Contains(s, secret) {
		t.Errorf("/status on the admin listener lacks the app's health body:\n%s", s)
	}
}

// TestExecProbeEnvironment runs an exec probe that writes its environment
// to a file, with secrets in outrider's environment.
func TestExecProbeEnvironment(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "probe-env")
	// The probe runs every 100 ms and each run rewrites the file: written
	// in place, a read that came a period after /ready turned could find
	// it truncated by the next run and not yet written. Renamed into
	// place, every read finds one run's whole environment.
	script := filepath.Join(dir, "probe.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nenv >"+out+".$$ && mv "+out+".$$ "+out+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{
		"CONSUL_HTTP_TOKEN":    "consul-s3cr3t",
		"OUTRIDER_ADMIN_TOKEN": "admin-s3cr3t",
		"VAULT_TOKEN":          "vault-s3cr3t",
	}
	env := []string{
		"OUTRIDER_PROBE=exec:" + script,
		"OUTRIDER_PROBE_PERIOD=100ms",
		"OUTRIDER_PROBE_ENV_DENY=VAULT_TOKEN",
		"OUTRIDER_PROBE_ENV=PROBE_TARGET=db:5432",
		"PROBE_VISIBLE=yes",
	}
	for k, v := range secrets {
		env = append(env, k+"="+v)
	}
	o := startOutrider(t, 10*time.Second, env...)
	testbin.WaitHTTP(t, o.metrics+"/ready", http.StatusOK, 10*time.Second)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	for k, v := range secrets {
		if strings.Contains(got, v) {
			t.Errorf("the probe's environment has %s:\n%s", k, got)
		}
	}
	for _, want := range []string{"PROBE_VISIBLE=yes", "PROBE_TARGET=db:5432"} {
		if !strings.Contains(got, want) {
			t.Errorf("the probe's environment lacks %s:\n%s", want, got)
		}
	}
}

// TestProbeGRPCFollowsTheHealthService probes a gRPC health service
// through the binary, which speaks the protocol without a gRPC library,
// against grpc-go's server: SERVING makes /ready 200, NOT_SERVING 503 with
// the status as the reason.
func TestProbeGRPCFollowsTheHealthService(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	addr := ln.Addr().String()

	outrider := startOutrider(t, 10*time.Second,
		"OUTRIDER_APP_ADDR="+addr,
		"OUTRIDER_PROBE=grpc://"+addr,
		"OUTRIDER_PROBE_PERIOD=200ms",
		"OUTRIDER_PROBE_FAILURE_THRESHOLD=1",
	)
	ready := outrider.metrics + "/ready"
	testbin.WaitHTTP(t, ready, http.StatusOK, 10*time.Second)

	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	probeWaitReady(t, ready, http.StatusServiceUnavailable, "grpc health check of "+addr+": NOT_SERVING")

	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	testbin.WaitHTTP(t, ready, http.StatusOK, 10*time.Second)
	// With the service SERVING again.
	probeWaitMetrics(t, outrider.metrics, "outrider_app_healthy 1")
}
