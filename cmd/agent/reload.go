package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outrider-sidecar/outrider/config"
	"github.com/outrider-sidecar/outrider/config/watch"
	"github.com/outrider-sidecar/outrider/probe"
)

// reloader re-reads the configuration (environment and config file) and
// applies what may change at run time: tags and meta (re-registered in
// place), the probe, the check TTL, the drain timings and the log level.
// A configuration that fails to load changes nothing.
type reloader struct {
	a      *agent
	getenv func(string) string
	log    *slog.Logger

	total       *prometheus.CounterVec
	lastSuccess prometheus.Gauge

	// loading makes reloads take turns. mu guards what follows, which
	// /status reads: a reload does not hold it while it reads the file.
	loading   sync.Mutex
	mu        sync.Mutex
	cur       config.Config
	lastErr   string
	lastErrAt time.Time
	lastOK    time.Time
}

// addReload wires the config-file watcher and SIGHUP to a reload, and the
// outrider_config_* metrics.
func (a *agent) addReload() error {
	r, err := newReloader(a)
	if err != nil {
		return err
	}
	a.status["config"] = func() any { return r.status() }

	if path := a.cfg.ConfigFile; path != "" {
		w := watch.New(path, r.fileChanged, watch.Options{Log: r.log, From: a.configFrom})
		// The config file watcher: reloads when the file's content changes.
		a.addContext("config file watch", w.Run)
	}
	if !a.wrapMode {
		a.addReloadSignal(r)
	}
	return nil
}

// newReloader returns the reloader of a, its metrics registered.
func newReloader(a *agent) (*reloader, error) {
	r := &reloader{
		a: a, getenv: a.lookupEnv(), cur: a.cfg, lastOK: a.started,
		log: a.log.With("component", "config"),
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outrider_config_reload_total",
			Help: "Configuration reloads (config file change or SIGHUP), by result: success or failure (the running configuration was kept).",
		}, []string{"result"}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outrider_config_last_reload_success_timestamp_seconds",
			Help: "When the configuration was last loaded successfully (start-up or reload), in seconds since the epoch.",
		}),
	}
	r.total.WithLabelValues("success")
	r.total.WithLabelValues("failure")
	r.lastSuccess.Set(float64(a.started.UnixNano()) / 1e9)
	for _, c := range []prometheus.Collector{r.total, r.lastSuccess} {
		if err := a.reg.Register(c); err != nil {
			return nil, fmt.Errorf("register config metrics: %w", err)
		}
	}
	return r, nil
}

// addReloadSignal adds the actor that turns SIGHUP into a reload. In wrap
// mode SIGHUP belongs to the child, so it is not installed there. The
// subscription is main's (holdHangups), which outlives the actor: SIGHUP's
// default is to exit, and one may come while the other actors stop.
func (a *agent) addReloadSignal(r *reloader) {
	hup := hangups
	if hup == nil {
		// Not started by main: subscribe now, not when the actor starts.
		hup = make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.group.Add(func() error {
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-hup:
				r.reload("sighup", nil)
			}
		}
	}, func(error) { cancel() })
}

// fileChanged reloads the content data that the config file's watch
// confirmed, nil when the file could not be read.
func (r *reloader) fileChanged(data []byte) { r.reload("file", data) }

// reload loads the configuration again and applies it, or keeps the
// running one and says why. data is the config file's content to load;
// nil reads the file.
func (r *reloader) reload(trigger string, data []byte) {
	r.loading.Lock()
	defer r.loading.Unlock()
	// Only a reload changes cur, and reloads take turns: it is read here
	// without mu.
	cur := r.cur
	file := cur.ConfigFile
	if file == "" {
		r.log.Info("nothing to reload: OUTRIDER_CONFIG_FILE is not set", "trigger", trigger)
		return
	}
	// The service ID and address are read once at start-up: a reload
	// looks neither up again, so an interface without an address at
	// this moment cannot fail a reload of the tags.
	next, err := config.Reload(r.getenv, r.a.hostname, func() (string, error) { return cur.Service.Address, nil }, data)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		next = reloadable(cur, next)
		err = r.apply(next)
	}
	now := time.Now()
	if err != nil {
		r.total.WithLabelValues("failure").Inc()
		r.lastErr, r.lastErrAt = err.Error(), now
		var errs []string
		for _, e := range unjoin(err) {
			errs = append(errs, e.Error())
		}
		r.log.Error("config reload failed; keeping the running configuration",
			"trigger", trigger, "file", file, "errors", errs)
		return
	}
	changed := changedVars(r.cur, next)
	r.cur = next
	r.lastOK = now
	r.total.WithLabelValues("success").Inc()
	r.lastSuccess.Set(float64(now.UnixNano()) / 1e9)
	r.log.Info("config reloaded", "trigger", trigger, "file", file, "changed", changed)
	logWarnings(r.log, next)
}

