package config

import (
	"bufio"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func load(t *testing.T, env map[string]string) (Config, error) {
	t.Helper()
	return Load(func(k string) string { return env[k] }, "host1",
		func() (string, error) { return "10.0.0.7", nil })
}

func TestDefaults(t *testing.T) {
	c, err := load(t, map[string]string{"OUTRIDER_SERVICE_NAME": "web"})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"service id", c.Service.ID, "web-host1"},
		{"service address", c.Service.Address, "10.0.0.7"},
		{"service port is the proxy's", c.Service.Port, 15001},
		{"app addr", c.App.Addr, "127.0.0.1:8080"},
		{"proc root", c.App.ProcRoot, "/proc"},
		{"app children counted", c.App.Children, true},
		{"probe", c.Probe.Spec.String(), "tcp://127.0.0.1:8080"},
		{"probe period", c.Probe.Period, 5 * time.Second},
		{"probe timeout", c.Probe.Timeout, time.Second},
		{"probe initial delay", c.Probe.InitialDelay, time.Duration(0)},
		{"failure threshold", c.Probe.FailureThreshold, 3},
		{"success threshold", c.Probe.SuccessThreshold, 1},
		{"registry", c.Registry.Kind, "consul"},
		{"check ttl", c.Registry.CheckTTL, 15 * time.Second},
		{"deregister after", c.Registry.DeregisterCriticalAfter, time.Minute},
		{"proxy", c.Listen.Proxy, ":15001"},
		{"metrics", c.Listen.Metrics, ":15090"},
		{"metrics port", c.Listen.MetricsPort(), 15090},
		{"admin", c.Listen.Admin, "127.0.0.1:15000"},
		{"qps window", c.Listen.QPSWindow, 10 * time.Second},
		{"drain delay", c.Drain.Delay, 5 * time.Second},
		{"drain timeout", c.Drain.Timeout, 25 * time.Second},
		{"proxy max conns auto", c.Proxy.MaxConns, 0},
		{"idle app connections", c.Proxy.MaxIdleAppConns, 128},
		{"tunnel idle timeout", c.Proxy.TunnelIdleTimeout, time.Hour},
		{"underscore headers dropped", c.Proxy.KeepUnderscoreHeaders, false},
		{"probe env deny", c.Probe.EnvDeny, []string(nil)},
		{"probe env add", c.Probe.EnvAdd, []string(nil)},
		{"log format", c.Log.Format, "json"},
		{"log level", c.Log.Level, "info"},
	}
	for _, tc := range checks {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}

