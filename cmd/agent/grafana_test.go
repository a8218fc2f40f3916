package main

import (
	"strings"
	"testing"

	"github.com/outrider-sidecar/outrider/internal/grafanatest"
)

// grafanaDashboard is the shipped dashboard, relative to this package.
const grafanaDashboard = "../../deploy/grafana/outrider.json"

// TestGrafanaDashboardIsWellFormed checks the shipped dashboard as Grafana
// reads it: schema, the datasource, namespace, service and instance
// variables, and every panel with a unique id, a place on the grid and
// queries of the chosen datasource.
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

// A service's name is unique only within its namespace (the rules group by
// both): a legend that names the service names the namespace too, or shop
// in prod and shop in staging are two lines called shop. On VMs the
// namespace is empty and the legend is the service's name.
func TestGrafanaLegendsNameTheNamespace(t *testing.T) {
	d, err := grafanatest.Read(grafanaDashboard)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range d.Panels() {
		for _, q := range p.Targets {
			if strings.Contains(q.LegendFormat, "{{service}}") && !strings.Contains(q.LegendFormat, "{{namespace}}") {
				t.Errorf("panel %q query %s: legend %q names the service but not its namespace", p.Title, q.RefID, q.LegendFormat)
			}
		}
	}
}

// A service's name is unique only within its namespace: every query, and
// every variable after the namespace's, keeps to the namespaces chosen, so
// that picking shop in prod does not draw staging's shop too.
func TestGrafanaQueriesFollowTheNamespace(t *testing.T) {
	d, err := grafanatest.Read(grafanaDashboard)
	if err != nil {
		t.Fatal(err)
	}
	const filter = `namespace=~"$namespace"`
	for _, name := range []string{"service", "instance"} {
		if v, _ := d.Variable(name); !strings.Contains(v.QueryText(), filter) {
			t.Errorf("variable %s: query %q, want it to select %s", name, v.QueryText(), filter)
		}
	}
	for _, p := range d.Panels() {
		for _, q := range p.Targets {
			if !strings.Contains(q.Expr, filter) {
				t.Errorf("panel %q query %s: %q, want it to select %s", p.Title, q.RefID, q.Expr, filter)
			}
		}
	}
}
