package config

import (
	"regexp"
	"slices"
	"strings"
)

// Vars names every OUTRIDER_* variable outrider reads.
var Vars = []string{
	"OUTRIDER_ADMIN_LISTEN", "OUTRIDER_ADMIN_TOKEN",
	"OUTRIDER_APP_ADDR", "OUTRIDER_APP_CHILDREN", "OUTRIDER_APP_PID_FILE", "OUTRIDER_APP_PROCESS", "OUTRIDER_APP_STOP_TIMEOUT",
	"OUTRIDER_CHECK_TTL", "OUTRIDER_CONFIG_FILE", "OUTRIDER_DEREGISTER_CRITICAL_AFTER",
	"OUTRIDER_DRAIN_DELAY", "OUTRIDER_DRAIN_TIMEOUT", "OUTRIDER_GRACE_PERIOD",
	"OUTRIDER_LOG_FORMAT", "OUTRIDER_LOG_LEVEL", "OUTRIDER_METRICS_LISTEN",
	"OUTRIDER_PROBE", "OUTRIDER_PROBE_ENV", "OUTRIDER_PROBE_ENV_DENY", "OUTRIDER_PROBE_FAILURE_THRESHOLD",
	"OUTRIDER_PROBE_HEADERS", "OUTRIDER_PROBE_INITIAL_DELAY", "OUTRIDER_PROBE_INSECURE", "OUTRIDER_PROBE_PERIOD",
	"OUTRIDER_PROBE_SUCCESS_THRESHOLD", "OUTRIDER_PROBE_TIMEOUT", "OUTRIDER_PROC_ROOT",
	"OUTRIDER_PROXY_EVENT_LOOP", "OUTRIDER_PROXY_LISTEN", "OUTRIDER_PROXY_MAX_CONNS",
	"OUTRIDER_PROXY_MAX_IDLE_APP_CONNS", "OUTRIDER_PROXY_TUNNEL_IDLE_TIMEOUT", "OUTRIDER_PROXY_UNDERSCORE_HEADERS",
	"OUTRIDER_QPS_WINDOW", "OUTRIDER_REGISTRY",
	"OUTRIDER_SERVICE_ADDRESS", "OUTRIDER_SERVICE_ID", "OUTRIDER_SERVICE_META", "OUTRIDER_SERVICE_NAME",
	"OUTRIDER_SERVICE_PORT", "OUTRIDER_SERVICE_TAGS",
}

// UnknownVars warns of each OUTRIDER_* variable in environ (NAME=value
// pairs, as os.Environ gives them) that outrider does not read: a
// misspelt name leaves its setting at the default without a word, where
// a config file's unknown key is an error.
//
// The variables Kubernetes sets for a Service whose name starts with
// "outrider" (OUTRIDER_PORT, OUTRIDER_SERVICE_HOST, …: service links) are
// not the user's doing, and are not warned of. A name that ends in _PORT
// is one only with a service link's value, proto://ip:port: a port number
// there (OUTRIDER_APP_PORT=9090) is a guess at a setting, and is warned of
// with the variable that holds that port.
func UnknownVars(environ []string) []string {
	var warnings []string
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "OUTRIDER_") || slices.Contains(Vars, name) || isServiceLink(name, value) {
			continue
		}
		w := name + " is not an outrider variable and is ignored"
		if near := nearestVar(name); near != "" {
			w += " (did you mean " + near + "?)"
		}
		warnings = append(warnings, w)
	}
	return warnings
}

// serviceLink matches the names of the variables the kubelet sets for
// each Service of the namespace (unless enableServiceLinks is false).
var serviceLink = regexp.MustCompile(`_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT|PORT_[0-9]+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)$`)

// isServiceLink reports whether name=value may be a service link. Of the
// names that end in _PORT, <SERVICE>_SERVICE_PORT and
// <SERVICE>_PORT_<n>_<PROTO>_PORT hold a number, and <SERVICE>_PORT the
// Service's first port as a URL, e.g. tcp://10.0.0.9:15090.
func isServiceLink(name, value string) bool {
	if !serviceLink.MatchString(name) {
		return false
	}
	if numberedPort.MatchString(name) || !strings.HasSuffix(name, "_PORT") {
		return true
	}
	return portURL.MatchString(value)
}

var (
	numberedPort = regexp.MustCompile(`(_SERVICE_PORT|_PORT_[0-9]+_(TCP|UDP|SCTP)_PORT)$`)
	portURL      = regexp.MustCompile(`^(tcp|udp|sctp)://`)
)

// nearestVar returns the name in Vars closest to name, if a few edits
// (a typo, a missing or doubled letter, a plural) make one from the other.
func nearestVar(name string) string {
	// A port of its own: outrider's ports are in its addresses.
	if base, ok := strings.CutSuffix(name, "_PORT"); ok {
		for _, v := range []string{base + "_ADDR", base + "_LISTEN"} {
			if slices.Contains(Vars, v) {
				return v
			}
		}
	}
	best, bestDist := "", 4
	for _, v := range Vars {
		if d := editDistance(name, v); d < bestDist {
			best, bestDist = v, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
