package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"

	"github.com/outrider-sidecar/outrider/internal/consultest"
	"github.com/outrider-sidecar/outrider/internal/testbin"
)

// Timing of the registry end-to-end tests: short, so the tests are quick,
// and the bounds below are derived from them.
const (
	regPeriod    = 200 * time.Millisecond
	regFailures  = 2
	regTTL       = 3 * time.Second
	regHeartbeat = regTTL / 3
	// regSlack absorbs scheduling on a loaded test machine; the figures
	// measured are logged so that a reader sees the real latency.
	regSlack = time.Second
)

// regApp is one echo app with outrider beside it, registered in a test Consul.
type regApp struct {
	t        *testing.T
	consul   *consultest.Server
	cc       *consul.Client // one client: each new one keeps its own connections
	echoAddr string
	echo     *testbin.Proc
	outrider *testbin.Proc
	metrics  string // base URLs
	admin    string
	id       string
	client   *http.Client
}

// regStart starts echo and outrider registering it in srv as echo-1 of
// service echo; env adds to or overrides outrider's environment.
func regStart(t *testing.T, srv *consultest.Server, env ...string) *regApp {
	t.Helper()
	a := &regApp{
		t: t, consul: srv, cc: srv.Client(), echoAddr: testbin.FreeAddr(t), id: "echo-1",
		client: &http.Client{Timeout: 5 * time.Second},
	}
	a.startEcho()
	_, port, _ := strings.Cut(a.echoAddr, ":")
	base := []string{
		"OUTRIDER_REGISTRY=consul",
		"OUTRIDER_SERVICE_NAME=echo", "OUTRIDER_SERVICE_ID=" + a.id,
		"OUTRIDER_SERVICE_TAGS=v1,blue", "OUTRIDER_SERVICE_META=team=a",
		"OUTRIDER_SERVICE_ADDRESS=127.0.0.1", "OUTRIDER_SERVICE_PORT=" + port,
		"OUTRIDER_APP_ADDR=" + a.echoAddr, "OUTRIDER_PROBE=http://" + a.echoAddr + "/healthz",
		"OUTRIDER_PROBE_PERIOD=" + regPeriod.String(), "OUTRIDER_PROBE_TIMEOUT=" + regPeriod.String(),
		"OUTRIDER_PROBE_FAILURE_THRESHOLD=" + strconv.Itoa(regFailures),
		"OUTRIDER_CHECK_TTL=" + regTTL.String(), "OUTRIDER_DEREGISTER_CRITICAL_AFTER=1m",
		"CONSUL_HTTP_ADDR=" + srv.URL(),
	}
	o := startOutrider(t, 20*time.Second, append(base, env...)...)
	a.outrider, a.metrics, a.admin = o.Proc, o.metrics, o.admin
	return a
}

func (a *regApp) startEcho() {
	a.echo = startEcho(a.t, a.echoAddr, 20*time.Second)
}

// setHealthy tells echo what /healthz should answer.
func (a *regApp) setHealthy(healthy bool) {
	a.t.Helper()
	resp, err := a.client.Post("http://"+a.echoAddr+"/admin/health?healthy="+strconv.FormatBool(healthy), "", nil)
	if err != nil {
		a.t.Fatalf("set echo health: %v", err)
	}
	resp.Body.Close()
}

// health returns the aggregated status Consul's health endpoint gives the
// instance ("passing", "critical", "maintenance"…), or "absent".
func (a *regApp) health() string {
	a.t.Helper()
	entries, _, err := a.cc.Health().Service("echo", "", false, nil)
	if err != nil {
		return "error: " + err.Error()
	}
	for _, e := range entries {
		if e.Service.ID == a.id {
			return e.Checks.AggregatedStatus()
		}
	}
	return "absent"
}

// waitHealth waits for the instance's status and returns how long it took.
func (a *regApp) waitHealth(want string, limit time.Duration) time.Duration {
	a.t.Helper()
	return regEventually(a.t, limit, "consul health of "+a.id+" is "+want, func() (bool, string) {
		got := a.health()
		return got == want, got
	})
}

// get answers the body and status of GET url.
func (a *regApp) get(url string) (int, string) {
	a.t.Helper()
	resp, err := a.client.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric returns the value of one series of outrider's /metrics, e.g.
// `outrider_consul_errors_total{op="heartbeat"}`, or -1 when absent.
func (a *regApp) metric(series string) float64 {
	a.t.Helper()
	code, body := a.get(a.metrics + "/metrics")
	if code != http.StatusOK {
		a.t.Fatalf("GET /metrics: %d %s", code, body)
	}
	if v, ok := seriesValue(a.t, body, series); ok {
		return v
	}
	return -1
}

// consulStatus returns the "consul" section of /status.
func (a *regApp) consulStatus() map[string]any {
	a.t.Helper()
	code, body := a.get(a.admin + "/status")
	if code != http.StatusOK {
		a.t.Fatalf("GET /status: %d %s", code, body)
	}
	var s struct {
		Consul map[string]any `json:"consul"`
	}
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		a.t.Fatalf("decode /status: %v\n%s", err, body)
	}
	return s.Consul
}

