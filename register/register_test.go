package register

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outrider-sidecar/outrider/internal/clock"
	"github.com/outrider-sidecar/outrider/internal/testlog"
	"github.com/outrider-sidecar/outrider/probe"
)

func testService() Service {
	return Service{
		ID: "web-1", Name: "web", Tags: []string{"v1", "blue"}, Meta: map[string]string{"team": "a"},
		Address: "10.0.0.7", Port: 8080, TTL: 15 * time.Second, DeregisterCriticalAfter: time.Minute,
	}
}

const heartbeat = 5 * time.Second // testService's TTL / 3

type cond struct {
	ok     bool
	reason string
}

// harness runs one registrar against a fake Consul on a fake clock.
type harness struct {
	t        *testing.T
	consul   *fakeConsul
	clock    *clock.Fake
	reg      *prometheus.Registry
	r        *Registrar
	log      *testlog.Buffer
	verdicts chan probe.Verdict
	cancel   context.CancelFunc
	done     chan error

	mu    sync.Mutex
	conds []cond
}

// newHarness builds the registrar; start runs it.
func newHarness(t *testing.T, jitter float64) *harness {
	return newHarnessWith(t, jitter, Options{})
}

// newHarnessWith is newHarness with more options.
func newHarnessWith(t *testing.T, jitter float64, o Options) *harness {
	t.Helper()
	h := &harness{
		t:        t,
		consul:   newFakeConsul(t),
		clock:    clock.NewFake(fakeEpoch),
		reg:      prometheus.NewRegistry(),
		verdicts: make(chan probe.Verdict),
	}
	log, buf := newTestLogger()
	h.log = buf
	o.Log, o.Registerer, o.Clock = log, h.reg, h.clock
	o.ConsulAddr = fakeAddr
	o.Rand = func() float64 { return jitter }
	o.OnRegistered = func(ok bool, reason string) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.conds = append(h.conds, cond{ok, reason})
	}
	r, err := New(h.consul, testService(), o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.r = r
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("registrar log:\n%s", h.log.String())
		}
	})
	return h
}

func (h *harness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- h.r.Run(ctx, h.verdicts) }()
	h.t.Cleanup(func() {
		cancel()
		<-h.done
	})
}

// stop cancels Run and returns what it returned.
func (h *harness) stop() error {
	h.t.Helper()
	h.cancel()
	select {
	case err := <-h.done:
		h.done <- err // for the cleanup
		return err
	case <-time.After(10 * time.Second):
		h.t.Fatalf("Run did not return within 10s of its context ending")
		return nil
	}
}

// step advances the clock by d and waits for the registrar to go idle
// again, returning its next wait.
func (h *harness) step(d time.Duration) time.Duration {
	h.t.Helper()
	h.clock.Advance(d)
	return h.clock.NextWait(h.t).D
}

func (h *harness) verdict(healthy bool, output string) time.Duration {
	h.t.Helper()
	h.verdicts <- probe.Verdict{Healthy: healthy, Output: output}
	return h.clock.NextWait(h.t).D
}

func (h *harness) lastCond() cond {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.conds) == 0 {
		return cond{}
	}
	return h.conds[len(h.conds)-1]
}

func (h *harness) counter(c *prometheus.CounterVec, label string) float64 {
	return testutil.ToFloat64(c.WithLabelValues(label))
}

func wantCalls(t *testing.T, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("consul calls = %q, want %q", got, want)
	}
}

func TestRegistersCriticalThenHeartbeatsWithoutRegisteringAgain(t *testing.T) {
	h := newHarness(t, 0.5)
	h.start()

	if got := h.clock.NextWait(t).D; got != heartbeat {
		t.Errorf("first wait = %s, want the heartbeat %s", got, heartbeat)
	}
	// The disable is a check: an earlier run may have left maintenance on.
	wantCalls(t, h.consul.takeCalls(), "register web-1", "update service:web-1 critical", "maintenance web-1 false")
	reg, ok := h.consul.service("web-1")
	if !ok {
		t.Fatalf("web-1 is not registered")
	}
	if reg.Name != "web" || reg.Address != "10.0.0.7" || reg.Port != 8080 ||
		!slices.Equal(reg.Tags, []string{"v1", "blue"}) || reg.Meta["team"] != "a" {
		t.Errorf("registration = %+v, want web at 10.0.0.7:8080 tags [v1 blue] meta team=a", reg)
	}
	// Two checks: the probe's, which an unhealthy app keeps critical for
	// as long as it lasts, and outrider's own, which makes Consul reap the
	// instance only when outrider stops heartbeating it.
	if len(reg.Checks) != 2 {
		t.Fatalf("checks = %+v, want the probe's and outrider's", reg.Checks)
	}
	if c := reg.Checks[0]; c.CheckID != "service:web-1" || c.TTL != "15s" ||
		c.DeregisterCriticalServiceAfter != "" || c.Status != "critical" {
		t.Errorf("probe check = %+v, want service:web-1, TTL 15s, never deregistered, critical", c)
	}
	if c := reg.Checks[1]; c.CheckID != "service:web-1:outrider" || c.TTL != "15s" ||
		c.DeregisterCriticalServiceAfter != "1m0s" || c.Status != "passing" {
		t.Errorf("outrider check = %+v, want service:web-1:outrider, TTL 15s, deregister after 1m0s, passing", c)
	}
	if n := h.consul.takeAliveBeats(); n != 1 {
		t.Errorf("outrider check heartbeats = %d, want 1 with the first heartbeat", n)
	}
	if got := h.lastCond(); !got.ok || got.reason != "registered in consul as web-1" {
		t.Errorf("condition = %+v, want ok, registered in consul as web-1", got)
	}

	// A transition is pushed at once, with the probe's output as the note.
	if got := h.verdict(true, "HTTP 200"); got != heartbeat {
		t.Errorf("wait after a verdict = %s, want %s", got, heartbeat)
	}
	wantCalls(t, h.consul.takeCalls(), "update service:web-1 passing")
	if c, _ := h.consul.check("service:web-1"); c.Output != "HTTP 200" {
		t.Errorf("check output = %q, want HTTP 200", c.Output)
	}

	// A new output with the same health waits for the next beat.
	h.verdicts <- probe.Verdict{Healthy: true, Output: "HTTP 204"}
	for range 5 {
		if got := h.step(heartbeat); got != heartbeat {
			t.Errorf("wait between beats = %s, want %s", got, heartbeat)
		}
		wantCalls(t, h.consul.takeCalls(), "update service:web-1 passing")
	}
	if c, _ := h.consul.check("service:web-1"); c.Output != "HTTP 204" {
		t.Errorf("check output = %q, want HTTP 204", c.Output)
	}
	if got := h.counter(h.r.m.registrations, "start"); got != 1 {
		t.Errorf("registrations{start} = %v, want 1", got)
	}
	if got := h.counter(h.r.m.heartbeats, "ok"); got != 7 {
		t.Errorf("heartbeats{ok} = %v, want 7", got)
	}
	if got := testutil.ToFloat64(h.r.m.registered); got != 1 {
		t.Errorf("outrider_consul_registered = %v, want 1", got)
	}
}

