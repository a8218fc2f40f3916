package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	consul "github.com/hashicorp/consul/api"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outrider-sidecar/outrider/config"
	"github.com/outrider-sidecar/outrider/config/watch"
	"github.com/outrider-sidecar/outrider/exporter"
	"github.com/outrider-sidecar/outrider/internal/version"
	"github.com/outrider-sidecar/outrider/probe"
	"github.com/outrider-sidecar/outrider/proxy"
	"github.com/outrider-sidecar/outrider/readiness"
	"github.com/outrider-sidecar/outrider/register"
	"github.com/outrider-sidecar/outrider/shutdown"
	"github.com/outrider-sidecar/outrider/wrap"
)

// agent is the wiring of one outrider process: the shared pieces every
// component plugs into, and the run group that owns their goroutines.
type agent struct {
	cfg     config.Config
	log     *slog.Logger
	reg     *prometheus.Registry
	gate    *readiness.Gate
	metrics *http.ServeMux // read-only endpoints
	admin   *http.ServeMux // endpoints that change state
	started time.Time
	// status holds the sections of /status, filled by the components.
	status map[string]func() any
	group  run.Group

	// subscribeVerdicts is set by addProbe: each call returns a channel
	// that receives the probe's verdict on every transition and on every
	// new output (the registrar sends the latest output to Consul).
	subscribeVerdicts func() <-chan probe.Verdict
	// registrar is set by addRegistry (nil with OUTRIDER_REGISTRY=none);
	// the shutdown sequence calls its Deregister.
	registrar *register.Registrar
	// consul is the one Consul client of the registrar and the peer
	// cache, built by consulClient on first use.
	consul *consul.Client
	// consulToken is CONSUL_HTTP_TOKEN_FILE, read again for each request
	// to Consul; nil without the variable. consulClient sets it.
	consulToken *tokenFile
	// proxy is set by addProxy (nil with OUTRIDER_PROXY_LISTEN=off); the
	// shutdown sequence calls its Drain.
	proxy *proxy.Proxy
	// drain is the shutdown sequence, set by addShutdown: /prestop, the
	// signals and wrap mode all run it.
	drain *shutdown.Sequence

	// prober is set by addProbe; a reload reconfigures it.
	prober *probe.Runner
	// logLevel is the level of log, which a reload may change.
	logLevel *slog.LevelVar
	// getenv reads the environment on a reload; nil means os.Getenv.
	getenv func(string) string
	// hostname is the host name cfg was loaded with; a reload loads with
	// it again, as what depends on it is read once at start-up.
	hostname string
	// configFrom is the config file's content cfg was read from: the
	// watch reports any change since, even one during start-up.
	configFrom watch.Snapshot
	// onDrainTimings, set by addShutdown, is told of new drain timings by
	// a reload.
	onDrainTimings func(delay, timeout time.Duration)

	// wrapMode is set for `outrider run -- CMD…`: outrider starts the app
	// as childArgv and owns it as child; SIGHUP and friends go to it, and
	// do not reload.
	wrapMode  bool
	childArgv []string
	child     *wrap.Child

	// stopSignals ends the subscription addSignals made, once the whole
	// run group is done.
	stopSignals func()
	// serverConnsClosed counts, by server, the connections the metrics
	// and admin servers closed to stay within maxServerConns.
	serverConnsClosed *prometheus.CounterVec
}

// Readiness conditions, in the order /ready reports them.
const (
	condApp         = "app"
	condRegistered  = "registered"
	condMaintenance = "maintenance"
	condDraining    = "draining"
)

// readinessConditions lists the conditions /ready checks for cfg.
func readinessConditions(cfg config.Config) []string {
	conds := []string{condApp}
	if cfg.Registry.Enabled() {
		conds = append(conds, condRegistered)
	}
	return append(conds, condMaintenance, condDraining)
}

// runAgent implements plain `outrider`: run as a sidecar until a signal.
func runAgent(getenv func(string) string, stderr io.Writer) int {
	a, ok := agentFromEnv(getenv, stderr)
	if !ok {
		return exitUsage
	}
	if err := a.build(); err != nil {
		a.log.Error("outrider cannot start", "err", err)
		return exitFailed
	}
	a.logStart("sidecar")
	return a.run()
}

// agentFromEnv loads the configuration from getenv (printing every error
// to stderr; false then) and returns an agent logging to stderr at the
// configured, reloadable level.
func agentFromEnv(getenv func(string) string, stderr io.Writer) (*agent, bool) {
	host, _ := os.Hostname()
	cfg, data, ok := loadConfig(getenv, host, stderr)
	if !ok {
		return nil, false
	}
	level := new(slog.LevelVar)
	a := newAgent(cfg, newLogger(cfg.Log, level, stderr))
	a.logLevel, a.getenv, a.hostname = level, getenv, host
	if cfg.ConfigFile != "" {
		a.configFrom = watch.SnapshotOf(data)
	}
	return a, true
}

