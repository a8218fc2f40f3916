// Package config reads outrider's environment contract into one typed value.
//
// Every OUTRIDER_* variable is parsed, defaulted and validated here, and all
// bad values are reported together. Consul's own variables (CONSUL_HTTP_ADDR,
// CONSUL_HTTP_TOKEN, the TLS ones…) are left to consul/api's DefaultConfig,
// which reads them exactly as the Consul CLI does; only its two booleans
// are checked here, since it takes a bad one without an error.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/outrider-sidecar/outrider/internal/hostport"
	"github.com/outrider-sidecar/outrider/internal/servicename"
	"github.com/outrider-sidecar/outrider/probe"
)

// Config is outrider's whole configuration.
type Config struct {
	Service  Service
	App      App
	Probe    Probe
	Registry Registry
	Listen   Listen
	Proxy    Proxy
	Drain    Drain
	// ConfigFile is the optional file of reloadable settings.
	ConfigFile string
	Log        Log
}

// Service is what outrider registers in Consul.
type Service struct {
	Name    string
	ID      string
	Tags    []string
	Meta    map[string]string
	Address string
	Port    int
	// PodName and PodNamespace come from the downward API, when set.
	PodName      string
	PodNamespace string
}

// App says where the app listens and how to find its process.
type App struct {
	Addr    string
	PIDFile string
	// Process matches the app's command line; nil when unset.
	Process *regexp.Regexp
	// ProcRoot is where procfs is mounted.
	ProcRoot string
	// Children counts the app process's descendants (a pre-forking
	// server's workers) in its figures; false counts it alone.
	Children bool
}

// Probe is the probe target and the kubelet-style schedule around it.
type Probe struct {
	Spec             probe.Spec
	Period           time.Duration
	Timeout          time.Duration
	InitialDelay     time.Duration
	FailureThreshold int
	SuccessThreshold int
	// EnvDeny names the variables an exec probe's command does not get
	// from outrider's environment, beside probe.SecretEnv.
	EnvDeny []string
	// EnvAdd holds NAME=value pairs added to an exec probe's environment.
	EnvAdd []string
}

// Registry selects the service registry and how outrider uses it.
type Registry struct {
	// Kind is "consul" or "none".
	Kind                    string
	CheckTTL                time.Duration
	DeregisterCriticalAfter time.Duration
}

// Enabled reports whether outrider registers the app anywhere.
func (r Registry) Enabled() bool { return r.Kind != RegistryNone }

// Registry kinds.
const (
	RegistryConsul = "consul"
	RegistryNone   = "none"
)

// Listen holds outrider's listeners. An empty Proxy means the proxy is off.
type Listen struct {
	Proxy      string
	Metrics    string
	Admin      string
	AdminToken Secret
	// QPSWindow is the sliding window of outrider_http_requests_per_second.
	QPSWindow time.Duration
}

// Proxy holds the inbound proxy's limits.
type Proxy struct {
	// MaxConns bounds the client connections open at once; 0 means
	// "auto": sized from the open-file limit at start-up.
	MaxConns int
	// MaxIdleAppConns bounds the keep-alive connections to the app kept
	// idle for the next requests.
	MaxIdleAppConns int
	// TunnelIdleTimeout closes a WebSocket or other upgraded tunnel idle
	// that long both ways.
	TunnelIdleTimeout time.Duration
	// KeepUnderscoreHeaders forwards request header names that hold an
	// underscore; they are dropped by default.
	KeepUnderscoreHeaders bool
	// EventLoop serves keep-alive connections between and during plain
	// requests from event loops rather than a goroutine each (Linux).
	EventLoop bool
}

// Values of OUTRIDER_PROXY_UNDERSCORE_HEADERS.
const (
	UnderscoreDrop = "drop"
	UnderscoreKeep = "keep"
)

// Values of OUTRIDER_PROXY_EVENT_LOOP.
const (
	EventLoopOn  = "on"
	EventLoopOff = "off"
)

// MetricsPort is the port of the metrics listener, which every
// registration carries as service meta MetricsPortMeta; 0 when the
// listener is off or its port is chosen at start (port 0).
func (l Listen) MetricsPort() int {
	if l.Metrics == "" {
		return 0
	}
	return portOf(l.Metrics)
}

// PublishedMetricsPort is the port the registration carries as service
// meta MetricsPortMeta: the metrics listener's, or 0 when Prometheus could
// not scrape it at the registered address (see metricsLocalOnly).
func (c Config) PublishedMetricsPort() int {
	if c.metricsLocalOnly() {
		return 0
	}
	return c.Listen.MetricsPort()
}

