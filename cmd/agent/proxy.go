package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"

	"github.com/outrider-sidecar/outrider/proxy"
)

// addProxy wires the inbound proxy and /v1/qps.
func (a *agent) addProxy() error {
	if a.cfg.Listen.Proxy == "" {
		// No proxy, no measured rate: a clear 404 rather than zeros an
		// autoscaler would take for an idle app.
		a.metrics.HandleFunc("GET /v1/qps", func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "the proxy is off (OUTRIDER_PROXY_LISTEN=off): outrider measures no request rate", http.StatusNotFound)
		})
		a.status["proxy"] = func() any { return map[string]any{"enabled": false} }
		return nil
	}
	ln, err := net.Listen("tcp", a.cfg.Listen.Proxy)
	if err != nil {
		return fmt.Errorf("proxy listener (OUTRIDER_PROXY_LISTEN=%s): %w", a.cfg.Listen.Proxy, err)
	}
	p, err := proxy.New(proxy.Config{
		Upstream:     a.cfg.App.Addr,
		QPSWindow:    a.cfg.Listen.QPSWindow,
		DrainTimeout: a.cfg.Drain.Timeout,
		Log:          a.log.With("component", "proxy"),
	}, a.reg)
	if err != nil {
		ln.Close()
		return err
	}
	a.proxy = p
	a.metrics.HandleFunc("GET /v1/qps", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(p.QPS())
	})
	a.status["proxy"] = func() any { return p.Status() }
	a.log.Info("listening", "server", "proxy", "addr", ln.Addr().String(), "app", a.cfg.App.Addr)
	// The proxy: forwards client connections to the app until the drain
	// sequence drains it, or until interrupted, when it drains within
	// OUTRIDER_DRAIN_TIMEOUT. A drained proxy waits for the stop: outrider
	// keeps answering /ready and /metrics until it is told to exit.
	a.addContext("proxy", func(ctx context.Context) error {
		if err := p.Serve(ctx, ln); err != nil {
			return err
		}
		<-ctx.Done()
		return nil
	})
	return nil
}
