package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outrider-sidecar/outrider/config"
)

// TestHelpListsEveryVariable: outrider help names every variable outrider
// reads, marks the reloadable ones, and sends the reader to no file the
// install leaves out (a VM gets the binary and the units, the image the
// binary alone).
func TestHelpListsEveryVariable(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := dispatch([]string{"help"}, func(string) string { return "" }, &stdout, &stderr); code != exitOK {
		t.Fatalf("outrider help: exit %d, stderr %s", code, stderr.String())
	}
	out := stdout.String()
	listed := map[string]helpVar{}
	for _, v := range helpVars {
		listed[v.name] = v
	}
	for _, name := range config.Vars {
		v, ok := listed[name]
		if !ok {
			t.Errorf("outrider help does not list %s", name)
			continue
		}
		if got, want := strings.Contains(v.meaning, "(reloadable)"), slices.Contains(config.Reloadable(), name); got != want {
			t.Errorf("outrider help: %s reloadable = %v, want %v", name, got, want)
		}
		if !strings.Contains(out, "  "+name) {
			t.Errorf("outrider help's text does not hold %s", name)
		}
	}
	for _, name := range []string{"GOMAXPROCS", "GOGC", "HOST_IP", "CONSUL_HTTP_ADDR"} {
		if !strings.Contains(out, "  "+name) {
			t.Errorf("outrider help's text does not hold %s", name)
		}
	}
	if strings.Contains(out, "see README.md") {
		t.Errorf("outrider help sends the reader to README.md, which an install does not have:\n%s", out)
	}
	if !strings.Contains(out, docsURL) {
		t.Errorf("outrider help does not give %s", docsURL)
	}
}

// TestHelpDefaultsAreInForce: each default outrider help gives as a plain
// value is the one check-config prints with nothing set, so the help
// cannot drift from the code.
func TestHelpDefaultsAreInForce(t *testing.T) {
	getenv := func(name string) string {
		if name == "OUTRIDER_REGISTRY" {
			return "none"
		}
		return ""
	}
	var stdout, stderr bytes.Buffer
	if code := dispatch([]string{"check-config"}, getenv, &stdout, &stderr); code != exitOK {
		t.Fatalf("outrider check-config: exit %d, stderr %s", code, stderr.String())
	}
	inForce := map[string]string{}
	for _, line := range strings.Split(stdout.String(), "\n") {
		if name, value, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			inForce[name] = value
		}
	}
	checked := 0
	for _, v := range helpVars {
		got, ok := inForce[v.name]
		if !ok || v.name == "OUTRIDER_REGISTRY" || strings.ContainsAny(v.def, " <$…") {
			continue // not printed, set by this test, or described rather than given
		}
		checked++
		if got == v.def {
			continue
		}
		if g, err := time.ParseDuration(got); err == nil {
			if d, err := time.ParseDuration(v.def); err == nil && d == g {
				continue
			}
		}
		t.Errorf("outrider help gives %s [%s]; check-config prints %q", v.name, v.def, got)
	}
	if checked < 20 {
		t.Errorf("only %d defaults compared; the help or check-config's output changed shape", checked)
	}
}
