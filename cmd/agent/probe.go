package main

import (
	"context"

	"github.com/outrider-sidecar/outrider/probe"
)

// addProbe wires the prober and its threshold state machine; sets condApp and subscribeVerdicts.
func (a *agent) addProbe() error {
	c := a.cfg.Probe
	runner, err := probe.NewRunner(c.Spec, schedule(c), a.log.With("component", "probe"), a.reg)
	if err != nil {
		return err
	}
	a.subscribeVerdicts = runner.Watch
	a.prober = runner
	a.status["probe"] = func() any { return runner.Status() }

	// The probe runner: probes the app on its schedule until stopped.
	a.addContext("probe", runner.Run)

	// The app condition of /ready, kept in step with the verdict.
	verdicts := runner.Subscribe()
	setApp := func(v probe.Verdict) { a.gate.Set(condApp, v.Healthy, v.Output) }
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
