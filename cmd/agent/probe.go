package main

import (
	"context"
	"os"

	"github.com/outrider-sidecar/outrider/config"
	"github.com/outrider-sidecar/outrider/probe"
)

// addProbe wires the prober and its threshold state machine; sets condApp and subscribeVerdicts.
func (a *agent) addProbe() error {
	c := a.cfg.Probe
	runner, err := probe.NewRunner(probeSpec(c), schedule(c), a.log.With("component", "probe"), a.reg)
	if err != nil {
		return err
	}
	a.subscribeVerdicts = runner.Watch
	a.prober = runner
	a.status["probe"] = func() any { return runner.Status() }

	// The probe runner: probes the app on its schedule until stopped.
	a.addContext("probe", runner.Run)

	// The app condition of /ready, kept in step with the verdict. /ready is
	// on the public listener: it gets the summary, never the app's body or
	// the command's output, which stay in /status on the admin listener.
	verdicts := runner.Subscribe()
	setApp := func(v probe.Verdict) { a.gate.Set(condApp, v.Healthy, v.Summary) }
	setApp(runner.Verdict())
	a.addContext("probe readiness", func(ctx context.Context) error {
		for {
			select {
			case <-ctx.Done():
				return nil
			case v := <-verdicts:
				setApp(v)
			}
		}
	})
	return nil
}

// probeSpec is the probe's spec with, for an exec probe, the command's
// environment: outrider's own without its secrets (OUTRIDER_PROBE_ENV_DENY,
// OUTRIDER_PROBE_ENV).
func probeSpec(c config.Probe) probe.Spec {
	spec := c.Spec
	if spec.Kind == probe.KindExec {
		spec.Env = probe.ExecEnv(os.Environ(), c.EnvDeny, c.EnvAdd)
	}
	return spec
}