// newAgent returns an agent with its shared pieces and no actors yet.
func newAgent(cfg config.Config, log *slog.Logger) *agent {
	return &agent{
		cfg:     cfg,
		log:     log,
		reg:     exporter.NewRegistry(),
		gate:    readiness.New(readinessConditions(cfg)...),
		metrics: http.NewServeMux(),
		admin:   http.NewServeMux(),
		started: time.Now(),
		status:  map[string]func() any{},
	}
}

// run runs every actor until the first one returns, stops the rest, and
// maps the cause to an exit status: the one a stopStatus carries (0 after
// a drain, the app's in wrap mode), 0 when every actor is done, 1 for a
// failure.
func (a *agent) run() int {
	err := a.group.Run()
	if a.stopSignals != nil {
		a.stopSignals()
	}
	var st stopStatus
	switch {
	case err == nil:
		a.log.Info("outrider stopped", "reason", stopReason(err))
		return exitOK
	case errors.As(err, &st):
		if st.code == exitOK {
			a.log.Info("outrider stopped", "reason", st.reason, "status", st.code)
		} else {
			a.log.Warn("outrider stopped", "reason", st.reason, "status", st.code)
		}
		return st.code
	}
	a.log.Error("outrider stopped on an error", "err", err)
	return exitFailed
}

func stopReason(err error) string {
	if err == nil {
		return "done"
	}
	return err.Error()
}

// build wires every component into the run group. Listeners are bound
// here, before anything runs, so a port in use stops start-up at once.
func (a *agent) build() error {
	a.metrics.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	a.metrics.Handle("GET /ready", a.gate)
	a.metrics.Handle("GET /metrics", exporter.Handler(a.reg))
	a.admin.HandleFunc("GET /status", a.serveStatus)

	// Each component adds its actors, handlers, metrics and conditions, in
	// data-flow order: probe → verdict → registry and readiness; the drain
	// sequence stands on the proxy and the registry.
	// The signal actor comes first so that it is the one that stops the rest.
	a.addSignals()
	a.addReaper()
	a.gate.Set(condMaintenance, true, "off")
	for _, add := range []func() error{a.addProbe, a.addExporter, a.addProxy, a.addRegistry, a.addPeers, a.addShutdown, a.addReload} {
		if err := add(); err != nil {
			return err
		}
	}

	serverConnsClosed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outrider_server_connections_closed_total",
		Help: "Connections to the metrics or admin listener closed to keep the server within its bound of connections (a flood).",
	}, []string{"server"})
	if err := a.reg.Register(serverConnsClosed); err != nil {
		return fmt.Errorf("register server metrics: %w", err)
	}
	a.serverConnsClosed = serverConnsClosed
	if err := a.serve("metrics", "OUTRIDER_METRICS_LISTEN", a.cfg.Listen.Metrics, a.metrics, 30*time.Second); err != nil {
		return err
	}
	// /prestop, which answers when the drain is done, lifts the write
	// deadline for itself.
	if err := a.serve("admin", "OUTRIDER_ADMIN_LISTEN", a.cfg.Listen.Admin,
		refuseBrowsers(a.cfg.Listen.AdminToken.Reveal(), requireToken(a.cfg.Listen.AdminToken.Reveal(), a.admin)), 30*time.Second); err != nil {
		return err
	}
	if a.wrapMode {
		// Last, once every listener is bound: a port in use must not leave
		// an app behind.
		if err := a.startChild(); err != nil {
			return err
		}
	}
	// The app has its copies of the descriptors outrider inherited; an
	// exec probe gets none.
	wrap.CloseInheritedOnExec()
	return nil
}

// startChild starts the wrapped app with outrider's environment and
// standard streams.
func (a *agent) startChild() error {
	child, err := wrap.Start(a.childArgv, childEnv(os.Environ()), os.Stdin, os.Stdout, os.Stderr)
	if err != nil {
		return &childStartError{err}
	}
	a.child = child
	a.log.Info("app started", "app_pid", child.Pid(), "command", a.childArgv)
	// As PID 1 of a container outrider needs no keeper: when it dies, the
	// kernel kills every process of its PID namespace.
	if os.Getpid() != 1 {
		if err := child.Keep(a.cfg.Drain.AppStopTimeout); err != nil {
			a.log.Warn("should outrider die, what the app started may outlive it", "err", err)
		}
	}
	return nil
}

// ownSecrets are the variables of outrider's environment that hold its
// own credentials, which a wrapped app has no use for and does not get.
// CONSUL_HTTP_TOKEN and CONSUL_HTTP_AUTH it does get: an app with a Consul
// client of its own reads the same names.
var ownSecrets = []string{"OUTRIDER_ADMIN_TOKEN", "OUTRIDER_PROBE_HEADERS", "OUTRIDER_PROBE_ENV"}

