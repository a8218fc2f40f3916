package main

import (
	"net/http"

	"github.com/outrider-sidecar/outrider/peers"
)

// addPeers wires /v1/peers/{service} on the admin listener: the passing
// instances of a service, from a cache that Consul blocking queries keep
// fresh.
func (a *agent) addPeers() error {
	if !a.cfg.Registry.Enabled() {
		a.admin.HandleFunc("GET /v1/peers/{service}", func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "peer discovery needs Consul: OUTRIDER_REGISTRY=none", http.StatusNotFound)
		})
		return nil
	}
	client, _, err := a.consulClient()
	if err != nil {
		return err
	}
	var health peers.Health = client.Health()
	if a.consulToken != nil {
		health = tokenHealth{client.Health(), a.consulToken}
	}
	cache, err := peers.New(health, a.reg, peers.Options{Log: a.log.With("component", "peers")})
	if err != nil {
		return err
	}
	a.admin.Handle("GET /v1/peers/{service}", cache)
	a.status["peers"] = func() any { return cache.Status() }
	// The peer cache: one watch goroutine per service asked for, all
	// stopped and waited for when the group stops.
	a.addContext("peers", cache.Run)
	return nil
}