// regEventually polls cond until it holds, failing the test after limit,
// and returns how long it took.
func regEventually(t *testing.T, limit time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(limit)
	for {
		ok, last := cond()
		if ok {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; last: %s", what, limit, last)
		}
		<-time.After(10 * time.Millisecond)
	}
}

// TestRegistryRegistersTheAppAndMirrorsItsProbe: the instance is in the
// catalog with its ID, tags, meta, address and port, passing within a
// probe period of the app being healthy, critical within
// failure_threshold × period + heartbeat of the app failing or dying,
// and passing again when it is back. The TTL is long here (heartbeat 5 s),
// so that the bounds, with their slack, hold only if transitions are pushed
// at once rather than at the next heartbeat.
func TestRegistryRegistersTheAppAndMirrorsItsProbe(t *testing.T) {
	t.Parallel()
	srv := consultest.Start(t)
	const heartbeat = 5 * time.Second
	a := regStart(t, srv, "POD_NAME=echo-7d9f-x2k4p", "POD_NAMESPACE=shop", "OUTRIDER_CHECK_TTL="+(3*heartbeat).String())
	a.waitHealth("passing", 20*time.Second)

	c := a.cc
	services, _, err := c.Catalog().Services(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(services) != 2 {
		t.Errorf("catalog services = %v, want only consul and echo (outrider is not registered as a second instance)", services)
	}
	instances, _, err := c.Catalog().Service("echo", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(instances) != 1 {
		t.Fatalf("instances of echo = %d, want 1", len(instances))
	}
	s := instances[0]
	_, port, _ := strings.Cut(a.echoAddr, ":")
	if s.ServiceID != "echo-1" || s.ServiceAddress != "127.0.0.1" || strconv.Itoa(s.ServicePort) != port ||
		strings.Join(s.ServiceTags, ",") != "v1,blue" {
		t.Errorf("instance = %s at %s:%d tags %v, want echo-1 at 127.0.0.1:%s tags [v1 blue]",
			s.ServiceID, s.ServiceAddress, s.ServicePort, s.ServiceTags, port)
	}
	for k, want := range map[string]string{"team": "a", "outrider_version": "dev", "pod_name": "echo-7d9f-x2k4p", "pod_namespace": "shop"} {
		if got := s.ServiceMeta[k]; got != want {
			t.Errorf("meta %s = %q, want %q", k, got, want)
		}
	}
	if code, body := a.get(a.metrics + "/ready"); code != http.StatusOK {
		t.Errorf("/ready = %d %q, want 200", code, body)
	}

	// Tighter than failure_threshold × period + heartbeat: with the slack
	// still well under the heartbeat, it holds only without waiting for one.
	unhealthyBound := regFailures*regPeriod + regSlack
	for _, tc := range []struct {
		name   string
		fail   func()
		revive func()
	}{
		{name: "app says unhealthy", fail: func() { a.setHealthy(false) }, revive: func() { a.setHealthy(true) }},
		{name: "app killed", fail: func() { a.echo.Signal(syscall.SIGKILL); a.echo.Wait(10 * time.Second) }, revive: a.startEcho},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.fail()
			took := a.waitHealth("critical", 10*time.Second)
			t.Logf("critical %s after the app failed (bound %s)", took.Round(time.Millisecond), unhealthyBound)
			if took > unhealthyBound {
				t.Errorf("critical after %s, want within %d × %s (+%s slack), well before the next heartbeat", took, regFailures, regPeriod, regSlack)
			}
			if code, body := a.get(a.metrics + "/ready"); code != http.StatusServiceUnavailable {
				t.Errorf("/ready while the app fails = %d %q, want 503", code, body)
			}

			tc.revive()
			took = a.waitHealth("passing", 10*time.Second)
			t.Logf("passing %s after the app was healthy again (bound %s)", took.Round(time.Millisecond), regPeriod+regSlack)
			if took > regPeriod+regSlack {
				t.Errorf("passing after %s, want within one probe period %s (+%s slack)", took, regPeriod, regSlack)
			}
		})
	}

	if got := a.metric(`outrider_consul_registrations_total{reason="start"}`); got != 1 {
		t.Errorf(`registrations_total{reason="start"} = %v, want 1`, got)
	}
	if got := a.metric(`outrider_consul_registrations_total{reason="repair"}`); got != 0 {
		t.Errorf(`registrations_total{reason="repair"} = %v, want 0`, got)
	}
	if got := a.metric("outrider_consul_registered"); got != 1 {
		t.Errorf("outrider_consul_registered = %v, want 1", got)
	}
	if got := a.metric(`outrider_consul_heartbeats_total{result="ok"}`); got < 3 {
		t.Errorf(`heartbeats_total{result="ok"} = %v, want at least 3`, got)
	}
	if st := a.consulStatus(); st["registered"] != true || st["consul"] != "ok" || st["service_id"] != "echo-1" {
		t.Errorf("/status consul = %v, want registered, consul ok, service_id echo-1", st)
	}
}

