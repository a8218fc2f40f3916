package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	consul "github.com/hashicorp/consul/api"
	"github.com/prometheus/procfs"

	"github.com/outrider-sidecar/outrider/config"
	"github.com/outrider-sidecar/outrider/internal/cgroup"
	"github.com/outrider-sidecar/outrider/internal/regularfile"
	"github.com/outrider-sidecar/outrider/internal/version"
)

func versionString() string { return version.String() }

// loadConfig reads the configuration, printing every error on its own
// line; hostname is the host's name, which the service ID defaults to. It
// returns the config file's content as it was read too (nil without one).
// OUTRIDER_PROC_ROOT and the CONSUL_* variables are checked whatever the
// other variables hold, so that their errors come with the others'.
func loadConfig(getenv func(string) string, hostname string, stderr io.Writer) (config.Config, []byte, bool) {
	cfg, data, err := config.LoadWithFile(getenv, hostname, interfaceAddr)
	var errs []error
	if err != nil {
		errs = unjoin(err)
	}
	if err := checkProcRoot(cfg.App.ProcRoot); err != nil {
		errs = append(errs, err)
	}
	if cfg.Registry.Enabled() && !refused(errs, "OUTRIDER_REGISTRY") {
		if err := checkConsulConfig(); err != nil {
			errs = append(errs, unjoin(err)...)
		}
	}
	if len(errs) > 0 {
		for _, e := range errs {
			fmt.Fprintf(stderr, "outrider: configuration: %v\n", e)
		}
		return cfg, nil, false
	}
	return cfg, data, true
}

// refused reports whether errs refuse the variable name: a refused
// OUTRIDER_REGISTRY stands for consul, its default, which was not asked
// for, so neither are Consul's settings.
func refused(errs []error, name string) bool {
	for _, e := range errs {
		if ce := (*config.Error)(nil); errors.As(e, &ce) && ce.Var == name {
			return true
		}
	}
	return false
}

// checkProcRoot opens OUTRIDER_PROC_ROOT as the app-process metrics do, so
// that a wrong path is a configuration error, caught by check-config too,
// rather than a failed start.
func checkProcRoot(root string) error {
	fs, err := procfs.NewFS(root)
	if err == nil {
		// NewFS only checks that root is a directory: a procfs has stat.
		_, err = fs.Stat()
	}
	if err != nil {
		return &config.Error{Var: "OUTRIDER_PROC_ROOT", Value: root,
			Want: "cannot be read as procfs (want its mount point, /proc by default): " + err.Error()}
	}
	return nil
}

// checkConsulConfig builds a Consul client from the CONSUL_* variables, the
// way the Consul CLI does, so that a missing token file or CA is caught now.
// Every file a variable names that outrider cannot read is an error naming
// that variable, all of them at once: consul/api stops at the first, and
// names the file but not the variable.
func checkConsulConfig() error {
	c := consulConfig()
	if err := checkConsulAddr(c.Address); err != nil {
		return err
	}
	if err := checkConsulFiles(c); err != nil {
		return err
	}
	if _, err := consul.NewClient(c); err != nil {
		return fmt.Errorf("consul client from the CONSUL_* variables: %w", err)
	}
	return nil
}

// checkConsulFiles reads each file (or, for CONSUL_CAPATH, directory) the
// CONSUL_* variables name, as outrider's user. A file must be a regular
// one, as the token file is read (token.go): consul/api reads a named pipe
// at start, which blocked the start, and check-config, until a writer came.
func checkConsulFiles(c *consul.Config) error {
	var errs []error
	for _, f := range []struct {
		name, path string
		dir        bool
	}{
		{consul.HTTPTokenFileEnvName, c.TokenFile, false},
		{consul.HTTPCAFile, c.TLSConfig.CAFile, false},
		{consul.HTTPCAPath, c.TLSConfig.CAPath, true},
		{consul.HTTPClientCert, c.TLSConfig.CertFile, false},
		{consul.HTTPClientKey, c.TLSConfig.KeyFile, false},
	} {
		if f.path == "" {
			continue
		}
		var err error
		if f.dir {
			_, err = os.ReadDir(f.path)
		} else {
			_, err = regularfile.Read(f.path)
		}
		nre := (*regularfile.NotRegularError)(nil)
		switch {
		case errors.As(err, &nre):
			errs = append(errs, &config.Error{Var: f.name, Value: f.path,
				Want: "is not a regular file (" + nre.Kind() + "); point it at a file"})
		case errors.Is(err, syscall.ENOTDIR):
			errs = append(errs, &config.Error{Var: f.name, Value: f.path,
				Want: "is not a directory; point it at a directory of PEM certificates, or set CONSUL_CACERT for one file"})
		case errors.Is(err, fs.ErrNotExist):
			errs = append(errs, &config.Error{Var: f.name, Value: f.path,
				Want: "does not exist: set the path of the file, or unset the variable"})
		case err != nil:
			if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
				err = pe.Err // without the path the error repeats
			}
			errs = append(errs, &config.Error{Var: f.name, Value: f.path,
				Want: fmt.Sprintf("cannot be read (%v): make it readable by the user outrider runs as", err)})
		}
	}
	return errors.Join(errs...)
}