// reloadable is cur with the settings that may change at run time taken
// from next; the rest cannot change without a restart.
func reloadable(cur, next config.Config) config.Config {
	c := cur
	c.Service.Tags, c.Service.Meta = next.Service.Tags, next.Service.Meta
	delay := c.Probe.InitialDelay
	c.Probe = next.Probe
	c.Probe.InitialDelay = delay
	c.Registry.CheckTTL = next.Registry.CheckTTL
	c.Drain.Delay, c.Drain.Timeout = next.Drain.Delay, next.Drain.Timeout
	c.Log.Level = next.Log.Level
	return c
}

// apply hands next to every component whose part of it changed. The
// probe goes first: it is the only step that can refuse.
func (r *reloader) apply(next config.Config) error {
	a, cur := r.a, r.cur
	if a.prober != nil && probeChanged(cur.Probe, next.Probe) {
		if err := a.prober.Reconfigure(probeSpec(next.Probe), schedule(next.Probe)); err != nil {
			return err
		}
	}
	if a.registrar != nil {
		if err := a.registrar.Update(registration(next)); err != nil {
			return err
		}
	}
	if next.Drain.Delay != cur.Drain.Delay || next.Drain.Timeout != cur.Drain.Timeout {
		if a.onDrainTimings != nil {
			a.onDrainTimings(next.Drain.Delay, next.Drain.Timeout)
		}
	}
	if a.logLevel != nil && next.Log.Level != cur.Log.Level {
		var level slog.Level
		if err := level.UnmarshalText([]byte(next.Log.Level)); err == nil {
			a.logLevel.Set(level)
		}
	}
	return nil
}

// probeChanged reports whether the prober must be reconfigured: a URL
// whose password alone changed is a change, though it logs the same.
func probeChanged(a, b config.Probe) bool {
	return !a.Spec.Equal(b.Spec) || schedule(a) != schedule(b)
}

// schedule is the probe.Schedule of the configuration's probe settings.
func schedule(c config.Probe) probe.Schedule {
	return probe.Schedule{
		InitialDelay:     c.InitialDelay,
		Period:           c.Period,
		Timeout:          c.Timeout,
		FailureThreshold: c.FailureThreshold,
		SuccessThreshold: c.SuccessThreshold,
	}
}

// changedVars names the variables whose effective value differs.
func changedVars(a, b config.Config) []string {
	before := a.Effective()
	names := []string{}
	for i, s := range b.Effective() {
		if s != before[i] {
			names = append(names, s.Var)
		}
	}
	// Effective masks secrets: a password or a header value that changed
	// alone shows as the same value, but is a change all the same.
	if !a.Probe.Spec.SameURL(b.Probe.Spec) {
		names = append(names, "OUTRIDER_PROBE")
	}
	if !a.Probe.Spec.SameHeader(b.Probe.Spec) {
		names = append(names, "OUTRIDER_PROBE_HEADERS")
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// reloadStatus is the config section of /status.
type reloadStatus struct {
	File string `json:"file,omitempty"`
	// Values are the reloadable settings in force, secrets masked.
	Values            map[string]string `json:"values"`
	LastReloadSuccess time.Time         `json:"last_reload_success"`
	LastError         string            `json:"last_error,omitempty"`
	LastErrorAt       time.Time         `json:"last_error_at,omitzero"`
}

func (r *reloader) status() reloadStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	values := map[string]string{}
	reloadableVars := config.Reloadable()
	for _, s := range r.cur.Effective() {
		if slices.Contains(reloadableVars, s.Var) {
			values[s.Var] = s.Value
		}
	}
	return reloadStatus{File: r.cur.ConfigFile, Values: values, LastReloadSuccess: r.lastOK, LastError: r.lastErr, LastErrorAt: r.lastErrAt}
}
