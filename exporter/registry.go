// Package exporter builds outrider's Prometheus registry and the collectors
// that read the app's process figures.
package exporter

import (
	"bytes"
	"maps"
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

// Handler serves the registry in the Prometheus exposition formats. At
// most 4 answers are made at a time, and each is made in memory before it
// is sent: a client that does not read its answers (or reads them slowly)
// would otherwise hold one of the 4 until the server's write timeout, and
// 4 such clients would have every scrape in that time answered 503.
func Handler(g prometheus.Gatherer) http.Handler {
	h := promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := answer{header: http.Header{}, code: http.StatusOK}
		h.ServeHTTP(&a, r)
		maps.Copy(w.Header(), a.header)
		w.WriteHeader(a.code)
		_, _ = w.Write(a.body.Bytes())
	})
}

// answer is an http.ResponseWriter that keeps what is written to it.
type answer struct {
	header http.Header
	code   int
	wrote  bool
	body   bytes.Buffer
}

func (a *answer) Header() http.Header { return a.header }

func (a *answer) WriteHeader(code int) {
	if !a.wrote {
		a.code, a.wrote = code, true
	}
}

func (a *answer) Write(p []byte) (int, error) {
	a.wrote = true
	return a.body.Write(p)
}