func TestGoodValues(t *testing.T) {
	tests := []struct {
		name  string
		env   map[string]string
		check func(Config) (got, want any)
	}{
		{"tags trimmed, empties dropped",
			map[string]string{"OUTRIDER_SERVICE_TAGS": " a, b,,c "},
			func(c Config) (any, any) { return c.Service.Tags, []string{"a", "b", "c"} }},
		{"meta pairs",
			map[string]string{"OUTRIDER_SERVICE_META": "team=pay, tier = gold"},
			func(c Config) (any, any) { return c.Service.Meta, map[string]string{"team": "pay", "tier": "gold"} }},
		{"pod name makes the id",
			map[string]string{"POD_NAME": "web-7d9f-abc"},
			func(c Config) (any, any) { return c.Service.ID, "web-web-7d9f-abc" }},
		{"pod name trimmed",
			map[string]string{"POD_NAME": " web-7d9f-abc \n", "POD_NAMESPACE": " shop "},
			func(c Config) (any, any) {
				return [3]any{c.Service.ID, c.Service.PodName, c.Service.PodNamespace}, [3]any{"web-web-7d9f-abc", "web-7d9f-abc", "shop"}
			}},
		{"explicit id wins",
			map[string]string{"POD_NAME": "p", "OUTRIDER_SERVICE_ID": "web-1"},
			func(c Config) (any, any) { return c.Service.ID, "web-1" }},
		{"pod ip is the address",
			map[string]string{"POD_IP": "10.1.2.3"},
			func(c Config) (any, any) { return c.Service.Address, "10.1.2.3" }},
		{"explicit address wins over pod ip",
			map[string]string{"POD_IP": "10.1.2.3", "OUTRIDER_SERVICE_ADDRESS": "192.0.2.9"},
			func(c Config) (any, any) { return c.Service.Address, "192.0.2.9" }},
		{"ipv6 address",
			map[string]string{"OUTRIDER_SERVICE_ADDRESS": "fd00::7"},
			func(c Config) (any, any) { return c.Service.Address, "fd00::7" }},
		{"host name address",
			map[string]string{"OUTRIDER_SERVICE_ADDRESS": "web-1.svc.example.com"},
			func(c Config) (any, any) { return c.Service.Address, "web-1.svc.example.com" }},
		{"a bad pod ip is not read beside an explicit address",
			map[string]string{"POD_IP": "bad address", "OUTRIDER_SERVICE_ADDRESS": "192.0.2.9"},
			func(c Config) (any, any) { return c.Service.Address, "192.0.2.9" }},
		{"proxy off registers the app port",
			map[string]string{"OUTRIDER_PROXY_LISTEN": "off", "OUTRIDER_APP_ADDR": "127.0.0.1:9000"},
			func(c Config) (any, any) { return [2]any{c.Listen.Proxy, c.Service.Port}, [2]any{"", 9000} }},
		{"explicit port",
			map[string]string{"OUTRIDER_SERVICE_PORT": "443"},
			func(c Config) (any, any) { return c.Service.Port, 443 }},
		{"probe follows the app address",
			map[string]string{"OUTRIDER_APP_ADDR": "127.0.0.1:9000"},
			func(c Config) (any, any) { return c.Probe.Spec.String(), "tcp://127.0.0.1:9000" }},
		{"probe follows an app address with an IPv6 zone",
			map[string]string{"OUTRIDER_APP_ADDR": "[fe80::1%eth0]:9000"},
			func(c Config) (any, any) { return c.Probe.Spec.Address, "[fe80::1%eth0]:9000" }},
		{"proxy on a port chosen at start without a registry",
			map[string]string{"OUTRIDER_REGISTRY": "none", "OUTRIDER_PROXY_LISTEN": "127.0.0.1:0"},
			func(c Config) (any, any) { return c.Listen.Proxy, "127.0.0.1:0" }},
		{"proxy on a port chosen at start with an explicit service port",
			map[string]string{"OUTRIDER_PROXY_LISTEN": "127.0.0.1:0", "OUTRIDER_SERVICE_PORT": "8443"},
			func(c Config) (any, any) { return c.Service.Port, 8443 }},
		{"http probe with headers and insecure",
			map[string]string{"OUTRIDER_PROBE": "https://app:8443/healthz", "OUTRIDER_PROBE_HEADERS": "Host: x, Authorization: Bearer y", "OUTRIDER_PROBE_INSECURE": "true"},
			func(c Config) (any, any) {
				return [3]any{c.Probe.Spec.String(), c.Probe.Spec.Header.Get("Authorization"), c.Probe.Spec.Insecure},
					[3]any{"https://app:8443/healthz", "Bearer y", true}
			}},
		{"a probe header value that holds a comma",
			map[string]string{"OUTRIDER_PROBE": "http://127.0.0.1:8080/healthz", "OUTRIDER_PROBE_HEADERS": "Accept: application/json, text/plain,X-Probe: yes"},
			func(c Config) (any, any) {
				return c.Probe.Spec.Header, http.Header{"Accept": {"application/json, text/plain"}, "X-Probe": {"yes"}}
			}},
		{"http probe with insecure, for an app that redirects it to https",
			map[string]string{"OUTRIDER_PROBE": "http://127.0.0.1:8080/healthz", "OUTRIDER_PROBE_INSECURE": "true"},
			func(c Config) (any, any) { return c.Probe.Spec.Insecure, true }},
		{"insecure false says nothing a tcp probe ignores",
			map[string]string{"OUTRIDER_PROBE": "tcp://127.0.0.1:8080", "OUTRIDER_PROBE_INSECURE": "false"},
			func(c Config) (any, any) { return c.Probe.Spec.Insecure, false }},
		{"durations and thresholds",
			map[string]string{"OUTRIDER_PROBE_PERIOD": "500ms", "OUTRIDER_PROBE_TIMEOUT": "250ms", "OUTRIDER_PROBE_INITIAL_DELAY": "2s", "OUTRIDER_PROBE_FAILURE_THRESHOLD": "5", "OUTRIDER_PROBE_SUCCESS_THRESHOLD": "2"},
			func(c Config) (any, any) {
				p := c.Probe
				return [5]any{p.Period, p.Timeout, p.InitialDelay, p.FailureThreshold, p.SuccessThreshold},
					[5]any{500 * time.Millisecond, 250 * time.Millisecond, 2 * time.Second, 5, 2}
			}},
		{"admin off loopback with a token",
			map[string]string{"OUTRIDER_ADMIN_LISTEN": "0.0.0.0:15000", "OUTRIDER_ADMIN_TOKEN": "t0k"},
			func(c Config) (any, any) { return c.Listen.AdminToken.Reveal(), "t0k" }},
		{"admin on localhost needs no token",
			map[string]string{"OUTRIDER_ADMIN_LISTEN": "localhost:15000"},
			func(c Config) (any, any) { return c.Listen.Admin, "localhost:15000" }},
		{"admin on ::1 needs no token",
			map[string]string{"OUTRIDER_ADMIN_LISTEN": "[::1]:15000"},
			func(c Config) (any, any) { return c.Listen.Admin, "[::1]:15000" }},
		{"registry none needs no name",
			map[string]string{"OUTRIDER_SERVICE_NAME": "", "OUTRIDER_REGISTRY": "none"},
			func(c Config) (any, any) { return [2]any{c.Registry.Enabled(), c.Service.ID}, [2]any{false, ""} }},
		{"case-insensitive enums",
			map[string]string{"OUTRIDER_LOG_FORMAT": "TEXT", "OUTRIDER_LOG_LEVEL": "Debug", "OUTRIDER_REGISTRY": "Consul"},
			func(c Config) (any, any) {
				return [3]any{c.Log.Format, c.Log.Level, c.Registry.Kind}, [3]any{"text", "debug", "consul"}
			}},
		{"app process regexp",
			map[string]string{"OUTRIDER_APP_PROCESS": "java .*-jar app"},
			func(c Config) (any, any) { return c.App.Process.String(), "java .*-jar app" }},
		{"proxy limits",
			map[string]string{"OUTRIDER_PROXY_MAX_CONNS": "5000", "OUTRIDER_PROXY_MAX_IDLE_APP_CONNS": "1024", "OUTRIDER_PROXY_TUNNEL_IDLE_TIMEOUT": "10m", "OUTRIDER_PROXY_UNDERSCORE_HEADERS": "Keep", "OUTRIDER_PROXY_EVENT_LOOP": "Off"},
			func(c Config) (any, any) {
				return [5]any{c.Proxy.MaxConns, c.Proxy.MaxIdleAppConns, c.Proxy.TunnelIdleTimeout, c.Proxy.KeepUnderscoreHeaders, c.Proxy.EventLoop},
					[5]any{5000, 1024, 10 * time.Minute, true, false}
			}},
		{"proxy event loop on by default",
			map[string]string{},
			func(c Config) (any, any) { return c.Proxy.EventLoop, true }},
		{"max conns auto",
			map[string]string{"OUTRIDER_PROXY_MAX_CONNS": "auto"},
			func(c Config) (any, any) { return c.Proxy.MaxConns, 0 }},
		{"exec probe environment",
			map[string]string{"OUTRIDER_PROBE": "exec:/bin/true", "OUTRIDER_PROBE_ENV": "PGHOST=db, PGPASSWORD = pw=1", "OUTRIDER_PROBE_ENV_DENY": "AWS_SECRET_ACCESS_KEY, VAULT_TOKEN"},
			func(c Config) (any, any) {
				return [2]any{c.Probe.EnvAdd, c.Probe.EnvDeny},
					[2]any{[]string{"PGHOST=db", "PGPASSWORD=pw=1"}, []string{"AWS_SECRET_ACCESS_KEY", "VAULT_TOKEN"}}
			}},
		{"probe schemes are case-insensitive, exec: too",
			map[string]string{"OUTRIDER_PROBE": "EXEC:/bin/true"},
			func(c Config) (any, any) { return c.Probe.Spec.String(), "exec:/bin/true" }},
		{"metrics port follows the metrics listener",
			map[string]string{"OUTRIDER_METRICS_LISTEN": "10.0.0.7:9100"},
			func(c Config) (any, any) { return c.Listen.MetricsPort(), 9100 }},
		{"listen hosts: a name, an IPv6 address with a zone, digits in a name",
			map[string]string{"OUTRIDER_METRICS_LISTEN": "metrics.local:9100", "OUTRIDER_PROXY_LISTEN": "[fe80::1%eth0]:15001", "OUTRIDER_APP_ADDR": "app-1.2:8080"},
			func(c Config) (any, any) {
				return [3]any{c.Listen.Metrics, c.Listen.Proxy, c.App.Addr}, [3]any{"metrics.local:9100", "[fe80::1%eth0]:15001", "app-1.2:8080"}
			}},
		{"metrics port chosen at start is unknown",
			map[string]string{"OUTRIDER_METRICS_LISTEN": "127.0.0.1:0"},
			func(c Config) (any, any) { return c.Listen.MetricsPort(), 0 }},
		{"other meta keys beside the metrics port",
			map[string]string{"OUTRIDER_SERVICE_META": "metrics_path=/metrics,metrics_port_app=8081"},
			func(c Config) (any, any) {
				return c.Service.Meta, map[string]string{"metrics_path": "/metrics", "metrics_port_app": "8081"}
			}},
		{"a metrics_port of the user's when outrider publishes none: its listener is on loopback, the address is not",
			map[string]string{"OUTRIDER_METRICS_LISTEN": "127.0.0.1:15090", "OUTRIDER_SERVICE_ADDRESS": "10.0.0.7",
				"OUTRIDER_SERVICE_META": "team=shop,metrics_port=8443"},
			func(c Config) (any, any) {
				return [2]any{c.Service.Meta, c.PublishedMetricsPort()}, [2]any{map[string]string{"team": "shop", "metrics_port": "8443"}, 0}
			}},
		{"proxy on the app's port on another address",
			map[string]string{"OUTRIDER_APP_ADDR": "10.0.0.8:8080", "OUTRIDER_PROXY_LISTEN": "10.0.0.7:8080"},
			func(c Config) (any, any) { return c.Listen.Proxy, "10.0.0.7:8080" }},
		{"proxy off leaves the app's port free",
			map[string]string{"OUTRIDER_APP_ADDR": "127.0.0.1:15001", "OUTRIDER_PROXY_LISTEN": "off"},
			func(c Config) (any, any) { return c.Service.Port, 15001 }},
		{"listeners on one port of two loopback addresses",
			map[string]string{"OUTRIDER_METRICS_LISTEN": "127.0.0.1:9100", "OUTRIDER_ADMIN_LISTEN": "127.0.0.2:9100"},
			func(c Config) (any, any) {
				return [2]any{c.Listen.Metrics, c.Listen.Admin}, [2]any{"127.0.0.1:9100", "127.0.0.2:9100"}
			}},
		{"port 0 never clashes",
			map[string]string{"OUTRIDER_PROXY_LISTEN": ":0", "OUTRIDER_SERVICE_PORT": "8080", "OUTRIDER_METRICS_LISTEN": "127.0.0.1:0", "OUTRIDER_ADMIN_LISTEN": "127.0.0.1:0"},
			func(c Config) (any, any) {
				return [3]any{c.Listen.Proxy, c.Listen.Metrics, c.Listen.Admin}, [3]any{":0", "127.0.0.1:0", "127.0.0.1:0"}
			}},
		{"qps window of an hour, the most",
			map[string]string{"OUTRIDER_QPS_WINDOW": "1h"},
			func(c Config) (any, any) { return c.Listen.QPSWindow, time.Hour }},
		{"qps window of a second, the least",
			map[string]string{"OUTRIDER_QPS_WINDOW": "1s"},
			func(c Config) (any, any) { return c.Listen.QPSWindow, time.Second }},
		{"GOMAXPROCS and GOGC as Go takes them",
			map[string]string{"GOMAXPROCS": "4", "GOGC": "off"},
			func(c Config) (any, any) { return c.Log.Level, "info" }},
		{"GOGC as a number",
			map[string]string{"GOGC": "50"},
			func(c Config) (any, any) { return c.Log.Level, "info" }},
		{"zero drain delay is allowed",
			map[string]string{"OUTRIDER_DRAIN_DELAY": "0s"},
			func(c Config) (any, any) { return c.Drain.Delay, time.Duration(0) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"OUTRIDER_SERVICE_NAME": "web"}
			for k, v := range tc.env {
				env[k] = v
			}
			c, err := load(t, env)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got, want := tc.check(c); !reflect.DeepEqual(got, want) {
				t.Errorf("got %v, want %v", got, want)
			}
		})
	}
}

