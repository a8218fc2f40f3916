package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/outrider-sidecar/outrider/internal/consultest"
	"github.com/outrider-sidecar/outrider/internal/grafanatest"
	"github.com/outrider-sidecar/outrider/internal/promtest"
)

// TestGrafanaDashboardQueriesReturnData runs every query of the shipped
// dashboard against real Prometheus servers that scrape two outriders
// (bin/echo behind bin/outrider, registered in a real Consul) and evaluate
// deploy/prometheus/rules.yml, after a bounded load with a few 5xx among
// it and a drain of one outrider through /prestop. Each variable lists the
// run's service and instances; each panel's query, its variables filled
// as Grafana fills them, returns at least one series with a finite value
// over the run; and the panels show what the run did.
//
// Two servers, because an instance found through Consul deregisters as
// its drain starts and mostly leaves Prometheus' targets before a scrape
// sees it draining (in most runs here within half a second, in some after
// 3 to 9 s): one runs the consul job of
// docs/prometheus.md, the other a static job with the same labels, which
// keeps the drained instance a target as kubernetes_sd_configs keeps a
// terminating pod, so that the drain panels are proven on a drain.
func TestGrafanaDashboardQueriesReturnData(t *testing.T) {
	d, err := grafanatest.Read(grafanaDashboard)
	if err != nil {
		t.Fatal(err)
	}
	srv := consultest.Start(t)
	consulJob, _ := docConsulJob(t, srv)
	a := startProxyAgent(t, promConsulEnv(srv, "echo-1")...)
	b := startProxyAgent(t, promConsulEnv(srv, "echo-2")...)
	aMetrics, bMetrics := strings.TrimPrefix(a.metrics, "http://"), strings.TrimPrefix(b.metrics, "http://")
	staticJob := fmt.Sprintf("scrape_configs:\n  - job_name: outrider\n    static_configs:\n"+
		"      - targets: ['%s', '%s']\n        labels: {service: echo}\n", aMetrics, bMetrics)

	start := time.Now()
	consulProm := promtest.Start(t, promtest.Config{
		ScrapeConfigs: consulJob, RuleFiles: []string{promRules}, Interval: promInterval,
		DiscoveryReload: 5 * time.Second, // Prometheus' default
	})
	staticProm := promtest.Start(t, promtest.Config{
		ScrapeConfigs: staticJob, RuleFiles: []string{promRules}, Interval: promInterval,
	})
	proms := []*promtest.Server{consulProm, staticProm}
	for _, prom := range proms {
		prom.WaitFor(t, 30*time.Second, `up == 1`, func(s []promtest.Sample) bool { return len(s) == 2 })
	}

	// A bounded load through both proxies, and a few 5xx through one.
	// rate() does not count a series' first value, so each instance
	// exports its GET 503 series from 0 once it has served a GET: the
	// one burst of 503s below, the first, must show in the error ratio.
	load := startPacedLoad(t, 20, 3*time.Minute, "http://"+a.proxy, "http://"+b.proxy)
	for _, prom := range proms {
		prom.WaitFor(t, 30*time.Second, `outrider_http_requests_total{method="GET",code="503"} == 0`,
			func(s []promtest.Sample) bool { return len(s) == 2 })
	}
	for range 10 {
		if code, body := httpGet(t, "http://"+b.proxy+"/status/503"); code != http.StatusServiceUnavailable {
			t.Fatalf("GET /status/503 through echo-2's proxy = %d %q, want 503", code, body)
		}
	}
	// Both instances' rates, and the recorded series, once the rules have
	// seen the traffic.
	for _, prom := range proms {
		prom.WaitFor(t, time.Minute, `sum by (instance) (rate(outrider_http_requests_total{service="echo"}[1m])) > 1`,
			func(s []promtest.Sample) bool { return len(s) == 2 })
		prom.WaitFor(t, time.Minute, `service:outrider_http_request_errors:ratio_rate1m{service="echo"} > 0`,
			func(s []promtest.Sample) bool { return len(s) == 1 })
		prom.WaitFor(t, time.Minute, `service:outrider_http_request_duration_seconds:quantile_rate1m{service="echo"}`,
			func(s []promtest.Sample) bool { return len(s) == 3 })
	}

	// Drain echo-1 as a preStop hook does, its load moved to echo-2 first.
	load.setTargets("http://" + b.proxy)
	drained := time.Now()
	if code, body := httpDo(t, mustRequest(t, http.MethodPost, a.admin+"/prestop")); code != http.StatusOK {
		t.Fatalf("POST %s/prestop = %d %q, want 200", a.admin, code, body)
	}
	t.Logf("echo-1's /prestop answered after %s", time.Since(drained).Round(time.Millisecond))
	waitNotTarget(t, consulProm, aMetrics, 30*time.Second)
	t.Logf("echo-1 is no longer a target of the consul job %s after the drain began", time.Since(drained).Round(time.Millisecond))
	// The static job scrapes echo-1 on, its drain done; the range below
	// ends at a whole step, so wait until every sample of the last 3s
	// holds the drain's duration.
	staticProm.WaitFor(t, 30*time.Second, `min_over_time(outrider_drain_duration_seconds{instance="`+aMetrics+`"}[3s]) > 0`,
		func(s []promtest.Sample) bool { return len(s) == 1 })

	// What the run made the panels show, by panel title/refId: the
	// extremes of each series over the run, by the label that tells the
	// series apart.
	type check struct {
		query string
		label string
		want  func(map[string]grafanatest.Extremes) error
	}
	served := []check{
		{"Request rate by service/A", "service", grafanatest.LargestAtLeast(map[string]float64{"echo": 1})},
		// Above 1 req/s each when the drain began; the range's steps may
		// fall a second either side of that.
		{"Request rate by instance/A", "instance", grafanatest.LargestAtLeast(map[string]float64{aMetrics: 0.5, bMetrics: 0.5})},
		{"Error ratio by service/A", "service", grafanatest.LargestAtLeast(map[string]float64{"echo": 0.001})},
		{"Responses by status code/A", "code", grafanatest.LargestAtLeast(map[string]float64{"200": 1, "503": 0.01})},
		{"Latency quantiles by service/A", "quantile", grafanatest.LargestAtLeast(map[string]float64{"0.5": 1e-6, "0.9": 1e-6, "0.99": 1e-6})},
		{"Latency quantiles by instance/C", "instance", grafanatest.LargestAtLeast(map[string]float64{aMetrics: 1e-6, bMetrics: 1e-6})},
		{"App CPU/A", "instance", grafanatest.LargestAtLeast(map[string]float64{aMetrics: 0, bMetrics: 0})},
		{"App resident memory/A", "instance", grafanatest.LargestAtLeast(map[string]float64{aMetrics: 1 << 20, bMetrics: 1 << 20})},
		{"Registration/C", "instance", grafanatest.LargestAtLeast(map[string]float64{aMetrics: 1, bMetrics: 1})},
		{"Draining/A", "instance", func(e map[string]grafanatest.Extremes) error {
			if e[bMetrics].Max != 0 {
				return fmt.Errorf("%s drained (%v), want it at 0 all along", bMetrics, e[bMetrics])
			}
			return nil
		}},
	}
	drain := []check{
		// Deregistered, draining, and how long the drain took (its delay
		// of 1s, nothing in flight), for echo-1 only.
		{"Registration/C", "instance", func(e map[string]grafanatest.Extremes) error {
			if e[aMetrics].Last != 0 || e[bMetrics].Last != 1 {
				return fmt.Errorf("extremes %v, want %s deregistered (0) and %s registered (1) at the end", e, aMetrics, bMetrics)
			}
			return nil
		}},
		{"Draining/A", "instance", func(e map[string]grafanatest.Extremes) error {
			if e[aMetrics].Max != 1 || e[bMetrics].Max != 0 {
				return fmt.Errorf("extremes %v, want %s draining (1) and %s not (0)", e, aMetrics, bMetrics)
			}
			return nil
		}},
		{"Drain duration/A", "instance", func(e map[string]grafanatest.Extremes) error {
			if got := e[aMetrics].Max; got < 1 || got > 5 || e[bMetrics].Max != 0 {
				return fmt.Errorf("extremes %v, want %s's drain between its 1s delay and 5s, %s at 0", e, aMetrics, bMetrics)
			}
			return nil
		}},
	}
	for _, run := range []struct {
		name   string
		prom   *promtest.Server
		checks []check
	}{
		{"consul job of docs/prometheus.md", consulProm, served},
		{"static job keeping the drained instance", staticProm, append(served, drain...)},
	} {
		t.Run(run.name, func(t *testing.T) {
			results := grafanatest.Query(t, d, run.prom, start, map[string][]string{
				"service": {"echo"}, "instance": {aMetrics, bMetrics},
			})
			if series, ok := results["Draining/A"]; ok {
				t.Logf("echo-1 seen draining by this Prometheus: %v (its largest outrider_draining)",
					grafanatest.ExtremesBy(series, "instance")[aMetrics].Max == 1)
			}
			for _, c := range run.checks {
				series, ok := results[c.query]
				if !ok {
					t.Errorf("%s: no such panel query in the dashboard, or it failed", c.query)
					continue
				}
				if err := c.want(grafanatest.ExtremesBy(series, c.label)); err != nil {
					t.Errorf("%s: %v", c.query, err)
				}
			}
		})
	}

	load.stop()
	if n := load.failures(); n > 0 {
		t.Errorf("%d requests of the load failed, want none", n)
	}
}

// waitNotTarget polls Prometheus' targets until instance is not among them.
func waitNotTarget(t *testing.T, prom *promtest.Server, instance string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		targets, err := prom.Targets(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if !hasInstance(targets, instance) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is still a target after %s: %+v", instance, limit, targets)
		}
		<-tick.C
	}
}
