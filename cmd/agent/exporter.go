package main

import (
	"fmt"

	"github.com/outrider-sidecar/outrider/exporter"
	"github.com/outrider-sidecar/outrider/probe"
)

// addExporter wires the app-process collector into outrider's registry and
// its state into the app_process section of /status.
func (a *agent) addExporter() error {
	var child func() int
	if a.wrapMode {
		// The child starts at the end of build, before anything scrapes.
		child = func() int {
			if a.child == nil || a.child.Exited() {
				return 0
			}
			return a.child.Pid()
		}
	}
	app, err := exporter.NewAppCollector(exporter.AppOptions{
		ProcRoot:    a.cfg.App.ProcRoot,
		PIDFile:     a.cfg.App.PIDFile,
		Process:     a.cfg.App.Process,
		Child:       child,
		ProbeGroups: probe.ExecGroups,
		Addr:        a.cfg.App.Addr,
		Alone:       !a.cfg.App.Children,
		Log:         a.log.With("component", "exporter"),
	})
	if err != nil {
		return fmt.Errorf("app-process metrics (OUTRIDER_PROC_ROOT=%s, OUTRIDER_APP_ADDR=%s): %w", a.cfg.App.ProcRoot, a.cfg.App.Addr, err)
	}
	if err := a.reg.Register(app); err != nil {
		return fmt.Errorf("register app-process metrics: %w", err)
	}
	a.status["app_process"] = func() any { return app.Status() }
	return nil
}