func TestRepairsInPlaceWhenConsulLosesTheInstance(t *testing.T) {
	h := newHarness(t, 0.5)
	h.start()
	h.clock.NextWait(t)
	h.verdict(true, "ok")
	h.consul.takeCalls()

	h.consul.lose()
	if got := h.step(heartbeat); got != heartbeat {
		t.Errorf("wait after a repair = %s, want %s", got, heartbeat)
	}
	// Never a deregistration: the instance comes back under the same ID,
	// registered passing at once, and the status is pushed right after.
	wantCalls(t, h.consul.takeCalls(), "update service:web-1 passing", "register web-1", "update service:web-1 passing")
	reg, _ := h.consul.service("web-1")
	if len(reg.Checks) == 0 || reg.Checks[0].Status != "passing" {
		t.Errorf("repair registered the checks as %+v, want the probe's passing", reg.Checks)
	}
	for label, want := range map[string]float64{"start": 1, "repair": 1, "config": 0} {
		if got := h.counter(h.r.m.registrations, label); got != want {
			t.Errorf("registrations{%s} = %v, want %v", label, got, want)
		}
	}
	if got := h.counter(h.r.m.heartbeats, "missing"); got != 1 {
		t.Errorf("heartbeats{missing} = %v, want 1", got)
	}
	if n := h.log.Count("consul lost the registration"); n != 1 {
		t.Errorf("logged the loss %d times, want 1", n)
	}
	if got := h.lastCond(); !got.ok {
		t.Errorf("condition = %+v, want ok after a successful repair", got)
	}
}

func TestBacksOffAndLogsOncePerStateChange(t *testing.T) {
	h := newHarness(t, 0.5)
	h.consul.setDown(true)
	h.start()

	// Exponential from 500ms, capped at the heartbeat, 3/4 of each with
	// jitter 0.5.
	want := []time.Duration{375 * time.Millisecond, 750 * time.Millisecond, 1500 * time.Millisecond,
		3 * time.Second, 3750 * time.Millisecond, 3750 * time.Millisecond, 3750 * time.Millisecond}
	got := []time.Duration{h.clock.NextWait(t).D}
	for len(got) < len(want) {
		got = append(got, h.step(got[len(got)-1]))
	}
	if !slices.Equal(got, want) {
		t.Errorf("waits while consul is down = %v, want %v", got, want)
	}
	if n := h.log.Count("consul unreachable"); n != 1 {
		t.Errorf("logged unreachable %d times over %d attempts, want once", n, len(got))
	}
	if got := h.counter(h.r.m.errors, "register"); got != float64(len(want)) {
		t.Errorf("errors{op=register} = %v, want %d", got, len(want))
	}
	if c := h.lastCond(); c.ok || !strings.HasPrefix(c.reason, "not registered: consul unreachable: register service \"web-1\"") {
		t.Errorf("condition = %+v, want not ok, not registered: consul unreachable…", c)
	}
	if s := h.r.Status(); s.Consul != "unreachable" || s.ConsecutiveFailures != len(want) || s.LastError == "" {
		t.Errorf("status = %+v, want consul unreachable, %d failures and the last error", s, len(want))
	}

	// Another kind of failure is another state: logged once more.
	h.consul.setDown(false)
	h.consul.setError(403, "ACL not found")
	d := h.step(got[len(got)-1])
	for range 4 {
		d = h.step(d)
	}
	if n := h.log.Count("consul refused outrider's ACL token"); n != 1 {
		t.Errorf("logged the ACL refusal %d times over 5 attempts, want once", n)
	}
	if c := h.lastCond(); c.ok || !strings.Contains(c.reason, "ACL not found") {
		t.Errorf("condition = %+v, want not ok with Consul's answer", c)
	}

	h.consul.setError(0, "")
	if d := h.step(d); d != heartbeat {
		t.Errorf("wait once consul answers = %s, want the heartbeat %s", d, heartbeat)
	}
	if n := h.log.Count("consul answers again"); n != 1 {
		t.Errorf("logged the recovery %d times, want once", n)
	}
	if c := h.lastCond(); !c.ok {
		t.Errorf("condition = %+v, want ok once registered", c)
	}
	if got := h.counter(h.r.m.registrations, "start"); got != 1 {
		t.Errorf("registrations{start} = %v, want 1", got)
	}
}

