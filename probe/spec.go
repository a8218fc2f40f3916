package probe

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/outrider-sidecar/outrider/internal/hostport"
)

// Kind names a probe protocol.
type Kind string

// The probe protocols outrider speaks.
const (
	KindHTTP  Kind = "http"
	KindHTTPS Kind = "https"
	KindTCP   Kind = "tcp"
	KindGRPC  Kind = "grpc"
	KindExec  Kind = "exec"
)

// Spec is one parsed probe target, as OUTRIDER_PROBE describes it.
type Spec struct {
	Kind Kind
	// URL is the target of an http or https probe.
	URL *url.URL
	// Address is host:port for tcp and grpc probes.
	Address string
	// Service is the gRPC health service name; empty asks about the server.
	Service string
	// Command is the argv of an exec probe; it runs without a shell.
	Command []string
	// Header holds extra request headers for http and https probes.
	Header http.Header
	// Insecure skips TLS verification for https probes.
	Insecure bool
	// Env is the environment of an exec probe's command; nil means
	// outrider's own minus SecretEnv (see ExecEnv).
	Env []string
}

// Equal reports whether s and o are the same probe. Their String forms
// cannot tell: they mask a URL's password and leave header values out.
func (s Spec) Equal(o Spec) bool {
	return s.Kind == o.Kind && s.SameURL(o) && s.Address == o.Address && s.Service == o.Service &&
		slices.Equal(s.Command, o.Command) && s.SameHeader(o) && s.Insecure == o.Insecure &&
		slices.Equal(s.Env, o.Env)
}

// SameURL reports whether s and o have the same URL, password included.
func (s Spec) SameURL(o Spec) bool {
	if s.URL == nil || o.URL == nil {
		return s.URL == o.URL
	}
	return s.URL.String() == o.URL.String()
}

// SameHeader reports whether s and o send the same extra headers, values
// included.
func (s Spec) SameHeader(o Spec) bool {
	return maps.EqualFunc(s.Header, o.Header, slices.Equal)
}

// String gives the spec back in OUTRIDER_PROBE form, without header values
// and with a URL password masked, so that it can be logged.
func (s Spec) String() string {
	switch s.Kind {
	case KindHTTP, KindHTTPS:
		if s.URL == nil {
			return ""
		}
		return s.URL.Redacted()
	case KindTCP:
		return "tcp://" + s.Address
	case KindGRPC:
		if s.Service != "" {
			return "grpc://" + s.Address + "/" + s.Service
		}
		return "grpc://" + s.Address
	case KindExec:
		return "exec:" + strings.Join(s.Command, " ")
	}
	return ""
}

// ErrBadSpec is wrapped by every error ParseSpec returns.
var ErrBadSpec = errors.New("bad probe spec")

// ParseSpec parses an OUTRIDER_PROBE value: http://host:port/path,
// https://…, tcp://host:port, grpc://host:port[/service] or exec:/cmd arg….
// Schemes are case-insensitive, as URL schemes are. An exec command is
// split on white space; there is no shell and no quoting. A port, when
// given, is 1-65535.
func ParseSpec(raw string) (Spec, error) {
	raw = strings.TrimSpace(raw)
	if rest, ok := cutPrefixFold(raw, "exec:"); ok {
		argv := strings.Fields(rest)
		if len(argv) == 0 {
			return Spec{}, fmt.Errorf("%w: exec: names no command (want exec:/path/to/cmd arg…)", ErrBadSpec)
		}
		return Spec{Kind: KindExec, Command: argv}, nil
	}
	if scheme, host, ok := bareIPv6Host(raw); ok {
		return Spec{}, fmt.Errorf("%w: %s target %q has an IPv6 address without brackets (want e.g. %s://[::1]:8080)", ErrBadSpec, scheme, host, scheme)
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error repeats the value, which the caller names already.
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			err = ue.Err
		}
		return Spec{}, fmt.Errorf("%w: %v (want http://host:port/path, https://…, tcp://host:port, grpc://host:port[/service] or exec:/cmd arg…)", ErrBadSpec, err)
	}
	switch Kind(u.Scheme) {
	case KindHTTP, KindHTTPS:
		if u.Host == "" || u.Hostname() == "" {
			return Spec{}, fmt.Errorf("%w: %s URL has no host (want e.g. http://127.0.0.1:8080/healthz)", ErrBadSpec, u.Scheme)
		}
		if p := u.Port(); p != "" && !dialPort(p) {
			return Spec{}, fmt.Errorf("%w: %s URL has a bad port %q (want 1-65535)", ErrBadSpec, u.Scheme, p)
		}
		if u.Path == "" {
			u.Path = "/"
		}
		return Spec{Kind: Kind(u.Scheme), URL: u}, nil
	case KindTCP, KindGRPC:
		if err := checkHostPort(u.Host); err != nil {
			return Spec{}, fmt.Errorf("%w: %s target %v (want %s://host:port)", ErrBadSpec, u.Scheme, err, u.Scheme)
		}
		if _, p, _ := net.SplitHostPort(u.Host); !dialPort(p) {
			return Spec{}, fmt.Errorf("%w: %s target %q has a bad port (want 1-65535)", ErrBadSpec, u.Scheme, u.Host)
		}
		if err := unusedURLParts(u); err != nil {
			return Spec{}, err
		}
		s := Spec{Kind: Kind(u.Scheme), Address: u.Host}
		if s.Kind == KindGRPC {
			s.Service = strings.Trim(u.Path, "/")
		} else if strings.Trim(u.Path, "/") != "" {
			return Spec{}, fmt.Errorf("%w: tcp target has a path %q (want tcp://host:port)", ErrBadSpec, u.Path)
		}
		return s, nil
	case "":
		return Spec{}, fmt.Errorf("%w: no scheme (want http://, https://, tcp://, grpc:// or exec:)", ErrBadSpec)
	default:
		return Spec{}, fmt.Errorf("%w: unknown scheme %q (want http, https, tcp, grpc or exec)", ErrBadSpec, u.Scheme)
	}
}

