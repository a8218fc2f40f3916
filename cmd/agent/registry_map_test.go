package main

import (
	"maps"
	"testing"
	"time"

	"github.com/outrider-sidecar/outrider/config"
	"github.com/outrider-sidecar/outrider/internal/version"
)

func TestRegistryMapsTheConfigToTheRegistration(t *testing.T) {
	base := config.Config{
		Service: config.Service{
			Name: "web", ID: "web-1", Tags: []string{"v1"}, Meta: map[string]string{"team": "a"},
			Address: "10.0.0.7", Port: 15001,
		},
		Registry: config.Registry{Kind: config.RegistryConsul, CheckTTL: 15 * time.Second, DeregisterCriticalAfter: time.Minute},
		Listen:   config.Listen{Metrics: ":15090"},
	}
	for _, tc := range []struct {
		name     string
		podName  string
		podNS    string
		metrics  string
		address  string // the registered one; 10.0.0.7 when ""
		wantMeta map[string]string
	}{
		{name: "outside kubernetes", metrics: ":15090", wantMeta: map[string]string{
			"team": "a", "outrider_version": version.Version, "metrics_port": "15090",
		}},
		{name: "in a pod", podName: "web-7d9f-x2k4p", podNS: "shop", metrics: ":15090", wantMeta: map[string]string{
			"team": "a", "outrider_version": version.Version, "metrics_port": "15090",
			"pod_name": "web-7d9f-x2k4p", "pod_namespace": "shop",
		}},
		{name: "metrics on another port", metrics: "10.0.0.7:9100", wantMeta: map[string]string{
			"team": "a", "outrider_version": version.Version, "metrics_port": "9100",
		}},
		// Neither can be scraped through Consul: no metrics_port rather
		// than a port that is not outrider's.
		{name: "metrics listener off", metrics: "", wantMeta: map[string]string{
			"team": "a", "outrider_version": version.Version,
		}},
		{name: "metrics port chosen at start", metrics: "127.0.0.1:0", wantMeta: map[string]string{
			"team": "a", "outrider_version": version.Version,
		}},
		// Prometheus would scrape 10.0.0.7, where a loopback listener
		// takes no connection: a target that is always down.
		{name: "metrics on loopback", metrics: "127.0.0.1:15090", wantMeta: map[string]string{
			"team": "a", "outrider_version": version.Version,
		}},
		{name: "metrics on localhost", metrics: "localhost:15090", wantMeta: map[string]string{
			"team": "a", "outrider_version": version.Version,
		}},
		{name: "metrics and the instance on loopback", metrics: "127.0.0.1:15090", address: "127.0.0.1", wantMeta: map[string]string{
			"team": "a", "outrider_version": version.Version, "metrics_port": "15090",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			c.Service.PodName, c.Service.PodNamespace = tc.podName, tc.podNS
			c.Listen.Metrics = tc.metrics
			if tc.address != "" {
				c.Service.Address = tc.address
			}
			got := registration(c)
			if got.ID != "web-1" || got.Name != "web" || got.Address != c.Service.Address || got.Port != 15001 ||
				got.TTL != 15*time.Second || got.DeregisterCriticalAfter != time.Minute || len(got.Tags) != 1 {
				t.Errorf("registration = %+v, want web-1 (web) at %s:15001, TTL 15s, deregister after 1m, tags [v1]", got, c.Service.Address)
			}
			if !maps.Equal(got.Meta, tc.wantMeta) {
				t.Errorf("meta = %v, want %v", got.Meta, tc.wantMeta)
			}
			if len(c.Service.Meta) != 1 {
				t.Errorf("the configuration's meta was changed to %v", c.Service.Meta)
			}
		})
	}
}
