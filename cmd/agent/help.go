package main

import (
	"fmt"
	"io"
	"strings"
)

// docsURL is where the README and docs/ are: a VM install or the image
// holds the binary alone.
const docsURL = "https://github.com/outrider-sidecar/outrider"

// helpVar is one line of outrider help's list of variables.
type helpVar struct{ name, def, meaning string }

// helpVars lists every variable outrider reads, in the README's order,
// each in a line: the README's table has the full text.
var helpVars = []helpVar{
	{"OUTRIDER_SERVICE_NAME", "", "Consul service name; required with OUTRIDER_REGISTRY=consul"},
	{"OUTRIDER_SERVICE_ID", "<name>-<hostname>", "unique, stable instance ID (<name>-$POD_NAME in Kubernetes)"},
	{"OUTRIDER_SERVICE_TAGS", "", "Consul tags, a,b,c (reloadable)"},
	{"OUTRIDER_SERVICE_META", "", "Consul meta, k1=v1,k2=v2 (reloadable)"},
	{"OUTRIDER_SERVICE_ADDRESS", "$POD_IP, else the first non-loopback address", "address registered in Consul: an IP address or a host name"},
	{"OUTRIDER_SERVICE_PORT", "the proxy's port, else the app's", "port registered in Consul"},
	{"OUTRIDER_APP_ADDR", "127.0.0.1:8080", "where the app listens, host:port"},
	{"OUTRIDER_APP_PID_FILE", "", "find the app process from a pid file"},
	{"OUTRIDER_APP_PROCESS", "", "find the app process by a regular expression on its command line"},
	{"OUTRIDER_PROC_ROOT", "/proc", "where procfs is mounted"},
	{"OUTRIDER_APP_CHILDREN", "true", "the app's figures count its descendants too; false: the process alone"},
	{"OUTRIDER_PROBE", "tcp://$OUTRIDER_APP_ADDR", "http://host:port/path, https://…, tcp://host:port, grpc://host:port[/service], exec:/path arg… (reloadable)"},
	{"OUTRIDER_PROBE_HEADERS", "", "probe request headers, Name: value,Name: value; http and https only (reloadable)"},
	{"OUTRIDER_PROBE_INSECURE", "false", "skip TLS verification of an https probe (reloadable)"},
	{"OUTRIDER_PROBE_PERIOD", "5s", "time between probes (reloadable)"},
	{"OUTRIDER_PROBE_TIMEOUT", "1s", "one probe's limit (reloadable)"},
	{"OUTRIDER_PROBE_INITIAL_DELAY", "0s", "wait before the first probe"},
	{"OUTRIDER_PROBE_FAILURE_THRESHOLD", "3", "consecutive failures before the app is unhealthy (reloadable)"},
	{"OUTRIDER_PROBE_SUCCESS_THRESHOLD", "1", "consecutive successes before it is healthy again (reloadable)"},
	{"OUTRIDER_PROBE_ENV_DENY", "", "variables an exec probe does not get from outrider's environment, A,B"},
	{"OUTRIDER_PROBE_ENV", "", "variables added to an exec probe's environment, NAME=value,NAME=value"},
	{"OUTRIDER_REGISTRY", "consul", "consul, or none to run without a registry"},
	{"CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, …", "as the Consul CLI", "the Consul agent and its token, TLS and so on, read as the Consul CLI reads them"},
	{"HOST_IP", "", "without CONSUL_HTTP_ADDR, the Consul agent is at $HOST_IP:8500"},
	{"OUTRIDER_CHECK_TTL", "15s", "TTL of the Consul check (reloadable)"},
	{"OUTRIDER_DEREGISTER_CRITICAL_AFTER", "1m", "Consul reaps the instance if outrider dies (at least 1m)"},
	{"OUTRIDER_PROXY_LISTEN", ":15001", "inbound proxy listener; off disables the proxy"},
	{"OUTRIDER_METRICS_LISTEN", ":15090", "/metrics, /healthz, /ready, /v1/qps"},
	{"OUTRIDER_ADMIN_LISTEN", "127.0.0.1:15000", "/status, /prestop, /drain, /maintenance, /v1/peers"},
	{"OUTRIDER_ADMIN_TOKEN", "", "bearer token of the admin endpoints; required off loopback"},
	{"OUTRIDER_QPS_WINDOW", "10s", "window of the request rate, 1s to 1h in whole seconds"},
	{"OUTRIDER_PROXY_MAX_CONNS", "auto", "client connections the proxy holds at once"},
	{"OUTRIDER_PROXY_MAX_IDLE_APP_CONNS", "128", "idle keep-alive connections to the app"},
	{"OUTRIDER_PROXY_TUNNEL_IDLE_TIMEOUT", "1h", "an upgraded tunnel (WebSocket) idle this long is closed"},
	{"OUTRIDER_PROXY_UNDERSCORE_HEADERS", "drop", "request header names with _ are dropped; keep forwards them"},
	{"OUTRIDER_PROXY_EVENT_LOOP", "on", "serve keep-alive connections from event loops (Linux); off: a goroutine each"},
	{"OUTRIDER_DRAIN_DELAY", "5s", "after deregistering, how long new requests are still served (reloadable)"},
	{"OUTRIDER_DRAIN_TIMEOUT", "25s", "the most to wait for requests in flight (reloadable)"},
	{"OUTRIDER_APP_STOP_TIMEOUT", "10s", "wrap mode: the app's time to exit after SIGTERM"},
	{"OUTRIDER_GRACE_PERIOD", "", "the platform's stop budget (terminationGracePeriodSeconds, TimeoutStopSec), checked against the drain"},
	{"OUTRIDER_CONFIG_FILE", "", "YAML or JSON file of the reloadable settings, watched and reloaded, and on SIGHUP"},
	{"OUTRIDER_LOG_FORMAT", "json", "json or text, on stderr"},
	{"OUTRIDER_LOG_LEVEL", "info", "debug, info, warn or error (reloadable)"},
	{"GOMAXPROCS", "1", "cores outrider uses"},
	{"GOGC", "25", "heap growth before a collection, in percent"},
}

// writeHelp prints the usage and every variable, default and meaning:
// the README the usage used to point to is not on a VM the install
// steps set up, nor in the image.
func writeHelp(w io.Writer) {
	var b strings.Builder
	b.WriteString(usage)
	b.WriteString("\nVariables (default in brackets; reloadable ones may also be keys of OUTRIDER_CONFIG_FILE,\nin lower case without OUTRIDER_):\n")
	for _, v := range helpVars {
		def := ""
		if v.def != "" {
			def = " [" + v.def + "]"
		}
		fmt.Fprintf(&b, "  %s%s\n      %s\n", v.name, def, v.meaning)
	}
	b.WriteString("\n`outrider check-config` prints the value of each in force. Every variable in full, the\nconfig file and the endpoints: " + docsURL + " (README.md and docs/).\n")
	fmt.Fprint(w, b.String())
}
