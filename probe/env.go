package probe

import (
	"slices"
	"strings"
)

// SecretEnv names the variables of outrider's environment that an exec
// probe's command never gets: the Consul and admin credentials, and probe
// headers, which may carry one.
var SecretEnv = []string{
	"CONSUL_HTTP_TOKEN",
	"CONSUL_HTTP_AUTH",
	"OUTRIDER_ADMIN_TOKEN",
	"OUTRIDER_PROBE_HEADERS",
	"OUTRIDER_PROBE_ENV",
}

// ExecEnv returns the environment of an exec probe's command: environ
// (outrider's own, as os.Environ gives it) minus SecretEnv and the names in
// deny, plus the NAME=value pairs of add, which win over inherited ones.
// An OUTRIDER_PROBE inherited (a config file's exec probe took the place
// of the environment's URL) has its URL password masked.
func ExecEnv(environ, deny, add []string) []string {
	drop := func(name string) bool {
		if slices.Contains(SecretEnv, name) || slices.Contains(deny, name) {
			return true
		}
		for _, p := range add {
			if n, _, _ := strings.Cut(p, "="); n == name {
				return true
			}
		}
		return false
	}
	return append(ScrubEnv(environ, drop), add...)
}

// ScrubEnv returns environ (NAME=value pairs) without the variables drop
// names, and with OUTRIDER_PROBE's URL password masked: the environment
// of a process outrider starts.
func ScrubEnv(environ []string, drop func(name string) bool) []string {
	env := make([]string, 0, len(environ))
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		switch {
		case drop(name):
		case name == "OUTRIDER_PROBE":
			env = append(env, name+"="+RedactSpec(value))
		default:
			env = append(env, kv)
		}
	}
	return env
}

// RedactSpec masks the password of a URL in an OUTRIDER_PROBE value that
// may not parse, so that an error can show the value: the text between
// the first ':' after "://" and the last '@' becomes "xxxxx", as
// url.URL.Redacted does.
func RedactSpec(raw string) string {
	i := strings.Index(raw, "://")
	if i < 0 {
		return raw
	}
	rest := raw[i+3:]
	at := strings.LastIndexByte(rest, '@')
	if at < 0 {
		return raw
	}
	colon := strings.IndexByte(rest[:at], ':')
	if colon < 0 {
		return raw
	}
	return raw[:i+3] + rest[:colon] + ":xxxxx" + rest[at:]
}

// ExplainSpecError returns what to show of a spec raw that ParseSpec
// refused with err: the value with its URL password masked, and why it
// was refused. The parser's reason may quote part of the password (a
// "/" in it ends the host, and what follows the ":" reads as a port),
// so for a value that holds one the reason is the masked value's.
func ExplainSpecError(raw string, err error) (value, why string) {
	value = RedactSpec(raw)
	if value != raw {
		if _, err = ParseSpec(value); err == nil {
			return value, "is not a valid URL: a password holding '/', '?', '#' or '%' must be percent-encoded (e.g. '/' as %2F)"
		}
	}
	return value, strings.TrimPrefix(err.Error(), ErrBadSpec.Error()+": ")
}
