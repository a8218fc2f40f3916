package probe

import "github.com/prometheus/client_golang/prometheus"

// metrics are a Runner's Prometheus metrics.
type metrics struct {
	success  prometheus.Gauge
	duration prometheus.Histogram
	total    *prometheus.CounterVec
	healthy  prometheus.Gauge
}

// newMetrics registers a Runner's metrics with reg; nil registers none.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		success: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outrider_probe_success",
			Help: "Whether the last probe of the app succeeded (1) or not (0).",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "outrider_probe_duration_seconds",
			Help:    "How long each probe of the app took.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outrider_probe_total",
			Help: "Probes of the app by result: success, failure (the app said no), timeout, or error (the probe could not run).",
		}, []string{"result"}),
		healthy: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outrider_app_healthy",
			Help: "Whether the app is healthy (1) or not (0) by the probe thresholds: the verdict /ready and the Consul check follow.",
		}),
	}
	for _, o := range outcomes {
		m.total.WithLabelValues(string(o))
	}
	if reg == nil {
		return m, nil
	}
	cs := []prometheus.Collector{m.success, m.duration, m.total, m.healthy}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return nil, err
		}
	}
	return m, nil
}

// observe records one probe's result.
func (m *metrics) observe(r Result) {
	m.success.Set(boolValue(r.Outcome == Success))
	m.duration.Observe(r.Duration.Seconds())
	m.total.WithLabelValues(string(r.Outcome)).Inc()
}

func (m *metrics) setHealthy(ok bool) { m.healthy.Set(boolValue(ok)) }

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