// TestLoadBadEnvironments reads testdata/invalid-*.env: variables, then
// "# want:" lines holding every error expected, in order.
func TestLoadBadEnvironments(t *testing.T) {
	files, err := filepath.Glob("testdata/invalid-*.env")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".env"), func(t *testing.T) {
			env, want := readEnvFile(t, f)
			_, err := load(t, env)
			if err == nil {
				t.Fatalf("Load succeeded, want errors:\n%s", strings.Join(want, "\n"))
			}
			var got []string
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				var ce *Error
				if !errors.As(e, &ce) {
					t.Errorf("error %v is not a *config.Error", e)
				}
				got = append(got, e.Error())
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("errors:\n got %q\nwant %q", got, want)
			}
		})
	}
}

func readEnvFile(t *testing.T, path string) (map[string]string, []string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env := map[string]string{}
	var want []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if w, ok := strings.CutPrefix(line, "# want: "); ok {
			want = append(want, w)
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		env[k] = v
	}
	return env, want
}

// TestServiceAddress: OUTRIDER_SERVICE_ADDRESS takes an IP address or a
// host name. POD_IP, the registered address when it is unset, comes from
// status.podIP and takes an IP address only; a host name there is refused,
// with an error that names POD_IP.
func TestServiceAddress(t *testing.T) {
	tests := []struct {
		name           string
		in             string
		address, podIP bool // accepted as OUTRIDER_SERVICE_ADDRESS, as POD_IP
	}{
		{"ipv4", "10.0.0.7", true, true},
		{"ipv6", "fd00::7", true, true},
		{"ipv4 in ipv6", "::ffff:10.0.0.7", true, true},
		{"one label", "web", true, false},
		{"host name", "web-1.svc.cluster.local", true, false},
		{"label starts with a digit", "1web.example.com", true, false},
		{"label of 63", strings.Repeat("a", 63) + ".com", true, false},
		{"253 characters", strings.Repeat("a.", 126) + "a", true, false},
		{"space", "bad address", false, false},
		{"with a port", "10.0.0.7:8080", false, false},
		{"bracketed ipv6", "[fd00::7]", false, false},
		{"ipv6 with a zone", "fe80::1%eth0", false, false},
		{"ipv4 out of range", "10.0.0.256", false, false},
		{"all digits", "1234", false, false},
		{"underscore", "web_1.example.com", false, false},
		{"leading dash", "-web.example.com", false, false},
		{"trailing dash", "web-.example.com", false, false},
		{"empty label", "web..example.com", false, false},
		{"trailing dot", "web.example.com.", false, false},
		{"label of 64", strings.Repeat("a", 64) + ".com", false, false},
		{"254 characters", strings.Repeat("a.", 126) + "ab", false, false},
		{"url", "http://web", false, false},
	}
	for _, tc := range tests {
		vars := []struct {
			name, refusal string
			want          bool
		}{
			{"OUTRIDER_SERVICE_ADDRESS", "is not an IP address or a host name", tc.address},
			{"POD_IP", "is not an IP address (", tc.podIP},
		}
		for _, v := range vars {
			t.Run(v.name+"/"+tc.name, func(t *testing.T) {
				c, err := load(t, map[string]string{"OUTRIDER_SERVICE_NAME": "web", v.name: tc.in})
				if v.want {
					if err != nil || c.Service.Address != tc.in {
						t.Errorf("%s=%q: address %q, error %v; want %q registered", v.name, tc.in, c.Service.Address, err, tc.in)
					}
					return
				}
				wantErr := fmt.Sprintf("%s=%q %s", v.name, tc.in, v.refusal)
				if err == nil || !strings.Contains(err.Error(), wantErr) {
					t.Errorf("%s=%q: got error %v, want one containing %q", v.name, tc.in, err, wantErr)
				}
			})
		}
	}
}