// checkConsulAddr refuses a CONSUL_HTTP_ADDR that consul/api would take
// and then fail on at every call, retried for ever: credentials, which
// it never sends (and which would then show wherever the address does),
// a missing host, a port out of range, a path without http:// or https://
// (consul/api takes it as part of the host) or a path that is only "/"
// (it would ask Consul for //v1/…, which Consul answers with a 404).
func checkConsulAddr(addr string) error {
	bad := func(want string) error {
		return &config.Error{Var: "CONSUL_HTTP_ADDR", Value: redactUser(addr), Want: want}
	}
	rest, scheme := addr, ""
	if s, r, ok := strings.Cut(addr, "://"); ok {
		if s == "unix" {
			return nil // a socket path
		}
		rest, scheme = r, s
	}
	// An '@' after a '/' is a password that holds one, not a path: Consul
	// serves no path with an '@' in it.
	if strings.Contains(rest, "@") {
		return bad("holds a user name or password, which Consul's client does not send: set the address alone, and the credentials in CONSUL_HTTP_AUTH=user:password")
	}
	host, path, hasPath := strings.Cut(rest, "/")
	if host == "" {
		return bad("has no host (want host:port, e.g. 127.0.0.1:8500)")
	}
	switch {
	case hasPath && scheme == "":
		return bad("has a path but no scheme, so Consul's client would take the path as part of the host name: drop the path, or start with http:// or https:// for a path prefix")
	case hasPath && strings.Trim(path, "/") == "":
		return bad("ends with /, so Consul's client would ask for //v1/…, which Consul does not serve: drop the trailing /, e.g. " + scheme + "://" + host)
	}
	h, port, err := net.SplitHostPort(host)
	if err != nil {
		bracketed := strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]")
		if strings.Contains(host, ":") && !bracketed {
			return bad("is not host:port (want e.g. 127.0.0.1:8500, or [::1]:8500)")
		}
		return nil // a host without a port: the scheme's port
	}
	if n, ok := config.ParsePort(port); !ok || n < 1 || h == "" {
		return bad("is not host:port with a port from 1 to 65535 (want e.g. 127.0.0.1:8500)")
	}
	return nil
}

