package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
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
	inForce := defaultsInForce(t)
	checked := 0
	for _, v := range helpVars {
		got, ok := inForce[v.name]
		if !ok || v.name == "OUTRIDER_REGISTRY" || strings.ContainsAny(v.def, " <$…") {
			continue // not printed, set by this test, or described rather than given
		}
		checked++
		if !sameValue(got, v.def) {
			t.Errorf("outrider help gives %s [%s]; check-config prints %q", v.name, v.def, got)
		}
	}
	if checked < 20 {
		t.Errorf("only %d defaults compared; the help or check-config's output changed shape", checked)
	}
}

// TestDocDefaultsAreInForce: each default the tables of variables in the
// README and docs/ give as a plain value (`5s`, not `$POD_IP, else …`) is
// the one check-config prints with nothing set, as for outrider help.
func TestDocDefaultsAreInForce(t *testing.T) {
	inForce := defaultsInForce(t)
	docs, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `(OUTRIDER_[A-Z0-9_]+)` \\| `([^`]*)`")
	checked := 0
	for _, doc := range append(docs, "../../README.md") {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range row.FindAllStringSubmatch(string(b), -1) {
			name, def := m[1], m[2]
			got, ok := inForce[name]
			if !ok || name == "OUTRIDER_REGISTRY" || strings.ContainsAny(def, " <$…") {
				continue // not printed, set by this test, or described rather than given
			}
			checked++
			if !sameValue(got, def) {
				t.Errorf("%s gives %s the default `%s`; check-config prints %q", filepath.Base(doc), name, def, got)
			}
		}
	}
	if checked < 30 {
		t.Errorf("only %d defaults compared; the docs' tables or check-config's output changed shape", checked)
	}
}

// defaultsInForce returns what check-config prints for each variable with
// nothing set but OUTRIDER_REGISTRY=none.
func defaultsInForce(t *testing.T) map[string]string {
	t.Helper()
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
	return inForce
}

// sameValue: a and b are the same string, or the same duration (1m0s, 1m).
func sameValue(a, b string) bool {
	if a == b {
		return true
	}
	da, errA := time.ParseDuration(a)
	db, errB := time.ParseDuration(b)
	return errA == nil && errB == nil && da == db
}