func TestSecretsNeverPrint(t *testing.T) {
	var all strings.Builder
	// Headers are an http probe's, an environment an exec probe's.
	for _, env := range []map[string]string{{
		"OUTRIDER_SERVICE_NAME":  "web",
		"OUTRIDER_ADMIN_TOKEN":   "tok-s3cr3t",
		"OUTRIDER_PROBE":         "http://127.0.0.1:8080/healthz",
		"OUTRIDER_PROBE_HEADERS": "Authorization: Bearer hdr-s3cr3t",
	}, {
		"OUTRIDER_SERVICE_NAME": "web",
		"OUTRIDER_PROBE":        "exec:/bin/true",
		"OUTRIDER_PROBE_ENV":    "PROBE_TOKEN=env-s3cr3t",
	}} {
		c, err := load(t, env)
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		for _, s := range c.Effective() {
			all.WriteString(s.Var + "=" + s.Value + "\n")
		}
	}
	for _, secret := range []string{"tok-s3cr3t", "hdr-s3cr3t", "env-s3cr3t"} {
		if strings.Contains(all.String(), secret) {
			t.Errorf("Effective() shows %q:\n%s", secret, all.String())
		}
	}
	if !strings.Contains(all.String(), "OUTRIDER_PROBE_ENV=PROBE_TOKEN=********") {
		t.Errorf("Effective() does not show the masked probe variable's name:\n%s", all.String())
	}
	if !strings.Contains(all.String(), "OUTRIDER_PROBE_HEADERS=Authorization: ********") {
		t.Errorf("Effective() does not show the masked header name:\n%s", all.String())
	}
}