// metricsLocalOnly reports whether the metrics listener takes connections
// from this host only while the instance is registered at an address
// other hosts reach: Prometheus' Consul discovery, which scrapes the
// registered address at metrics_port, would find a target always down.
func (c Config) metricsLocalOnly() bool {
	return c.Listen.MetricsPort() != 0 && isLoopback(c.Listen.Metrics) && !loopbackHost(c.Service.Address)
}

// MetricsPortMeta is the service meta key that tells Prometheus' Consul
// discovery where outrider's /metrics is. outrider sets it when it
// publishes the port (PublishedMetricsPort); a user's
// OUTRIDER_SERVICE_META may set it only when outrider does not.
const MetricsPortMeta = "metrics_port"

// Drain is the shutdown timing.
type Drain struct {
	// Delay is how long new requests are still served after deregistering.
	Delay time.Duration
	// Timeout bounds the wait for requests in flight.
	Timeout time.Duration
	// AppStopTimeout is how long wrap mode waits for the child after
	// SIGTERM before it kills the child's process group.
	AppStopTimeout time.Duration
	// GracePeriod is the platform's budget for the whole stop (Kubernetes'
	// terminationGracePeriodSeconds, systemd's TimeoutStopSec); 0 when
	// unknown. check-config warns when the sequence cannot fit in it.
	GracePeriod time.Duration
}

// DeregisterTimeout bounds the registry call that opens the drain: a
// Consul agent that does not answer holds the stop this long, no longer.
const DeregisterTimeout = 5 * time.Second

// Log is the structured-logging setup.
type Log struct {
	Format string // json or text
	Level  string // debug, info, warn or error
}

// Secret is a string that never prints.
type Secret string

// String masks the secret, so fmt, slog and JSON cannot leak it.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "********"
}

// MarshalText masks the secret in JSON and text encodings.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Reveal returns the secret itself, for the one place that needs it.
func (s Secret) Reveal() string { return string(s) }

// Error is one bad variable: its name, its value and what was expected.
type Error struct {
	Var   string
	Value string
	Want  string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s=%q %s", e.Var, e.Value, e.Want)
}

// Defaults that are not derived from other settings.
const (
	DefaultAppAddr       = "127.0.0.1:8080"
	DefaultMetricsListen = ":15090"
	DefaultAdminListen   = "127.0.0.1:15000"
	DefaultProxyListen   = ":15001"
	// DefaultMaxIdleAppConns: enough idle app connections that a burst of
	// new clients seldom waits for dials (see docs/proxy.md).
	DefaultMaxIdleAppConns = 128
	minDeregisterCritical  = time.Minute
	// maxQPSWindow bounds OUTRIDER_QPS_WINDOW: the rate meter keeps a
	// counter for each second of the window, and a scaler wants a recent
	// rate, not an hours-old one.
	maxQPSWindow = time.Hour
)

// Load reads the configuration from getenv (os.Getenv in production).
// hostname and interfaceAddr supply the defaults of the service ID and
// address. The error joins every *Error found.
func Load(getenv func(string) string, hostname string, interfaceAddr func() (string, error)) (Config, error) {
	return loadOver(getenv, hostname, interfaceAddr, nil)
}

// loadOver is Load; file, when not nil, is the config file whose settings
// getenv holds, so that an error can say which of them came from it.
func loadOver(getenv func(string) string, hostname string, interfaceAddr func() (string, error), file *File) (Config, error) {
	return loadReader(&reader{getenv: getenv, file: file}, hostname, interfaceAddr)
}