func TestBackoffFollowsAReloadedTTL(t *testing.T) {
	// A reload during an outage changes the TTL: the retries must come at
	// least as often as the heartbeats of the shorter of the TTL Consul
	// holds and the one to be sent, or a check could expire between two.
	// Waits are 3/4 of the cap once capped, with jitter 0.5.
	for _, tc := range []struct {
		name       string
		registered bool // Consul took the registration before the outage
		ttl        time.Duration
		want       time.Duration
	}{
		{name: "down since the start, shorter TTL", ttl: 3 * time.Second, want: 750 * time.Millisecond},
		{name: "down since the start, longer TTL", ttl: time.Minute, want: 15 * time.Second},
		{name: "down after a registration, shorter TTL", registered: true, ttl: 3 * time.Second, want: 750 * time.Millisecond},
		{name: "down after a registration, longer TTL, consul holds the shorter", registered: true, ttl: time.Minute, want: 3750 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, 0.5)
			h.consul.setDown(!tc.registered)
			h.start()
			d := h.clock.NextWait(t).D
			h.consul.setDown(true)
			for range 8 {
				d = h.step(d)
			}
			if d != 3750*time.Millisecond {
				t.Fatalf("wait while consul is down = %s, want 3.75s, capped by the TTL of 15s", d)
			}

			reloaded := testService()
			reloaded.TTL = tc.ttl
			if err := h.r.Update(reloaded); err != nil {
				t.Fatalf("Update: %v", err)
			}
			// The reload is tried at once; its failure and the ones after it
			// wait for the new cap.
			got := []time.Duration{h.clock.NextWait(t).D}
			for range 2 {
				got = append(got, h.step(got[len(got)-1]))
			}
			if want := []time.Duration{tc.want, tc.want, tc.want}; !slices.Equal(got, want) {
				t.Errorf("waits after reloading a TTL of %s = %v, want %v", tc.ttl, got, want)
			}

			h.consul.setDown(false)
			if d := h.step(got[len(got)-1]); d != tc.ttl/3 {
				t.Errorf("wait once consul answers = %s, want the new heartbeat %s", d, tc.ttl/3)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	base, maxWait := 500*time.Millisecond, 5*time.Second
	for _, tc := range []struct {
		name     string
		attempt  int
		jitter   float64
		min, max time.Duration
	}{
		{name: "first, no jitter", attempt: 1, jitter: 0, min: 250 * time.Millisecond, max: 250 * time.Millisecond},
		{name: "first, most jitter", attempt: 1, jitter: 0.999, min: 499 * time.Millisecond, max: 500 * time.Millisecond},
		{name: "third doubles twice", attempt: 3, jitter: 0, min: time.Second, max: time.Second},
		{name: "capped", attempt: 5, jitter: 0.999, min: 4990 * time.Millisecond, max: maxWait},
		{name: "capped far out", attempt: 40, jitter: 0, min: maxWait / 2, max: maxWait / 2},
		{name: "shift overflow stays capped", attempt: 70, jitter: 0.5, min: 3750 * time.Millisecond, max: 3750 * time.Millisecond},
		{name: "attempt 0 is the first", attempt: 0, jitter: 0, min: 250 * time.Millisecond, max: 250 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := backoff(tc.attempt, base, maxWait, tc.jitter)
			if got < tc.min || got > tc.max {
				t.Errorf("backoff(%d, jitter %v) = %s, want %s to %s", tc.attempt, tc.jitter, got, tc.min, tc.max)
			}
		})
	}
}

func TestReadinessKeepsItsValueWhileConsulIsUnreachable(t *testing.T) {
	h := newHarness(t, 0.5)
	h.start()
	h.clock.NextWait(t)
	h.verdict(true, "ok")

	h.consul.setDown(true)
	d := h.step(heartbeat)
	if c := h.lastCond(); !c.ok || !strings.Contains(c.reason, "consul unreachable since") {
		t.Errorf("condition while consul is down = %+v, want still ok, saying consul is unreachable", c)
	}
	if got := testutil.ToFloat64(h.r.m.registered); got != 1 {
		t.Errorf("outrider_consul_registered while consul is down = %v, want 1 (nothing says it is gone)", got)
	}

	// Back without a loss: the reason no longer mentions the outage.
	h.consul.setDown(false)
	d = h.step(d)
	if c := h.lastCond(); !c.ok || c.reason != "registered in consul as web-1" {
		t.Errorf("condition once consul answers = %+v, want ok, registered in consul as web-1", c)
	}
	h.consul.setDown(true)
	d = h.step(d)

	// Consul answers that the instance is gone and will not take it back:
	// now outrider knows it is not registered.
	h.consul.setDown(false)
	h.consul.lose()
	h.consul.setRegisterError(500)
	d = h.step(d)
	if c := h.lastCond(); c.ok || !strings.HasPrefix(c.reason, "consul lost the registration and registering again failed") {
		t.Errorf("condition = %+v, want not ok: lost and the repair failed", c)
	}
	if got := testutil.ToFloat64(h.r.m.registered); got != 0 {
		t.Errorf("outrider_consul_registered = %v, want 0", got)
	}

	h.consul.setRegisterError(0)
	h.consul.takeCalls()
	h.step(d)
	wantCalls(t, h.consul.takeCalls(), "register web-1", "update service:web-1 passing")
	if c := h.lastCond(); !c.ok {
		t.Errorf("condition = %+v, want ok after the repair", c)
	}
	if got := h.counter(h.r.m.registrations, "repair"); got != 1 {
		t.Errorf("registrations{repair} = %v, want 1", got)
	}
}

func TestDeregisterIsIdempotentAndStopsRepairs(t *testing.T) {
	h := newHarness(t, 0.5)
	h.start()
	h.clock.NextWait(t)
	h.consul.takeCalls()

	ctx := context.Background()
	for i := range 2 {
		if err := h.r.Deregister(ctx); err != nil {
			t.Fatalf("Deregister #%d: %v", i+1, err)
		}
	}
	// Critical first, so a health watcher sees it leave the passing set.
	wantCalls(t, h.consul.takeCalls(), "update service:web-1 critical", "deregister web-1")
	if _, ok := h.consul.service("web-1"); ok {
		t.Errorf("web-1 is still registered")
	}
	if c := h.lastCond(); c.ok || c.reason != "deregistered" {
		t.Errorf("condition = %+v, want not ok, deregistered", c)
	}

	// Later heartbeats must not bring it back.
	h.step(heartbeat)
	h.verdicts <- probe.Verdict{Healthy: true}
	h.clock.NextWait(t)
	wantCalls(t, h.consul.takeCalls())

	if err := h.stop(); err != nil {
		t.Errorf("Run returned %v, want nil", err)
	}
	wantCalls(t, h.consul.takeCalls())
	if got := testutil.ToFloat64(h.r.m.registered); got != 0 {
		t.Errorf("outrider_consul_registered = %v, want 0", got)
	}
}

func TestDeregisterCancelsAHangingHeartbeat(t *testing.T) {
	// Without the cancellation, Deregister would wait for the heartbeat's
	// minute-long timeout.
	h := newHarnessWith(t, 0.5, Options{CallTimeout: time.Minute})
	h.start()
	h.clock.NextWait(t)
	h.consul.takeCalls()

	hanging := h.consul.hangUpdates()
	h.clock.Advance(heartbeat)
	select {
	case <-hanging:
	case <-time.After(10 * time.Second):
		t.Fatalf("no heartbeat reached consul")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.r.Deregister(ctx); err != nil {
		t.Fatalf("Deregister during a hanging heartbeat: %v", err)
	}
	wantCalls(t, h.consul.takeCalls(), "deregister web-1")
	if got := h.counter(h.r.m.errors, "heartbeat"); got != 0 {
		t.Errorf("errors{op=heartbeat} = %v, want 0: the cancelled heartbeat is not Consul's fault", got)
	}
	if n := h.log.Count("consul unreachable"); n != 0 {
		t.Errorf("logged consul unreachable for a heartbeat outrider cancelled")
	}
}

func TestRunDeregistersWhenItsContextEnds(t *testing.T) {
	h := newHarness(t, 0.5)
	h.start()
	h.clock.NextWait(t)
	h.consul.takeCalls()

	if err := h.stop(); err != nil {
		t.Errorf("Run returned %v, want nil", err)
	}
	wantCalls(t, h.consul.takeCalls(), "update service:web-1 critical", "deregister web-1")
	if _, ok := h.consul.service("web-1"); ok {
		t.Errorf("web-1 is still registered after Run returned")
	}
}

// TestStopAfterADeregistrationConsulLeftUnanswered: when Consul did not
// answer the drain's deregistration in time, the stop does not wait for
// it again: that second wait came after the app had stopped, beyond the
// stop budget of docs/shutdown.md, and a supervisor killed outrider in it.
func TestStopAfterADeregistrationConsulLeftUnanswered(t *testing.T) {
	h := newHarnessWith(t, 0.5, Options{StopTimeout: 10 * time.Second})
	h.start()
	h.clock.NextWait(t)
	h.consul.takeCalls()
	h.consul.mu.Lock()
	h.consul.deregisterHangs = true
	h.consul.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := h.r.Deregister(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Deregister with a hanging agent: %v, want a deadline exceeded", err)
	}
	h.consul.takeCalls()
	start := time.Now()
	if err := h.stop(); err != nil {
		t.Errorf("Run returned %v, want nil", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the stop took %s: it waited for the hanging agent again", took)
	}
	wantCalls(t, h.consul.takeCalls())
	if n := h.log.Count("not deregistering again on stop"); n != 1 {
		t.Errorf("logged %d times why the stop does not deregister, want 1", n)
	}
}

func TestDeniedNamesAnUnknownToken(t *testing.T) {
	// A token Consul does not know is told apart from one whose policy
	// falls short: a new policy would not mend the first.
	for _, tc := range []struct {
		body, want, notWant, state string
	}{
		{body: "ACL not found", want: "consul does not know the token", notWant: "CONSUL_HTTP_TOKEN_FILE to a token with", state: "unknown_token"},
		{body: `Permission denied: token with AccessorID 'a' lacks permission 'service:write' on "web"`,
			want: "to a token with service:write on the service", notWant: "does not know", state: "denied"},
	} {
		t.Run(tc.body, func(t *testing.T) {
			h := newHarness(t, 0.5)
			h.consul.setError(403, tc.body)
			h.start()
			h.step(h.clock.NextWait(t).D)
			if n := h.log.Count("consul refused outrider's ACL token"); n != 1 {
				t.Fatalf("logged the ACL refusal %d times, want once", n)
			}
			if h.log.Count(tc.want) != 1 || h.log.Count(tc.notWant) != 0 {
				t.Errorf("the refusal's hint does not say %q (or says %q)", tc.want, tc.notWant)
			}
			if got := h.r.Status().Consul; got != tc.state {
				t.Errorf("/status consul = %q, want %q", got, tc.state)
			}
			if err := h.stop(); err != nil {
				t.Errorf("Run returned %v, want nil", err)
			}
		})
	}
}

// A token mended halfway (Consul knows the new one, whose policy falls
// short) is a new refusal, logged with its own hint.
func TestDeniedAfterAnUnknownTokenIsLogged(t *testing.T) {
	h := newHarness(t, 0.5)
	h.consul.setError(403, "ACL not found")
	h.start()
	next := h.step(h.clock.NextWait(t).D)
	h.consul.setError(403, `Permission denied: token with AccessorID 'a' lacks permission 'service:write' on "web"`)
	h.step(next)
	if n := h.log.Count("consul refused outrider's ACL token"); n != 2 {
		t.Errorf("logged the ACL refusals %d times, want twice: once for each kind", n)
	}
	if n := h.log.Count("to a token with service:write on the service"); n != 1 {
		t.Errorf("logged the policy's hint %d times, want once", n)
	}
	if got := h.r.Status().Consul; got != "denied" {
		t.Errorf("/status consul = %q, want denied", got)
	}
	if err := h.stop(); err != nil {
		t.Errorf("Run returned %v, want nil", err)
	}
}

func TestStopDeregistersOnlyWhatConsulMayHold(t *testing.T) {
	// An instance Consul never took has nothing to deregister, and no
	// error to report when Consul is still away at the stop; one it took,
	// or may have taken, is deregistered as ever.
	messages := []string{"nothing to deregister", "could not deregister", "deregistered from consul"}
	for _, tc := range []struct {
		name   string
		before func(*fakeConsul) // before the start
		after  func(*fakeConsul) // after the first step
		// wantLog is the one of messages logged at the stop; wantStatus
		// is /status's deregistered and nothing_to_deregister after it.
		wantLog    string
		wantStatus [2]bool
	}{
		{name: "unreachable since the start", before: func(f *fakeConsul) { f.setDown(true) },
			wantLog: "nothing to deregister", wantStatus: [2]bool{false, true}},
		{name: "token refused since the start", before: func(f *fakeConsul) { f.setError(403, "ACL not found") },
			wantLog: "nothing to deregister", wantStatus: [2]bool{false, true}},
		{name: "registered, then unreachable", after: func(f *fakeConsul) { f.setDown(true) },
			wantLog: "could not deregister", wantStatus: [2]bool{false, false}},
		{name: "taken, but the answer lost", before: (*fakeConsul).loseRegisterAnswers,
			wantLog: "deregistered from consul", wantStatus: [2]bool{true, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, 0.5)
			if tc.before != nil {
				tc.before(h.consul)
			}
			h.start()
			d := h.clock.NextWait(t).D
			if tc.after != nil {
				tc.after(h.consul)
			}
			for range 3 {
				d = h.step(d)
			}
			if err := h.stop(); err != nil {
				t.Errorf("Run returned %v, want nil", err)
			}
			for _, m := range messages {
				want := 0
				if m == tc.wantLog {
					want = 1
				}
				if got := h.log.Count(m); got != want {
					t.Errorf("logged %q %d times at the stop, want %d", m, got, want)
				}
			}
			s := h.r.Status()
			if got := [2]bool{s.Deregistered, s.NothingToDeregister}; got != tc.wantStatus {
				t.Errorf("status after the stop: deregistered, nothing_to_deregister = %v, want %v", got, tc.wantStatus)
			}
			if got := h.r.NeverTaken(); got != tc.wantStatus[1] {
				t.Errorf("NeverTaken() = %t, want %t", got, tc.wantStatus[1])
			}
		})
	}
}

// A stop while the first step asks whether another instance holds the ID
// sends nothing: not the registration, and so no deregistration of an ID
// that the other instance may hold.
func TestStopDuringTheIDLookupSendsNothing(t *testing.T) {
	h := newHarness(t, 0.5)
	lookups := h.consul.hangLookups()
	h.start()
	<-lookups
	if err := h.r.Deregister(context.Background()); err != nil {
		t.Errorf("Deregister = %v, want nil", err)
	}
	if err := h.stop(); err != nil {
		t.Errorf("Run returned %v, want nil", err)
	}
	wantCalls(t, h.consul.takeCalls())
	if n := h.log.Count("nothing to deregister"); n != 1 {
		t.Errorf("logged %q %d times, want once", "nothing to deregister", n)
	}
}

// A drain that starts while a maintenance call hangs on Consul cancels it,
// rather than wait out its timeout for the lock and then deregister with
// what is left of its own.
func TestDeregisterCancelsAHangingMaintenanceCall(t *testing.T) {
	h := newHarness(t, 0.5)
	h.start()
	h.clock.NextWait(t)
	calls := h.consul.hangMaintenance()
	h.consul.takeCalls()
	done := make(chan error, 1)
	go func() { done <- h.r.SetMaintenance(context.Background(), true, "upgrade") }()
	<-calls
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := h.r.Deregister(ctx); err != nil {
		t.Errorf("Deregister = %v, want nil", err)
	}
	wantCalls(t, h.consul.takeCalls(), "update service:web-1 critical", "deregister web-1")
	if err := <-done; !errors.Is(err, ErrPending) {
		t.Errorf("SetMaintenance = %v, want an error wrapping ErrPending", err)
	}
}

// TestDeregisterOnASlowConsulKeepsItsTime: on an agent that answers
// every request slowly but within the call timeout, the critical update
// before the deregistration is given up early, so that the deregistration
// still gets through within the stop's budget, which is one call timeout.
func TestDeregisterOnASlowConsulKeepsItsTime(t *testing.T) {
	const callTimeout = 2 * time.Second
	h := newHarnessWith(t, 0.5, Options{CallTimeout: callTimeout})
	h.start()
	h.clock.NextWait(t)
	h.consul.takeCalls()
	h.consul.slowUpdates(callTimeout * 6 / 10)
	h.consul.mu.Lock()
	h.consul.deregisterDelay = callTimeout * 6 / 10
	h.consul.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := h.r.Deregister(ctx); err != nil {
		t.Fatalf("Deregister on an agent answering in %s, with %s to do it: %v", callTimeout*6/10, callTimeout, err)
	}
	if _, ok := h.consul.service("web-1"); ok {
		t.Errorf("web-1 is still registered")
	}
}

func TestDeregisterOfAnUnknownServiceSucceeds(t *testing.T) {
	h := newHarness(t, 0.5)
	h.start()
	h.clock.NextWait(t)
	h.consul.lose()
	h.consul.takeCalls()
	if err := h.r.Deregister(context.Background()); err != nil {
		t.Errorf("Deregister of a service consul does not have: %v, want nil", err)
	}
	wantCalls(t, h.consul.takeCalls(), "update service:web-1 critical", "deregister web-1")
}

func TestDeregisterReportsConsulErrors(t *testing.T) {
	h := newHarness(t, 0.5)
	h.start()
	h.clock.NextWait(t)
	h.consul.setError(500, "boom")
	err := h.r.Deregister(context.Background())
	if err == nil || !strings.Contains(err.Error(), `deregister service "web-1" from consul at http://127.0.0.1:`) ||
		!strings.Contains(err.Error(), "boom") {
		t.Errorf("Deregister = %v, want an error naming the service, consul's address and its answer", err)
	}
	if got := h.counter(h.r.m.errors, "deregister"); got != 1 {
		t.Errorf("errors{op=deregister} = %v, want 1", got)
	}
}

func TestMaintenanceIsKeptAndReappliedAfterALoss(t *testing.T) {
	h := newHarness(t, 0.5)
	h.consul.setDown(true)
	h.start()
	d := h.clock.NextWait(t).D

	err := h.r.SetMaintenance(context.Background(), true, "deploy 42")
	if !errors.Is(err, ErrPending) {
		t.Errorf("SetMaintenance before registration = %v, want ErrPending", err)
	}
	h.consul.setDown(false)
	h.step(d)
	if reason, ok := h.consul.maintReason("web-1"); !ok || reason != "deploy 42" {
		t.Errorf("consul maintenance = %q, %v; want deploy 42 once registered", reason, ok)
	}

	h.consul.lose()
	h.step(heartbeat)
	if reason, ok := h.consul.maintReason("web-1"); !ok || reason != "deploy 42" {
		t.Errorf("consul maintenance after a repair = %q, %v; want deploy 42 again", reason, ok)
	}
	if s := h.r.Status(); !s.Maintenance || s.MaintenanceReason != "deploy 42" {
		t.Errorf("status = %+v, want maintenance deploy 42", s)
	}

	if err := h.r.SetMaintenance(context.Background(), false, ""); err != nil {
		t.Errorf("SetMaintenance off = %v, want nil", err)
	}
	if _, ok := h.consul.maintReason("web-1"); ok {
		t.Errorf("consul still has web-1 in maintenance")
	}
	h.consul.takeCalls()
	h.step(heartbeat)
	wantCalls(t, h.consul.takeCalls(), "update service:web-1 critical")
}

// TestMaintenanceOffSurvivesARegistration: a disable that Consul did not
// take is sent again after a registration in place, which keeps whatever
// maintenance Consul holds.
func TestMaintenanceOffSurvivesARegistration(t *testing.T) {
	h := newHarness(t, 0.5)
	h.start()
	h.clock.NextWait(t)
	if err := h.r.SetMaintenance(context.Background(), true, "deploy"); err != nil {
		t.Fatalf("SetMaintenance on = %v", err)
	}
	h.consul.setMaintenanceError(500)
	if err := h.r.SetMaintenance(context.Background(), false, ""); !errors.Is(err, ErrPending) {
		t.Errorf("SetMaintenance off refused by consul = %v, want ErrPending", err)
	}
	changed := testService()
	changed.Tags = []string{"v2"}
	if err := h.r.Update(changed); err != nil {
		t.Fatalf("Update: %v", err)
	}
	h.clock.NextWait(t)
	h.consul.setMaintenanceError(0)
	h.step(heartbeat)
	if reason, ok := h.consul.maintReason("web-1"); ok {
		t.Errorf("consul still holds maintenance %q after a registration and a heartbeat, want none", reason)
	}
	if s := h.r.Status(); s.Maintenance {
		t.Errorf("status = %+v, want maintenance off", s)
	}
}

// TestSetMaintenanceErrorsArePending: every way SetMaintenance can fail
// keeps the wish and wraps ErrPending; /maintenance answers 202 for any
// error on that ground.
func TestSetMaintenanceErrorsArePending(t *testing.T) {
	tests := []struct {
		name  string
		setup func(h *harness) context.Context
	}{
		{"not registered yet", func(h *harness) context.Context {
			h.consul.setDown(true)
			h.start()
			h.clock.NextWait(h.t)
			return context.Background()
		}},
		{"consul refuses", func(h *harness) context.Context {
			h.start()
			h.clock.NextWait(h.t)
			h.consul.setMaintenanceError(500)
			return context.Background()
		}},
		{"the caller gives up while another operation runs", func(h *harness) context.Context {
			h.start()
			h.clock.NextWait(h.t)
			if !h.r.lock(context.Background()) {
				h.t.Fatal("could not take the registrar's lock")
			}
			h.t.Cleanup(h.r.unlock)
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, 0.5)
			ctx := tc.setup(h)
			err := h.r.SetMaintenance(ctx, true, "deploy")
			if !errors.Is(err, ErrPending) {
				t.Errorf("SetMaintenance = %v, want an error wrapping ErrPending", err)
			}
			if s := h.r.Status(); !s.Maintenance || s.MaintenanceReason != "deploy" {
				t.Errorf("status = %+v, want the wish kept: maintenance deploy", s)
			}
		})
	}
}

// TestMaintenanceThatFindsTheInstanceLostRepairsIt: a maintenance call
// that finds Consul has lost the instance is a loss like a heartbeat's:
// logged, repaired in place at once, and the wanted mode applied after.
func TestMaintenanceThatFindsTheInstanceLostRepairsIt(t *testing.T) {
	h := newHarness(t, 0.5)
	h.start()
	h.clock.NextWait(t)
	h.verdict(true, "ok")

	h.consul.lose()
	if err := h.r.SetMaintenance(context.Background(), true, "deploy"); !errors.Is(err, ErrPending) {
		t.Errorf("SetMaintenance on a lost instance = %v, want ErrPending", err)
	}
	if n := h.log.Count("consul lost the registration"); n != 1 {
		t.Errorf("logged the loss %d times, want 1", n)
	}
	// The registrar is woken: it registers again without waiting for the
	// next heartbeat, then applies the maintenance.
	if got := h.clock.NextWait(t).D; got != heartbeat {
		t.Errorf("wait after the repair = %s, want %s", got, heartbeat)
	}
	if reason, ok := h.consul.maintReason("web-1"); !ok || reason != "deploy" {
		t.Errorf("consul maintenance after the repair = %q, %v; want deploy", reason, ok)
	}
	if got := h.counter(h.r.m.registrations, "repair"); got != 1 {
		t.Errorf("registrations{repair} = %v, want 1", got)
	}
	if n := h.log.Count("consul lost the registration"); n != 1 {
		t.Errorf("logged the loss %d times after the repair, want 1", n)
	}
}

func TestMaintenanceFailuresAreRetriedAndLoggedOnce(t *testing.T) {
	h := newHarness(t, 0.5)
	h.start()
	h.clock.NextWait(t)
	h.consul.setMaintenanceError(403)

	if err := h.r.SetMaintenance(context.Background(), true, "deploy"); !errors.Is(err, ErrPending) {
		t.Errorf("SetMaintenance refused by consul = %v, want ErrPending", err)
	}
	for range 4 {
		h.step(heartbeat)
	}
	if n := h.log.Count("could not apply maintenance mode"); n != 1 {
		t.Errorf("logged the maintenance failure %d times over 4 heartbeats, want once", n)
	}
	if got := h.counter(h.r.m.errors, "maintenance"); got != 5 {
		t.Errorf("errors{op=maintenance} = %v, want 5", got)
	}
	h.consul.setMaintenanceError(0)
	h.step(heartbeat)
	if reason, ok := h.consul.maintReason("web-1"); !ok || reason != "deploy" {
		t.Errorf("consul maintenance = %q, %v; want deploy once consul accepts it", reason, ok)
	}
}

func TestUpdateRegistersAgainInPlace(t *testing.T) {
	h := newHarness(t, 0.5)
	h.start()
	h.clock.NextWait(t)
	h.consul.takeCalls()

	same := testService()
	if err := h.r.Update(same); err != nil {
		t.Fatalf("Update with the same service: %v", err)
	}
	changed := testService()
	changed.Tags = []string{"v2"}
	if err := h.r.Update(changed); err != nil {
		t.Fatalf("Update: %v", err)
	}
	h.clock.NextWait(t)
	wantCalls(t, h.consul.takeCalls(), "register web-1", "update service:web-1 critical", "maintenance web-1 false")
	if reg, _ := h.consul.service("web-1"); !slices.Equal(reg.Tags, []string{"v2"}) {
		t.Errorf("tags = %q, want [v2]", reg.Tags)
	}
	if got := h.counter(h.r.m.registrations, "config"); got != 1 {
		t.Errorf("registrations{config} = %v, want 1", got)
	}

	other := testService()
	other.ID = "web-2"
	if err := h.r.Update(other); err == nil {
		t.Errorf("Update to another ID succeeded, want an error")
	}
}

func TestNewRejectsAnIncompleteService(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Service)
		want string
	}{
		{name: "no id", edit: func(s *Service) { s.ID = "" }, want: `register: service needs an ID and a name, got ID "" name "web"`},
		{name: "no name", edit: func(s *Service) { s.Name = "" }, want: `register: service needs an ID and a name, got ID "web-1" name ""`},
		{name: "no ttl", edit: func(s *Service) { s.TTL = 0 }, want: `register: service "web-1" has TTL 0s, want more than 0`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := testService()
			tc.edit(&svc)
			_, err := New(newFakeConsul(t), svc, Options{})
			if err == nil || err.Error() != tc.want {
				t.Errorf("New = %v, want %s", err, tc.want)
			}
		})
	}
}