// TestRegistryRepairsWhenConsulRestartsEmpty: a Consul that comes back
// with no state has the instance back, passing, within two heartbeats of
// answering, and outrider did not restart.
func TestRegistryRepairsWhenConsulRestartsEmpty(t *testing.T) {
	t.Parallel()
	srv := consultest.Start(t)
	a := regStart(t, srv)
	a.waitHealth("passing", 20*time.Second)
	pid := a.outrider.Pid()

	srv.Stop()
	srv.Start() // returns once Consul answers with a leader
	took := a.waitHealth("passing", 30*time.Second)
	t.Logf("passing again %s after consul answered (bound 2 heartbeats = %s)", took.Round(time.Millisecond), 2*regHeartbeat)
	if took > 2*regHeartbeat+regSlack {
		t.Errorf("passing again after %s, want within two heartbeats %s (+%s slack)", took, 2*regHeartbeat, regSlack)
	}
	if a.outrider.Exited() || a.outrider.Pid() != pid {
		t.Errorf("outrider restarted or exited")
	}
	// Consul shows the instance passing as soon as it takes the repair's
	// registration, before outrider has its answer and counts it.
	regEventually(t, 5*time.Second, `registrations_total{reason="repair"} at least 1`, func() (bool, string) {
		got := a.metric(`outrider_consul_registrations_total{reason="repair"}`)
		return got >= 1, strconv.FormatFloat(got, 'f', -1, 64)
	})
	instances, _, err := a.cc.Catalog().Service("echo", "", nil)
	if err != nil || len(instances) != 1 || instances[0].ServiceID != "echo-1" {
		t.Errorf("catalog after the repair = %d instances (err %v), want echo-1 alone", len(instances), err)
	}
}

// TestRegistrySurvivesAConsulOutage: with Consul down for 30 s outrider
// stays up and ready (the app is healthy; a Consul outage must not empty
// the Kubernetes Service), counts the errors, logs the outage once, does
// not grow goroutines, and recovers on its own.
func TestRegistrySurvivesAConsulOutage(t *testing.T) {
	t.Parallel()
	srv := consultest.Start(t)
	a := regStart(t, srv)
	a.waitHealth("passing", 20*time.Second)
	// Let the first heartbeats and scrapes settle before the baseline.
	regEventually(t, 10*time.Second, "three heartbeats", func() (bool, string) {
		n := a.metric(`outrider_consul_heartbeats_total{result="ok"}`)
		return n >= 3, strconv.FormatFloat(n, 'f', -1, 64)
	})
	before := a.metric("go_goroutines")

	srv.Stop()
	const outage = 30 * time.Second
	end := time.Now().Add(outage)
	maxGoroutines := before
	for time.Now().Before(end) {
		if code, body := a.get(a.metrics + "/ready"); code != http.StatusOK {
			t.Fatalf("/ready during the outage = %d %q, want 200: the app is healthy and still registered", code, body)
		}
		maxGoroutines = max(maxGoroutines, a.metric("go_goroutines"))
		<-time.After(500 * time.Millisecond)
	}
	if a.outrider.Exited() {
		t.Fatalf("outrider exited during the outage")
	}
	errs := a.metric(`outrider_consul_errors_total{op="heartbeat"}`)
	t.Logf("%v heartbeat errors over %s; goroutines %v before, at most %v during", errs, outage, before, maxGoroutines)
	// Backoff is capped at the heartbeat (1 s) with jitter: at least one
	// attempt every second, and at most one every 250 ms or so.
	if errs < 15 || errs > 130 {
		t.Errorf(`errors_total{op="heartbeat"} = %v over %s, want between 15 and 130`, errs, outage)
	}
	if maxGoroutines > before+5 {
		t.Errorf("go_goroutines reached %v during the outage, want at most %v + 5", maxGoroutines, before)
	}
	if st := a.consulStatus(); st["consul"] != "unreachable" || st["registered"] != true {
		t.Errorf("/status consul during the outage = %v, want consul unreachable, still registered", st)
	}
	if n := strings.Count(a.outrider.Output(), "consul unreachable"); n != 1 {
		t.Errorf("logged the outage %d times, want once:\n%s", n, a.outrider.Output())
	}

	srv.Start()
	took := a.waitHealth("passing", 30*time.Second)
	t.Logf("passing again %s after consul answered", took.Round(time.Millisecond))
	// Consul shows the instance passing as soon as the repair registers it
	// again, before the heartbeat that follows returns and outrider logs
	// the recovery: wait for the line, then count it.
	regEventually(t, 5*time.Second, "the recovery logged", func() (bool, string) {
		n := strings.Count(a.outrider.Output(), "consul answers again")
		return n > 0, strconv.Itoa(n) + " times"
	})
	<-time.After(2 * regHeartbeat) // two more heartbeats, which must not log it again
	if n := strings.Count(a.outrider.Output(), "consul answers again"); n != 1 {
		t.Errorf("logged the recovery %d times, want once", n)
	}
	regEventually(t, 10*time.Second, "goroutines back to the baseline", func() (bool, string) {
		n := a.metric("go_goroutines")
		return n <= before+3, strconv.FormatFloat(n, 'f', -1, 64)
	})
}

