package probe

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outrider-sidecar/outrider/internal/clock"
	"github.com/outrider-sidecar/outrider/internal/testlog"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// startRunner runs r until the test ends.
func startRunner(t *testing.T, r *Runner) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run = %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return after its context was cancelled")
		}
	})
}

// receive takes a value from ch, failing the test after a bound.
func receive[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("nothing received")
	}
	var zero T
	return zero
}

var tcpSpec = Spec{Kind: KindTCP, Address: "127.0.0.1:1"}

func TestRunnerSchedule(t *testing.T) {
	clk := clock.NewFake(t0)
	calls := make(chan time.Time, 100)
	p := func(context.Context, Spec) Result {
		calls <- clk.Now()
		return Result{Outcome: Success}
	}
	sched := Schedule{InitialDelay: 10 * time.Second, Period: 5 * time.Second, Timeout: time.Minute, FailureThreshold: 3, SuccessThreshold: 1}
	r, err := NewRunner(tcpSpec, sched, nil, prometheus.NewRegistry(), WithClock(clk), WithProber(p))
	if err != nil {
		t.Fatal(err)
	}
	startRunner(t, r)

	if wake := clk.NextWait(t).At; !wake.Equal(t0.Add(10 * time.Second)) {
		t.Fatalf("first wake-up at %s, want after the initial delay, %s", wake, t0.Add(10*time.Second))
	}
	clk.Advance(9 * time.Second)
	if len(calls) != 0 {
		t.Fatalf("probed during the initial delay")
	}
	clk.Advance(time.Second)
	for i, want := range []time.Duration{10, 15, 20, 25} {
		if got := receive(t, calls); !got.Equal(t0.Add(want * time.Second)) {
			t.Errorf("probe %d at %s, want %s", i, got.Sub(t0), want*time.Second)
		}
		wake := clk.NextWait(t).At
		clk.Advance(wake.Sub(clk.Now()))
	}
}

// TestRunnerSlowProbe checks that a probe that overruns its period is not
// overlapped, and that the next one starts at the next slot, once.
func TestRunnerSlowProbe(t *testing.T) {
	clk := clock.NewFake(t0)
	calls := make(chan time.Time, 100)
	release := make(chan struct{})
	first := true
	p := func(context.Context, Spec) Result {
		calls <- clk.Now()
		if first {
			first = false
			<-release
		}
		return Result{Outcome: Success}
	}
	sched := Schedule{Period: 5 * time.Second, Timeout: time.Minute, FailureThreshold: 3, SuccessThreshold: 1}
	r, err := NewRunner(tcpSpec, sched, nil, prometheus.NewRegistry(), WithClock(clk), WithProber(p))
	if err != nil {
		t.Fatal(err)
	}
	startRunner(t, r)

	if got := receive(t, calls); !got.Equal(t0) {
		t.Errorf("first probe at %s, want at once", got.Sub(t0))
	}
	// The probe hangs for two and a half periods.
	clk.Advance(12 * time.Second)
	if len(calls) != 0 {
		t.Fatalf("a probe started while the previous one ran")
	}
	close(release)
	if wake := clk.NextWait(t).At; !wake.Equal(t0.Add(15 * time.Second)) {
		t.Errorf("after a slow probe the next is due at %s, want 15s (slots 5s and 10s skipped)", wake.Sub(t0))
	}
	clk.Advance(3 * time.Second)
	if got := receive(t, calls); !got.Equal(t0.Add(15 * time.Second)) {
		t.Errorf("second probe at %s, want 15s", got.Sub(t0))
	}
	clk.NextWait(t)
	if len(calls) != 0 {
		t.Errorf("the skipped slots were probed: %d more probes", len(calls))
	}
}

