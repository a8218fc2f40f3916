package register

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	registered    prometheus.Gauge
	heartbeats    *prometheus.CounterVec
	registrations *prometheus.CounterVec
	errors        *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		registered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outrider_consul_registered",
			Help: "Whether outrider knows the app to be registered in Consul (1) or not (0).",
		}),
		heartbeats: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outrider_consul_heartbeats_total",
			Help: "TTL check updates sent to Consul, by result: ok, missing (Consul had lost the check, which is then registered again) or error.",
		}, []string{"result"}),
		registrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outrider_consul_registrations_total",
			Help: "Service registrations Consul accepted, by reason: start, repair (Consul had lost the instance) or config (new settings, or a new token in CONSUL_HTTP_TOKEN_FILE).",
		}, []string{"reason"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outrider_consul_errors_total",
			Help: "Failed requests to Consul, by operation: register, heartbeat, maintenance or deregister.",
		}, []string{"op"}),
	}
	// Every series exists from the start, so that rate() sees the first error.
	for _, v := range []string{"ok", "missing", "error"} {
		m.heartbeats.WithLabelValues(v)
	}
	for _, v := range []string{reasonStart, reasonRepair, reasonConfig} {
		m.registrations.WithLabelValues(v)
	}
	for _, v := range []string{"register", "heartbeat", "maintenance", "deregister"} {
		m.errors.WithLabelValues(v)
	}
	for _, c := range []prometheus.Collector{m.registered, m.heartbeats, m.registrations, m.errors} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register consul metrics: %w", err)
		}
	}
	return m, nil
}