// childEnv is the wrapped app's environment: outrider's, without
// ownSecrets, and with OUTRIDER_PROBE's URL password masked.
func childEnv(environ []string) []string {
	return probe.ScrubEnv(environ, func(name string) bool { return slices.Contains(ownSecrets, name) })
}

// childStartError is a wrapped app that could not be started, which
// outrider exits on with a shell's status (wrap.StartFailureStatus).
type childStartError struct{ err error }

func (e *childStartError) Error() string { return e.err.Error() }
func (e *childStartError) Unwrap() error { return e.err }

// addContext adds an actor that runs until its context is cancelled.
func (a *agent) addContext(name string, execute func(ctx context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	a.group.Add(func() error {
		if err := execute(ctx); err != nil && ctx.Err() == nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	}, func(error) { cancel() })
}

// serve binds addr and adds an actor serving h there.
func (a *agent) serve(name, envVar, addr string, h http.Handler, writeTimeout time.Duration) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s listener (%s=%s): %w", name, envVar, addr, err)
	}
	srv := newServer(h, writeTimeout, maxServerConns, a.serverConnsClosed.WithLabelValues(name), a.log.With("server", name))
	a.log.Info("listening", "server", name, "addr", ln.Addr().String())
	// The interrupt only starts the shutdown, and the actor waits for it:
	// the group interrupts its actors one after the other, so the servers
	// wait for their requests in flight (up to 5 s each) at the same time,
	// not in turn.
	stopped := make(chan struct{})
	a.group.Add(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("%s server on %s: %w", name, addr, err)
		}
		<-stopped
		return nil
	}, func(error) {
		go func() {
			defer close(stopped)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
		}()
	})
	return nil
}

// consulURL is the Consul agent's address as consul/api will use it:
// CONSUL_HTTP_ADDR may carry its own scheme (http://, https://, unix://),
// which the client takes in place of the default one.
func consulURL(c *consul.Config) string {
	scheme, addr := c.Scheme, c.Address
	if s, rest, ok := strings.Cut(addr, "://"); ok {
		addr = rest
		switch s {
		case "https", "unix":
			scheme = s
		}
	}
	// consul/api would not send credentials in the address, and
	// checkConsulAddr refuses them; should one get here, it is not shown.
	return scheme + "://" + redactUser(addr)
}

// consulConfig is consul/api's configuration from the CONSUL_* variables,
// the way the Consul CLI reads them, with one default of outrider's own:
// without CONSUL_HTTP_ADDR, HOST_IP (the node's address, which Kubernetes
// gives through the downward API) names the node's client agent on port
// 8500. A manifest cannot join an IPv6 address and a port itself:
// "$(HOST_IP):8500" is not an address on an IPv6 node.
func consulConfig() *consul.Config {
	c := consul.DefaultConfig()
	if os.Getenv(consul.HTTPAddrEnvName) == "" {
		if ip, err := netip.ParseAddr(os.Getenv("HOST_IP")); err == nil {
			c.Address = net.JoinHostPort(ip.String(), "8500")
		}
	}
	return c
}

// hostIPWarning is a warning when HOST_IP is set but is not an IP address
// where it would name the Consul agent (the registry is on and
// CONSUL_HTTP_ADDR unset): it is then not used, and the agent is looked
// for at consul/api's default address instead.
func hostIPWarning(registry bool) string {
	v := os.Getenv("HOST_IP")
	if !registry || v == "" || os.Getenv(consul.HTTPAddrEnvName) != "" {
		return ""
	}
	if _, err := netip.ParseAddr(v); err == nil {
		return ""
	}
	return fmt.Sprintf("HOST_IP=%q is not an IP address, so the Consul agent is looked for at %s: "+
		"set HOST_IP to the node's address (the downward API's status.hostIP) or CONSUL_HTTP_ADDR to the agent's",
		v, consulConfig().Address)
}

// consulClient returns the agent's Consul client, built once from
// consulConfig, and the agent's URL for messages.
func (a *agent) consulClient() (*consul.Client, string, error) {
	cfg := consulConfig()
	url := consulURL(cfg)
	if a.consul != nil {
		return a.consul, url, nil
	}
	c, err := consul.NewClient(cfg)
	if err != nil {
		return nil, url, fmt.Errorf("consul client for %s from the CONSUL_* variables: %w", url, err)
	}
	c.AddHeader("User-Agent", version.UserAgent())
	a.consul = c
	if cfg.TokenFile != "" {
		a.consulToken = &tokenFile{path: cfg.TokenFile, log: a.log.With("component", "consul")}
	}
	return c, url, nil
}