func loadReader(r *reader, hostname string, interfaceAddr func() (string, error)) (Config, error) {
	var c Config

	c.Log.Format = r.oneOf("OUTRIDER_LOG_FORMAT", "json", "json", "text")
	c.Log.Level = r.oneOf("OUTRIDER_LOG_LEVEL", "info", "debug", "info", "warn", "error")

	c.App.Addr = r.hostPort("OUTRIDER_APP_ADDR", DefaultAppAddr, true)
	c.App.PIDFile = r.str("OUTRIDER_APP_PID_FILE", "")
	c.App.Process = r.regexp("OUTRIDER_APP_PROCESS")
	c.App.ProcRoot = r.str("OUTRIDER_PROC_ROOT", "/proc")
	c.App.Children = r.boolean("OUTRIDER_APP_CHILDREN", true)

	c.Probe = r.probe(c.App.Addr)

	c.Registry.Kind = r.oneOf("OUTRIDER_REGISTRY", RegistryConsul, RegistryConsul, RegistryNone)
	c.Registry.CheckTTL = r.duration("OUTRIDER_CHECK_TTL", 15*time.Second, time.Second)
	c.Registry.DeregisterCriticalAfter = r.duration("OUTRIDER_DEREGISTER_CRITICAL_AFTER", time.Minute, minDeregisterCritical)
	// consul/api reads these two itself, and on a bad value only prints a
	// warning and goes on without TLS, or with verification: a typo would
	// change how outrider talks to Consul without a word.
	for _, name := range []string{"CONSUL_HTTP_SSL", "CONSUL_HTTP_SSL_VERIFY"} {
		r.boolean(name, false)
	}
	r.goRuntime()

	c.Listen.Proxy = r.listen("OUTRIDER_PROXY_LISTEN", DefaultProxyListen, true)
	c.Listen.Metrics = r.listen("OUTRIDER_METRICS_LISTEN", DefaultMetricsListen, false)
	c.Listen.Admin = r.listen("OUTRIDER_ADMIN_LISTEN", DefaultAdminListen, false)
	c.Listen.AdminToken = Secret(r.str("OUTRIDER_ADMIN_TOKEN", ""))
	if strings.ContainsFunc(c.Listen.AdminToken.Reveal(), func(c rune) bool { return c < ' ' && c != '\t' || c == 0x7f }) {
		// No header carries one: outrider prestop could not send the
		// token, and no client could call the admin API.
		r.fail("OUTRIDER_ADMIN_TOKEN", "(hidden)", "holds a control character (a line break?), which no HTTP header can carry, so no client could send it (want printable text)")
	}
	c.Listen.QPSWindow = r.durationIn("OUTRIDER_QPS_WINDOW", 10*time.Second, time.Second, maxQPSWindow)
	if c.Listen.QPSWindow%time.Second != 0 {
		// The rate is counted per whole second: 1500ms would be 2s in
		// /v1/qps and 1.5s in check-config and the metric's help.
		r.fail("OUTRIDER_QPS_WINDOW", r.getenv("OUTRIDER_QPS_WINDOW"), "is not a whole number of seconds (the rate is counted per second; want e.g. 10s)")
		c.Listen.QPSWindow = 10 * time.Second
	}
	if c.Listen.Admin != "" && c.Listen.AdminToken == "" && !isLoopback(c.Listen.Admin) {
		r.fail("OUTRIDER_ADMIN_LISTEN", c.Listen.Admin, "is not a loopback address and OUTRIDER_ADMIN_TOKEN is empty (set a token, or listen on 127.0.0.1)")
	}
	r.portClashes(c)

	c.Proxy.MaxConns = r.autoInt("OUTRIDER_PROXY_MAX_CONNS")
	c.Proxy.MaxIdleAppConns = r.positiveInt("OUTRIDER_PROXY_MAX_IDLE_APP_CONNS", DefaultMaxIdleAppConns)
	c.Proxy.TunnelIdleTimeout = r.duration("OUTRIDER_PROXY_TUNNEL_IDLE_TIMEOUT", time.Hour, time.Second)
	c.Proxy.KeepUnderscoreHeaders = r.oneOf("OUTRIDER_PROXY_UNDERSCORE_HEADERS", UnderscoreDrop, UnderscoreDrop, UnderscoreKeep) == UnderscoreKeep
	c.Proxy.EventLoop = r.oneOf("OUTRIDER_PROXY_EVENT_LOOP", EventLoopOn, EventLoopOn, EventLoopOff) == EventLoopOn

	c.Drain.Delay = r.duration("OUTRIDER_DRAIN_DELAY", 5*time.Second, 0)
	c.Drain.Timeout = r.duration("OUTRIDER_DRAIN_TIMEOUT", 25*time.Second, 0)
	c.Drain.AppStopTimeout = r.duration("OUTRIDER_APP_STOP_TIMEOUT", 10*time.Second, 0)
	c.Drain.GracePeriod = r.gracePeriod()
	c.ConfigFile = r.str("OUTRIDER_CONFIG_FILE", "")

	c.Service = r.service(c, hostname, interfaceAddr)
	return c, errors.Join(r.errs...)
}

// goRuntime checks GOMAXPROCS and GOGC, which Go's runtime reads before
// outrider starts and, when bad, ignores without a word. outrider sets its
// own values (one core, GOGC 25) only when they are unset, so a bad one
// left outrider on every core of the node, or collecting at 100.
func (r *reader) goRuntime() {
	if v := r.getenv("GOMAXPROCS"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 32); err != nil || n < 1 || strings.Trim(v, "0123456789") != "" {
			r.fail("GOMAXPROCS", v, "is not a whole number of 1 or more (Go would ignore it and use every core; unset it for outrider's 1)")
		}
	}
	if v := r.getenv("GOGC"); v != "" && v != "off" {
		if _, err := strconv.ParseInt(v, 10, 32); err != nil || strings.HasPrefix(v, "+") {
			r.fail("GOGC", v, "is not a whole number nor off (Go would ignore it and use 100; unset it for outrider's 25)")
		}
	}
}

