package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/metrics"

	"github.com/outrider-sidecar/outrider/config"
	"github.com/outrider-sidecar/outrider/internal/version"
	"github.com/outrider-sidecar/outrider/wrap"
)

// runWrapped implements `outrider run -- CMD ARGS…`: outrider starts the
// app as its child and does everything it does as a sidecar, and on
// SIGTERM drains before it stops the app; it exits with the app's status.
func runWrapped(args []string, getenv func(string) string, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		fmt.Fprintf(stderr, "outrider run: no command: want outrider run -- CMD ARGS…\n")
		return exitUsage
	}
	a, ok := agentFromEnv(getenv, stderr)
	if !ok {
		return exitUsage
	}
	a.wrapMode, a.childArgv = true, args
	if err := a.build(); err != nil {
		a.log.Error("outrider cannot start", "err", err)
		if se := (*childStartError)(nil); errors.As(err, &se) {
			return wrap.StartFailureStatus(se.err)
		}
		return exitFailed
	}
	a.logStart("run", "app_pid", a.child.Pid())
	return a.run()
}

// logStart logs the start of the agent, and every warning of its
// configuration.
func (a *agent) logStart(mode string, attrs ...any) {
	cfg := a.cfg
	a.log.Info("outrider started", append([]any{"mode", mode, "version", version.Version, "service_id", cfg.Service.ID,
		"registry", cfg.Registry.Kind, "app", cfg.App.Addr, "probe", cfg.Probe.Spec.String(),
		"gomaxprocs", runtime.GOMAXPROCS(0), "gogc", gogc()}, attrs...)...)
	logWarnings(a.log, cfg)
	if w := hostIPWarning(cfg.Registry.Enabled()); w != "" {
		a.log.Warn("configuration: " + w)
	}
	for _, w := range config.UnknownVars(os.Environ()) {
		a.log.Warn("configuration: " + w)
	}
}

// logWarnings logs every warning of cfg, at start-up and after each
// reload: a reload may change the drain timings the warnings check.
func logWarnings(log *slog.Logger, cfg config.Config) {
	for _, w := range cfg.Warnings() {
		log.Warn("configuration: " + w)
	}
}

// gogc returns the collector's target heap growth in percent, as GOGC or
// sidecarRuntime set it; -1 when collection is off (GOGC=off).
func gogc() int64 {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return int64(s[0].Value.Uint64())
}
