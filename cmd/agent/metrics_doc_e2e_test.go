package main

import (
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/outrider-sidecar/outrider/internal/consultest"
	"github.com/outrider-sidecar/outrider/internal/testbin"
)

// TestMetricsTheREADMEDocuments: the README's table of metrics names each
// outrider_* metric that bin/outrider exports with every part on (a
// registry, the proxy, peers), and none that it does not, so a metric
// added or renamed cannot leave the table behind.
func TestMetricsTheREADMEDocuments(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, _ := strings.Cut(string(readme), "\n## Metrics\n")
	table, _, _ = strings.Cut(table, "\n## ")
	documented := map[string]bool{}
	for _, line := range strings.Split(table, "\n") {
		if !strings.HasPrefix(line, "| `outrider_") {
			continue
		}
		first := strings.Split(line, "|")[1]
		for _, m := range regexp.MustCompile("`(outrider_[a-z0-9_]+)").FindAllStringSubmatch(first, -1) {
			documented[m[1]] = true
		}
	}
	if len(documented) < 30 {
		t.Fatalf("found %d metrics in the README's table; its shape changed", len(documented))
	}

	srv := consultest.Start(t)
	proxy := testbin.FreeAddr(t)
	a := regStart(t, srv, "OUTRIDER_PROXY_LISTEN="+proxy)
	a.waitHealth("passing", 20*time.Second)
	if code, body := a.get("http://" + proxy + "/"); code != http.StatusOK {
		t.Fatalf("GET through the proxy: %d %s", code, body)
	}
	if code, body := a.get(a.admin + "/v1/peers/echo"); code != http.StatusOK {
		t.Fatalf("GET /v1/peers/echo: %d %s", code, body)
	}
	code, body := a.get(a.metrics + "/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	exported := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (outrider_[a-z0-9_]+) `).FindAllStringSubmatch(body, -1) {
		exported[m[1]] = true
		if !documented[m[1]] {
			t.Errorf("/metrics exports %s, which the README's table of metrics does not name", m[1])
		}
	}
	for name := range documented {
		if !exported[name] {
			t.Errorf("the README's table of metrics names %s, which /metrics does not export", name)
		}
	}
}
