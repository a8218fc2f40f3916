// Package prometheus_test checks the Prometheus files that outrider ships:
// the recording rules with promtool, and that the documents show them.
package prometheus_test

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/outrider-sidecar/outrider/internal/promtest"
)

// TestPromtool runs promtool on the shipped rules: `check rules` accepts
// them, `test rules` passes their unit tests, and a broken file is refused,
// so the check is known to bite.
func TestPromtool(t *testing.T) {
	promtool := promtest.Promtool(t)
	for _, tc := range []struct {
		name   string
		args   []string
		wantOK bool
		want   string
	}{
		{name: "check rules", args: []string{"check", "rules", "rules.yml"}, wantOK: true, want: "SUCCESS: 5 rules found"},
		{name: "unit tests", args: []string{"test", "rules", "rules_test.yml"}, wantOK: true, want: "SUCCESS"},
		{name: "broken rules refused", args: []string{"check", "rules", "testdata/invalid-rules.yml"}, wantOK: false,
			want: "FAILED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := exec.Command(promtool, tc.args...).CombinedOutput()
			if ok := err == nil; ok != tc.wantOK {
				t.Errorf("promtool %s: exit error %v, want success %v\n%s", strings.Join(tc.args, " "), err, tc.wantOK, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("promtool %s printed:\n%s\nwant %q in it", strings.Join(tc.args, " "), out, tc.want)
			}
		})
	}
}

// TestDocsShowTheRules checks that docs/prometheus.md explains every series
// that rules.yml records, and that the README's VM section shows the same
// Consul scrape job as the doc, which the end-to-end test runs.
func TestDocsShowTheRules(t *testing.T) {
	rules := readFile(t, "rules.yml")
	doc := readFile(t, "../../docs/prometheus.md")
	names := regexp.MustCompile(`(?m)^\s+- record: (\S+)$`).FindAllStringSubmatch(rules, -1)
	if len(names) == 0 {
		t.Fatal("rules.yml: no recording rules found")
	}
	for _, m := range names {
		if !strings.Contains(doc, "`"+m[1]) {
			t.Errorf("docs/prometheus.md does not explain %s", m[1])
		}
	}

	job := promtest.DocBlock(t, "../../docs/prometheus.md", "scrape-job: consul")
	readme := readFile(t, "../../README.md")
	if !strings.Contains(readme, "```yaml\n"+job+"```") {
		t.Errorf("README.md does not show the consul scrape job of docs/prometheus.md:\n%s", job)
	}
	if !strings.Contains(readme, "(docs/prometheus.md)") {
		t.Errorf("README.md does not link docs/prometheus.md")
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
