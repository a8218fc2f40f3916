package probe

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outrider-sidecar/outrider/internal/metricsdoc"
)

// TestMetricsDocumented: the metrics table of docs/probes.md has a row for
// each metric of the package, with its type and its help string as the
// code has them (backquotes aside), and no other.
func TestMetricsDocumented(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := newMetrics(reg); err != nil {
		t.Fatal(err)
	}
	metricsdoc.Check(t, "../docs/probes.md", reg)
}
