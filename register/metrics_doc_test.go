package register

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestMetricsDocumented: the metrics table of docs/consul.md has a row for
// each metric of the package, with its type and its help string as the
// code has them (backquotes aside), and no other.
func TestMetricsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/consul.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `(outrider_[a-z0-9_]+)(?:\\{[a-z_,]*\\})?` \\| (gauge|counter|histogram) \\| (.*) \\|$")
	documented := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(string(doc), -1) {
		documented[m[1]] = m[2] + ": " + strings.ReplaceAll(m[3], "`", "")
	}
	reg := prometheus.NewRegistry()
	if _, err := newMetrics(reg); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		want := strings.ToLower(f.GetType().String()) + ": " + f.GetHelp()
		if got, ok := documented[f.GetName()]; !ok {
			t.Errorf("docs/consul.md: no row for %s (want %q)", f.GetName(), want)
		} else if got != want {
			t.Errorf("docs/consul.md: %s is %q, the code's %q", f.GetName(), got, want)
		}
		delete(documented, f.GetName())
	}
	for name := range documented {
		t.Errorf("docs/consul.md has a row for %s, which the package does not export", name)
	}
}
