// Package metricsdoc holds a page's table of metrics to what a registry
// exports, for the tests of the packages that document their metrics.
package metricsdoc

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// row is a line of a metrics table: | `name{labels}` | type | help |.
var row = regexp.MustCompile("(?m)^\\| `(outrider_[a-z0-9_]+)(?:\\{[a-z_,]*\\})?` \\| (gauge|counter|histogram) \\| (.*) \\|$")

// Check fails t unless the page at path has a row for each metric reg
// exports, with its type and its help string as the code has them
// (backquotes aside), and no row for another.
func Check(t *testing.T, path string, reg prometheus.Gatherer) {
	t.Helper()
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	page := "docs/" + filepath.Base(path)
	documented := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(string(doc), -1) {
		documented[m[1]] = m[2] + ": " + strings.ReplaceAll(m[3], "`", "")
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		want := strings.ToLower(f.GetType().String()) + ": " + f.GetHelp()
		if got, ok := documented[f.GetName()]; !ok {
			t.Errorf("%s: no row for %s (want %q)", page, f.GetName(), want)
		} else if got != want {
			t.Errorf("%s: %s is %q, the code's %q", page, f.GetName(), got, want)
		}
		delete(documented, f.GetName())
	}
	for name := range documented {
		t.Errorf("%s has a row for %s, which the package does not export", page, name)
	}
}