func TestEffectiveListsEveryVariable(t *testing.T) {
	c, err := load(t, map[string]string{"OUTRIDER_SERVICE_NAME": "web"})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, s := range c.Effective() {
		if seen[s.Var] {
			t.Errorf("%s listed twice", s.Var)
		}
		seen[s.Var] = true
	}
	src, err := os.ReadFile("config.go")
	if err != nil {
		t.Fatal(err)
	}
	// Every variable config.go reads must be shown by check-config.
	for _, field := range strings.FieldsFunc(string(src), func(r rune) bool { return r == '"' }) {
		if strings.HasPrefix(field, "OUTRIDER_") && !strings.ContainsAny(field, " =") && !seen[field] {
			t.Errorf("%s is read but not in Effective()", field)
		}
	}
}

// TestLoadBadFiles reads testdata/invalid-file-*: config files whose "#
// want:" lines (or, for JSON, the file's name with .want) hold every error
// expected, in order.
func TestLoadBadFiles(t *testing.T) {
	files, err := filepath.Glob("testdata/invalid-file-*")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, ".want") {
			continue
		}
		t.Run(strings.TrimSuffix(filepath.Base(f), filepath.Ext(f)), func(t *testing.T) {
			want := wantLines(t, f)
			_, _, err := LoadWithFile(func(k string) string {
				return map[string]string{"OUTRIDER_REGISTRY": "none", "OUTRIDER_CONFIG_FILE": f}[k]
			}, "host1", func() (string, error) { return "10.0.0.7", nil })
			if err == nil {
				t.Fatalf("LoadWithFile succeeded, want errors:\n%s", strings.Join(want, "\n"))
			}
			var got []string
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				var fe *FileError
				if !errors.As(e, &fe) {
					t.Errorf("error %v is not a *config.FileError", e)
				}
				got = append(got, e.Error())
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("errors:\n got %q\nwant %q", got, want)
			}
		})
	}
}

// wantLines returns the "# want: " lines of path, or the lines of
// path.want when it exists (JSON has no comments).
func wantLines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path + ".want")
	prefix := ""
	if err != nil {
		if data, err = os.ReadFile(path); err != nil {
			t.Fatal(err)
		}
		prefix = "# want: "
	}
	var want []string
	for line := range strings.Lines(string(data)) {
		if w, ok := strings.CutPrefix(strings.TrimRight(line, "\n"), prefix); ok && w != "" {
			want = append(want, w)
		}
	}
	return want
}

func TestLoadWithFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	env := map[string]string{
		"OUTRIDER_SERVICE_NAME": "web", "OUTRIDER_SERVICE_TAGS": "from-env", "OUTRIDER_SERVICE_META": "team=env",
		"OUTRIDER_PROBE_PERIOD": "7s", "OUTRIDER_DRAIN_TIMEOUT": "9s",
	}
	tests := []struct {
		name    string
		file    string
		tags    []string
		meta    map[string]string
		period  time.Duration
		timeout time.Duration
		probe   string
		level   string
	}{
		{"yaml lists and maps", "service_tags: [blue, v2]\nservice_meta: {team: shop, tier: gold}\nprobe: http://127.0.0.1:8080/healthz\nprobe_period: 2s\nlog_level: debug\n",
			[]string{"blue", "v2"}, map[string]string{"team": "shop", "tier": "gold"}, 2 * time.Second, 9 * time.Second, "http://127.0.0.1:8080/healthz", "debug"},
		{"the environment's comma forms", "service_tags: \"blue,v2\"\nservice_meta: team=shop\n",
			[]string{"blue", "v2"}, map[string]string{"team": "shop"}, 7 * time.Second, 9 * time.Second, "tcp://127.0.0.1:8080", "info"},
		{"json", `{"service_tags": ["blue"], "drain_timeout": "3s"}`,
			[]string{"blue"}, map[string]string{"team": "env"}, 7 * time.Second, 3 * time.Second, "tcp://127.0.0.1:8080", "info"},
		{"what the file leaves out comes from the environment", "drain_delay: 1s\n",
			[]string{"from-env"}, map[string]string{"team": "env"}, 7 * time.Second, 9 * time.Second, "tcp://127.0.0.1:8080", "info"},
		{"an empty list clears the environment's tags", "service_tags: []\n",
			nil, map[string]string{"team": "env"}, 7 * time.Second, 9 * time.Second, "tcp://127.0.0.1:8080", "info"},
		{"quoted nulls are strings", "service_tags: [a, \"null\"]\nservice_meta: {team: \"~\"}\n",
			[]string{"a", "null"}, map[string]string{"team": "~"}, 7 * time.Second, 9 * time.Second, "tcp://127.0.0.1:8080", "info"},
		{"documents with nothing in them", "---\nprobe_period: 2s\n---\n# nothing\n---\n",
			[]string{"from-env"}, map[string]string{"team": "env"}, 2 * time.Second, 9 * time.Second, "tcp://127.0.0.1:8080", "info"},
		{"an empty file", "",
			[]string{"from-env"}, map[string]string{"team": "env"}, 7 * time.Second, 9 * time.Second, "tcp://127.0.0.1:8080", "info"},
		{"a lone --- and a comment: empty", "---\n# nothing yet\n",
			[]string{"from-env"}, map[string]string{"team": "env"}, 7 * time.Second, 9 * time.Second, "tcp://127.0.0.1:8080", "info"},
		{"a null document: empty", "~\n",
			[]string{"from-env"}, map[string]string{"team": "env"}, 7 * time.Second, 9 * time.Second, "tcp://127.0.0.1:8080", "info"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := maps.Clone(env)
			e["OUTRIDER_CONFIG_FILE"] = write(fmt.Sprintf("f%d.yaml", i), tc.file)
			c, _, err := LoadWithFile(func(k string) string { return e[k] }, "host1", func() (string, error) { return "10.0.0.7", nil })
			if err != nil {
				t.Fatalf("LoadWithFile: %v", err)
			}
			for _, chk := range []struct {
				name      string
				got, want any
			}{
				{"tags", c.Service.Tags, tc.tags},
				{"meta", c.Service.Meta, tc.meta},
				{"probe period", c.Probe.Period, tc.period},
				{"drain timeout", c.Drain.Timeout, tc.timeout},
				{"probe", c.Probe.Spec.String(), tc.probe},
				{"log level", c.Log.Level, tc.level},
				{"service id (not from the file)", c.Service.ID, "web-host1"},
			} {
				if !reflect.DeepEqual(chk.got, chk.want) {
					t.Errorf("%s = %#v, want %#v", chk.name, chk.got, chk.want)
				}
			}
		})
	}

	t.Run("a missing file names it", func(t *testing.T) {
		e := map[string]string{"OUTRIDER_REGISTRY": "none", "OUTRIDER_CONFIG_FILE": filepath.Join(dir, "absent.yaml")}
		_, _, err := LoadWithFile(func(k string) string { return e[k] }, "host1", nil)
		if err == nil || !strings.Contains(err.Error(), "read config file (OUTRIDER_CONFIG_FILE): open "+filepath.Join(dir, "absent.yaml")) {
			t.Errorf("LoadWithFile = %v, want the read error naming the file", err)
		}
	})
}

