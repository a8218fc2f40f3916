package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/outrider-sidecar/outrider/config"
	"github.com/outrider-sidecar/outrider/internal/version"
	"github.com/outrider-sidecar/outrider/probe"
	"github.com/outrider-sidecar/outrider/register"
)

// addRegistry wires Consul registration, heartbeat, maintenance; sets condRegistered.
func (a *agent) addRegistry() error {
	// Maintenance takes the app out of /ready even without a registry.
	a.admin.HandleFunc("PUT /maintenance", a.serveMaintenance)
	if !a.cfg.Registry.Enabled() {
		return nil
	}
	client, addr, err := a.consulClient()
	if err != nil {
		return err
	}
	var agent register.Agent = client.Agent()
	if a.consulToken != nil {
		agent = tokenAgent{client.Agent(), a.consulToken}
	}
	r, err := register.New(agent, registration(a.cfg), register.Options{
		ConsulAddr: addr,
		Log:        a.log.With("component", "register"),
		Registerer: a.reg,
		OnRegistered: func(ok bool, reason string) {
			a.gate.Set(condRegistered, ok, reason)
		},
	})
	if err != nil {
		return err
	}
	a.registrar = r
	if a.consulToken != nil {
		a.consulToken.changed = r.Reregister
	}
	a.status["consul"] = func() any { return r.Status() }

	var verdicts <-chan probe.Verdict
	if a.subscribeVerdicts != nil {
		verdicts = a.subscribeVerdicts()
	}
	// The registrar: registers the app, heartbeats its check with every
	// verdict, repairs it, and deregisters when stopped.
	a.addContext("registry", func(ctx context.Context) error { return r.Run(ctx, verdicts) })
	return nil
}

// registration maps the configuration to what register sends to Consul:
// the app's instance, with outrider's version, its metrics port (for
// Prometheus' consul_sd_configs, when Prometheus can reach it there) and
// the pod in its meta.
func registration(c config.Config) register.Service {
	s := c.Service
	meta := make(map[string]string, len(s.Meta)+4)
	maps.Copy(meta, s.Meta)
	meta["outrider_version"] = version.Version
	if port := c.PublishedMetricsPort(); port != 0 {
		meta[config.MetricsPortMeta] = strconv.Itoa(port)
	}
	if s.PodName != "" {
		meta["pod_name"] = s.PodName
	}
	if s.PodNamespace != "" {
		meta["pod_namespace"] = s.PodNamespace
	}
	return register.Service{
		ID:                      s.ID,
		Name:                    s.Name,
		Tags:                    s.Tags,
		Meta:                    meta,
		Address:                 s.Address,
		Port:                    s.Port,
		TTL:                     c.Registry.CheckTTL,
		DeregisterCriticalAfter: c.Registry.DeregisterCriticalAfter,
	}
}

// serveMaintenance answers PUT /maintenance?enable=true|false&reason=…:
// it turns Consul's maintenance mode for the app on or off, and /ready
// with it. 200 when done (or when there is no registry), 202 when outrider
// will tell Consul as soon as it can, 400 naming any other enable, 409
// once the drain has deregistered the instance.
func (a *agent) serveMaintenance(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	q := r.URL.Query()
	// Not ParseBool: a stray 1, t or TRUE must not switch maintenance on.
	var enable bool
	switch v := q.Get("enable"); v {
	case "true":
		enable = true
	case "false":
	default:
		http.Error(w, fmt.Sprintf("enable=%q: want true or false", v), http.StatusBadRequest)
		return
	}
	reason := q.Get("reason")
	if why := badReason(reason); enable && why != "" {
		http.Error(w, fmt.Sprintf("reason=%q: %s: it is shown on one line of /ready and in the Consul check; want printable text", reason, why), http.StatusBadRequest)
		return
	}
	if a.registrar != nil && a.registrar.Stopped() {
		http.Error(w, "maintenance not set: "+register.ErrStopped.Error(), http.StatusConflict)
		return
	}
	if enable {
		if reason == "" {
			reason = "maintenance mode enabled through outrider"
		}
		a.gate.Set(condMaintenance, false, reason)
	} else {
		a.gate.Set(condMaintenance, true, "off")
	}
	state := "off"
	if enable {
		state = "on: " + reason
	}
	if a.registrar == nil {
		a.log.Info("maintenance mode", "enabled", enable, "reason", reason)
		fmt.Fprintf(w, "maintenance %s\n", state)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	err := a.registrar.SetMaintenance(ctx, enable, reason)
	if errors.Is(err, register.ErrStopped) {
		// The drain began since the check above.
		http.Error(w, "maintenance not set in consul: "+err.Error(), http.StatusConflict)
		return
	}
	a.log.Info("maintenance mode", "enabled", enable, "reason", reason, "consul_err", errString(err))
	if err != nil {
		// Every error of SetMaintenance wraps register.ErrPending: the
		// wish is kept and the registrar tells Consul once it can.
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, "maintenance %s\nconsul not updated yet, outrider retries: %v\n", state, err)
		return
	}
	fmt.Fprintf(w, "maintenance %s\n", state)
}

// badReason says what makes a maintenance reason unfit, or "": the reason
// is /ready's, on one line, and the Consul check's notes.
func badReason(reason string) string {
	if !utf8.ValidString(reason) {
		return "is not UTF-8"
	}
	if strings.ContainsFunc(reason, unicode.IsControl) {
		return "has a control character"
	}
	return ""
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