// TestRegistrySIGKILLIsReapedByConsul: with outrider killed, nothing
// deregisters the instance; its check turns critical after the TTL and
// Consul reaps it after DeregisterCriticalServiceAfter (1 m, the minimum),
// which its 30 s reaper makes up to 30 s later. An instance whose app is
// unhealthy all that time, with its outrider running, is not reaped.
func TestRegistrySIGKILLIsReapedByConsul(t *testing.T) {
	t.Parallel()
	srv := consultest.Start(t)
	sick := regStart(t, srv, "OUTRIDER_SERVICE_ID=echo-sick")
	sick.id = "echo-sick"
	sick.setHealthy(false)
	sick.waitHealth("critical", 20*time.Second)
	a := regStart(t, srv)
	a.waitHealth("passing", 20*time.Second)

	a.outrider.Signal(syscall.SIGKILL)
	a.outrider.Wait(10 * time.Second)
	critical := a.waitHealth("critical", regTTL+5*time.Second)
	gone := critical + a.waitHealth("absent", 150*time.Second)
	t.Logf("critical %s after SIGKILL (TTL %s), reaped after %s (1m + up to 30s reaper interval)",
		critical.Round(time.Millisecond), regTTL, gone.Round(time.Second))
	if gone < time.Minute {
		t.Errorf("reaped %s after the kill, want no sooner than DeregisterCriticalServiceAfter (1m)", gone)
	}
	// The reaper's pass that took the dead instance saw the sick one
	// critical for longer still.
	if got := sick.health(); got != "critical" {
		t.Errorf("the instance with an unhealthy app and a live outrider is %s, want still registered, critical", got)
	}
	if strings.Contains(sick.outrider.Output(), "consul lost the registration") {
		t.Errorf("consul reaped the instance whose app is unhealthy:\n%s", sick.outrider.Output())
	}
}

