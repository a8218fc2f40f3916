package grafanatest

import (
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/outrider-sidecar/outrider/internal/promtest"
)

// TestDashboardProblems proves that Problems can fail: each broken
// dashboard gives the problem named.
func TestDashboardProblems(t *testing.T) {
	const (
		vars = `"templating": {"list": [
			{"name": "datasource", "type": "datasource", "query": "prometheus"},
			{"name": "namespace", "type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"}, "query": "label_values(outrider_build_info, namespace)"},
			{"name": "service", "type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"}, "query": "label_values(outrider_build_info, service)"},
			{"name": "instance", "type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"}, "query": {"query": "label_values(outrider_build_info{service=~\"$service\"}, instance)"}}]}`
		ds    = `"datasource": {"type": "prometheus", "uid": "${datasource}"}`
		grid  = `"gridPos": {"x": 0, "y": 0, "w": 12, "h": 8}`
		query = `"targets": [{"refId": "A", ` + ds + `, "expr": "up"}]`
	)
	dash := func(schema int, vars string, panels ...string) string {
		return fmt.Sprintf(`{"uid": "o", "title": "o", "schemaVersion": %d, %s, "panels": [%s]}`, schema, vars, strings.Join(panels, ","))
	}
	for _, tc := range []struct {
		name string
		json string
		want string // a problem that must be listed; none when empty
	}{
		{name: "fine", json: dash(39, vars, `{"id": 1, "type": "timeseries", "title": "a", `+ds+`, `+grid+`, `+query+`}`)},
		{name: "old schema", json: dash(30, vars), want: "schemaVersion 30, want 36 or later"},
		{name: "no variables", json: dash(39, `"templating": {"list": []}`), want: `no template variable "namespace"`},
		{
			name: "variable of another label",
			json: dash(39, strings.Replace(vars, "outrider_build_info, service)", "outrider_build_info, instance)", 1)),
			want: `template variable "service": query "label_values(outrider_build_info, instance)" reads another label`,
		},
		{
			name: "fixed datasource",
			json: dash(39, vars, `{"id": 1, "type": "timeseries", "title": "a", "datasource": {"type": "prometheus", "uid": "P1"}, `+grid+`, `+query+`}`),
			want: `panel 1 "a": datasource &{Type:prometheus UID:P1}, want ${datasource}`,
		},
		{
			name: "target without datasource",
			json: dash(39, vars, `{"id": 1, "type": "timeseries", "title": "a", `+ds+`, `+grid+`, "targets": [{"refId": "A", "expr": "up"}]}`),
			want: `panel 1 "a", query A: datasource <nil>, want ${datasource}`,
		},
		{
			name: "duplicate id",
			json: dash(39, vars, `{"id": 1, "type": "row", "title": "r", "gridPos": {"x": 0, "y": 0, "w": 24, "h": 1}}`,
				`{"id": 1, "type": "timeseries", "title": "a", `+ds+`, "gridPos": {"x": 0, "y": 1, "w": 12, "h": 8}, `+query+`}`),
			want: `panel 1 "a": id 1 is also panel 1 "r"'s`,
		},
		{name: "no gridPos", json: dash(39, vars, `{"id": 1, "type": "timeseries", "title": "a", `+ds+`, `+query+`}`), want: `panel 1 "a": no gridPos`},
		{
			name: "off the grid",
			json: dash(39, vars, `{"id": 1, "type": "timeseries", "title": "a", `+ds+`, "gridPos": {"x": 18, "y": 0, "w": 12, "h": 8}, `+query+`}`),
			want: `panel 1 "a": gridPos {X:18 Y:0 W:12 H:8}, want a positive size within 24 columns`,
		},
		{
			name: "overlap",
			json: dash(39, vars, `{"id": 1, "type": "timeseries", "title": "a", `+ds+`, `+grid+`, `+query+`}`,
				`{"id": 2, "type": "timeseries", "title": "b", `+ds+`, "gridPos": {"x": 6, "y": 4, "w": 12, "h": 8}, `+query+`}`),
			want: `panel 2 "b": gridPos {X:6 Y:4 W:12 H:8} overlaps panel 1 "a"`,
		},
		{name: "no query", json: dash(39, vars, `{"id": 1, "type": "timeseries", "title": "a", `+ds+`, `+grid+`}`), want: `panel 1 "a": no query`},
		{
			name: "empty expr",
			json: dash(39, vars, `{"id": 1, "type": "timeseries", "title": "a", `+ds+`, `+grid+`, "targets": [{"refId": "A", `+ds+`, "expr": " "}]}`),
			want: `panel 1 "a", query A: no expr`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := t.TempDir() + "/dashboard.json"
			if err := os.WriteFile(path, []byte(tc.json), 0o644); err != nil {
				t.Fatal(err)
			}
			d, err := Read(path)
			if err != nil {
				t.Fatal(err)
			}
			got := Problems(d)
			if tc.want == "" {
				if len(got) > 0 {
					t.Errorf("problems = %q, want none", got)
				}
				return
			}
			for _, p := range got {
				if p == tc.want {
					return
				}
			}
			t.Errorf("problems = %q, want one to be %q", got, tc.want)
		})
	}
}

