package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"

	"github.com/outrider-sidecar/outrider/internal/configmaptest"
	"github.com/outrider-sidecar/outrider/internal/consultest"
	"github.com/outrider-sidecar/outrider/register"
)

// reloadDebounce is the config watcher's default quiet time plus its
// confirming read, which every bound on a reload's latency below includes.
const reloadDebounce = 300 * time.Millisecond

// writeFile writes content to path at once, failing the test if it cannot.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// replaceFile writes content to a new file and renames it over path, as
// most editors and config tools save.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	writeFile(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// metricOf reads one series from the metrics listener at base, -1 when absent.
func metricOf(t *testing.T, base, series string) float64 {
	t.Helper()
	if v, ok := seriesValue(t, scrapeMetrics(t, base), series); ok {
		return v
	}
	return -1
}

const (
	reloadOK     = `outrider_config_reload_total{result="success"}`
	reloadFailed = `outrider_config_reload_total{result="failure"}`
)

// waitMetric waits until series reaches want and returns how long it took.
func waitMetric(t *testing.T, base, series string, want float64, limit time.Duration) time.Duration {
	t.Helper()
	return regEventually(t, limit, series+" = "+strconv.FormatFloat(want, 'g', -1, 64), func() (bool, string) {
		got := metricOf(t, base, series)
		return got == want, strconv.FormatFloat(got, 'g', -1, 64)
	})
}

// configValues returns the reloadable settings in force, from /status.
func configValues(t *testing.T, admin string) map[string]string {
	t.Helper()
	code, body := httpGet(t, admin+"/status")
	if code != http.StatusOK {
		t.Fatalf("GET /status: %d %s", code, body)
	}
	var s struct {
		Config struct {
			Values map[string]string `json:"values"`
		} `json:"config"`
	}
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("decode /status: %v\n%s", err, body)
	}
	return s.Config.Values
}

// healthWatch runs blocking queries on the health of service until
// stopped, and records whether any answer lacked the instance id among
// the passing ones.
type healthWatch struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	answers int
	missing []string // what the answers that lacked it held
	tags    [][]string
}

func watchHealth(t *testing.T, cc *consul.Client, service, id string) *healthWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &healthWatch{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		var index uint64
		for ctx.Err() == nil {
			q := (&consul.QueryOptions{WaitIndex: index, WaitTime: 2 * time.Second}).WithContext(ctx)
			entries, meta, err := cc.Health().Service(service, "", true, q)
			if err != nil {
				continue // the context ended, or Consul hiccuped: ask again
			}
			index = meta.LastIndex
			var ids []string
			var tags []string
			for _, e := range entries {
				ids = append(ids, e.Service.ID)
				if e.Service.ID == id {
					tags = e.Service.Tags
				}
			}
			w.mu.Lock()
			w.answers++
			if !slices.Contains(ids, id) {
				w.missing = append(w.missing, strings.Join(ids, ","))
			}
			w.tags = append(w.tags, tags)
			w.mu.Unlock()
		}
	}()
	t.Cleanup(w.stop)
	return w
}

func (w *healthWatch) stop() {
	w.cancel()
	<-w.done
}

// probeStatus returns the probe section of /status: the probe and the
// last result's output.
func probeStatus(t *testing.T, admin string) (probe, lastOutput string) {
	t.Helper()
	code, body := httpGet(t, admin+"/status")
	if code != http.StatusOK {
		t.Fatalf("GET /status: %d %s", code, body)
	}
	var s struct {
		Probe struct {
			Probe string `json:"probe"`
			Last  struct {
				Output string `json:"output"`
			} `json:"last"`
		} `json:"probe"`
	}
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("decode /status: %v\n%s", err, body)
	}
	return s.Probe.Probe, s.Probe.Last.Output
}

// checkOutput returns the output of the instance's TTL check as the
// Consul agent holds it. (The agent passes an output that comes without a
// change of status on to the catalog only every check_update_interval,
// 5 minutes by default.)
func (a *regApp) checkOutput() string {
	a.t.Helper()
	checks, err := a.cc.Agent().Checks()
	if err != nil {
		return "error: " + err.Error()
	}
	for _, c := range checks {
		if c.CheckID == register.CheckID(a.id) {
			return c.Output
		}
	}
	return "absent"
}