// gracePeriod reads OUTRIDER_GRACE_PERIOD: unset, the budget is unknown
// and nothing is checked. 0s is refused rather than taken for unset: no
// stop fits in no time (Kubernetes kills at once), and systemd's
// TimeoutStopSec=0 means no limit, which is unset here.
func (r *reader) gracePeriod() time.Duration {
	const name = "OUTRIDER_GRACE_PERIOD"
	if v := r.str(name, ""); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d == 0 {
			r.fail(name, v, "is no time at all, and no stop fits in it (want the platform's stop budget, terminationGracePeriodSeconds or TimeoutStopSec, e.g. 45s; "+
				"leave it unset when the platform sets no limit, as TimeoutStopSec=0 or infinity does)")
			return 0
		}
	}
	return r.duration(name, 0, time.Second)
}

func (r *reader) probe(appAddr string) Probe {
	var p Probe
	raw := r.str("OUTRIDER_PROBE", "")
	if raw == "" {
		// A URL spells an IPv6 zone's "%" as "%25".
		raw = "tcp://" + strings.ReplaceAll(appAddr, "%", "%25")
	}
	spec, err := probe.ParseSpec(raw)
	if err != nil {
		// The value may hold a URL password: it is shown masked.
		shown, why := probe.ExplainSpecError(raw, err)
		r.fail("OUTRIDER_PROBE", shown, why)
	}
	if h := r.getenv("OUTRIDER_PROBE_HEADERS"); h != "" {
		hdr, err := probe.ParseHeaders(h)
		if err != nil {
			// The value may hold a credential: name only the variable.
			r.fail("OUTRIDER_PROBE_HEADERS", "(hidden)", err.Error()+` (want "Name: value,Name: value"; a comma separates headers, and what follows one continues the value before it only if it holds no colon, as in "Accept: application/json, text/plain")`)
		}
		spec.Header = hdr
	}
	spec.Insecure = r.boolean("OUTRIDER_PROBE_INSECURE", false)
	p.Spec = spec
	p.Period = r.duration("OUTRIDER_PROBE_PERIOD", 5*time.Second, time.Millisecond)
	p.Timeout = r.duration("OUTRIDER_PROBE_TIMEOUT", time.Second, time.Millisecond)
	p.InitialDelay = r.duration("OUTRIDER_PROBE_INITIAL_DELAY", 0, 0)
	p.FailureThreshold = r.positiveInt("OUTRIDER_PROBE_FAILURE_THRESHOLD", 3)
	p.SuccessThreshold = r.positiveInt("OUTRIDER_PROBE_SUCCESS_THRESHOLD", 1)
	p.EnvDeny = r.envNames("OUTRIDER_PROBE_ENV_DENY")
	p.EnvAdd = r.envPairs("OUTRIDER_PROBE_ENV")
	if spec.Kind != "" && !r.valuesOnly {
		r.unusedByProbe(spec, r.str("OUTRIDER_PROBE", "") == "")
	}
	return p
}

// unusedByProbe refuses the probe settings that the kind of probe spec
// does not use: headers and TLS verification but for an http or https
// probe, an environment but for an exec one. Each would be ignored, and
// whoever set it would believe it applied. An http probe keeps
// OUTRIDER_PROBE_INSECURE, for the app that redirects it to https.
func (r *reader) unusedByProbe(spec probe.Spec, byDefault bool) {
	web := spec.Kind == probe.KindHTTP || spec.Kind == probe.KindHTTPS
	article := "a"
	if web || spec.Kind == probe.KindExec {
		article = "an"
	}
	what := fmt.Sprintf("OUTRIDER_PROBE=%q is %s %s probe", spec.String(), article, spec.Kind)
	fileProbe, fromFile := r.file.value("OUTRIDER_PROBE")
	fromFile = fromFile && strings.TrimSpace(fileProbe.value) != ""
	switch {
	case fromFile:
		what = fmt.Sprintf("the config file's probe (%s:%d) %q is %s %s probe", r.file.Path, fileProbe.line, spec.String(), article, spec.Kind)
	case byDefault:
		what = fmt.Sprintf("the probe is the default, %s %s probe of OUTRIDER_APP_ADDR (%s)", article, spec.Kind, spec.String())
	}
	for _, u := range []struct {
		name, shown string
		unused      bool
		why         string
		// clear is the config file's setting that clears the variable,
		// "" when a file cannot set it.
		clear string
	}{
		{"OUTRIDER_PROBE_HEADERS", "(hidden)", !web, "which sends no headers (only an http or https probe does)", `probe_headers: ""`},
		{"OUTRIDER_PROBE_INSECURE", "true", !web && spec.Insecure, "which verifies no certificate (only an https probe, or an http one the app redirects to https, does)", "probe_insecure: false"},
		{"OUTRIDER_PROBE_ENV", "(hidden)", spec.Kind != probe.KindExec, "which runs no command (only an exec probe does)", ""},
		{"OUTRIDER_PROBE_ENV_DENY", r.str("OUTRIDER_PROBE_ENV_DENY", ""), spec.Kind != probe.KindExec, "which runs no command (only an exec probe does)", ""},
	} {
		if !u.unused || r.str(u.name, "") == "" || r.failed(u.name) {
			continue
		}
		todo := "unset it, or change OUTRIDER_PROBE"
		if _, inFile := r.file.value(u.name); fromFile && !inFile {
			// The variable is the environment's, which the file's probe
			// made unused: the environment cannot change at run time.
			todo = "unset it in the environment (which takes a restart), or change the file's probe"
			if u.clear != "" {
				todo = fmt.Sprintf("write %s in the config file, or change its probe", u.clear)
			}
		} else if fromFile {
			todo = "remove it from the config file, or change its probe"
		}
		r.fail(u.name, u.shown, fmt.Sprintf("is set, but %s, %s: %s", what, u.why, todo))
	}
}