func TestExpand(t *testing.T) {
	vars := map[string][]string{"service": {"echo"}, "instance": {"127.0.0.1:1", "[::1]:2"}}
	for _, tc := range []struct {
		name, expr, want, wantErr string
	}{
		{name: "one value", expr: `up{service=~"$service"}`, want: `up{service=~"echo"}`},
		{
			name: "values as an escaped regex",
			expr: `up{instance=~"${instance}"}`,
			want: `up{instance=~"(127\\.0\\.0\\.1:1|\\[::1\\]:2)"}`,
		},
		{name: "old syntax", expr: `up{service=~"[[service]]"}`, want: `up{service=~"echo"}`},
		{
			name: "intervals",
			expr: `rate(x[$__rate_interval]) + max_over_time(y[$__interval]) + increase(z[$__range])`,
			want: `rate(x[1m]) + max_over_time(y[2s]) + increase(z[90s])`,
		},
		{name: "unknown", expr: `up{job="$job"}`, wantErr: `query "up{job=\"$job\"}": unknown variables [$job]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Expand(tc.expr, vars, 2*time.Second, 90*time.Second)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("Expand error = %v, want %s", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("Expand = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestPanelsFlattensRows(t *testing.T) {
	path := t.TempDir() + "/dashboard.json"
	const json = `{"panels": [{"id": 1, "type": "timeseries"}, {"id": 2, "type": "row", "panels": [{"id": 3}, {"id": 4}]}, {"id": 5}]}`
	if err := os.WriteFile(path, []byte(json), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for _, p := range d.Panels() {
		got = append(got, p.ID)
	}
	if fmt.Sprint(got) != "[1 2 3 4 5]" {
		t.Errorf("Panels ids = %v, want [1 2 3 4 5]", got)
	}
}

func TestReadErrors(t *testing.T) {
	dir := t.TempDir()
	bad := dir + "/bad.json"
	if err := os.WriteFile(bad, []byte(`{"panels": 1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, path, want string }{
		{name: "missing", path: dir + "/none.json", want: "read dashboard: open " + dir + "/none.json"},
		{name: "not a dashboard", path: bad, want: "dashboard " + bad + ": json: cannot unmarshal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Read(tc.path)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("Read(%q) error = %v, want one starting %q", tc.path, err, tc.want)
			}
		})
	}
}

func TestExtremesBy(t *testing.T) {
	series := func(instance string, values ...float64) promtest.Series {
		s := promtest.Series{Labels: map[string]string{"instance": instance}}
		for i, v := range values {
			s.Samples = append(s.Samples, promtest.Sample{Time: time.Unix(int64(i), 0), Value: v})
		}
		return s
	}
	got := ExtremesBy([]promtest.Series{
		series("a", 2, math.NaN(), 5, 1, math.Inf(1)),
		series("b", math.NaN()),
		series("c", 3),
	}, "instance")
	want := map[string]Extremes{"a": {Min: 1, Max: 5, Last: 1}, "c": {Min: 3, Max: 3, Last: 3}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("ExtremesBy = %v, want %v (b has no finite value)", got, want)
	}

	for _, tc := range []struct {
		name    string
		want    map[string]float64
		wantErr string
	}{
		{name: "reached", want: map[string]float64{"a": 5, "c": 0}},
		{name: "too small", want: map[string]float64{"a": 6}, wantErr: "extremes map[a:{1 5 1} c:{3 3 3}], want a to reach 6"},
		{name: "no series", want: map[string]float64{"b": 0}, wantErr: "extremes map[a:{1 5 1} c:{3 3 3}], want b to reach 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := LargestAtLeast(tc.want)(got)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || err.Error() != tc.wantErr) {
				t.Errorf("LargestAtLeast(%v) = %v, want %q", tc.want, err, tc.wantErr)
			}
		})
	}
}