// TestLoadWithFileReportsBothAtOnce: the errors of the environment and
// those of the file's values come together, so that fixing one does not
// only reveal the other. A file that does not parse is reported alone.
func TestLoadWithFileReportsBothAtOnce(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, file string
		want       []string
	}{
		{"bad values in both", "service_tags: [blue]\nprobe_period: 5\n", []string{
			`%s:2: probe_period: "5" is not a duration (want e.g. 5s, 500ms)`,
			`OUTRIDER_PROBE_TIMEOUT="soon" is not a duration (want e.g. 5s, 500ms)`,
			`OUTRIDER_PROXY_LISTEN="15001" is not host:port (want e.g. 127.0.0.1:8080)`,
		}},
		{"a file that does not parse", "service_tags: [blue\n", []string{
			`%s:2: not YAML or JSON: did not find expected ',' or ']'`,
		}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("f%d.yaml", i))
			if err := os.WriteFile(path, []byte(tc.file), 0o644); err != nil {
				t.Fatal(err)
			}
			env := map[string]string{"OUTRIDER_REGISTRY": "none", "OUTRIDER_CONFIG_FILE": path,
				"OUTRIDER_PROBE_TIMEOUT": "soon", "OUTRIDER_PROXY_LISTEN": "15001"}
			_, _, err := LoadWithFile(func(k string) string { return env[k] }, "host1", nil)
			if got, want, same := sameErrors(err, tc.want, path); !same {
				t.Errorf("errors:\n got %q\nwant %q", got, want)
			}
		})
	}
}

// TestLoadChecksWhatTheFileHides: a bad value of a variable the config
// file also sets is refused, though the file's value is in force, since a
// reload without the key would take it; whether the probe uses a setting
// depends on the probe the file may set, and is not held against the
// environment's value.
func TestLoadChecksWhatTheFileHides(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, file string
		env        map[string]string
		want       []string // nil: loads
	}{
		{"a bad duration", "probe_period: 2s\n", map[string]string{"OUTRIDER_PROBE_PERIOD": "banana"}, []string{
			`OUTRIDER_PROBE_PERIOD="banana" is not a duration (want e.g. 5s, 500ms); the config file's probe_period (%s:1) is in force over it, but a reload without that key would take this value and be refused (mend or unset the variable)`,
		}},
		{"a bad level and bad meta", "log_level: debug\nservice_meta: {team: shop}\n", map[string]string{"OUTRIDER_LOG_LEVEL": "verbose", "OUTRIDER_SERVICE_META": "team"}, []string{
			`OUTRIDER_LOG_LEVEL="verbose" is not one of debug, info, warn, error; the config file's log_level (%s:1) is in force over it, but a reload without that key would take this value and be refused (mend or unset the variable)`,
			`OUTRIDER_SERVICE_META="team" is not key=value; the config file's service_meta (%s:2) is in force over it, but a reload without that key would take this value and be refused (mend or unset the variable)`,
		}},
		{"headers the file's probe uses", "probe: http://127.0.0.1:8080/healthz\nprobe_headers: \"X-A: b\"\n",
			map[string]string{"OUTRIDER_PROBE": "tcp://127.0.0.1:8080", "OUTRIDER_PROBE_HEADERS": "X-A: c"}, nil},
		{"headers the file clears", "probe: tcp://127.0.0.1:8080\nprobe_headers: \"\"\n",
			map[string]string{"OUTRIDER_PROBE": "http://127.0.0.1:8080/healthz", "OUTRIDER_PROBE_HEADERS": "X-A: c"}, nil},
		{"good values", "probe_period: 2s\n", map[string]string{"OUTRIDER_PROBE_PERIOD": "3s"}, nil},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("f%d.yaml", i))
			if err := os.WriteFile(path, []byte(tc.file), 0o644); err != nil {
				t.Fatal(err)
			}
			e := map[string]string{"OUTRIDER_REGISTRY": "none", "OUTRIDER_CONFIG_FILE": path}
			maps.Copy(e, tc.env)
			_, _, err := LoadWithFile(func(k string) string { return e[k] }, "host1", nil)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("LoadWithFile: %v", err)
				}
				return
			}
			if got, want, same := sameErrors(err, tc.want, path); !same {
				t.Errorf("errors:\n got %q\nwant %q", got, want)
			}
		})
	}
}