// unusedURLParts refuses the parts of a tcp or grpc target that the probe
// would ignore: user information, a query and a fragment. Whoever wrote
// grpc://…?service=x believed the probe asked about x; it asked about
// the server.
func unusedURLParts(u *url.URL) error {
	want := "want tcp://host:port: a tcp probe only opens a connection"
	if Kind(u.Scheme) == KindGRPC {
		want = "want grpc://host:port, or grpc://host:port/service to ask about one health service, e.g. grpc://127.0.0.1:9090/pkg.Service"
	}
	var part string
	switch {
	case u.User != nil:
		part = "user information" // it may be a password: not shown
	case u.RawQuery != "" || u.ForceQuery:
		part = fmt.Sprintf("a query %q", "?"+u.RawQuery)
	case u.Fragment != "":
		part = fmt.Sprintf("a fragment %q", "#"+u.EscapedFragment())
	default:
		return nil
	}
	return fmt.Errorf("%w: %s target has %s, which the probe would ignore (%s)", ErrBadSpec, u.Scheme, part, want)
}

// ParseHeaders parses "Name: value,Name: value" into a header set. A
// comma separates headers, but an item without a colon continues the
// value of the header before it: "Accept: application/json, text/plain"
// is one header whose value holds a comma. Errors name the item by
// position only: a value may be a credential.
func ParseHeaders(raw string) (http.Header, error) {
	type field struct {
		item        int
		name, value string
	}
	var fields []field
	n := 0
	for item := range strings.SplitSeq(raw, ",") {
		if strings.TrimSpace(item) == "" {
			continue
		}
		n++
		name, value, ok := strings.Cut(item, ":")
		if !ok && len(fields) > 0 {
			fields[len(fields)-1].value += "," + item
			continue
		}
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return nil, fmt.Errorf("item %d is not \"Name: value\"", n)
		}
		if !validFieldName(name) {
			return nil, fmt.Errorf("item %d has a name that is not a header field name (letters, digits and !#$%%&'*+-.^_`|~)", n)
		}
		fields = append(fields, field{n, name, value})
	}
	h := http.Header{}
	for _, f := range fields {
		value := strings.TrimSpace(f.value)
		if strings.ContainsFunc(value, isCTL) {
			return nil, fmt.Errorf("item %d has a control character in its value", f.item)
		}
		if http.CanonicalHeaderKey(f.name) == "Host" && (!validHost(value) || strings.Contains(value, ",")) {
			return nil, fmt.Errorf("item %d has a Host value that is not a host or host:port, such as app.example:8080", f.item)
		}
		h.Add(f.name, value)
	}
	return h, nil
}

// validFieldName reports whether name is an HTTP field name: a token
// (RFC 9110 5.1).
func validFieldName(name string) bool {
	for _, c := range []byte(name) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return name != ""
}

// validHost reports whether v is made of the bytes Go's client allows in
// a Host header (those of a host or host:port): it sends any other value
// (a URL, a space) as an empty Host, and the app would answer a request
// it was not meant to get.
func validHost(v string) bool {
	for _, c := range []byte(v) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c >= 0x80:
			// A non-ASCII name is sent in punycode.
		case strings.IndexByte("!$%&'()*+,-.:;=[]_~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// isCTL reports whether r is a control character other than a tab, which
// a field value may not hold.
func isCTL(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }

func checkHostPort(hostport string) error {
	if hostport == "" {
		return errors.New("is empty")
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("%q: %v", hostport, err)
	}
	if host == "" {
		return fmt.Errorf("%q has no host", hostport)
	}
	if port == "" {
		return fmt.Errorf("%q has no port", hostport)
	}
	return nil
}

// bareIPv6Host finds a URL whose host is an IPv6 address without the
// brackets a URL needs, which url.Parse and net.SplitHostPort refuse as a
// bad port or too many colons. It returns the scheme, in lower case, and
// the host and port as written (after any user information).
func bareIPv6Host(raw string) (scheme, host string, ok bool) {
	scheme, rest, found := strings.Cut(raw, "://")
	if !found {
		return "", "", false
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	host = rest[strings.LastIndexByte(rest, '@')+1:]
	return strings.ToLower(scheme), host, hostport.BareIPv6(host)
}

// dialPort reports whether port is one a probe can connect to: 1-65535.
// Port 0 only means "any" to a listener.
func dialPort(port string) bool {
	n, err := strconv.Atoi(port)
	return err == nil && n >= 1 && n <= 65535
}

// cutPrefixFold is strings.CutPrefix ignoring case.
func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return s, false
	}
	return s[len(prefix):], true
}