func TestMetricsLint(t *testing.T) {
	h := newHarness(t, 0.5)
	problems, err := testutil.CollectAndLint(h.reg)
	if err != nil {
		t.Fatalf("CollectAndLint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
	if n := testutil.CollectAndCount(h.reg); n != 1+3+3+4 {
		t.Errorf("%d series before any traffic, want %d (every label value present from the start)", n, 1+3+3+4)
	}
}

// reloadConsulAnswers runs a registrar until its instance is registered
// and passing, then reloads it with the tags tag while Consul answers
// registrations with code. It returns the harness, its calls and liveness
// updates so far taken, and the wait after the reload's step.
func reloadConsulAnswers(t *testing.T, code int, tag string) (*harness, time.Duration) {
	t.Helper()
	h := newHarness(t, 0.5)
	h.start()
	h.clock.NextWait(t)
	h.verdict(true, "")
	h.consul.takeCalls()
	h.consul.takeAliveBeats()

	h.consul.setRegisterError(code)
	changed := testService()
	changed.Tags = []string{tag}
	if err := h.r.Update(changed); err != nil {
		t.Fatalf("Update: %v", err)
	}
	return h, h.clock.NextWait(t).D
}

func TestRejectedReloadKeepsTheRegistrationConsulHolds(t *testing.T) {
	// Consul refuses a reloaded registration (a 400: too many meta pairs,
	// say). The instance it holds keeps its settings and its heartbeats,
	// and outrider says so once, rather than retry the refused settings
	// forever while the check's TTL runs out.
	h, d := reloadConsulAnswers(t, 400, "refused")
	wantCalls(t, h.consul.takeCalls(), "register web-1", "update service:web-1 passing")
	for range 3 {
		d = h.step(d)
	}
	wantCalls(t, h.consul.takeCalls(), "update service:web-1 passing", "update service:web-1 passing", "update service:web-1 passing")
	if reg, _ := h.consul.service("web-1"); !slices.Equal(reg.Tags, testService().Tags) {
		t.Errorf("tags in consul = %q, want the ones it took before, %q", reg.Tags, testService().Tags)
	}
	if n := h.log.Count("consul rejected the reloaded registration"); n != 1 {
		t.Errorf("logged the refusal %d times, want once", n)
	}
	if got := h.counter(h.r.m.errors, "register"); got != 1 {
		t.Errorf("errors{op=register} = %v, want 1", got)
	}
	if c := h.lastCond(); !c.ok {
		t.Errorf("registered condition = %+v, want true: the instance is registered", c)
	}

	// The next reload Consul takes is registered.
	h.consul.setRegisterError(0)
	fixed := testService()
	fixed.Tags = []string{"fixed"}
	if err := h.r.Update(fixed); err != nil {
		t.Fatalf("Update: %v", err)
	}
	h.clock.NextWait(t)
	if reg, _ := h.consul.service("web-1"); !slices.Equal(reg.Tags, []string{"fixed"}) {
		t.Errorf("tags in consul = %q, want [fixed]", reg.Tags)
	}
}

func TestReloadConsulFailsToTakeKeepsHeartbeating(t *testing.T) {
	// Consul fails to take a reloaded registration for a while (a 500: no
	// cluster leader, say; a 429: too many connections from this address)
	// while it still holds the instance. The heartbeats go on, so that no
	// check expires, and the reload is sent again at every step until
	// Consul takes it: neither answer says the settings are wrong.
	for _, code := range []int{500, 429} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			h, d := reloadConsulAnswers(t, code, "v2")
			for range 3 {
				if d > heartbeat {
					t.Fatalf("next step in %s, want at most the heartbeat interval %s: the checks would expire", d, heartbeat)
				}
				d = h.step(d)
			}
			wantCalls(t, h.consul.takeCalls(),
				"register web-1", "update service:web-1 passing",
				"register web-1", "update service:web-1 passing",
				"register web-1", "update service:web-1 passing",
				"register web-1", "update service:web-1 passing")
			if n := h.consul.takeAliveBeats(); n != 4 {
				t.Errorf("liveness check updated %d times, want 4 (one per step)", n)
			}
			if reg, _ := h.consul.service("web-1"); !slices.Equal(reg.Tags, testService().Tags) {
				t.Errorf("tags in consul = %q, want the ones it took before, %q", reg.Tags, testService().Tags)
			}
			if got := h.counter(h.r.m.errors, "register"); got != 4 {
				t.Errorf("errors{op=register} = %v, want 4", got)
			}
			if c := h.lastCond(); !c.ok {
				t.Errorf("registered condition = %+v, want true: the instance is registered", c)
			}
			if n := h.log.Count("consul rejected"); n != 0 {
				t.Errorf("logged that consul rejected the settings %d times, want never", n)
			}

			h.consul.setRegisterError(0)
			h.step(d)
			if reg, _ := h.consul.service("web-1"); !slices.Equal(reg.Tags, []string{"v2"}) {
				t.Errorf("tags in consul = %q, want [v2] once Consul answers", reg.Tags)
			}
			if got := h.counter(h.r.m.registrations, "config"); got != 1 {
				t.Errorf("registrations{config} = %v, want 1", got)
			}
		})
	}
}