func (r *reader) service(c Config, hostname string, interfaceAddr func() (string, error)) Service {
	s := Service{
		Name:         r.str("OUTRIDER_SERVICE_NAME", ""),
		Tags:         r.list("OUTRIDER_SERVICE_TAGS"),
		Meta:         r.meta("OUTRIDER_SERVICE_META"),
		PodName:      r.str("POD_NAME", ""),
		PodNamespace: r.str("POD_NAMESPACE", ""),
	}
	// An OUTRIDER_REGISTRY that failed stands for consul, its default: it
	// was not asked for, so neither is what consul needs.
	if s.Name == "" && c.Registry.Enabled() && !r.failed("OUTRIDER_REGISTRY") {
		r.fail("OUTRIDER_SERVICE_NAME", "", "is required when OUTRIDER_REGISTRY=consul (set it, or set OUTRIDER_REGISTRY=none)")
	}
	if s.Name != "" && !servicename.Valid(s.Name) {
		r.fail("OUTRIDER_SERVICE_NAME", s.Name, "is not a valid service name (want letters, digits, '-', '_' and '.', starting with a letter or digit, at most 253 characters)")
	}
	host := hostname
	if s.PodName != "" {
		host = s.PodName
	}
	s.ID = r.str("OUTRIDER_SERVICE_ID", "")
	switch {
	case s.ID != "" && !serviceID.MatchString(s.ID):
		r.fail("OUTRIDER_SERVICE_ID", s.ID, "is not a valid service ID (want letters, digits, '-', '_', '.', ':' and '@'): Consul takes the ID into the paths of its API")
	case s.ID == "" && s.Name != "":
		s.ID = s.Name + "-" + host
		switch {
		case !servicename.Valid(s.Name) || serviceID.MatchString(s.ID):
		case s.PodName != "":
			r.fail("POD_NAME", s.PodName, fmt.Sprintf("makes, with the service name, the service ID %q, which is not valid (want letters, digits, '-', '_', '.', ':' and '@'; or set OUTRIDER_SERVICE_ID)", s.ID))
		default:
			r.fail("OUTRIDER_SERVICE_ID", "", fmt.Sprintf("is empty and the ID made from the service name and the host name, %q, is not a valid service ID (set OUTRIDER_SERVICE_ID)", s.ID))
		}
	}

	// POD_IP stands in for OUTRIDER_SERVICE_ADDRESS. Kubernetes sets it
	// from status.podIP, always an IP address: a host name there is a
	// misconfiguration, not a name to register.
	s.Address = r.str("OUTRIDER_SERVICE_ADDRESS", "")
	fromPodIP := false
	if s.Address == "" {
		s.Address = r.str("POD_IP", "")
		fromPodIP = s.Address != ""
	}
	switch {
	case fromPodIP && net.ParseIP(s.Address) == nil:
		r.fail("POD_IP", s.Address, "is not an IP address (want an IPv4 or IPv6 address, e.g. 10.0.0.7 or fd00::7, as Kubernetes sets it from status.podIP)")
	case !fromPodIP && s.Address != "" && !serviceAddress(s.Address):
		r.fail("OUTRIDER_SERVICE_ADDRESS", s.Address, "is not an IP address or a host name (want e.g. 10.0.0.7, fd00::7 or app.example.com)")
	case s.Address == "" && c.Registry.Enabled():
		addr, err := interfaceAddr()
		if err != nil {
			r.fail("OUTRIDER_SERVICE_ADDRESS", "", "is empty and no address could be found: "+err.Error()+" (set it, or POD_IP)")
		}
		s.Address = addr
	}

	r.ownMeta(c, s)

	defaultPort := portOf(c.App.Addr)
	if c.Listen.Proxy != "" {
		defaultPort = portOf(c.Listen.Proxy)
	}
	s.Port = r.port("OUTRIDER_SERVICE_PORT", defaultPort)
	if s.Port == 0 && c.Listen.Proxy != "" && c.Registry.Enabled() && !r.failed("OUTRIDER_PROXY_LISTEN") && !r.failed("OUTRIDER_SERVICE_PORT") {
		// Port 0 is chosen at start: Consul would send clients to port 0.
		r.fail("OUTRIDER_PROXY_LISTEN", c.Listen.Proxy,
			"has port 0, which would be registered in Consul as the service's port (pick a port, or set OUTRIDER_SERVICE_PORT)")
	}
	return s
}

