package main

import (
	"context"
	"io"
	"math"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"

	"github.com/outrider-sidecar/outrider/internal/consultest"
	"github.com/outrider-sidecar/outrider/internal/promtest"
)

// Files of the Prometheus end-to-end test, relative to this package.
const (
	promDoc   = "../../docs/prometheus.md"
	promRules = "../../deploy/prometheus/rules.yml"
	// promDocServer is the Consul address the documented job names; the
	// test points it at its own Consul and changes nothing else.
	promDocServer = "server: localhost:8500"
)

// Timing and load of the Prometheus end-to-end test.
const (
	promInterval = time.Second // scrape and rule evaluation
	promRate     = 40          // requests per second over all instances
	// promWindow is the range of the recorded rate, [1m] in rules.yml.
	promWindow = time.Minute
)

// TestPrometheusFindsOutridersThroughConsul runs a real Prometheus with the
// scrape job of docs/prometheus.md and deploy/prometheus/rules.yml against
// a real Consul and two echo apps behind bin/outrider: Prometheus finds
// both through Consul at their metrics address, the recorded service rate
// matches the load sent, and a drained instance leaves the targets within
// two refresh intervals while the recorded figures stay finite.
func TestPrometheusFindsOutridersThroughConsul(t *testing.T) {
	srv := consultest.Start(t)
	job, refresh := docConsulJob(t, srv)
	a := startProxyAgent(t, promConsulEnv(srv, "echo-1")...)
	b := startProxyAgent(t, promConsulEnv(srv, "echo-2")...)
	aMetrics, bMetrics := strings.TrimPrefix(a.metrics, "http://"), strings.TrimPrefix(b.metrics, "http://")

	prom := promtest.Start(t, promtest.Config{
		ScrapeConfigs: job, RuleFiles: []string{promRules}, Interval: promInterval,
		// Prometheus' own default, so that the time a drained instance
		// takes to leave the targets is what a user's Prometheus shows.
		DiscoveryReload: 5 * time.Second,
	})

	// Found through Consul, at their metrics address, with the labels the
	// job keeps; Consul's own service is not a target.
	up := prom.WaitFor(t, 30*time.Second, `up == 1`, func(s []promtest.Sample) bool { return len(s) == 2 })
	var instances []string
	for _, s := range up {
		instances = append(instances, s.Labels["instance"])
		if s.Labels["job"] != "outrider" || s.Labels["service"] != "echo" || s.Labels["tags"] != ",v1,blue," ||
			!strings.HasPrefix(s.Labels["node"], "outrider-test-") {
			t.Errorf("up %v: want job outrider, service echo, tags ,v1,blue, and the Consul node", s.Labels)
		}
		if _, ok := s.Labels["pod"]; ok {
			t.Errorf("up %v: a pod label outside a pod", s.Labels)
		}
	}
	sort.Strings(instances)
	want := []string{aMetrics, bMetrics}
	sort.Strings(want)
	if strings.Join(instances, " ") != strings.Join(want, " ") {
		t.Errorf("instances up = %v, want the metrics addresses %v", instances, want)
	}
	targets, err := prom.Targets(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(targets) != 2 {
		t.Errorf("prometheus has %d targets, want the 2 outriders: %+v", len(targets), targets)
	}

	// A known load through both proxies; once it has filled the rate's
	// window, the recorded rate matches what the load sent in that window.
	load := startPacedLoad(t, promRate, 5*time.Minute, "http://"+a.proxy, "http://"+b.proxy)
	waitUntil(t, load.started.Add(promWindow+3*promInterval))
	const rateSeries = `service:outrider_http_requests:rate1m{service="echo"}`
	// The recorded value and the time of the rule evaluation that wrote it.
	now := time.Now()
	recorded := queryOne(t, prom, rateSeries, now)
	evalTime := time.UnixMilli(int64(math.Round(queryOne(t, prom, "timestamp("+rateSeries+")", now) * 1000)))
	sent := load.rateIn(evalTime.Add(-promWindow), evalTime)
	t.Logf("recorded %s = %.2f req/s at %s; the load sent %.2f req/s in the minute before",
		rateSeries, recorded, evalTime.Format(time.TimeOnly), sent)
	if sent < promRate/2 {
		t.Fatalf("the load sent only %.2f req/s of %d: the machine is too busy for the comparison", sent, promRate)
	}
	if math.Abs(recorded-sent) > 0.1*sent {
		t.Errorf("recorded rate %.2f req/s, want within 10%% of the %.2f req/s sent", recorded, sent)
	}

	// Drain echo-1: its load moves to echo-2 first, as Consul's clients'
	// would; it leaves the targets within two refresh intervals, and the
	// recorded figures read finite all the while: until it has left, and
	// for the rest of those two intervals, as its series end.
	load.setTargets("http://" + b.proxy)
	drained := time.Now()
	a.Signal(syscall.SIGTERM)
	bound := 2 * refresh
	var left time.Duration
	reads := 0
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for left == 0 || time.Since(drained) < bound {
		for _, expr := range []string{
			rateSeries,
			`service:outrider_http_request_errors:ratio_rate1m{service="echo"}`,
			`service:outrider_http_request_duration_seconds:quantile_rate1m{service="echo"}`,
		} {
			got, err := prom.Query(context.Background(), expr)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) == 0 {
				t.Errorf("%.1fs into the drain: %s is absent", time.Since(drained).Seconds(), expr)
			}
			for _, s := range got {
				if math.IsNaN(s.Value) || math.IsInf(s.Value, 0) {
					t.Errorf("%.1fs into the drain: %s%v = %v, want a finite value",
						time.Since(drained).Seconds(), expr, s.Labels, s.Value)
				}
			}
			reads++
		}
		targets, err := prom.Targets(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if left == 0 && !hasInstance(targets, aMetrics) {
			left = time.Since(drained)
		}
		if left == 0 && time.Since(drained) > bound+10*time.Second {
			t.Fatalf("echo-1 (%s) is still a target %s after its drain began, want gone within %s",
				aMetrics, time.Since(drained).Round(time.Millisecond), bound)
		}
		<-tick.C
	}
	t.Logf("echo-1 left Prometheus' targets %s after SIGTERM (refresh_interval %s); %d reads of the recorded series in the %s after SIGTERM",
		left.Round(time.Millisecond), refresh, reads, time.Since(drained).Round(time.Millisecond))
	if left > bound {
		t.Errorf("echo-1 left the targets after %s, want within two refresh intervals (%s)", left.Round(time.Millisecond), bound)
	}
	if code := a.Wait(30 * time.Second); code != 0 {
		t.Errorf("drained outrider exited %d, want 0", code)
	}
	up = prom.WaitFor(t, 10*time.Second, `up`, func(s []promtest.Sample) bool { return len(s) == 1 })
	if up[0].Labels["instance"] != bMetrics || up[0].Value != 1 {
		t.Errorf("after the drain up = %+v, want echo-2 (%s) up alone", up, bMetrics)
	}
	load.stop()
	if n := load.failures(); n > 0 {
		t.Errorf("%d requests of the load failed, want none", n)
	}
}

// TestPrometheusFindsOutridersWithTheDocumentedACLPolicy runs the consul
// job of docs/prometheus.md against a Consul with default-deny ACLs, with a
// token of the policy the page gives Prometheus: Prometheus must find and
// scrape the outrider registered there. Prometheus asks the agent for its
// datacenter before it lists services, so a policy without agent:read
// leaves the job with no target at all.
func TestPrometheusFindsOutridersWithTheDocumentedACLPolicy(t *testing.T) {
	const root = "root-token-for-tests"
	srv := consultest.Start(t, consultest.WithACL(root))
	admin := srv.Client()
	rules := promtest.DocBlock(t, promDoc, "consul-policy: prometheus")
	pol, _, err := admin.ACL().PolicyCreate(&consul.ACLPolicy{Name: "prometheus", Rules: rules}, nil)
	if err != nil {
		t.Fatalf("%s: consul refuses the policy for Prometheus: %v", promDoc, err)
	}
	tok, _, err := admin.ACL().TokenCreate(&consul.ACLToken{Description: "prometheus",
		Policies: []*consul.ACLTokenPolicyLink{{ID: pol.ID}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	job, _ := docConsulJob(t, srv)
	server := "server: " + srv.HTTPAddr + "\n"
	indent := regexp.MustCompile(`(?m)^(\s+)refresh_interval:`).FindStringSubmatch(job)
	if indent == nil || !strings.Contains(job, server) {
		t.Fatalf("%s: the consul job has no server line followed by refresh_interval:\n%s", promDoc, job)
	}
	job = strings.Replace(job, server, server+indent[1]+"token: "+tok.SecretID+"\n", 1)

	a := startProxyAgent(t, append(promConsulEnv(srv, "echo-1"), "CONSUL_HTTP_TOKEN="+root)...)
	prom := promtest.Start(t, promtest.Config{ScrapeConfigs: job})
	up := prom.WaitFor(t, 30*time.Second, `up == 1`, func(s []promtest.Sample) bool { return len(s) == 1 })
	if want := strings.TrimPrefix(a.metrics, "http://"); up[0].Labels["instance"] != want || up[0].Labels["service"] != "echo" {
		t.Errorf("up %v: want service echo at instance %s", up[0].Labels, want)
	}
}

// docConsulJob returns the consul scrape job of docs/prometheus.md pointed
// at srv, and its refresh_interval.
func docConsulJob(t *testing.T, srv *consultest.Server) (string, time.Duration) {
	t.Helper()
	job := promtest.DocBlock(t, promDoc, "scrape-job: consul")
	refresh := docRefreshInterval(t, job)
	if n := strings.Count(job, promDocServer); n != 1 {
		t.Fatalf("%s: the consul job names %q %d times, want once", promDoc, promDocServer, n)
	}
	return strings.Replace(job, promDocServer, "server: "+srv.HTTPAddr, 1), refresh
}

// promConsulEnv is the environment of an outrider that registers the echo
// app as service echo (tags v1, blue) with the instance id in srv.
func promConsulEnv(srv *consultest.Server, id string) []string {
	return []string{
		"OUTRIDER_REGISTRY=consul", "CONSUL_HTTP_ADDR=" + srv.URL(),
		"OUTRIDER_SERVICE_NAME=echo", "OUTRIDER_SERVICE_ID=" + id,
		"OUTRIDER_SERVICE_TAGS=v1,blue", "OUTRIDER_SERVICE_ADDRESS=127.0.0.1",
		"OUTRIDER_PROBE_PERIOD=200ms", "OUTRIDER_DRAIN_DELAY=1s", "OUTRIDER_DRAIN_TIMEOUT=5s",
	}
}

// docRefreshInterval reads the consul job's refresh_interval.
func docRefreshInterval(t *testing.T, job string) time.Duration {
	t.Helper()
	m := regexp.MustCompile(`(?m)^\s+refresh_interval:\s*(\S+)\s*$`).FindStringSubmatch(job)
	if m == nil {
		t.Fatalf("%s: the consul job sets no refresh_interval", promDoc)
	}
	d, err := time.ParseDuration(m[1])
	if err != nil {
		t.Fatalf("%s: refresh_interval %q: %v", promDoc, m[1], err)
	}
	return d
}

// queryOne evaluates expr at at and returns its one sample's value.
func queryOne(t *testing.T, prom *promtest.Server, expr string, at time.Time) float64 {
	t.Helper()
	got, err := prom.QueryAt(context.Background(), expr, at)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("%s at %s = %+v, want one sample", expr, at.Format(time.TimeOnly), got)
	}
	return got[0].Value
}

func hasInstance(targets []promtest.Target, instance string) bool {
	for _, tg := range targets {
		if tg.Labels["instance"] == instance {
			return true
		}
	}
	return false
}

// waitUntil blocks until the wall clock reaches at.
func waitUntil(t *testing.T, at time.Time) {
	t.Helper()
	timer := time.NewTimer(time.Until(at))
	defer timer.Stop()
	<-timer.C
}

// pacedLoad sends GET / at a fixed rate to its targets in turn, from one
// goroutine that stop ends, and notes when each answer came.
type pacedLoad struct {
	started time.Time
	quit    chan struct{}
	done    chan struct{}

	// sending is held for each request, so that setTargets returns
	// with no request to an old target in flight.
	sending  sync.Mutex
	mu       sync.Mutex
	targets  []string
	answered []time.Time
	failed   int
}

// startPacedLoad sends rate requests per second to targets until stop is
// called, or for at most limit; the test's end stops it too.
func startPacedLoad(t *testing.T, rate int, limit time.Duration, targets ...string) *pacedLoad {
	l := &pacedLoad{started: time.Now(), quit: make(chan struct{}), done: make(chan struct{}), targets: targets}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	go func() {
		defer close(l.done)
		defer client.CloseIdleConnections()
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		end := time.NewTimer(limit)
		defer end.Stop()
		for i := 0; ; i++ {
			select {
			case <-l.quit:
				return
			case <-end.C:
				return
			case <-tick.C:
			}
			l.sending.Lock()
			l.mu.Lock()
			target := l.targets[i%len(l.targets)]
			l.mu.Unlock()
			ok := get200(client, target+"/")
			l.sending.Unlock()
			l.mu.Lock()
			if ok {
				l.answered = append(l.answered, time.Now())
			} else {
				l.failed++
			}
			l.mu.Unlock()
		}
	}()
	t.Cleanup(l.stop)
	return l
}

func get200(c *http.Client, url string) bool {
	resp, err := c.Get(url)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode == http.StatusOK
}

// setTargets sends the load to targets from the next request on.
func (l *pacedLoad) setTargets(targets ...string) {
	l.sending.Lock()
	defer l.sending.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.targets = targets
}

// rateIn is the rate of answers in (from, to], per second.
func (l *pacedLoad) rateIn(from, to time.Time) float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, at := range l.answered {
		if at.After(from) && !at.After(to) {
			n++
		}
	}
	return float64(n) / to.Sub(from).Seconds()
}

func (l *pacedLoad) failures() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failed
}

// stop ends the load and waits for its goroutine; calling it twice is fine.
func (l *pacedLoad) stop() {
	select {
	case <-l.quit:
	default:
		close(l.quit)
	}
	<-l.done
}