// redactUser masks the user information of "scheme://user:password@host"
// (or of "user:password@host", with no scheme): everything up to the last
// '@', as a password may hold a '/' that is not percent-encoded.
func redactUser(addr string) string {
	scheme, rest, ok := strings.Cut(addr, "://")
	if !ok {
		scheme, rest = "", addr
	}
	at := strings.LastIndexByte(rest, '@')
	if at < 0 {
		return addr
	}
	out := "xxxxx" + rest[at:]
	if ok {
		out = scheme + "://" + out
	}
	return out
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// checkConfig implements `outrider check-config`.
func checkConfig(getenv func(string) string, stdout, stderr io.Writer) int {
	host, _ := os.Hostname()
	cfg, _, ok := loadConfig(getenv, host, stderr)
	if !ok {
		return exitUsage
	}
	for _, s := range cfg.Effective() {
		fmt.Fprintf(stdout, "%s=%s\n", s.Var, s.Value)
	}
	if cfg.Registry.Enabled() {
		for _, s := range consulSettings(consulConfig()) {
			fmt.Fprintf(stdout, "%s=%s\n", s.Var, s.Value)
		}
	}
	if cfg.Drain.GracePeriod <= 0 {
		fmt.Fprintf(stdout, "# OUTRIDER_GRACE_PERIOD is unset: whether the stop fits in the platform's grace period is not checked, "+
			"and the watch for an app restarted after a preStop drain counts Kubernetes' default, %s\n", defaultGracePeriod)
	}
	warnings := append(cfg.Warnings(), config.UnknownVars(os.Environ())...)
	if w := hostIPWarning(cfg.Registry.Enabled()); w != "" {
		warnings = append(warnings, w)
	}
	if fds, err := raiseFDLimit(); err == nil && cfg.Listen.Proxy != "" {
		fmt.Fprintf(stdout, "# open files: hard limit %d; Go's runtime raises the soft limit to one below it at start-up\n", fds.hard)
		mem, err := cgroup.MemoryLimit("/")
		switch {
		case err != nil:
			warnings = append(warnings, fmt.Sprintf("cannot read the memory limit (%v); client connections are bounded by the open-file limit only", err))
		case mem.Bytes == 0:
			fmt.Fprintln(stdout, "# memory: no limit")
		default:
			fmt.Fprintf(stdout, "# memory: limit %s (%s)\n", mib(mem.Bytes), mem.File)
		}
		n, by, warning, err := connLimits{fds: fds, mem: mem}.bound(cfg.Proxy.MaxConns, cfg.Proxy.MaxIdleAppConns)
		if err != nil {
			fmt.Fprintf(stderr, "outrider: %v\n", err)
			return exitUsage
		}
		if cfg.Proxy.MaxConns == 0 {
			fmt.Fprintf(stdout, "# OUTRIDER_PROXY_MAX_CONNS=auto allows %d client connections, set by the %s\n", n, by)
		}
		if warning != "" {
			warnings = append(warnings, warning)
		}
	}
	for _, w := range warnings {
		fmt.Fprintf(stdout, "# warning: %s\n", w)
	}
	fmt.Fprintln(stdout, "# configuration is valid")
	return exitOK
}

// consulSettings shows what consul/api read from the CONSUL_* variables.
func consulSettings(c *consul.Config) []config.Setting {
	return []config.Setting{
		{Var: "CONSUL_HTTP_ADDR", Value: consulURL(c)},
		{Var: "CONSUL_HTTP_TOKEN", Value: config.Secret(c.Token).String()},
		{Var: "CONSUL_HTTP_TOKEN_FILE", Value: c.TokenFile},
		{Var: "CONSUL_HTTP_AUTH", Value: basicAuthShown(c.HttpAuth)},
		{Var: "CONSUL_HTTP_SSL_VERIFY", Value: strconv.FormatBool(!c.TLSConfig.InsecureSkipVerify)},
		{Var: "CONSUL_CACERT", Value: c.TLSConfig.CAFile},
		{Var: "CONSUL_CAPATH", Value: c.TLSConfig.CAPath},
		{Var: "CONSUL_CLIENT_CERT", Value: c.TLSConfig.CertFile},
		{Var: "CONSUL_CLIENT_KEY", Value: c.TLSConfig.KeyFile},
		{Var: "CONSUL_TLS_SERVER_NAME", Value: c.TLSConfig.Address},
		{Var: "CONSUL_NAMESPACE", Value: c.Namespace},
		{Var: "CONSUL_PARTITION", Value: c.Partition},
	}
}

// basicAuthShown is CONSUL_HTTP_AUTH as check-config shows it: the user
// name, and the password masked.
func basicAuthShown(a *consul.HttpBasicAuth) string {
	if a == nil {
		return ""
	}
	return a.Username + ":" + config.Secret(a.Password).String()
}

// interfaceAddr is how start-up finds the address to register when none
// is set; a reload never looks it up again (tests replace it to see that).
var interfaceAddr = firstInterfaceAddr

// firstInterfaceAddr finds the address to register when neither
// OUTRIDER_SERVICE_ADDRESS nor POD_IP is set: the first non-loopback
// IPv4 address, else the first non-loopback IPv6 one.
func firstInterfaceAddr() (string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", fmt.Errorf("list interface addresses: %w", err)
	}
	var v6 string
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok || n.IP.IsLoopback() || n.IP.IsLinkLocalUnicast() {
			continue
		}
		if n.IP.To4() != nil {
			return n.IP.String(), nil
		}
		if v6 == "" {
			v6 = n.IP.String()
		}
	}
	if v6 != "" {
		return v6, nil
	}
	return "", errors.New("no non-loopback interface address")
}
