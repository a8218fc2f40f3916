package main

import (
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outrider-sidecar/outrider/internal/testbin"
)

// runOutrider runs bin/outrider to completion and returns its exit code
// and combined output.
func runOutrider(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	p := testbin.Start(t, testbin.Outrider(t), env, args...)
	code := p.Wait(30 * time.Second)
	return code, p.Output()
}

func TestAgentCheckConfigReportsEveryBadVariable(t *testing.T) {
	code, out := runOutrider(t, []string{"OUTRIDER_PROBE_PERIOD=5", "OUTRIDER_CHECK_TTL=abc", "OUTRIDER_REGISTRY=none"}, "check-config")
	if code != exitUsage {
		t.Errorf("exit code = %d, want %d", code, exitUsage)
	}
	for _, want := range []string{
		`OUTRIDER_PROBE_PERIOD="5" is not a duration (want e.g. 5s, 500ms)`,
		`OUTRIDER_CHECK_TTL="abc" is not a duration (want e.g. 5s, 500ms)`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestAgentRefusesAProcRootItCannotRead: a wrong OUTRIDER_PROC_ROOT is a
// configuration error, which check-config reports and start-up stops on,
// with exit status 2.
func TestAgentRefusesAProcRootItCannotRead(t *testing.T) {
	for _, root := range []string{
		filepath.Join(t.TempDir(), "proc"), // missing
		t.TempDir(),                        // a directory, not a procfs
	} {
		want := `OUTRIDER_PROC_ROOT="` + root + `" cannot be read as procfs (want its mount point, /proc by default)`
		for _, args := range [][]string{{"check-config"}, nil} {
			t.Run(strings.Join(append([]string{"outrider"}, args...), " "), func(t *testing.T) {
				code, out := runOutrider(t, []string{"OUTRIDER_REGISTRY=none", "OUTRIDER_PROC_ROOT=" + root}, args...)
				if code != exitUsage {
					t.Errorf("exit code = %d, want %d\n%s", code, exitUsage, out)
				}
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			})
		}
	}
}

func TestAgentNeverPrintsSecrets(t *testing.T) {
	secrets := []string{"CONSUL_HTTP_TOKEN=secret123", "OUTRIDER_ADMIN_TOKEN=admintok456", "CONSUL_HTTP_AUTH=admin:authpw789"}
	tests := []struct {
		name string
		env  []string
		args []string
		code int
	}{
		{"check-config valid", []string{"OUTRIDER_SERVICE_NAME=web", "OUTRIDER_SERVICE_ADDRESS=127.0.0.1"}, []string{"check-config"}, exitOK},
		{"check-config invalid", []string{"OUTRIDER_SERVICE_NAME=web", "OUTRIDER_PROBE_PERIOD=x"}, []string{"check-config"}, exitUsage},
		{"agent fails to start", []string{"OUTRIDER_CHECK_TTL=abc"}, nil, exitUsage},
		{"credentials in the Consul address", []string{"OUTRIDER_SERVICE_NAME=web", "OUTRIDER_SERVICE_ADDRESS=127.0.0.1",
			"CONSUL_HTTP_ADDR=http://admin:secret123@127.0.0.1:8500"}, []string{"check-config"}, exitUsage},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out := runOutrider(t, append(tc.env, secrets...), tc.args...)
			if code != tc.code {
				t.Errorf("exit code = %d, want %d\n%s", code, tc.code, out)
			}
			for _, s := range []string{"secret123", "admintok456", "authpw789"} {
				if strings.Contains(out, s) {
					t.Errorf("output shows the secret %q:\n%s", s, out)
				}
			}
			// check-config shows the basic auth's user, and that a
			// password is set.
			if code == exitOK && !strings.Contains(out, "CONSUL_HTTP_AUTH=admin:********") {
				t.Errorf("output lacks CONSUL_HTTP_AUTH=admin:********:\n%s", out)
			}
		})
	}
}

func TestAgentRefusesPublicAdminWithoutToken(t *testing.T) {
	code, out := runOutrider(t, []string{"OUTRIDER_REGISTRY=none", "OUTRIDER_ADMIN_LISTEN=0.0.0.0:15000"})
	if code == exitOK {
		t.Fatalf("outrider started with a public admin listener and no token:\n%s", out)
	}
	if !strings.Contains(out, "OUTRIDER_ADMIN_TOKEN is empty") {
		t.Errorf("output does not say why:\n%s", out)
	}
}

func TestAgentCommands(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"version"}, exitOK, "outrider dev (commit "},
		{[]string{"help"}, exitOK, "check-config"},
		{[]string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{[]string{"run", "--"}, exitUsage, "no command: want outrider run -- CMD ARGS"},
		{[]string{"run", "--", "true"}, exitUsage, "OUTRIDER_SERVICE_NAME=\"\" is required"},
		// An argument is refused, not ignored: check-config would have
		// checked the environment and said it was valid.
		{[]string{"check-config", "--file", "outrider.yaml"}, exitUsage, `outrider check-config: takes no arguments, got ["--file" "outrider.yaml"]`},
		{[]string{"prestop", "--timeout=60s"}, exitUsage, `outrider prestop: takes no arguments, got ["--timeout=60s"]`},
		{[]string{"version", "--short"}, exitUsage, `outrider version: takes no arguments`},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out := runOutrider(t, nil, tc.args...)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d, output %q; want exit %d and %q", code, out, tc.code, tc.want)
			}
		})
	}
}

func TestAgentPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	code, out := runOutrider(t, []string{"OUTRIDER_REGISTRY=none", "OUTRIDER_PROXY_LISTEN=off",
		"OUTRIDER_METRICS_LISTEN=" + ln.Addr().String(), "OUTRIDER_ADMIN_LISTEN=" + testbin.FreeAddr(t)})
	if code != exitFailed || !strings.Contains(out, "OUTRIDER_METRICS_LISTEN="+ln.Addr().String()) {
		t.Errorf("exit %d, output:\n%s\nwant exit %d naming OUTRIDER_METRICS_LISTEN", code, out, exitFailed)
	}
}

// TestAgentServesAndStops runs the agent with no registry: its endpoints
// answer, the admin token is enforced, and SIGTERM stops it with status 0.
func TestAgentServesAndStops(t *testing.T) {
	p := startOutrider(t, 10*time.Second, "OUTRIDER_SERVICE_NAME=web",
		"OUTRIDER_ADMIN_TOKEN=admintok456", "OUTRIDER_LOG_LEVEL=debug")

	body := get(t, p.metrics+"/metrics", "", http.StatusOK)
	for _, want := range []string{"go_goroutines ", "process_resident_memory_bytes ", "outrider_build_info{"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	get(t, p.admin+"/status", "", http.StatusUnauthorized)
	get(t, p.admin+"/status", "Bearer wrong", http.StatusUnauthorized)
	var status struct {
		ServiceName string `json:"service_name"`
		Registry    string `json:"registry"`
		Ready       bool   `json:"ready"`
	}
	if err := json.Unmarshal([]byte(get(t, p.admin+"/status", "Bearer admintok456", http.StatusOK)), &status); err != nil {
		t.Fatalf("/status is not JSON: %v", err)
	}
	if status.ServiceName != "web" || status.Registry != "none" {
		t.Errorf("/status = %+v, want service web, registry none", status)
	}

	p.Signal(syscall.SIGTERM)
	if code := p.Wait(10 * time.Second); code != exitOK {
		t.Errorf("exit code after SIGTERM = %d, want 0", code)
	}
	if strings.Contains(p.Output(), "admintok456") {
		t.Errorf("the admin token appears in the log:\n%s", p.Output())
	}
}

func get(t *testing.T, url, auth string, want int) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	code, body := httpDo(t, req)
	if code != want {
		t.Errorf("GET %s = %d, want %d: %s", url, code, want, body)
	}
	return body
}

// TestAgentRuntimeDefaults: outrider runs on one core with GOGC 25 unless
// the environment sets GOMAXPROCS or GOGC; the start-up log says which,
// and /metrics shows the collector's setting.
func TestAgentRuntimeDefaults(t *testing.T) {
	tests := []struct {
		name       string
		env        []string
		wantProcs  string
		wantGOGC   string
		gogcMetric float64 // 0: not checked (off shows as 2^64-1 there)
	}{
		{"unset", nil, `"gomaxprocs":1`, `"gogc":25`, 25},
		{"GOMAXPROCS set", []string{"GOMAXPROCS=2"}, `"gomaxprocs":2`, `"gogc":25`, 25},
		{"GOGC set", []string{"GOGC=100"}, `"gomaxprocs":1`, `"gogc":100`, 100},
		{"GOGC off", []string{"GOGC=off"}, `"gomaxprocs":1`, `"gogc":-1`, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := startOutrider(t, 10*time.Second, tc.env...)
			body := scrapeMetrics(t, p.metrics)
			p.Signal(syscall.SIGTERM)
			p.Wait(10 * time.Second)
			for _, want := range []string{tc.wantProcs, tc.wantGOGC} {
				if !strings.Contains(p.Output(), want) {
					t.Errorf("start-up log lacks %s:\n%s", want, p.Output())
				}
			}
			if tc.gogcMetric == 0 {
				return
			}
			if v, ok := seriesValue(t, body, "go_gc_gogc_percent"); !ok || v != tc.gogcMetric {
				t.Errorf("/metrics go_gc_gogc_percent = %v (present %v), want %v", v, ok, tc.gogcMetric)
			}
		})
	}
}

// TestAgentWarnsOfAMisspeltVariable: an OUTRIDER_* name outrider does not
// read is named, with the one meant, by check-config and at start-up.
func TestAgentWarnsOfAMisspeltVariable(t *testing.T) {
	const want = "OUTRIDER_DRAIN_TIMOUT is not an outrider variable and is ignored (did you mean OUTRIDER_DRAIN_TIMEOUT?)"
	env := []string{"OUTRIDER_REGISTRY=none", "OUTRIDER_DRAIN_TIMOUT=60s"}
	code, out := runOutrider(t, env, "check-config")
	if code != exitOK || !strings.Contains(out, "# warning: "+want) {
		t.Errorf("check-config: exit %d, output lacks %q:\n%s", code, want, out)
	}
	env = append(env, "OUTRIDER_PROXY_LISTEN=off", "OUTRIDER_METRICS_LISTEN=127.0.0.1:0", "OUTRIDER_ADMIN_LISTEN=127.0.0.1:0")
	p := testbin.Start(t, testbin.Outrider(t), env)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.Output(), want) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(p.Output(), want) {
		t.Errorf("start-up does not warn %q:\n%s", want, p.Output())
	}
}