// catalogTags returns the instance's tags in Consul's catalog.
func (a *regApp) catalogTags() []string {
	tags, _ := a.catalogEntry()
	return tags
}

// catalogEntry returns the instance's tags in Consul's catalog and the
// index at which the entry was created: a deregistration followed by a
// registration would give a new one.
func (a *regApp) catalogEntry() ([]string, uint64) {
	a.t.Helper()
	svcs, _, err := a.cc.Catalog().Service("echo", "", nil)
	if err != nil {
		return []string{"error: " + err.Error()}, 0
	}
	for _, s := range svcs {
		if s.ServiceID == a.id {
			return s.ServiceTags, s.CreateIndex
		}
	}
	return nil, 0
}

// TestReloadE2E runs outrider with a config file against a real Consul:
// new tags reach the catalog in place, a file that does not parse changes
// nothing, a new probe takes effect at the next period, and the check's
// output follows the latest probe without a change of health.
func TestReloadE2E(t *testing.T) {
	srv := consultest.Start(t)
	file := filepath.Join(t.TempDir(), "outrider.yaml")
	writeFile(t, file, "service_tags: [v1, blue]\n")
	a := regStart(t, srv, "OUTRIDER_CONFIG_FILE="+file)
	a.waitHealth("passing", 10*time.Second)
	if got := a.catalogTags(); !slices.Equal(got, []string{"v1", "blue"}) {
		t.Fatalf("tags at start = %q, want the file's [v1 blue]", got)
	}

	t.Run("new tags in place", func(t *testing.T) {
		_, created := a.catalogEntry()
		w := watchHealth(t, a.cc, "echo", a.id)
		regEventually(t, 5*time.Second, "the health watch has its first answer", func() (bool, string) {
			w.mu.Lock()
			defer w.mu.Unlock()
			return w.answers > 0, strconv.Itoa(w.answers)
		})
		replaceFile(t, file, "service_tags: [v2, green]\n")
		took := regEventually(t, 5*time.Second, "catalog tags are [v2 green]", func() (bool, string) {
			got := a.catalogTags()
			return slices.Equal(got, []string{"v2", "green"}), strings.Join(got, ",")
		})
		t.Logf("new tags in the catalog %s after the file changed", took.Round(time.Millisecond))
		if took > time.Second {
			t.Errorf("new tags took %s to reach the catalog, want within 1s", took)
		}
		// Wait for the watch to see the new tags too, then stop it.
		regEventually(t, 5*time.Second, "the health watch sees the new tags", func() (bool, string) {
			w.mu.Lock()
			defer w.mu.Unlock()
			return len(w.tags) > 0 && slices.Equal(w.tags[len(w.tags)-1], []string{"v2", "green"}), strconv.Itoa(w.answers)
		})
		w.stop()
		if len(w.missing) > 0 {
			t.Errorf("blocking queries on the health of echo saw the instance missing from the passing set %d times (of %d answers): %q",
				len(w.missing), w.answers, w.missing)
		}
		t.Logf("%d blocking-query answers, the instance passing in each", w.answers)
		if _, now := a.catalogEntry(); now != created {
			t.Errorf("catalog entry created at index %d, before the reload at %d: the instance was registered anew, not in place", now, created)
		}
		// The catalog has the new tags as soon as Consul takes the
		// registration, before outrider has its answer and counts it.
		waitMetric(t, a.metrics, `outrider_consul_registrations_total{reason="config"}`, 1, 5*time.Second)
		for series, want := range map[string]float64{
			reloadOK: 1, reloadFailed: 0,
			`outrider_consul_registrations_total{reason="config"}`: 1,
			`outrider_consul_registrations_total{reason="start"}`:  1,
			`outrider_consul_registrations_total{reason="repair"}`: 0,
		} {
			if got := a.metric(series); got != want {
				t.Errorf("%s = %g, want %g", series, got, want)
			}
		}
	})

	t.Run("a file that does not parse changes nothing", func(t *testing.T) {
		before := a.metric("outrider_config_last_reload_success_timestamp_seconds")
		replaceFile(t, file, "service_tags: [v3, red\n")
		waitMetric(t, a.metrics, reloadFailed, 1, 5*time.Second)
		if got := a.catalogTags(); !slices.Equal(got, []string{"v2", "green"}) {
			t.Errorf("tags after a bad file = %q, want still [v2 green]", got)
		}
		if got := a.metric("outrider_config_last_reload_success_timestamp_seconds"); got != before {
			t.Errorf("last success timestamp = %v, want unchanged %v", got, before)
		}
		if a.outrider.Exited() {
			t.Fatalf("outrider exited after a bad config file")
		}
		if code, _ := a.get(a.metrics + "/healthz"); code != http.StatusOK {
			t.Errorf("/healthz = %d after a bad file, want 200", code)
		}
		want := file + ":2: not YAML or JSON: did not find expected ',' or ']'"
		regEventually(t, 5*time.Second, "the log names the file and line", func() (bool, string) {
			return strings.Contains(a.outrider.Output(), want), "not yet"
		})
	})

	t.Run("a new probe takes effect at the next period", func(t *testing.T) {
		// With the app's /healthz failing, a tcp probe passes and an http
		// probe of /healthz fails: Consul shows which one runs.
		a.setHealthy(false)
		a.waitHealth("critical", regFailures*regPeriod+regSlack+time.Second)
		replaceFile(t, file, "service_tags: [v2, green]\nprobe: tcp://"+a.echoAddr+"\n")
		took := a.waitHealth("passing", reloadDebounce+regPeriod+regSlack)
		t.Logf("tcp probe in effect, passing in consul, %s after the file changed", took.Round(time.Millisecond))

		start := time.Now()
		replaceFile(t, file, "service_tags: [v2, green]\nprobe: http://"+a.echoAddr+"/healthz\n")
		took = regEventually(t, reloadDebounce+regPeriod+regSlack, "the http probe runs", func() (bool, string) {
			spec, out := probeStatus(t, a.admin)
			return strings.HasPrefix(out, "GET http://"+a.echoAddr+"/healthz"), spec + ": " + out
		})
		t.Logf("first http probe %s after the file changed (debounce and confirming read %s, period %s)", took.Round(time.Millisecond), reloadDebounce, regPeriod)
		a.waitHealth("critical", reloadDebounce+regFailures*regPeriod+regSlack-time.Since(start)+time.Second)
	})

	t.Run("the check output follows the latest probe", func(t *testing.T) {
		a.setHealthy(true)
		a.waitHealth("passing", regPeriod+regSlack)
		want := "GET http://" + a.echoAddr + "/healthz: 200 OK"
		regEventually(t, regHeartbeat+regSlack, "check output is "+want, func() (bool, string) {
			got := a.checkOutput()
			return got == want, got
		})
		// Same health, new output: it reaches Consul with a heartbeat.
		replaceFile(t, file, "service_tags: [v2, green]\nprobe: http://"+a.echoAddr+"/\n")
		want = "GET http://" + a.echoAddr + "/: 200 OK"
		took := regEventually(t, reloadDebounce+regPeriod+regHeartbeat+regSlack, "check output is "+want, func() (bool, string) {
			got := a.checkOutput()
			return got == want, got
		})
		t.Logf("new output in consul %s after the file changed (heartbeat %s)", took.Round(time.Millisecond), regHeartbeat)
		if got := a.health(); got != "passing" {
			t.Errorf("health = %s, want passing throughout", got)
		}
	})

	t.Run("SIGHUP reloads", func(t *testing.T) {
		before := a.metric(reloadOK)
		a.outrider.Signal(syscall.SIGHUP)
		waitMetric(t, a.metrics, reloadOK, before+1, 5*time.Second)
		if a.outrider.Exited() {
			t.Fatalf("outrider exited on SIGHUP")
		}
	})
}