func TestFirstRegistrationLeavesAnIDAnotherInstanceHolds(t *testing.T) {
	for _, tc := range []struct {
		name          string
		address       string
		port          int
		alive         string
		wantHeldBack  bool
		wantInMessage string
	}{
		{name: "free ID", wantHeldBack: false},
		{name: "another live instance", address: "10.0.0.8", port: 8080, alive: "passing", wantHeldBack: true, wantInMessage: "10.0.0.8:8080"},
		{name: "another port, live", address: "10.0.0.7", port: 9090, alive: "passing", wantHeldBack: true, wantInMessage: "10.0.0.7:9090"},
		{name: "another instance whose check expired", address: "10.0.0.8", port: 8080, alive: "critical", wantHeldBack: false},
		{name: "this instance's last run", address: "10.0.0.7", port: 8080, alive: "passing", wantHeldBack: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, 0.5)
			if tc.address != "" {
				h.consul.holdID("web-1", tc.address, tc.port, tc.alive)
			}
			h.start()
			d := h.clock.NextWait(t).D
			reg, _ := h.consul.service("web-1")
			heldBack := reg.Address != "10.0.0.7" || reg.Port != 8080
			if heldBack != tc.wantHeldBack {
				t.Fatalf("consul has web-1 at %s:%d; held back = %v, want %v", reg.Address, reg.Port, heldBack, tc.wantHeldBack)
			}
			if !tc.wantHeldBack {
				return
			}
			if d != heartbeat {
				t.Errorf("looks again in %s, want the heartbeat interval %s", d, heartbeat)
			}
			if c := h.lastCond(); c.ok || !strings.Contains(c.reason, tc.wantInMessage) || !strings.Contains(c.reason, "OUTRIDER_SERVICE_ID") {
				t.Errorf("registered condition = %+v, want false, naming %s and OUTRIDER_SERVICE_ID", c, tc.wantInMessage)
			}
			// /status says why the instance is not registered, as it does
			// for every other failure.
			if s := h.r.Status(); s.Registered || !strings.Contains(s.LastError, tc.wantInMessage) ||
				!strings.Contains(s.LastError, "OUTRIDER_SERVICE_ID") || !s.LastErrorAt.Equal(fakeEpoch) {
				t.Errorf("status = %+v, want not registered, last_error naming %s and OUTRIDER_SERVICE_ID, at %s", s, tc.wantInMessage, fakeEpoch)
			}
			d = h.step(d)
			d = h.step(d)
			if n := h.log.Count("not registering: the service ID is in use"); n != 1 {
				t.Errorf("logged %d times, want once", n)
			}
			if calls := h.consul.takeCalls(); len(calls) != 0 {
				t.Errorf("consul calls %q while the ID is held, want none", calls)
			}

			// The other instance's check expires: the ID is free.
			h.consul.holdID("web-1", tc.address, tc.port, "critical")
			h.step(d)
			if reg, _ := h.consul.service("web-1"); reg.Address != "10.0.0.7" || reg.Port != 8080 {
				t.Errorf("consul has web-1 at %s:%d once the ID was free, want 10.0.0.7:8080", reg.Address, reg.Port)
			}
		})
	}
}

