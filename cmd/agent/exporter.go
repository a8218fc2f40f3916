package main

import (
	"fmt"

	"github.com/outrider-sidecar/outrider/exporter"
)

// addExporter wires the app-process collector into outrider's registry and
// its state into the app_process section of /status.
func (a *agent) addExporter() error {
	app, err := exporter.NewAppCollector(exporter.AppOptions{
		ProcRoot: a.cfg.App.ProcRoot,
		PIDFile:  a.cfg.App.PIDFile,
		Process:  a.cfg.App.Process,
		// Child stays nil until wrap mode starts the app itself.
		Addr: a.cfg.App.Addr,
		Log:  a.log.With("component", "exporter"),
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