// TestReloadOncePerUpdate updates the config file the ways it is updated
// in practice and checks that each update is exactly one reload: once
// outrider runs with an update's content, the success counter has grown
// by one and no reload failed (a reload of a half-written file, or one
// too many, would show there first).
func TestReloadOncePerUpdate(t *testing.T) {
	tests := []struct {
		name string
		// setUp writes the first content and returns the path to give
		// outrider and the function that updates it.
		setUp func(t *testing.T, content string) (string, func(content string))
	}{
		{"kubernetes configmap ..data swap", func(t *testing.T, content string) (string, func(string)) {
			m := configmaptest.New(t, "outrider.yaml", content)
			return m.Path(), m.Update
		}},
		{"vim: backup by rename, write a new file, remove the backup", func(t *testing.T, content string) (string, func(string)) {
			path := filepath.Join(t.TempDir(), "outrider.yaml")
			writeFile(t, path, content)
			return path, func(content string) {
				dir := filepath.Dir(path)
				// vim first checks that it may create a file in the directory.
				writeFile(t, filepath.Join(dir, "4913"), "")
				if err := os.Remove(filepath.Join(dir, "4913")); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(path, path+"~"); err != nil {
					t.Fatal(err)
				}
				writeFile(t, path, content)
				if err := os.Remove(path + "~"); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"write a new file and rename it over", func(t *testing.T, content string) (string, func(string)) {
			path := filepath.Join(t.TempDir(), "outrider.yaml")
			writeFile(t, path, content)
			return path, func(content string) { replaceFile(t, path, content) }
		}},
		{"echo >: truncate, then write", func(t *testing.T, content string) (string, func(string)) {
			path := filepath.Join(t.TempDir(), "outrider.yaml")
			writeFile(t, path, content)
			return path, func(content string) {
				f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := f.WriteString(content); err != nil {
					t.Fatal(err)
				}
				if err := f.Close(); err != nil {
					t.Fatal(err)
				}
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path, update := tc.setUp(t, "service_tags: [v0]\n")
			o := startOutrider(t, 20*time.Second, "OUTRIDER_CONFIG_FILE="+path, "OUTRIDER_SERVICE_TAGS=from-env")
			if got := configValues(t, o.admin)["OUTRIDER_SERVICE_TAGS"]; got != "v0" {
				t.Fatalf("tags at start = %q, want the file's v0", got)
			}
			for i := 1; i <= 3; i++ {
				want := "v" + strconv.Itoa(i)
				update("service_tags: [" + want + "]\n")
				regEventually(t, 5*time.Second, "tags are "+want, func() (bool, string) {
					got := configValues(t, o.admin)["OUTRIDER_SERVICE_TAGS"]
					return got == want, got
				})
				if got := metricOf(t, o.metrics, reloadOK); got != float64(i) {
					t.Errorf("after update %d: %s = %g, want %d", i, reloadOK, got, i)
				}
				if got := metricOf(t, o.metrics, reloadFailed); got != 0 {
					t.Errorf("after update %d: %s = %g, want 0", i, reloadFailed, got)
				}
			}
		})
	}
}

// TestReloadBadFileAtStartUp: a config file that is wrong at start-up
// stops outrider with exit status 2 and the file, line and key.
func TestReloadBadFileAtStartUp(t *testing.T) {
	file := filepath.Join(t.TempDir(), "outrider.yaml")
	writeFile(t, file, "service_tags: [blue]\nprobe_period: 5\nproxy_listen: :8080\n")
	code, out := runOutrider(t, []string{"OUTRIDER_REGISTRY=none", "OUTRIDER_CONFIG_FILE=" + file})
	if code != exitUsage {
		t.Errorf("exit status = %d, want %d", code, exitUsage)
	}
	want := "outrider: configuration: " + file + ":3: proxy_listen: cannot change at run time (set OUTRIDER_PROXY_LISTEN in the environment and restart)\n"
	if !strings.Contains(out, want) {
		t.Errorf("output lacks %q:\n%s", want, out)
	}
	// A value error is found once the keys are right.
	writeFile(t, file, "service_tags: [blue]\nprobe_period: 5\n")
	code, out = runOutrider(t, []string{"OUTRIDER_REGISTRY=none", "OUTRIDER_CONFIG_FILE=" + file})
	want = "outrider: configuration: " + file + ":2: probe_period: \"5\" is not a duration (want e.g. 5s, 500ms)\n"
	if code != exitUsage || !strings.Contains(out, want) {
		t.Errorf("exit status %d, output:\n%s\nwant %d and %q", code, out, exitUsage, want)
	}
}