// TestProbeSettingsUnusedByTheFilesProbe: a config file whose probe
// leaves a setting of the environment unused names the file's probe, not
// OUTRIDER_PROBE, and says how the file clears the setting, or that the
// environment must change; a file that sets the probe and what it does not
// use is told to drop one of them.
func TestProbeSettingsUnusedByTheFilesProbe(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"OUTRIDER_REGISTRY": "none", "OUTRIDER_PROBE": "https://127.0.0.1:8443/healthz"}
	tests := []struct {
		name, file string
		env        map[string]string
		want       []string
	}{
		{"headers of the environment", "probe: tcp://127.0.0.1:8080\n", map[string]string{"OUTRIDER_PROBE_HEADERS": "Authorization: Bearer s3cr3t"}, []string{
			`OUTRIDER_PROBE_HEADERS="(hidden)" is set, but the config file's probe (%s:1) "tcp://127.0.0.1:8080" is a tcp probe, which sends no headers (only an http or https probe does): write probe_headers: "" in the config file, or change its probe`,
		}},
		{"insecure of the environment", "probe: grpc://127.0.0.1:9090\n", map[string]string{"OUTRIDER_PROBE_INSECURE": "true"}, []string{
			`OUTRIDER_PROBE_INSECURE="true" is set, but the config file's probe (%s:1) "grpc://127.0.0.1:9090" is a grpc probe, which verifies no certificate (only an https probe, or an http one the app redirects to https, does): write probe_insecure: false in the config file, or change its probe`,
		}},
		{"an environment no file can clear", "probe: http://127.0.0.1:8080/healthz\n", map[string]string{"OUTRIDER_PROBE": "exec:/bin/check", "OUTRIDER_PROBE_ENV_DENY": "HOME"}, []string{
			`OUTRIDER_PROBE_ENV_DENY="HOME" is set, but the config file's probe (%s:1) "http://127.0.0.1:8080/healthz" is an http probe, which runs no command (only an exec probe does): unset it in the environment (which takes a restart), or change the file's probe`,
		}},
		{"headers of the file", "probe: tcp://127.0.0.1:8080\nprobe_headers: \"X-Probe: yes\"\n", nil, []string{
			`%s:2: probe_headers: "(hidden)" is set, but the config file's probe (%s:1) "tcp://127.0.0.1:8080" is a tcp probe, which sends no headers (only an http or https probe does): remove it from the config file, or change its probe`,
		}},
		{"headers of the file, probe of the environment", "probe_headers: \"X-Probe: yes\"\n", map[string]string{"OUTRIDER_PROBE": "tcp://127.0.0.1:8080"}, []string{
			`%s:1: probe_headers: "(hidden)" is set, but OUTRIDER_PROBE="tcp://127.0.0.1:8080" is a tcp probe, which sends no headers (only an http or https probe does): unset it, or change OUTRIDER_PROBE`,
		}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("f%d.yaml", i))
			if err := os.WriteFile(path, []byte(tc.file), 0o644); err != nil {
				t.Fatal(err)
			}
			e := maps.Clone(env)
			maps.Copy(e, tc.env)
			e["OUTRIDER_CONFIG_FILE"] = path
			for _, load := range []struct {
				name string
				load func() error
			}{
				{"start-up", func() error {
					_, _, err := LoadWithFile(func(k string) string { return e[k] }, "host1", nil)
					return err
				}},
				{"reload", func() error {
					_, err := Reload(func(k string) string { return e[k] }, "host1", nil, []byte(tc.file))
					return err
				}},
			} {
				if got, want, same := sameErrors(load.load(), tc.want, path); !same {
					t.Errorf("%s: errors:\n got %q\nwant %q", load.name, got, want)
				}
			}
		})
	}
}

// sameErrors reports whether err joins the errors want, in order, each
// with its %s standing for path; it returns both lists to print.
func sameErrors(err error, want []string, path string) (got, expanded []string, same bool) {
	for _, e := range unjoinErr(err) {
		got = append(got, e.Error())
	}
	for _, w := range want {
		expanded = append(expanded, strings.ReplaceAll(w, "%s", path))
	}
	return got, expanded, err != nil && slices.Equal(got, expanded)
}

// TestReloadRefusesAnEmptyFile: at start-up a file with nothing in it
// holds no settings; on a reload it is refused, and {} clears them.
func TestReloadRefusesAnEmptyFile(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		content string
		want    string // the error, or "" to load
	}{
		{"0 bytes", "", "the file is empty (or only comments or ---); write {} to clear every setting"},
		{"blanks", " \n  \n", "the file is empty (or only comments or ---); write {} to clear every setting"},
		{"comments", "# service_tags: [blue]\n", "the file is empty (or only comments or ---); write {} to clear every setting"},
		{"a lone ---", "---\n", "the file is empty (or only comments or ---); write {} to clear every setting"},
		{"--- and a comment", "---\n# later\n", "the file is empty (or only comments or ---); write {} to clear every setting"},
		{"a null document", "null\n", "the file is empty (or only comments or ---); write {} to clear every setting"},
		{"an empty map clears", "{}\n", ""},
		{"settings", "service_tags: [blue]\n", ""},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("f%d.yaml", i))
			if err := os.WriteFile(path, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			env := map[string]string{"OUTRIDER_REGISTRY": "none", "OUTRIDER_SERVICE_TAGS": "from-env", "OUTRIDER_CONFIG_FILE": path}
			getenv := func(k string) string { return env[k] }
			if _, _, err := LoadWithFile(getenv, "host1", nil); err != nil {
				t.Errorf("LoadWithFile (start-up): %v, want no error", err)
			}
			_, err := Reload(getenv, "host1", nil, nil)
			switch want := path + ": " + tc.want; {
			case tc.want == "" && err != nil:
				t.Errorf("Reload: %v, want no error", err)
			case tc.want != "" && (err == nil || err.Error() != want):
				t.Errorf("Reload: %v, want %q", err, want)
			}
		})
	}
}

