package main

import (
	"testing"

	"github.com/outrider-sidecar/outrider/internal/grafanatest"
)

// grafanaDashboard is the shipped dashboard, relative to this package.
const grafanaDashboard = "../../deploy/grafana/outrider.json"

// TestGrafanaDashboardIsWellFormed checks the shipped dashboard as Grafana
// reads it: schema, the datasource, service and instance variables, and
// every panel with a unique id, a place on the grid and queries of the
// chosen datasource.
func TestGrafanaDashboardIsWellFormed(t *testing.T) {
	d, err := grafanatest.Read(grafanaDashboard)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range grafanatest.Problems(d) {
		t.Errorf("%s: %s", grafanaDashboard, p)
	}
	queries := 0
	for _, p := range d.Panels() {
		queries += len(p.Targets)
	}
	t.Logf("%s: schemaVersion %d, %d panels, %d queries", grafanaDashboard, d.SchemaVersion, len(d.Panels()), queries)
}
