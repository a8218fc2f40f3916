package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"time"
)

// Prestop is what `outrider prestop` needs to reach the running agent.
type Prestop struct {
	// URL is the /prestop endpoint of the agent's admin listener.
	URL   string
	Token Secret
}

// LoadPrestop reads the variables `outrider prestop` needs from the same
// environment as the agent: the admin listener and its token. Other
// variables are not read, so that a hook never fails on a setting it does
// not use. The drain's timings are the agent's: a config file may have
// changed them since the environment was written, and the agent answers
// when its drain is done.
func LoadPrestop(getenv func(string) string) (Prestop, error) {
	r := reader{getenv: getenv}
	listen := r.listen("OUTRIDER_ADMIN_LISTEN", DefaultAdminListen, false)
	p := Prestop{
		URL:   "http://" + dialAddr(listen) + "/prestop",
		Token: Secret(r.str("OUTRIDER_ADMIN_TOKEN", "")),
	}
	return p, errors.Join(r.errs...)
}

// dialAddr turns a listen address into one a local client can dial: an
// unspecified host (":15000", "0.0.0.0:15000", "[::]:15000") is
// 127.0.0.1: the agent's listener on [::] takes IPv4 connections too,
// and 127.0.0.1 is there even where ::1 is not (a container or a host
// with IPv6 turned off).
func dialAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// Warnings lists settings that are valid one by one but cannot work
// together; outrider starts anyway and says so.
func (c Config) Warnings() []string {
	var w []string
	d := c.Drain
	if need := saturatingSum(DeregisterTimeout, d.Delay, d.Timeout, d.AppStopTimeout); d.GracePeriod > 0 && need > d.GracePeriod {
		w = append(w, fmt.Sprintf("up to %s to deregister + OUTRIDER_DRAIN_DELAY (%s) + OUTRIDER_DRAIN_TIMEOUT (%s) + OUTRIDER_APP_STOP_TIMEOUT (%s) = %s does not fit in OUTRIDER_GRACE_PERIOD (%s): "+
			"the platform kills the pod or unit before the drain and the app's stop can end; raise terminationGracePeriodSeconds (or TimeoutStopSec) or shorten the drain",
			DeregisterTimeout, d.Delay, d.Timeout, d.AppStopTimeout, need, d.GracePeriod))
	}
	// A metrics_port of the user's is the port they publish instead (a
	// scrape proxy's).
	if _, own := c.Service.Meta[MetricsPortMeta]; c.Registry.Enabled() && c.metricsLocalOnly() && !own {
		w = append(w, fmt.Sprintf("OUTRIDER_METRICS_LISTEN=%q takes connections from this host only, and the instance is registered at %s (OUTRIDER_SERVICE_ADDRESS, else POD_IP): "+
			"Prometheus' Consul discovery, which scrapes the registered address, could not reach it, so the registration carries no metrics_port; "+
			"to be scraped through Consul, listen on every address (:%d) or on the registered one",
			c.Listen.Metrics, c.Service.Address, c.Listen.MetricsPort()))
	}
	switch token := c.Listen.AdminToken.Reveal(); {
	case token == "":
	case token == ExampleAdminToken:
		w = append(w, "OUTRIDER_ADMIN_TOKEN is the example value of the shipped manifests, which anyone may read: whoever reaches the admin listener can drain this instance; set a random one (e.g. openssl rand -hex 32)")
	case len(token) < minAdminToken:
		w = append(w, fmt.Sprintf("OUTRIDER_ADMIN_TOKEN is %d characters long: a token under %d is easy to guess; set a random one (e.g. openssl rand -hex 32)", len(token), minAdminToken))
	}
	return w
}

// ExampleAdminToken is the token deploy/k8s/base ships, to be replaced.
const ExampleAdminToken = "replace-me-with-a-random-token"

// minAdminToken is the shortest admin token not warned of.
const minAdminToken = 16

// saturatingSum adds non-negative durations, stopping at the largest
// one: durations of a million hours each would otherwise wrap negative
// and fit any grace period.
func saturatingSum(ds ...time.Duration) time.Duration {
	var sum time.Duration
	for _, d := range ds {
		if d > math.MaxInt64-sum {
			return math.MaxInt64
		}
		sum += d
	}
	return sum
}
