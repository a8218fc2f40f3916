// Package exporter builds outrider's Prometheus registry and the collectors
// that read the app's process figures.
package exporter

import (
	"net/http"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/outrider-sidecar/outrider/internal/version"
)

// NewRegistry returns a registry of outrider's own, holding the Go runtime
// and process collectors for outrider itself and outrider_build_info.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "outrider_build_info",
			Help: "A metric with a constant '1' value labelled by the version, revision and Go version outrider was built with.",
			ConstLabels: prometheus.Labels{
				"version":   version.Version,
				"revision":  version.Revision(),
				"goversion": runtime.Version(),
			},
		}, func() float64 { return 1 }),
	)
	return reg
}

// Handler serves the registry in the Prometheus exposition formats.
func Handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
	})
}