// TestHeldBackAfterAnOutageSaysConsulAnswers: a Consul that comes back
// and answers that another live instance holds the ID is no longer shown
// unreachable; /status's last_error says why the instance waits.
func TestHeldBackAfterAnOutageSaysConsulAnswers(t *testing.T) {
	h := newHarness(t, 0.5)
	h.consul.setDown(true)
	h.start()
	d := h.clock.NextWait(t).D
	if s := h.r.Status(); s.Consul != "unreachable" {
		t.Fatalf("consul = %q with consul down, want unreachable", s.Consul)
	}
	h.consul.setDown(false)
	h.consul.holdID("web-1", "10.0.0.8", 8080, "passing")
	h.step(d)
	s := h.r.Status()
	if s.Consul != "ok" || s.ConsecutiveFailures != 0 || s.Registered || !strings.Contains(s.LastError, "10.0.0.8:8080") {
		t.Errorf("status = %+v, want consul ok, 0 failures, not registered, last_error naming 10.0.0.8:8080", s)
	}
	if n := h.log.Count("consul answers again"); n != 1 {
		t.Errorf("logged that consul answers again %d times, want once", n)
	}
}

func TestEachCheckUpdateHasTheCallTimeout(t *testing.T) {
	// A slow Consul that answers each request within the call timeout,
	// but not two in a row: both checks are updated.
	h := newHarnessWith(t, 0.5, Options{CallTimeout: 250 * time.Millisecond})
	h.consul.slowUpdates(150 * time.Millisecond)
	h.start()
	h.clock.NextWait(t)
	h.verdict(true, "")
	if c, _ := h.consul.check(AliveCheckID("web-1")); c.Status != "passing" {
		t.Errorf("liveness check %+v, want passing", c)
	}
	if c, _ := h.consul.check(CheckID("web-1")); c.Status != "passing" {
		t.Errorf("probe's check %+v, want passing", c)
	}
	if got := h.counter(h.r.m.errors, "heartbeat"); got != 0 {
		t.Errorf("errors{op=heartbeat} = %v, want 0", got)
	}
	if got := h.counter(h.r.m.heartbeats, "ok"); got < 1 {
		t.Errorf("heartbeats{result=ok} = %v, want at least 1", got)
	}
}