// hostLabel is one label of an RFC 1123 host name.
var hostLabel = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// serviceAddress reports whether s may be registered as the service's
// address: an IP address without a zone, or an RFC 1123 host name of at
// most 253 characters whose last label is not all digits (10.0.0.256 is
// a bad IPv4 address, not a name).
func serviceAddress(s string) bool {
	if net.ParseIP(s) != nil {
		return true
	}
	if len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if !hostLabel.MatchString(l) {
			return false
		}
	}
	return strings.Trim(labels[len(labels)-1], "0123456789") != ""
}

// portClashes refuses listeners that would take the app's port, or one
// another's. outrider binds before the app is up, so a proxy on the app's
// port would answer the probe and proxy to itself; two of its own
// listeners on one port fail only at start, with "address already in use".
func (r *reader) portClashes(c Config) {
	type addr struct{ name, value string }
	app := addr{"OUTRIDER_APP_ADDR", c.App.Addr}
	var listeners []addr
	for _, l := range []addr{
		{"OUTRIDER_PROXY_LISTEN", c.Listen.Proxy},
		{"OUTRIDER_METRICS_LISTEN", c.Listen.Metrics},
		{"OUTRIDER_ADMIN_LISTEN", c.Listen.Admin},
	} {
		// Off, or already refused: there is nothing to compare.
		if l.value != "" && !r.failed(l.name) {
			listeners = append(listeners, l)
		}
	}
	for i, l := range listeners {
		if !r.failed(app.name) && samePort(l.value, app.value, true) {
			r.fail(l.name, l.value, fmt.Sprintf("is on the app's port, %s=%q: outrider would answer in the app's place (pick another port)", app.name, app.value))
			continue
		}
		for _, prev := range listeners[:i] {
			if samePort(l.value, prev.value, false) {
				r.fail(l.name, l.value, fmt.Sprintf("is on the port of %s=%q (pick another port)", prev.name, prev.value))
				break
			}
		}
	}
}

// samePort reports whether host:port a and b take one port: the same port,
// not 0 (chosen at start, it never clashes), and a host that is empty or
// unspecified (every address) on either side, or the same host, localhost
// counting as every loopback address. With anyLoopback, any two loopback
// addresses count as the same: outrider reaches the app on one, but the
// app may listen on others too (localhost is 127.0.0.1 and ::1).
func samePort(a, b string, anyLoopback bool) bool {
	ha, _, errA := net.SplitHostPort(a)
	hb, _, errB := net.SplitHostPort(b)
	if errA != nil || errB != nil {
		return false
	}
	if na, nb := portOf(a), portOf(b); na == 0 || na != nb {
		return false
	}
	if everyAddress(ha) || everyAddress(hb) || strings.EqualFold(ha, hb) {
		return true
	}
	if ia, ib := net.ParseIP(ha), net.ParseIP(hb); ia != nil && ib != nil && ia.Equal(ib) {
		return true
	}
	if !loopbackHost(ha) || !loopbackHost(hb) {
		return false
	}
	return anyLoopback || strings.EqualFold(ha, "localhost") || strings.EqualFold(hb, "localhost")
}

// everyAddress reports whether a listener on host takes its port on every
// address: an empty host, 0.0.0.0 or ::.
func everyAddress(host string) bool {
	ip := net.ParseIP(host)
	return host == "" || (ip != nil && ip.IsUnspecified())
}

// failed reports whether the variable has been refused already.
func (r *reader) failed(name string) bool {
	for _, e := range r.errs {
		if ce, ok := e.(*Error); ok && ce.Var == name {
			return true
		}
	}
	return false
}

// isLoopback reports whether a listen address only accepts local clients.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && loopbackHost(host)
}

// loopbackHost reports whether host is localhost or a loopback address
// (127.0.0.0/8, ::1).
func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func portOf(hostport string) int {
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}

// reader collects errors while it parses variables, so that every bad
// value is reported at once.
type reader struct {
	getenv func(string) string
	errs   []error
	// file is the config file laid over the environment, nil without one.
	file *File
	// valuesOnly skips the probe settings the probe does not use, which
	// depend on the probe a config file may set.
	valuesOnly bool
}

