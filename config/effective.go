package config

import (
	"slices"
	"strconv"
	"strings"
)

// Setting is one variable and its effective value.
type Setting struct {
	Var   string `json:"var"`
	Value string `json:"value"`
}

// Effective lists every OUTRIDER_* variable with the value in force,
// defaults filled in and secrets masked, in the order of the contract.
func (c Config) Effective() []Setting {
	d := func(v interface{ String() string }) string { return v.String() }
	proxy := c.Listen.Proxy
	if proxy == "" {
		proxy = "off"
	}
	maxConns := "auto"
	if c.Proxy.MaxConns > 0 {
		maxConns = strconv.Itoa(c.Proxy.MaxConns)
	}
	underscore := UnderscoreDrop
	if c.Proxy.KeepUnderscoreHeaders {
		underscore = UnderscoreKeep
	}
	eventLoop := EventLoopOff
	if c.Proxy.EventLoop {
		eventLoop = EventLoopOn
	}
	// Unset, the grace period is unknown, not nothing: check-config says
	// what that means.
	grace := ""
	if c.Drain.GracePeriod > 0 {
		grace = d(c.Drain.GracePeriod)
	}
	process := ""
	if c.App.Process != nil {
		process = c.App.Process.String()
	}
	return []Setting{
		{"OUTRIDER_SERVICE_NAME", c.Service.Name},
		{"OUTRIDER_SERVICE_ID", c.Service.ID},
		{"OUTRIDER_SERVICE_TAGS", strings.Join(c.Service.Tags, ",")},
		{"OUTRIDER_SERVICE_META", joinMeta(c.Service.Meta)},
		{"OUTRIDER_SERVICE_ADDRESS", c.Service.Address},
		{"OUTRIDER_SERVICE_PORT", strconv.Itoa(c.Service.Port)},
		{"OUTRIDER_APP_ADDR", c.App.Addr},
		{"OUTRIDER_APP_PID_FILE", c.App.PIDFile},
		{"OUTRIDER_APP_PROCESS", process},
		{"OUTRIDER_PROC_ROOT", c.App.ProcRoot},
		{"OUTRIDER_APP_CHILDREN", strconv.FormatBool(c.App.Children)},
		{"OUTRIDER_PROBE", c.Probe.Spec.String()},
		{"OUTRIDER_PROBE_HEADERS", maskedHeaders(c.Probe)},
		{"OUTRIDER_PROBE_INSECURE", strconv.FormatBool(c.Probe.Spec.Insecure)},
		{"OUTRIDER_PROBE_PERIOD", d(c.Probe.Period)},
		{"OUTRIDER_PROBE_TIMEOUT", d(c.Probe.Timeout)},
		{"OUTRIDER_PROBE_INITIAL_DELAY", d(c.Probe.InitialDelay)},
		{"OUTRIDER_PROBE_FAILURE_THRESHOLD", strconv.Itoa(c.Probe.FailureThreshold)},
		{"OUTRIDER_PROBE_SUCCESS_THRESHOLD", strconv.Itoa(c.Probe.SuccessThreshold)},
		{"OUTRIDER_PROBE_ENV_DENY", strings.Join(c.Probe.EnvDeny, ",")},
		{"OUTRIDER_PROBE_ENV", maskedPairs(c.Probe.EnvAdd)},
		{"OUTRIDER_REGISTRY", c.Registry.Kind},
		{"OUTRIDER_CHECK_TTL", d(c.Registry.CheckTTL)},
		{"OUTRIDER_DEREGISTER_CRITICAL_AFTER", d(c.Registry.DeregisterCriticalAfter)},
		{"OUTRIDER_PROXY_LISTEN", proxy},
		{"OUTRIDER_METRICS_LISTEN", c.Listen.Metrics},
		{"OUTRIDER_ADMIN_LISTEN", c.Listen.Admin},
		{"OUTRIDER_ADMIN_TOKEN", c.Listen.AdminToken.String()},
		{"OUTRIDER_QPS_WINDOW", d(c.Listen.QPSWindow)},
		{"OUTRIDER_PROXY_MAX_CONNS", maxConns},
		{"OUTRIDER_PROXY_MAX_IDLE_APP_CONNS", strconv.Itoa(c.Proxy.MaxIdleAppConns)},
		{"OUTRIDER_PROXY_TUNNEL_IDLE_TIMEOUT", d(c.Proxy.TunnelIdleTimeout)},
		{"OUTRIDER_PROXY_UNDERSCORE_HEADERS", underscore},
		{"OUTRIDER_PROXY_EVENT_LOOP", eventLoop},
		{"OUTRIDER_DRAIN_DELAY", d(c.Drain.Delay)},
		{"OUTRIDER_DRAIN_TIMEOUT", d(c.Drain.Timeout)},
		{"OUTRIDER_APP_STOP_TIMEOUT", d(c.Drain.AppStopTimeout)},
		{"OUTRIDER_GRACE_PERIOD", grace},
		{"OUTRIDER_CONFIG_FILE", c.ConfigFile},
		{"OUTRIDER_LOG_FORMAT", c.Log.Format},
		{"OUTRIDER_LOG_LEVEL", c.Log.Level},
	}
}

func joinMeta(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + m[k])
	}
	return b.String()
}

// maskedHeaders shows header names only: values may be credentials.
func maskedHeaders(p Probe) string {
	var names []string
	for name := range p.Spec.Header {
		names = append(names, name+": ********")
	}
	slices.Sort(names)
	return strings.Join(names, ",")
}

// maskedPairs shows the names of NAME=value pairs only: values may be
// credentials.
func maskedPairs(pairs []string) string {
	masked := make([]string, 0, len(pairs))
	for _, p := range pairs {
		name, _, _ := strings.Cut(p, "=")
		masked = append(masked, name+"=********")
	}
	return strings.Join(masked, ",")
}