func TestMaintenanceHoldsTheCheckCriticalUntilConsulHasIt(t *testing.T) {
	// A healthy instance in maintenance is lost and registered again: it
	// must not show passing, even for a moment, before Consul holds its
	// maintenance mode again.
	h := newHarness(t, 0.5)
	h.start()
	h.clock.NextWait(t)
	d := h.verdict(true, "")
	if err := h.r.SetMaintenance(context.Background(), true, "disk"); err != nil {
		t.Fatalf("SetMaintenance: %v", err)
	}
	h.consul.lose()
	h.consul.takeCalls()
	d = h.step(d)
	calls := h.consul.takeCalls()
	wantCalls(t, calls, "update service:web-1 passing", "register web-1", "update service:web-1 critical", "maintenance web-1 true")
	if reg, _ := h.consul.service("web-1"); reg.Checks[0].Status != "critical" {
		t.Errorf("registered with check status %q, want critical while maintenance is wanted", reg.Checks[0].Status)
	}
	// Once Consul holds the maintenance mode, the check follows the probe.
	h.step(d)
	wantCalls(t, h.consul.takeCalls(), "update service:web-1 passing")
}

// TestReregisterSetsMaintenanceAgain: after a new ACL token, a
// maintenance that is on is removed and set again under it (Consul ignores
// an enable while one is on, and takes a later disable to the catalog with
// the token that set it), the check held critical all along.
func TestReregisterSetsMaintenanceAgain(t *testing.T) {
	h := newHarness(t, 0.5)
	h.start()
	h.clock.NextWait(t)
	d := h.verdict(true, "")
	if err := h.r.SetMaintenance(context.Background(), true, "disk"); err != nil {
		t.Fatalf("SetMaintenance: %v", err)
	}
	h.consul.takeCalls()
	h.r.Reregister()
	d = h.clock.NextWait(t).D
	wantCalls(t, h.consul.takeCalls(), "register web-1", "update service:web-1 critical",
		"update service:web-1 critical", "maintenance web-1 false", "maintenance web-1 true")
	if reason, ok := h.consul.maintReason("web-1"); !ok || reason != "disk" {
		t.Errorf("consul maintenance = %q, %v; want disk", reason, ok)
	}
	h.step(d)
	wantCalls(t, h.consul.takeCalls(), "update service:web-1 passing")

	// Off, a new token sends a disable alone, as after any registration.
	if err := h.r.SetMaintenance(context.Background(), false, ""); err != nil {
		t.Fatalf("SetMaintenance off: %v", err)
	}
	h.consul.takeCalls()
	h.r.Reregister()
	h.clock.NextWait(t)
	wantCalls(t, h.consul.takeCalls(), "register web-1", "update service:web-1 passing", "maintenance web-1 false")
}

