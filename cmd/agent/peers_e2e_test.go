package main

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"

	"github.com/outrider-sidecar/outrider/internal/consultest"
	"github.com/outrider-sidecar/outrider/internal/testbin"
	"github.com/outrider-sidecar/outrider/peers/peerstest"
)

// peersQueries sums outrider_peers_queries_total over its results.
func peersQueries(t *testing.T, metrics string) float64 {
	t.Helper()
	body := scrapeMetrics(t, metrics)
	var sum float64
	found := false
	for line := range strings.Lines(body) {
		if !strings.HasPrefix(line, "outrider_peers_queries_total{") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		sum += v
		found = true
	}
	if !found {
		t.Fatalf("no outrider_peers_queries_total in %s/metrics", metrics)
	}
	return sum
}

// TestPeersE2E runs bin/outrider against a real Consul and follows a
// service through /v1/peers/{service} on the admin listener.
func TestPeersE2E(t *testing.T) {
	srv := consultest.Start(t)
	consulAgent := srv.Client().Agent()
	outrider := startOutrider(t, 10*time.Second,
		"OUTRIDER_REGISTRY=consul",
		"OUTRIDER_SERVICE_NAME=peers-e2e", "OUTRIDER_SERVICE_ADDRESS=127.0.0.1",
		"OUTRIDER_APP_ADDR="+testbin.RefusingAddr(t), // no app: outrider's own instance stays critical
		"CONSUL_HTTP_ADDR="+srv.URL(),
	)
	peersURL := outrider.admin + "/v1/peers/"

	if err := consulAgent.ServiceRegister(&consul.AgentServiceRegistration{
		ID: "web-1", Name: "web", Address: "10.0.0.1", Port: 8080, Tags: []string{"blue"}, Meta: map[string]string{"zone": "a"},
	}); err != nil {
		t.Fatalf("register web-1: %v", err)
	}
	got := peerstest.List(t, peersURL+"web")
	if len(got) != 1 || got[0].ID != "web-1" || got[0].Address != "10.0.0.1" || got[0].Port != 8080 ||
		!slices.Equal(got[0].Tags, []string{"blue"}) || got[0].Meta["zone"] != "a" {
		t.Fatalf("first GET /v1/peers/web = %+v, want web-1 at 10.0.0.1:8080 with its tags and meta", got)
	}

	steps := []struct {
		name    string
		do      func() error
		wantIDs []string
	}{
		{
			name: "a second instance registers, passing",
			do: func() error {
				return consulAgent.ServiceRegister(&consul.AgentServiceRegistration{
					ID: "web-2", Name: "web", Address: "10.0.0.2", Port: 8080,
					Check: &consul.AgentServiceCheck{TTL: "1m", Status: consul.HealthPassing},
				})
			},
			wantIDs: []string{"web-1", "web-2"},
		},
		{
			name:    "it deregisters",
			do:      func() error { return consulAgent.ServiceDeregister("web-2") },
			wantIDs: []string{"web-1"},
		},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		took := peerstest.WaitIDs(t, peersURL+"web", s.wantIDs, time.Second)
		t.Logf("%s: seen by outrider after %s", s.name, took.Round(time.Millisecond))
	}

	// No busy loop: many requests over a quiet period, hardly any query.
	before := peersQueries(t, outrider.metrics)
	requests := 0
	for start := time.Now(); time.Since(start) < 2*time.Second; requests++ {
		peerstest.List(t, peersURL+"web")
	}
	after := peersQueries(t, outrider.metrics)
	t.Logf("quiet 2s: %d requests to outrider, %v Consul health queries (%v in all)", requests, after-before, after)
	if after-before > 1 {
		t.Errorf("%v Consul health queries during 2s without changes, want at most 1", after-before)
	}

	// Only passing instances: outrider's own app is not running.
	if got := peerstest.List(t, peersURL+"peers-e2e"); len(got) != 0 {
		t.Errorf("GET /v1/peers/peers-e2e = %+v, want [] while its only instance is not passing", got)
	}
	if code, body := httpGet(t, peersURL+"web!"); code != http.StatusBadRequest || !strings.Contains(body, "invalid service name") {
		t.Errorf("GET /v1/peers/web! = %d %q, want 400 invalid service name", code, body)
	}
	if code, body := httpGet(t, outrider.admin+"/status"); code != http.StatusOK || !strings.Contains(body, `"service": "web"`) {
		t.Errorf("GET /status = %d %q, want the watched services under peers", code, body)
	}

	// The open blocking queries do not hold up the stop.
	outrider.Signal(syscall.SIGTERM)
	if code := outrider.Wait(15 * time.Second); code != 0 {
		t.Errorf("outrider exited %d on SIGTERM, want 0", code)
	}
}

// TestPeersWithoutRegistry checks that the endpoint says why it is not
// there when outrider runs without Consul.
func TestPeersWithoutRegistry(t *testing.T) {
	o := startOutrider(t, 10*time.Second)
	code, body := httpGet(t, o.admin+"/v1/peers/web")
	if code != http.StatusNotFound || !strings.Contains(body, "OUTRIDER_REGISTRY=none") {
		t.Errorf("GET /v1/peers/web = %d %q, want 404 naming OUTRIDER_REGISTRY=none", code, body)
	}
}