func (r *reader) fail(name, value, want string) {
	r.errs = append(r.errs, &Error{Var: name, Value: value, Want: want})
}

func (r *reader) str(name, def string) string {
	if v := strings.TrimSpace(r.getenv(name)); v != "" {
		return v
	}
	return def
}

func (r *reader) oneOf(name, def string, allowed ...string) string {
	v := strings.ToLower(r.str(name, def))
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	r.fail(name, r.getenv(name), "is not one of "+strings.Join(allowed, ", "))
	return def
}

// duration reads a duration of min or more.
func (r *reader) duration(name string, def, min time.Duration) time.Duration {
	return r.durationIn(name, def, min, 0)
}

// durationIn reads a duration of min to max; a max of 0 sets no bound.
func (r *reader) durationIn(name string, def, min, max time.Duration) time.Duration {
	v := r.str(name, "")
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		r.fail(name, v, "is not a duration (want e.g. 5s, 500ms)")
		return def
	}
	want := fmt.Sprintf("want %s or more", min)
	if max != 0 {
		want = fmt.Sprintf("want %s to %s", min, max)
	}
	switch {
	case d < 0 && min == 0:
		r.fail(name, v, "is negative ("+want+")")
	case d < min:
		r.fail(name, v, "is too short ("+want+")")
	case max != 0 && d > max:
		r.fail(name, v, "is too long ("+want+")")
	default:
		return d
	}
	return def
}

func (r *reader) positiveInt(name string, def int) int {
	v := r.str(name, "")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		r.fail(name, v, "is not a whole number of 1 or more")
		return def
	}
	return n
}

// autoInt reads a whole number of 1 or more, or "auto" (or nothing),
// which is 0.
func (r *reader) autoInt(name string) int {
	v := r.str(name, "")
	if v == "" || strings.EqualFold(v, "auto") {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		r.fail(name, v, "is not a whole number of 1 or more, nor auto")
		return 0
	}
	return n
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// envNames reads a list of environment variable names.
func (r *reader) envNames(name string) []string {
	names := r.list(name)
	for _, n := range names {
		if !envName.MatchString(n) {
			r.fail(name, n, "is not a variable name (want letters, digits and '_', not starting with a digit)")
		}
	}
	return names
}

// envPairs reads NAME=value pairs. Values may be credentials: an error
// names the variable only.
func (r *reader) envPairs(name string) []string {
	var pairs []string
	for i, item := range r.list(name) {
		k, v, ok := strings.Cut(item, "=")
		k = strings.TrimSpace(k)
		if !ok || !envName.MatchString(k) {
			r.fail(name, "(hidden)", fmt.Sprintf("item %d is not NAME=value (want e.g. \"PGHOST=db,PGPORT=5432\")", i+1))
			continue
		}
		pairs = append(pairs, k+"="+strings.TrimSpace(v))
	}
	return pairs
}

func (r *reader) boolean(name string, def bool) bool {
	v := r.str(name, "")
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		r.fail(name, v, "is not a boolean (want true or false)")
		return def
	}
	return b
}

func (r *reader) port(name string, def int) int {
	v := r.str(name, "")
	if v == "" {
		return def
	}
	n, ok := ParsePort(v)
	if !ok || n < 1 {
		r.fail(name, v, "is not a port (want 1-65535)")
		return def
	}
	return n
}

// ParsePort reads a port number: digits alone (strconv.Atoi would take
// "+80" and "-0"), 0 to 65535.
func ParsePort(s string) (int, bool) {
	n, err := strconv.Atoi(s)
	return n, err == nil && s != "" && strings.Trim(s, "0123456789") == "" && n <= 65535
}

// hostPort reads host:port. A dial address needs a host and a port of
// 1-65535; a listen address may leave the host empty (every address) and
// may have port 0 (chosen at start). The port is digits alone, and the
// host an IP address or a name, as the net package reads them at start.
func (r *reader) hostPort(name, def string, dial bool) string {
	v := r.str(name, def)
	host, port, err := net.SplitHostPort(v)
	if err != nil && hostport.BareIPv6(v) {
		want := "has an IPv6 address without brackets (want e.g. [::1]:8080)"
		if !dial {
			want = "has an IPv6 address without brackets (want e.g. [::1]:8080, or [::]:8080 for every address)"
		}
		r.fail(name, v, want)
		return def
	}
	if err != nil {
		r.fail(name, v, "is not host:port (want e.g. 127.0.0.1:8080)")
		return def
	}
	if dial && host == "" {
		r.fail(name, v, "has no host (want e.g. 127.0.0.1:8080)")
		return def
	}
	low := 0
	if dial {
		low = 1
	}
	if n, ok := ParsePort(port); !ok || n < low {
		r.fail(name, v, fmt.Sprintf("has a bad port (want %d-65535)", low))
		return def
	}
	if host != "" && !ipOrName(host) {
		r.fail(name, v, "has a host that is neither an IP address nor a host name (want e.g. 127.0.0.1:8080, [::1]:8080 or localhost:8080)")
		return def
	}
	return v
}

