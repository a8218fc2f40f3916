//go:build tools

// Package prometheus pins the Prometheus server and promtool that outrider's
// tests need, so that `make prometheus` builds both at a known version.
// Debian's prometheus package is built without consul_sd_configs and
// kubernetes_sd_configs; this build has every service discovery, so the
// Consul discovery tests and the Kubernetes discovery tests share one
// bin/prometheus.
package prometheus

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