// TestLoadRefusesWhatIsNotAFile: a config file that is a named pipe (with
// no writer, or behind a symlink), a pipe (a shell's <(…)) or a directory
// is refused at once, at start-up and on a reload, naming the variable and
// the path; a symlink to a regular file, as a ConfigMap item is, loads.
func TestLoadRefusesWhatIsNotAFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "data", "outrider.yaml")
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte("service_tags: [blue]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "outrider.yaml")
	fifo := filepath.Join(dir, "fifo.yaml")
	fifoLink := filepath.Join(dir, "fifo-link.yaml")
	if err := errors.Join(os.Symlink(file, link), syscall.Mkfifo(fifo, 0o600), os.Symlink(fifo, fifoLink)); err != nil {
		t.Fatal(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close() // open all along: a reader to the end would wait
	if _, err := pw.WriteString("service_tags: [green]\n"); err != nil {
		t.Fatal(err)
	}
	pipe := fmt.Sprintf("/proc/self/fd/%d", pr.Fd())

	tests := []struct {
		name string
		path string
		want string // the error, or "" to load the tag blue
	}{
		{"symlink to a file", link, ""},
		{"named pipe without a writer", fifo, `OUTRIDER_CONFIG_FILE="` + fifo + `" is not a regular file (a pipe); point it at a file`},
		{"symlink to a named pipe", fifoLink, `OUTRIDER_CONFIG_FILE="` + fifoLink + `" is not a regular file (a pipe); point it at a file`},
		{"pipe", pipe, `OUTRIDER_CONFIG_FILE="` + pipe + `" is not a regular file (a pipe); point it at a file`},
		{"directory", dir, `OUTRIDER_CONFIG_FILE="` + dir + `" is not a regular file (a directory); point it at a file`},
	}
	for _, tc := range tests {
		for _, load := range []struct {
			name string
			f    func(getenv func(string) string, hostname string, interfaceAddr func() (string, error)) (Config, error)
		}{{"start-up", func(getenv func(string) string, hostname string, interfaceAddr func() (string, error)) (Config, error) {
			c, _, err := LoadWithFile(getenv, hostname, interfaceAddr)
			return c, err
		}}, {"reload", func(getenv func(string) string, hostname string, interfaceAddr func() (string, error)) (Config, error) {
			return Reload(getenv, hostname, interfaceAddr, nil)
		}}} {
			t.Run(tc.name+"/"+load.name, func(t *testing.T) {
				env := map[string]string{"OUTRIDER_REGISTRY": "none", "OUTRIDER_CONFIG_FILE": tc.path}
				type result struct {
					c   Config
					err error
				}
				done := make(chan result, 1)
				go func() {
					c, err := load.f(func(k string) string { return env[k] }, "host1", nil)
					done <- result{c, err}
				}()
				var r result
				select {
				case r = <-done:
				case <-time.After(5 * time.Second):
					t.Fatal("still reading the file after 5s")
				}
				switch {
				case tc.want == "" && r.err != nil:
					t.Errorf("error %v, want none", r.err)
				case tc.want == "" && !slices.Equal(r.c.Service.Tags, []string{"blue"}):
					t.Errorf("tags %q, want the file's [blue]", r.c.Service.Tags)
				case tc.want != "" && (r.err == nil || r.err.Error() != tc.want):
					t.Errorf("error %v, want %q", r.err, tc.want)
				}
			})
		}
	}
}

// TestReloadableKeysAreVariables checks that every reloadable setting is a
// variable of the contract, so its key means something.
func TestReloadableKeysAreVariables(t *testing.T) {
	known := map[string]bool{}
	for _, s := range (Config{}).Effective() {
		known[s.Var] = true
	}
	for _, name := range Reloadable() {
		if !known[name] {
			t.Errorf("%s is reloadable but not a variable", name)
		}
	}
}

// TestAdminTokenPrintable: an admin token no HTTP header can carry (a line
// break inside it, as a file of two lines gives) is refused, without
// printing it; one with inner spaces or tabs is kept.
func TestAdminTokenPrintable(t *testing.T) {
	tests := []struct {
		token string
		ok    bool
	}{
		{"s3cret-token", true},
		{"two words\tand a tab", true},
		{"first-line\nsecond-line", false},
		{"carriage\rreturn", false},
		{"del\x7f", false},
	}
	for _, tc := range tests {
		_, err := load(t, map[string]string{"OUTRIDER_SERVICE_NAME": "web", "OUTRIDER_ADMIN_TOKEN": tc.token})
		switch {
		case tc.ok && err != nil:
			t.Errorf("token %q: %v, want it kept", tc.token, err)
		case !tc.ok && (err == nil || !strings.Contains(err.Error(), "OUTRIDER_ADMIN_TOKEN") || strings.Contains(err.Error(), tc.token)):
			t.Errorf("token %q: %v, want an error naming OUTRIDER_ADMIN_TOKEN without its value", tc.token, err)
		}
	}
}