// TestReregisterDuringAnEnableSetsMaintenanceAgain: a new token noticed
// by the very enable that confirms a maintenance Consul holds (after a
// reload) is one more change: that enable changed nothing in Consul, so
// the maintenance is still set again under the new token.
func TestReregisterDuringAnEnableSetsMaintenanceAgain(t *testing.T) {
	h := newHarness(t, 0.5)
	h.start()
	h.clock.NextWait(t)
	h.verdict(true, "")
	if err := h.r.SetMaintenance(context.Background(), true, "disk"); err != nil {
		t.Fatalf("SetMaintenance: %v", err)
	}
	h.consul.mu.Lock()
	h.consul.beforeEnable = h.r.Reregister
	h.consul.mu.Unlock()
	h.consul.takeCalls()
	h.update([]string{"v2"})
	h.clock.NextWait(t)
	h.clock.NextWait(t)
	wantCalls(t, h.consul.takeCalls(),
		"register web-1", "update service:web-1 critical", "maintenance web-1 true",
		"register web-1", "update service:web-1 critical", "update service:web-1 critical", "maintenance web-1 false", "maintenance web-1 true")
}

func TestUpdateWhileARegistrationIsInFlightIsRegistered(t *testing.T) {
	// A reload lands while a registration is on its way to Consul, which
	// carries the settings from before it. The reloaded settings must
	// still reach Consul, whatever the registration in flight was for
	// and whatever Consul answered it.
	for _, tc := range []struct {
		name string
		// prepare brings the registrar to the registration to catch in
		// flight, calls inFlight just before it, and returns the wait
		// before the next step.
		prepare func(h *harness, inFlight func()) time.Duration
	}{
		{name: "start", prepare: func(h *harness, inFlight func()) time.Duration {
			inFlight()
			h.start()
			return h.clock.NextWait(h.t).D
		}},
		{name: "repair", prepare: func(h *harness, inFlight func()) time.Duration {
			h.start()
			d := h.clock.NextWait(h.t).D
			h.consul.lose()
			inFlight()
			return h.step(d)
		}},
		{name: "config", prepare: func(h *harness, inFlight func()) time.Duration {
			h.start()
			h.clock.NextWait(h.t)
			inFlight()
			h.update([]string{"v2"})
			return h.clock.NextWait(h.t).D
		}},
		{name: "config refused", prepare: func(h *harness, inFlight func()) time.Duration {
			h.start()
			h.clock.NextWait(h.t)
			h.consul.setRegisterError(400)
			inFlight()
			h.update([]string{"refused"})
			return h.clock.NextWait(h.t).D
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, 0.5)
			latest := []string{"latest"}
			d := tc.prepare(h, func() {
				var once sync.Once
				h.consul.duringRegistrations(func() {
					once.Do(func() {
						h.consul.setRegisterError(0)
						h.update(latest)
					})
				})
			})
			h.step(d)
			reg, ok := h.consul.service("web-1")
			if !ok || !slices.Equal(reg.Tags, latest) {
				t.Errorf("tags in consul = %q (registered %t), want the latest reload's, %q", reg.Tags, ok, latest)
			}
		})
	}
}

// update reloads testService with tags.
func (h *harness) update(tags []string) {
	h.t.Helper()
	svc := testService()
	svc.Tags = tags
	if err := h.r.Update(svc); err != nil {
		h.t.Errorf("Update: %v", err)
	}
}

// TestStatusCheckStatusIsWhatConsulHolds: /status's check_status is the
// status of the check Consul holds, and absent when Consul holds none; it
// said passing beside deregistered: true all through a drain.
func TestStatusCheckStatusIsWhatConsulHolds(t *testing.T) {
	for _, tc := range []struct {
		name string
		// then acts on a registered, passing instance.
		then func(t *testing.T, h *harness)
		want string
	}{
		{name: "heartbeating", then: func(*testing.T, *harness) {}, want: "passing"},
		{name: "deregistered", then: func(t *testing.T, h *harness) {
			if err := h.r.Deregister(context.Background()); err != nil {
				t.Fatalf("Deregister: %v", err)
			}
		}, want: ""},
		{name: "set critical, deregistration unanswered", then: func(t *testing.T, h *harness) {
			h.consul.mu.Lock()
			h.consul.deregisterHangs = true
			h.consul.mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			if err := h.r.Deregister(ctx); err == nil {
				t.Fatalf("Deregister with a hanging agent succeeded")
			}
		}, want: "critical"},
		{name: "lost, registering again fails", then: func(t *testing.T, h *harness) {
			h.consul.lose()
			h.consul.setRegisterError(500)
			h.step(heartbeat)
		}, want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, 0.5)
			h.start()
			h.clock.NextWait(t)
			h.verdict(true, "")
			tc.then(t, h)
			if got := h.r.Status().CheckStatus; got != tc.want {
				t.Errorf("check_status = %q, want %q; consul holds %+v", got, tc.want, h.r.Status())
			}
			if c, ok := h.consul.check(CheckID("web-1")); ok && tc.want == "" {
				t.Errorf("consul holds the check %+v; the test expects none", c)
			}
		})
	}
}