// ipOrName reports whether host is an IP address (with a zone, as the net
// package takes it) or may be a host name: one that is all digits and
// dots, such as 127.1 or 0, is neither, and would be looked up and not
// found.
func ipOrName(host string) bool {
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	return strings.Trim(host, "0123456789.") != ""
}

// listen reads a listen address; "off" disables it when allowed.
func (r *reader) listen(name, def string, canDisable bool) string {
	v := r.str(name, def)
	if strings.EqualFold(v, "off") {
		if canDisable {
			return ""
		}
		r.fail(name, v, "cannot be turned off (want host:port, e.g. :15090)")
		return def
	}
	return r.hostPort(name, def, false)
}

func (r *reader) list(name string) []string {
	var out []string
	for item := range strings.SplitSeq(r.getenv(name), ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

var metaKey = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// serviceID is what a service ID may hold: Consul puts the ID in the paths
// of its API (/v1/agent/check/update/service:<ID>), where a '/' or a '?'
// would name something else.
var serviceID = regexp.MustCompile(`^[A-Za-z0-9_.:@-]+$`)

// maxMeta is Consul's bound on a service's meta pairs, outrider's own
// included.
const maxMeta = 64

// ownMeta checks the user's meta against the pairs outrider adds to it:
// outrider_version, metrics_port when outrider publishes one, and
// pod_name and pod_namespace when POD_NAME and POD_NAMESPACE are set. A
// user's pair with one of those keys would be replaced without a word,
// and Consul counts outrider's pairs against its 64. A metrics_port of
// the user's, when outrider publishes none, is theirs: the port of a
// scrape proxy in front of a loopback-only metrics listener.
func (r *reader) ownMeta(c Config, s Service) {
	c.Service = s
	own := []string{"outrider_version"}
	if c.PublishedMetricsPort() != 0 {
		own = append(own, MetricsPortMeta)
	}
	if s.PodName != "" {
		own = append(own, "pod_name")
	}
	if s.PodNamespace != "" {
		own = append(own, "pod_namespace")
	}
	for _, k := range own {
		v, ok := s.Meta[k]
		switch {
		case !ok:
		case k == MetricsPortMeta:
			r.fail("OUTRIDER_SERVICE_META", k+"="+v, fmt.Sprintf(
				"sets the key %s, which outrider sets from OUTRIDER_METRICS_LISTEN=%q (remove the pair: Prometheus finds /metrics through outrider's)",
				k, c.Listen.Metrics))
		default:
			r.fail("OUTRIDER_SERVICE_META", k+"="+v, fmt.Sprintf("sets the key %s, which outrider sets itself (remove the pair)", k))
		}
	}
	if n := len(s.Meta); n > maxMeta-len(own) {
		r.fail("OUTRIDER_SERVICE_META", fmt.Sprintf("(%d pairs)", n), fmt.Sprintf(
			"has more pairs than fit beside outrider's %d (%s) in Consul's %d: at most %d",
			len(own), strings.Join(own, ", "), maxMeta, maxMeta-len(own)))
	}
}

// meta reads k=v pairs under Consul's rules for service meta.
func (r *reader) meta(name string) map[string]string {
	items := r.list(name)
	if len(items) == 0 {
		return nil
	}
	m := make(map[string]string, len(items))
	for _, item := range items {
		k, v, ok := strings.Cut(item, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch {
		case !ok:
			r.fail(name, item, "is not key=value")
		case !metaKey.MatchString(k):
			r.fail(name, item, "has a bad key (want 1-128 letters, digits, '-' or '_')")
		case strings.HasPrefix(k, "consul-"):
			r.fail(name, item, "uses the reserved key prefix consul-")
		case len(v) > 512:
			r.fail(name, item, "has a value over 512 characters")
		case hasKey(m, k):
			r.fail(name, item, "repeats the key "+k+" (want each key once)")
		default:
			m[k] = v
		}
	}
	return m
}

func hasKey(m map[string]string, k string) bool {
	_, ok := m[k]
	return ok
}

func (r *reader) regexp(name string) *regexp.Regexp {
	v := r.str(name, "")
	if v == "" {
		return nil
	}
	re, err := regexp.Compile(v)
	if err != nil {
		r.fail(name, v, "is not a regular expression: "+err.Error())
		return nil
	}
	return re
}
