package main

import (
	"crypto/subtle"
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"github.com/outrider-sidecar/outrider/internal/version"
)

// newServer returns an HTTP server with every timeout set, so that a slow
// or hostile client cannot hold outrider's own endpoints.
func newServer(h http.Handler, writeTimeout time.Duration, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// requireToken lets a request through only with "Authorization: Bearer
// <token>". An empty token allows everything: config refuses that unless
// the listener is loopback.
func requireToken(token string, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="outrider"`)
			http.Error(w, "missing or wrong bearer token", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// serveStatus answers GET /status with the agent's state as JSON.
func (a *agent) serveStatus(w http.ResponseWriter, _ *http.Request) {
	ready, why := a.gate.Ready()
	body := map[string]any{
		"version":        version.Version,
		"service_id":     a.cfg.Service.ID,
		"service_name":   a.cfg.Service.Name,
		"registry":       a.cfg.Registry.Kind,
		"ready":          ready,
		"not_ready_why":  why,
		"conditions":     a.gate.Conditions(),
		"uptime_seconds": time.Since(a.started).Seconds(),
	}
	for name, section := range a.status {
		body[name] = section()
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(body)
}
