package config

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestUnknownVars(t *testing.T) {
	environ := []string{
		"PATH=/bin", "OUTRIDER_DRAIN_TIMEOUT=60s", "OUTRIDER_DRAIN_TIMOUT=60s", "OUTRIDER_PROBE_PERIODS=1s",
		"OUTRIDER_ADMIN_TOKN=x", "OUTRIDER_FROBNICATE=1", "CONSUL_HTTP_ADDR=127.0.0.1:8500",
		// Service links of Services named outrider and outrider-admin.
		"OUTRIDER_SERVICE_HOST=10.0.0.9", "OUTRIDER_PORT=tcp://10.0.0.9:15090", "OUTRIDER_PORT_15090_TCP=tcp://10.0.0.9:15090",
		"OUTRIDER_PORT_15090_TCP_PROTO=tcp", "OUTRIDER_PORT_15090_TCP_PORT=15090", "OUTRIDER_PORT_15090_TCP_ADDR=10.0.0.9",
		"OUTRIDER_SERVICE_PORT_METRICS=15090", "OUTRIDER_ADMIN_SERVICE_HOST=10.0.0.8", "OUTRIDER_ADMIN_PORT=tcp://10.0.0.8:15000",
		"OUTRIDER_ADMIN_SERVICE_PORT=15000",
		// A port of its own is a guess at a setting, not a service link.
		"OUTRIDER_APP_PORT=9090", "OUTRIDER_METRICS_PORT=9100", "OUTRIDER_PROBE_PORT=8081",
	}
	want := []string{
		"OUTRIDER_DRAIN_TIMOUT is not an outrider variable and is ignored (did you mean OUTRIDER_DRAIN_TIMEOUT?)",
		"OUTRIDER_PROBE_PERIODS is not an outrider variable and is ignored (did you mean OUTRIDER_PROBE_PERIOD?)",
		"OUTRIDER_ADMIN_TOKN is not an outrider variable and is ignored (did you mean OUTRIDER_ADMIN_TOKEN?)",
		"OUTRIDER_FROBNICATE is not an outrider variable and is ignored",
		"OUTRIDER_APP_PORT is not an outrider variable and is ignored (did you mean OUTRIDER_APP_ADDR?)",
		"OUTRIDER_METRICS_PORT is not an outrider variable and is ignored (did you mean OUTRIDER_METRICS_LISTEN?)",
		"OUTRIDER_PROBE_PORT is not an outrider variable and is ignored",
	}
	if got := UnknownVars(environ); !slices.Equal(got, want) {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
}

// TestVarsAreThoseReadAndDocumented: Vars is every OUTRIDER_* name the
// product's code reads and the README documents, so that no variable
// outrider reads is ever warned of as unknown.
func TestVarsAreThoseReadAndDocumented(t *testing.T) {
	name := regexp.MustCompile(`"(OUTRIDER_[A-Z0-9_]+)"`)
	read := map[string]bool{}
	for _, dir := range []string{".", "../cmd/agent", "../probe", "../register", "../proxy", "../exporter", "../peers", "../shutdown", "../wrap", "../readiness", "../inject"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") || strings.HasSuffix(f, "vars.go") {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range name.FindAllStringSubmatch(string(b), -1) {
				read[m[1]] = true
			}
		}
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for n := range read {
		if !slices.Contains(Vars, n) {
			t.Errorf("%s is read but not in Vars", n)
		}
	}
	for _, v := range Vars {
		if !read[v] {
			t.Errorf("%s is in Vars but nothing reads it", v)
		}
		if !strings.Contains(string(readme), "`"+v+"`") {
			t.Errorf("%s is in Vars but not in the README", v)
		}
	}
}
