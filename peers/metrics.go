package peers

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	watched  prometheus.Gauge
	queries  *prometheus.CounterVec
	resets   prometheus.Counter
	requests *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		watched: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outrider_peers_watched_services",
			Help: "Services whose passing instances outrider keeps in its peer cache.",
		}),
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outrider_peers_queries_total",
			Help: "Consul health queries made by the peer cache, by result: changed (the index moved), unchanged, or error.",
		}, []string{"result"}),
		resets: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outrider_peers_index_resets_total",
			Help: "Times a Consul index went backwards and the peer cache read the service afresh.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outrider_peers_requests_total",
			Help: "Requests to /v1/peers/{service}, by HTTP status code.",
		}, []string{"code"}),
	}
	for _, r := range []string{"changed", "unchanged", "error"} {
		m.queries.WithLabelValues(r)
	}
	for _, code := range []int{http.StatusOK, http.StatusBadRequest, http.StatusTooManyRequests,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout} {
		m.requests.WithLabelValues(strconv.Itoa(code))
	}
	for _, c := range []prometheus.Collector{m.watched, m.queries, m.resets, m.requests} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register peer cache metrics: %w", err)
		}
	}
	return m, nil
}
