package shutdown

import "github.com/prometheus/client_golang/prometheus"

// metrics is what the drain shows on /metrics.
type metrics struct {
	draining prometheus.Gauge
	duration prometheus.Gauge
	cut      prometheus.Counter
	finished prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (metrics, error) {
	m := metrics{
		draining: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outrider_draining",
			Help: "1 once the drain sequence has started: the instance is leaving.",
		}),
		duration: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outrider_drain_duration_seconds",
			Help: "How long the drain sequence took, from its start to the last request finished or cut; 0 until it ends.",
		}),
		cut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outrider_drain_requests_cut_total",
			Help: "Requests and upgraded tunnels still open at OUTRIDER_DRAIN_TIMEOUT, closed by the drain.",
		}),
		finished: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outrider_drain_requests_finished_total",
			Help: "Requests answered while the proxy was draining.",
		}),
	}
	for _, c := range []prometheus.Collector{m.draining, m.duration, m.cut, m.finished} {
		if err := reg.Register(c); err != nil {
			return m, err
		}
	}
	return m, nil
}