// TestRegistrySIGTERMDeregistersBeforeExit: on SIGTERM the instance has
// left the catalog by the time the process has exited.
func TestRegistrySIGTERMDeregistersBeforeExit(t *testing.T) {
	t.Parallel()
	srv := consultest.Start(t)
	a := regStart(t, srv)
	a.waitHealth("passing", 20*time.Second)

	a.outrider.Signal(syscall.SIGTERM)
	if code := a.outrider.Wait(20 * time.Second); code != exitOK {
		t.Errorf("exit status after SIGTERM = %d, want %d", code, exitOK)
	}
	instances, _, err := a.cc.Catalog().Service("echo", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(instances) != 0 {
		t.Errorf("catalog still has %d instance(s) of echo after outrider exited", len(instances))
	}
	if !strings.Contains(a.outrider.Output(), "deregistered from consul") {
		t.Errorf("log does not say it deregistered:\n%s", a.outrider.Output())
	}
}

// TestRegistryMaintenance: PUT /maintenance on the admin listener puts the
// instance in Consul's maintenance and /ready out, and back.
func TestRegistryMaintenance(t *testing.T) {
	t.Parallel()
	srv := consultest.Start(t)
	a := regStart(t, srv)
	a.waitHealth("passing", 20*time.Second)

	put := func(base, query string) (int, string) {
		req, _ := http.NewRequest(http.MethodPut, base+"/maintenance?"+query, nil)
		resp, err := a.client.Do(req)
		if err != nil {
			t.Fatalf("PUT /maintenance: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := put(a.metrics, "enable=true"); code == http.StatusOK {
		t.Errorf("PUT /maintenance answered 200 on the metrics listener, want it only on the admin one")
	}
	if code, body := put(a.admin, "enable=maybe"); code != http.StatusBadRequest {
		t.Errorf("PUT /maintenance?enable=maybe = %d %q, want 400", code, body)
	}

	if code, body := put(a.admin, "enable=true&reason=deploy+42"); code != http.StatusOK {
		t.Fatalf("PUT /maintenance?enable=true = %d %q, want 200", code, body)
	}
	a.waitHealth("maintenance", 5*time.Second)
	checks, _, err := a.cc.Health().Checks("echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, hc := range checks {
		if hc.CheckID == "_service_maintenance:echo-1" {
			found = hc.Notes == "deploy 42" && hc.Status == "critical"
		}
	}
	if !found {
		t.Errorf("no critical maintenance check with notes %q among %v", "deploy 42", checks)
	}
	if code, body := a.get(a.metrics + "/ready"); code != http.StatusServiceUnavailable || !strings.Contains(body, "maintenance: deploy 42") {
		t.Errorf("/ready in maintenance = %d %q, want 503 naming the reason", code, body)
	}

	if code, body := put(a.admin, "enable=false"); code != http.StatusOK {
		t.Fatalf("PUT /maintenance?enable=false = %d %q, want 200", code, body)
	}
	a.waitHealth("passing", 5*time.Second)
	testbin.WaitHTTP(t, a.metrics+"/ready", http.StatusOK, 5*time.Second)

	// After a drain has deregistered the instance there is nothing to put
	// in maintenance: 409, not a 200 that Consul never heard of.
	drain, _ := http.NewRequest(http.MethodPost, a.admin+"/drain", nil)
	resp, err := a.client.Do(drain)
	if err != nil {
		t.Fatalf("POST /drain: %v", err)
	}
	resp.Body.Close()
	regEventually(t, 10*time.Second, "the drain to deregister the instance", func() (bool, string) {
		_, body := a.get(a.admin + "/status")
		return strings.Contains(body, `"deregistered": true`), body
	})
	if code, body := put(a.admin, "enable=true&reason=late"); code != http.StatusConflict || !strings.Contains(body, "deregistered") {
		t.Errorf("PUT /maintenance?enable=true after /drain = %d %q, want 409 saying the instance is deregistered", code, body)
	}
	if _, body := a.get(a.metrics + "/ready"); strings.Contains(body, "late") {
		t.Errorf("/ready after a refused maintenance = %q, want it unchanged", body)
	}
}

// TestRegistryACLTokenFromFile: with ACLs on (default deny), outrider
// registers with a service token read from CONSUL_HTTP_TOKEN_FILE.
func TestRegistryACLTokenFromFile(t *testing.T) {
	t.Parallel()
	srv := consultest.Start(t, consultest.WithACL("root-token-for-tests"))
	c := srv.Client()
	pol, _, err := c.ACL().PolicyCreate(&consul.ACLPolicy{Name: "echo-write", Rules: `service "echo" { policy = "write" }`}, nil)
	if err != nil {
		t.Fatalf("create policy: %v", err)
	}
	tok, _, err := c.ACL().TokenCreate(&consul.ACLToken{Description: "echo sidecar", Policies: []*consul.ACLTokenPolicyLink{{ID: pol.ID}}}, nil)
	if err != nil {
		t.Fatalf("create token: %v", err)
	}
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(tok.SecretID+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := regStart(t, srv, "CONSUL_HTTP_TOKEN_FILE="+file)
	a.waitHealth("passing", 20*time.Second)
	if strings.Contains(a.outrider.Output(), tok.SecretID) {
		t.Errorf("outrider logged its token")
	}
}

// TestRegistryACLTokenFileRotated: a token rotated in
// CONSUL_HTTP_TOKEN_FILE as a Kubernetes Secret volume does it (the
// ..data symlink swapped to a new directory), the old token then deleted
// in Consul: outrider heartbeats, registers again and deregisters on
// SIGTERM with the new token, without a restart.
func TestRegistryACLTokenFileRotated(t *testing.T) {
	t.Parallel()
	srv := consultest.Start(t, consultest.WithACL("root-token-for-tests"))
	c := srv.Client()
	old, cur := rotatedTokens(t, c)

	// The layout of a Secret volume: token -> ..data/token, ..data -> ..<version>.
	dir := t.TempDir()
	version := func(name, secret string) {
		if err := os.Mkdir(filepath.Join(dir, name), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "token"), []byte(secret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(name, filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version("..v1", old.SecretID)
	if err := os.Symlink("..data/token", filepath.Join(dir, "token")); err != nil {
		t.Fatal(err)
	}
	a := regStart(t, srv, "CONSUL_HTTP_TOKEN_FILE="+filepath.Join(dir, "token"))
	a.waitHealth("passing", 20*time.Second)

	version("..v2", cur.SecretID)
	// Registered again with the new token before the old one goes.
	regEventually(t, 2*regHeartbeat+regSlack, "a registration with the new token", func() (bool, string) {
		n := a.metric(`outrider_consul_registrations_total{reason="config"}`)
		return n == 1, strconv.FormatFloat(n, 'f', -1, 64)
	})
	if _, err := c.ACL().TokenDelete(old.AccessorID, nil); err != nil {
		t.Fatalf("delete the old token: %v", err)
	}
	// The local agent syncs the instance to the catalog with the token it
	// was registered with: the app's health must still reach the catalog.
	a.setHealthy(false)
	a.waitHealth("critical", regFailures*regPeriod+regHeartbeat+regSlack)
	a.setHealthy(true)
	a.waitHealth("passing", regPeriod+regHeartbeat+regSlack)
	if st := a.consulStatus(); st["consul"] != "ok" {
		t.Errorf("/status consul = %v, want ok; last_error %v", st["consul"], st["last_error"])
	}

	a.outrider.Signal(syscall.SIGTERM)
	if code := a.outrider.Wait(20 * time.Second); code != exitOK {
		t.Errorf("exit status after SIGTERM = %d, want %d", code, exitOK)
	}
	if got := a.health(); got != "absent" {
		t.Errorf("after SIGTERM the instance is %s in consul, want deregistered:\n%s", got, a.outrider.Output())
	}
	out := a.outrider.Output()
	if strings.Contains(out, "ACL not found") {
		t.Errorf("a request went with the deleted token:\n%s", out)
	}
	if strings.Contains(out, old.SecretID) || strings.Contains(out, cur.SecretID) {
		t.Errorf("outrider logged a token")
	}
}

// TestRegistryWrongACLToken: a token Consul does not know gives a clear
// error, logged once, /ready 503 with the reason, counted errors — and
// outrider stays up, retrying, instead of exiting in a crash loop.
func TestRegistryWrongACLToken(t *testing.T) {
	t.Parallel()
	srv := consultest.Start(t, consultest.WithACL("root-token-for-tests"))
	a := regStart(t, srv, "CONSUL_HTTP_TOKEN=wrong-token-for-tests")

	regEventually(t, 20*time.Second, "five failed registrations", func() (bool, string) {
		n := a.metric(`outrider_consul_errors_total{op="register"}`)
		return n >= 5, strconv.FormatFloat(n, 'f', -1, 64)
	})
	if a.outrider.Exited() {
		t.Fatalf("outrider exited:\n%s", a.outrider.Output())
	}
	code, body := a.get(a.metrics + "/ready")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "registered: not registered: consul unknown_token") ||
		!strings.Contains(body, "ACL not found") {
		t.Errorf("/ready = %d %q, want 503 saying consul does not know the token (ACL not found)", code, body)
	}
	if n := strings.Count(a.outrider.Output(), "consul refused outrider's ACL token"); n != 1 {
		t.Errorf("logged the ACL refusal %d times, want once:\n%s", n, a.outrider.Output())
	}
	if strings.Contains(a.outrider.Output(), "wrong-token-for-tests") {
		t.Errorf("outrider logged its token")
	}
	if a.health() != "absent" {
		t.Errorf("the instance is in consul without a valid token")
	}
	if got := a.metric("outrider_consul_registered"); got != 0 {
		t.Errorf("outrider_consul_registered = %v, want 0", got)
	}
}

// TestRegistryMaintenanceWithoutRegistry: with OUTRIDER_REGISTRY=none,
// PUT /maintenance still takes the app out of /ready and back; enable is
// true or false, nothing else ParseBool would take, and a reason with a
// control character, which would break /ready's one line, is refused.
func TestRegistryMaintenanceWithoutRegistry(t *testing.T) {
	t.Parallel()
	echoAddr := testbin.FreeAddr(t)
	startEcho(t, echoAddr, 20*time.Second)
	o := launchOutrider(t, "OUTRIDER_APP_ADDR="+echoAddr, "OUTRIDER_PROBE_PERIOD="+regPeriod.String())
	testbin.WaitHTTP(t, o.metrics+"/ready", http.StatusOK, 20*time.Second)

	for _, tc := range []struct {
		query string
		code  int
		body  string
		ready int
	}{
		{query: "enable=1", code: http.StatusBadRequest, body: `enable="1": want true or false`, ready: http.StatusOK},
		{query: "enable=t", code: http.StatusBadRequest, body: `enable="t": want true or false`, ready: http.StatusOK},
		{query: "enable=TRUE", code: http.StatusBadRequest, body: `enable="TRUE": want true or false`, ready: http.StatusOK},
		{query: "enable=yes", code: http.StatusBadRequest, body: `enable="yes": want true or false`, ready: http.StatusOK},
		{query: "reason=disk+swap", code: http.StatusBadRequest, body: `enable="": want true or false`, ready: http.StatusOK},
		{query: "enable=true&reason=disk%0Aready", code: http.StatusBadRequest, body: `reason="disk\nready": has a control character`, ready: http.StatusOK},
		{query: "enable=true&reason=disk%1B%5B31m", code: http.StatusBadRequest, body: `reason="disk\x1b[31m": has a control character`, ready: http.StatusOK},
		{query: "enable=true&reason=disk%FF", code: http.StatusBadRequest, body: `reason="disk\xff": is not UTF-8`, ready: http.StatusOK},
		{query: "enable=true&reason=disk+swap", code: http.StatusOK, body: "maintenance on: disk swap", ready: http.StatusServiceUnavailable},
		{query: "enable=0", code: http.StatusBadRequest, body: `enable="0": want true or false`, ready: http.StatusServiceUnavailable},
		{query: "enable=false", code: http.StatusOK, body: "maintenance off", ready: http.StatusOK},
	} {
		req, _ := http.NewRequest(http.MethodPut, o.admin+"/maintenance?"+tc.query, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("PUT /maintenance?%s: %v", tc.query, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || !strings.Contains(string(b), tc.body) {
			t.Errorf("PUT /maintenance?%s = %d %q, want %d %q", tc.query, resp.StatusCode, b, tc.code, tc.body)
		}
		testbin.WaitHTTP(t, o.metrics+"/ready", tc.ready, 5*time.Second)
	}
}

// TestRegistryMaintenanceWithConsulDown: with Consul unreachable since the
// start, PUT /maintenance sets the maintenance condition of /ready and
// answers 202, saying that outrider tells Consul once it can; no error of
// the registrar makes it answer anything else.
func TestRegistryMaintenanceWithConsulDown(t *testing.T) {
	t.Parallel()
	echoAddr := testbin.FreeAddr(t)
	startEcho(t, echoAddr, 20*time.Second)
	o := startOutrider(t, 20*time.Second,
		"OUTRIDER_REGISTRY=consul", "OUTRIDER_SERVICE_NAME=echo", "OUTRIDER_SERVICE_ADDRESS=127.0.0.1",
		"OUTRIDER_APP_ADDR="+echoAddr, "OUTRIDER_PROBE_PERIOD="+regPeriod.String(),
		// Nothing listens there: the address is free.
		"CONSUL_HTTP_ADDR=http://"+testbin.FreeAddr(t))

	for _, tc := range []struct {
		query    string
		body     string
		readyHas bool // /ready names the maintenance
	}{
		{query: "enable=true&reason=disk+swap", body: "maintenance on: disk swap\nconsul not updated yet, outrider retries: ", readyHas: true},
		{query: "enable=false", body: "maintenance off\nconsul not updated yet, outrider retries: ", readyHas: false},
	} {
		req, _ := http.NewRequest(http.MethodPut, o.admin+"/maintenance?"+tc.query, nil)
		code, body := httpDo(t, req)
		if code != http.StatusAccepted || !strings.HasPrefix(body, tc.body) {
			t.Errorf("PUT /maintenance?%s = %d %q, want 202 starting %q", tc.query, code, body, tc.body)
		}
		// Not registered, /ready is 503 either way; its body tells.
		if code, body := httpGet(t, o.metrics+"/ready"); code != http.StatusServiceUnavailable || strings.Contains(body, "maintenance: disk swap") != tc.readyHas {
			t.Errorf("/ready after PUT /maintenance?%s = %d %q, want 503 naming the maintenance: %t", tc.query, code, body, tc.readyHas)
		}
	}
}

// TestRegistryACLTokenRotatedInMaintenance: an instance in maintenance
// when CONSUL_HTTP_TOKEN_FILE rotates, the old token then deleted, stays
// in maintenance in the catalog, and leaves it on enable=false. Consul
// keeps the maintenance check under the token that set it, and took its
// removal to the catalog with that token: the instance stayed in
// maintenance in the catalog while outrider answered 200.
func TestRegistryACLTokenRotatedInMaintenance(t *testing.T) {
	t.Parallel()
	srv := consultest.Start(t, consultest.WithACL("root-token-for-tests"))
	c := srv.Client()
	old, cur := rotatedTokens(t, c)
	file := filepath.Join(t.TempDir(), "token")
	write := func(secret string) {
		if err := os.WriteFile(file+".tmp", []byte(secret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(file+".tmp", file); err != nil {
			t.Fatal(err)
		}
	}
	write(old.SecretID)
	a := regStart(t, srv, "CONSUL_HTTP_TOKEN_FILE="+file)
	a.waitHealth("passing", 20*time.Second)

	put := func(query string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPut, a.admin+"/maintenance?"+query, nil)
		if code, body := httpDo(t, req); code != http.StatusOK {
			t.Fatalf("PUT /maintenance?%s = %d %q, want 200", query, code, body)
		}
	}
	put("enable=true&reason=deploy+42")
	a.waitHealth("maintenance", 5*time.Second)

	write(cur.SecretID)
	regEventually(t, 2*regHeartbeat+regSlack, "a registration with the new token", func() (bool, string) {
		n := a.metric(`outrider_consul_registrations_total{reason="config"}`)
		return n == 1, strconv.FormatFloat(n, 'f', -1, 64)
	})
	// Maintenance set again with the new token, then the old one deleted.
	regEventually(t, regHeartbeat+regSlack, "maintenance set again", func() (bool, string) {
		n := strings.Count(a.outrider.Output(), `"msg":"consul maintenance mode set"`)
		return n >= 2, strconv.Itoa(n)
	})
	if _, err := c.ACL().TokenDelete(old.AccessorID, nil); err != nil {
		t.Fatalf("delete the old token: %v", err)
	}
	if got := a.health(); got != "maintenance" {
		t.Errorf("after the rotation the instance is %s in consul, want still in maintenance", got)
	}

	put("enable=false")
	a.waitHealth("passing", regHeartbeat+regSlack)
	checks, _, err := c.Health().Checks("echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, hc := range checks {
		if hc.CheckID == "_service_maintenance:"+a.id {
			t.Errorf("the catalog still has the maintenance check after enable=false: %+v", hc)
		}
	}
}

// rotatedTokens creates two tokens with the shipped ACL policy, the old
// and the new one of a rotation.
func rotatedTokens(t *testing.T, c *consul.Client) (old, cur *consul.ACLToken) {
	t.Helper()
	rules, err := os.ReadFile("../../deploy/k8s/consul/acl-policy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	pol, _, err := c.ACL().PolicyCreate(&consul.ACLPolicy{Name: "outrider-echo", Rules: string(rules)}, nil)
	if err != nil {
		t.Fatalf("create policy: %v", err)
	}
	token := func(desc string) *consul.ACLToken {
		tok, _, err := c.ACL().TokenCreate(&consul.ACLToken{Description: desc, Policies: []*consul.ACLTokenPolicyLink{{ID: pol.ID}}}, nil)
		if err != nil {
			t.Fatalf("create token: %v", err)
		}
		return tok
	}
	return token("echo sidecar, old"), token("echo sidecar, new")
}

// TestRegistryDeregistrationRefusedByACL: a token Consul refuses at the
// stop (its policy cut to read, or the token deleted) cannot deregister
// the instance, and Consul's agent, which syncs the instance to the
// catalog with that same token, cannot take it out either: the instance
// stays in the catalog, passing, after outrider is gone. The log must say
// so and what to do, not that Consul reaps it.
func TestRegistryDeregistrationRefusedByACL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		refuse func(c *consul.Client, pol *consul.ACLPolicy, tok *consul.ACLToken) error
		want   string
	}{
		{"policy cut to read", func(c *consul.Client, pol *consul.ACLPolicy, _ *consul.ACLToken) error {
			pol.Rules = `service "echo" { policy = "read" }`
			_, _, err := c.ACL().PolicyUpdate(pol, nil)
			return err
		}, "give the token service:write on the service again"},
		{"token deleted", func(c *consul.Client, _ *consul.ACLPolicy, tok *consul.ACLToken) error {
			_, err := c.ACL().TokenDelete(tok.AccessorID, nil)
			return err
		}, "/v1/catalog/deregister"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := consultest.Start(t, consultest.WithACL("root-token-for-tests"))
			c := srv.Client()
			pol, _, err := c.ACL().PolicyCreate(&consul.ACLPolicy{Name: "echo-write", Rules: `service "echo" { policy = "write" }`}, nil)
			if err != nil {
				t.Fatalf("create policy: %v", err)
			}
			tok, _, err := c.ACL().TokenCreate(&consul.ACLToken{Policies: []*consul.ACLTokenPolicyLink{{ID: pol.ID}}}, nil)
			if err != nil {
				t.Fatalf("create token: %v", err)
			}
			a := regStart(t, srv, "CONSUL_HTTP_TOKEN="+tok.SecretID)
			a.waitHealth("passing", 20*time.Second)
			if err := tc.refuse(c, pol, tok); err != nil {
				t.Fatal(err)
			}

			a.outrider.Signal(syscall.SIGTERM)
			a.outrider.Wait(20 * time.Second)
			out := a.outrider.Output()
			if !strings.Contains(out, "stays in the catalog, passing") || !strings.Contains(out, tc.want) {
				t.Errorf("log does not say that the instance stays in the catalog and what to do (%q):\n%s", tc.want, out)
			}
			if strings.Contains(out, "consul reaps the instance") {
				t.Errorf("log says consul reaps an instance its agent cannot take out:\n%s", out)
			}
			// What the log says: past the TTL, the catalog has it passing.
			<-time.After(regTTL + regSlack)
			if got := a.health(); got != "passing" {
				t.Errorf("past the TTL the instance is %s in consul, want passing still, as the log says", got)
			}
		})
	}
}

// TestRegistryStatusAfterADeregistrationConsulLeftUnanswered: a drain
// whose deregistration Consul leaves unanswered (a hung agent) goes on
// after its 5 s, and /status's consul section then says that Consul did
// not answer, with the error, not consul ok.
func TestRegistryStatusAfterADeregistrationConsulLeftUnanswered(t *testing.T) {
	t.Parallel()
	srv := consultest.Start(t)
	a := regStart(t, srv)
	a.waitHealth("passing", 20*time.Second)

	srv.Pause()
	defer srv.Resume()
	start := time.Now()
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Get(a.admin + "/prestop")
	if err != nil {
		t.Fatalf("/prestop: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	code, body, took := resp.StatusCode, string(b), time.Since(start)
	if code != http.StatusInternalServerError || !strings.Contains(body, `"deregistered":false`) {
		t.Errorf("/prestop with consul hung = %d %s, want 500 and deregistered false", code, body)
	}
	if took > 5*time.Second+regSlack {
		t.Errorf("the drain took %s with consul hung, want the 5 s deregistration bound", took)
	}
	st := a.consulStatus()
	if st["consul"] != "unreachable" || !strings.Contains(fmt.Sprint(st["last_error"]), `deregister service "echo-1"`) ||
		st["deregistered"] != false {
		t.Errorf("/status consul after the deregistration timed out = %v, want consul unreachable, "+
			"the deregistration as last_error, not deregistered", st)
	}
}