func TestRunnerPublishesTransitions(t *testing.T) {
	clk := clock.NewFake(t0)
	script := []Result{
		{Outcome: Success, Output: "up", Duration: 10 * time.Millisecond},
		{Outcome: Failure, Output: "503 once", Duration: 20 * time.Millisecond},
		{Outcome: Success, Output: "up again", Duration: 10 * time.Millisecond},
		{Outcome: Timeout, Output: "slow", Duration: time.Second},
		{Outcome: Failure, Output: "503", Duration: 20 * time.Millisecond},
		{Outcome: Error, Output: "broken", Duration: time.Millisecond},
		{Outcome: Success, Output: "back", Duration: 10 * time.Millisecond},
	}
	// What Verdict() says after each step of the script.
	want := []struct {
		healthy bool
		since   time.Duration
	}{{true, 0}, {true, 0}, {true, 0}, {true, 0}, {true, 0}, {false, 25}, {true, 30}}
	var mu sync.Mutex
	next := 0
	p := func(context.Context, Spec) Result {
		mu.Lock()
		defer mu.Unlock()
		r := script[next]
		next++
		return r
	}
	logs := &testlog.Buffer{}
	reg := prometheus.NewPedanticRegistry()
	sched := Schedule{Period: 5 * time.Second, Timeout: time.Minute, FailureThreshold: 3, SuccessThreshold: 1}
	r, err := NewRunner(tcpSpec, sched, slog.New(slog.NewJSONHandler(logs, nil)), reg, WithClock(clk), WithProber(p))
	if err != nil {
		t.Fatal(err)
	}
	reader, idle := r.Subscribe(), r.Subscribe()
	if v := r.Verdict(); v.Healthy || v.Output != "no probe yet" {
		t.Errorf("verdict before Run = %+v, want unhealthy, no probe yet", v)
	}
	startRunner(t, r)

	var transitions []Verdict
	for i := range script {
		clk.NextWait(t)
		v := r.Verdict()
		if v.Healthy != want[i].healthy || v.Output != script[i].Output || !v.Since.Equal(t0.Add(want[i].since*time.Second)) {
			t.Errorf("after probe %d: verdict = %+v, want healthy=%t output=%q since=%s",
				i, v, want[i].healthy, script[i].Output, want[i].since*time.Second)
		}
		select {
		case v := <-reader:
			transitions = append(transitions, v)
		default:
		}
		if i < len(script)-1 {
			clk.Advance(sched.Period)
		}
	}
	wantTransitions := []Verdict{
		{Healthy: true, Output: "up", Summary: "probe passed: up", Since: t0},
		{Healthy: false, Output: "broken", Summary: "probe could not run: broken", Since: t0.Add(25 * time.Second)},
		{Healthy: true, Output: "back", Summary: "probe passed: back", Since: t0.Add(30 * time.Second)},
	}
	if !equalVerdicts(transitions, wantTransitions) {
		t.Errorf("transitions = %+v, want %+v", transitions, wantTransitions)
	}
	// A subscriber that read nothing holds only the latest transition.
	if got := receive(t, idle); got != wantTransitions[2] {
		t.Errorf("idle subscriber holds %+v, want the latest transition %+v", got, wantTransitions[2])
	}
	select {
	case v := <-idle:
		t.Errorf("idle subscriber holds a second value %+v", v)
	default:
	}

	// Every transition is logged once, with its reason.
	out := logs.String()
	for _, w := range []struct {
		line string
		n    int
	}{
		{`"msg":"app is healthy","probe":"tcp://127.0.0.1:1","reason":"up"`, 1},
		{`"msg":"app is unhealthy","probe":"tcp://127.0.0.1:1","reason":"broken","failures_in_a_row":3`, 1},
		{`"msg":"app is healthy","probe":"tcp://127.0.0.1:1","reason":"back"`, 1},
		{`"msg":"app is`, 3},
	} {
		if got := strings.Count(out, w.line); got != w.n {
			t.Errorf("log has %d lines with %s, want %d:\n%s", got, w.line, w.n, out)
		}
	}

	for _, m := range []struct {
		c    prometheus.Collector
		want float64
	}{
		{r.metrics.total.WithLabelValues("success"), 3},
		{r.metrics.total.WithLabelValues("failure"), 2},
		{r.metrics.total.WithLabelValues("timeout"), 1},
		{r.metrics.total.WithLabelValues("error"), 1},
		{r.metrics.success, 1},
		{r.metrics.healthy, 1},
	} {
		if got := testutil.ToFloat64(m.c); got != m.want {
			t.Errorf("%s = %g, want %g", m.c.(prometheus.Metric).Desc(), got, m.want)
		}
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP outrider_probe_duration_seconds How long each probe of the app took.
# TYPE outrider_probe_duration_seconds histogram
outrider_probe_duration_seconds_bucket{le="0.001"} 1
outrider_probe_duration_seconds_bucket{le="0.0025"} 1
outrider_probe_duration_seconds_bucket{le="0.005"} 1
outrider_probe_duration_seconds_bucket{le="0.01"} 4
outrider_probe_duration_seconds_bucket{le="0.025"} 6
outrider_probe_duration_seconds_bucket{le="0.05"} 6
outrider_probe_duration_seconds_bucket{le="0.1"} 6
outrider_probe_duration_seconds_bucket{le="0.25"} 6
outrider_probe_duration_seconds_bucket{le="0.5"} 6
outrider_probe_duration_seconds_bucket{le="1"} 7
outrider_probe_duration_seconds_bucket{le="2.5"} 7
outrider_probe_duration_seconds_bucket{le="5"} 7
outrider_probe_duration_seconds_bucket{le="10"} 7
outrider_probe_duration_seconds_bucket{le="+Inf"} 7
outrider_probe_duration_seconds_sum 1.071
outrider_probe_duration_seconds_count 7
`), "outrider_probe_duration_seconds"); err != nil {
		t.Error(err)
	}

	st := r.Status()
	if !st.Healthy || st.Reason != "back" || st.Last == nil || st.Last.Result != "success" || st.InARow != 1 {
		t.Errorf("status = %+v, want healthy, back, last success, 1 in a row", st)
	}
}

func equalVerdicts(a, b []Verdict) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Healthy != b[i].Healthy || a[i].Output != b[i].Output || a[i].Summary != b[i].Summary || !a[i].Since.Equal(b[i].Since) {
			return false
		}
	}
	return true
}

func TestRunnerMetricsLint(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	r, err := NewRunner(tcpSpec, Schedule{Period: time.Second, Timeout: time.Second, FailureThreshold: 1, SuccessThreshold: 1}, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	r.metrics.observe(Result{Outcome: Failure, Output: "x", Duration: time.Millisecond})
	for _, c := range []prometheus.Collector{r.metrics.success, r.metrics.duration, r.metrics.total, r.metrics.healthy} {
		problems, err := testutil.CollectAndLint(c)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	if n := testutil.CollectAndCount(r.metrics.total); n != 4 {
		t.Errorf("outrider_probe_total has %d series, want 4 (every result from the start)", n)
	}
}

func TestNewRunnerRefuses(t *testing.T) {
	good := Schedule{Period: time.Second, Timeout: time.Second, FailureThreshold: 3, SuccessThreshold: 1}
	taken := prometheus.NewRegistry()
	if _, err := NewRunner(tcpSpec, good, nil, taken); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		spec    Spec
		sched   Schedule
		reg     prometheus.Registerer
		wantErr string
	}{
		{name: "zero period", spec: tcpSpec, sched: Schedule{Timeout: time.Second, FailureThreshold: 1, SuccessThreshold: 1},
			wantErr: "probe schedule: period 0s is not positive"},
		{name: "everything wrong", spec: tcpSpec, sched: Schedule{InitialDelay: -time.Second, Period: -1},
			wantErr: "probe schedule: initial delay -1s is negative\nperiod -1ns is not positive\ntimeout 0s is not positive\n" +
				"failure threshold 0 is less than 1\nsuccess threshold 0 is less than 1"},
		{name: "unknown kind", spec: Spec{Kind: "ftp"}, sched: good,
			wantErr: `probe "": no prober for this kind of probe: "ftp"`},
		{name: "metrics registered twice", spec: tcpSpec, sched: good, reg: taken,
			wantErr: "probe metrics: duplicate metrics collector registration attempted"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := tc.reg
			if reg == nil {
				reg = prometheus.NewRegistry()
			}
			_, err := NewRunner(tc.spec, tc.sched, nil, reg)
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestRunnerRunsOnce(t *testing.T) {
	r, err := NewRunner(tcpSpec, Schedule{Period: time.Hour, Timeout: time.Second, FailureThreshold: 1, SuccessThreshold: 1}, nil, nil,
		WithProber(func(context.Context, Spec) Result { return Result{Outcome: Success} }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Run(ctx); err != nil {
		t.Errorf("first Run = %v, want nil", err)
	}
	if err := r.Run(ctx); err == nil {
		t.Errorf("second Run = nil, want an error")
	}
}

// TestRunnerStopsDuringAProbe checks that stopping the runner ends a
// probe in progress at once and does not count it.
func TestRunnerStopsDuringAProbe(t *testing.T) {
	started := make(chan struct{})
	p := func(ctx context.Context, spec Spec) Result {
		close(started)
		return probeExec(ctx, spec)
	}
	spec := Spec{Kind: KindExec, Command: []string{"sleep", "600"}}
	r, err := NewRunner(spec, Schedule{Period: time.Hour, Timeout: time.Hour, FailureThreshold: 1, SuccessThreshold: 1}, nil, nil, WithProber(p))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	receive(t, started)
	cancel()
	begin := time.Now()
	if err := receive(t, done); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("Run took %s to stop", d)
	}
	if n := testutil.ToFloat64(r.metrics.total.WithLabelValues("error")); n != 0 {
		t.Errorf("the interrupted probe was counted as an error")
	}
	if st := r.Status(); st.Last != nil {
		t.Errorf("the interrupted probe was recorded: %+v", st.Last)
	}
}

// TestRunnerWatchCarriesTheLatestOutput checks that Watch receives a new
// output with the same health, where Subscribe receives transitions only.
func TestRunnerWatchCarriesTheLatestOutput(t *testing.T) {
	clk := clock.NewFake(t0)
	script := []Result{
		{Outcome: Failure, Output: "refused"}, // not decided yet: threshold 2
		{Outcome: Failure, Output: "refused"}, // unhealthy
		{Outcome: Failure, Output: "timeout"}, // same health, new output
		{Outcome: Failure, Output: "timeout"}, // nothing new
		{Outcome: Success, Output: "up"},      // healthy
	}
	var mu sync.Mutex
	next := 0
	p := func(context.Context, Spec) Result {
		mu.Lock()
		defer mu.Unlock()
		r := script[next]
		next++
		return r
	}
	sched := Schedule{Period: time.Second, Timeout: time.Minute, FailureThreshold: 2, SuccessThreshold: 1}
	r, err := NewRunner(tcpSpec, sched, nil, prometheus.NewRegistry(), WithClock(clk), WithProber(p))
	if err != nil {
		t.Fatal(err)
	}
	subs, watch := r.Subscribe(), r.Watch()
	startRunner(t, r)
	var transitions, watched []string
	for i := range script {
		clk.NextWait(t)
		for ch, got := range map[<-chan Verdict]*[]string{subs: &transitions, watch: &watched} {
			select {
			case v := <-ch:
				*got = append(*got, fmt.Sprintf("%t %s", v.Healthy, v.Output))
			default:
			}
		}
		if i < len(script)-1 {
			clk.Advance(sched.Period)
		}
	}
	if want := []string{"false refused", "true up"}; !slices.Equal(transitions, want) {
		t.Errorf("Subscribe received %q, want %q", transitions, want)
	}
	if want := []string{"false refused", "false timeout", "true up"}; !slices.Equal(watched, want) {
		t.Errorf("Watch received %q, want %q", watched, want)
	}
}

// TestRunnerReconfigure checks that a new spec and schedule take effect
// at the next probe, the new period counting from the latest probe, and
// that the verdict is kept across the change.
func TestRunnerReconfigure(t *testing.T) {
	clk := clock.NewFake(t0)
	type call struct {
		at   time.Duration
		spec string
	}
	calls := make(chan call, 100)
	p := func(_ context.Context, s Spec) Result {
		calls <- call{clk.Now().Sub(t0), s.String()}
		return Result{Outcome: Success, Output: "up"}
	}
	sched := Schedule{Period: 10 * time.Second, Timeout: time.Minute, FailureThreshold: 3, SuccessThreshold: 1}
	r, err := NewRunner(tcpSpec, sched, nil, prometheus.NewRegistry(), WithClock(clk), WithProber(p))
	if err != nil {
		t.Fatal(err)
	}
	startRunner(t, r)
	if got := receive(t, calls); got != (call{0, "tcp://127.0.0.1:1"}) {
		t.Errorf("first probe = %+v, want tcp at 0s", got)
	}
	clk.NextWait(t) // waiting for 10s
	clk.Advance(3 * time.Second)

	httpSpec, err := ParseSpec("http://127.0.0.1:1/healthz")
	if err != nil {
		t.Fatal(err)
	}
	sched.Period = 5 * time.Second
	if err := r.Reconfigure(httpSpec, sched); err != nil {
		t.Fatalf("Reconfigure: %v", err)
	}
	if w := clk.NextWait(t); w.D != 2*time.Second {
		t.Errorf("wait after the new period = %s, want 2s (5s from the probe at 0s)", w.D)
	}
	clk.Advance(2 * time.Second)
	if got := receive(t, calls); got != (call{5 * time.Second, "http://127.0.0.1:1/healthz"}) {
		t.Errorf("probe after Reconfigure = %+v, want http at 5s", got)
	}
	if w := clk.NextWait(t); w.D != 5*time.Second {
		t.Errorf("next wait = %s, want the new period 5s", w.D)
	}
	if v := r.Verdict(); !v.Healthy || !v.Since.Equal(t0) {
		t.Errorf("verdict = %+v, want healthy since the first probe", v)
	}
	if st := r.Status(); st.Probe != "http://127.0.0.1:1/healthz" || st.Schedule.Period != "5s" {
		t.Errorf("status = %+v, want the new probe and period", st)
	}

	bad := sched
	bad.Timeout = 0
	if err := r.Reconfigure(httpSpec, bad); err == nil || !strings.Contains(err.Error(), "timeout 0s is not positive") {
		t.Errorf("Reconfigure with timeout 0 = %v, want the schedule error", err)
	}
}
