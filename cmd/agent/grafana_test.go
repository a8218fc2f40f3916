package main

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// grafanaDashboard is the shipped dashboard, relative to this package.
const grafanaDashboard = "../../deploy/grafana/outrider.json"

// The dashboard's own template variables: every query reads Prometheus
// through dsVariable, and filters on the other two.
const (
	dsVariable       = "datasource"
	dsReference      = "${" + dsVariable + "}"
	minSchemaVersion = 36 // Grafana 9: datasource references by uid
	gridWidth        = 24 // Grafana's grid is 24 columns wide
)

// Grafana's built-in interval variables as the test fills them: a
// Prometheus datasource left at Grafana's default scrape interval (15s)
// gives $__rate_interval = max($__interval + 15s, 4 × 15s) = 1m for any
// step under 45s.
const (
	grafanaStep         = time.Second
	grafanaRateInterval = "1m"
)

// dashboard is the part of a Grafana dashboard JSON that the tests read.
type dashboard struct {
	UID           string `json:"uid"`
	Title         string `json:"title"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []templateVar `json:"list"`
	} `json:"templating"`
	Panels []dashboardPanel `json:"panels"`
}

// dsRef is a panel's, a target's or a variable's datasource reference.
type dsRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type templateVar struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	Query      any    `json:"query"` // a string, or an object with "query"
	Datasource *dsRef `json:"datasource"`
	Multi      bool   `json:"multi"`
	IncludeAll bool   `json:"includeAll"`
}

// queryText is the variable's query, from either form Grafana stores.
func (v templateVar) queryText() string {
	switch q := v.Query.(type) {
	case string:
		return q
	case map[string]any:
		s, _ := q["query"].(string)
		return s
	}
	return ""
}

type dashboardPanel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *dsRef `json:"datasource"`
	GridPos    *struct {
		X int `json:"x"`
		Y int `json:"y"`
		W int `json:"w"`
		H int `json:"h"`
	} `json:"gridPos"`
	Targets []panelTarget `json:"targets"`
	// Panels are a collapsed row's panels.
	Panels []dashboardPanel `json:"panels"`
}

type panelTarget struct {
	RefID      string `json:"refId"`
	Expr       string `json:"expr"`
	Datasource *dsRef `json:"datasource"`
}

// readDashboard parses the dashboard JSON at path; the many fields Grafana
// keeps that the tests do not read are ignored.
func readDashboard(path string) (dashboard, error) {
	var d dashboard
	b, err := os.ReadFile(path)
	if err != nil {
		return d, fmt.Errorf("read dashboard: %w", err)
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return d, fmt.Errorf("dashboard %s: %w", path, err)
	}
	return d, nil
}

// allPanels returns the dashboard's panels, a collapsed row's included,
// in order.
func (d dashboard) allPanels() []dashboardPanel {
	var out []dashboardPanel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

// variable returns the template variable called name.
func (d dashboard) variable(name string) (templateVar, bool) {
	for _, v := range d.Templating.List {
		if v.Name == name {
			return v, true
		}
	}
	return templateVar{}, false
}

// dashboardProblems lists what keeps d from loading in Grafana as a
// dashboard of outrider's metrics that follows its datasource variable;
// none when it is fine.
func dashboardProblems(d dashboard) []string {
	var probs []string
	add := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }
	if d.UID == "" || d.Title == "" {
		add("uid %q, title %q: want both set", d.UID, d.Title)
	}
	if d.SchemaVersion < minSchemaVersion {
		add("schemaVersion %d, want %d or later", d.SchemaVersion, minSchemaVersion)
	}

	if v, ok := d.variable(dsVariable); !ok || v.Type != "datasource" || v.queryText() != "prometheus" {
		add("template variable %q: %+v, want one of type datasource with query prometheus", dsVariable, v)
	}
	for _, name := range []string{"service", "instance"} {
		v, ok := d.variable(name)
		switch {
		case !ok:
			add("no template variable %q", name)
		case v.Type != "query" || !isDSRef(v.Datasource):
			add("template variable %q: type %q, datasource %+v; want a query of the datasource %s", name, v.Type, v.Datasource, dsReference)
		case !labelValuesQuery.MatchString(v.queryText()):
			add("template variable %q: query %q, want label_values(<outrider_ metric>, %s)", name, v.queryText(), name)
		case labelValuesQuery.FindStringSubmatch(v.queryText())[2] != name:
			add("template variable %q: query %q reads another label", name, v.queryText())
		}
	}

	ids := map[int]string{}
	type cell struct{ x, y int }
	taken := map[cell]string{}
	for _, p := range d.allPanels() {
		name := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if p.ID <= 0 {
			add("%s: id %d, want a positive id", name, p.ID)
		} else if other, dup := ids[p.ID]; dup {
			add("%s: id %d is also %s's", name, p.ID, other)
		}
		ids[p.ID] = name
		if p.Title == "" {
			add("%s: no title", name)
		}
		switch g := p.GridPos; {
		case g == nil:
			add("%s: no gridPos", name)
		case g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > gridWidth:
			add("%s: gridPos %+v, want a positive size within %d columns", name, *g, gridWidth)
		default:
			for x := g.X; x < g.X+g.W; x++ {
				for y := g.Y; y < g.Y+g.H; y++ {
					if other, ok := taken[cell{x, y}]; ok {
						add("%s: gridPos %+v overlaps %s", name, *g, other)
						x, y = g.X+g.W, g.Y+g.H // report an overlap once
						continue
					}
					taken[cell{x, y}] = name
				}
			}
		}
		if p.Type == "row" {
			if len(p.Targets) > 0 {
				add("%s: a row with queries", name)
			}
			continue
		}
		if !isDSRef(p.Datasource) {
			add("%s: datasource %+v, want %s", name, p.Datasource, dsReference)
		}
		if len(p.Targets) == 0 {
			add("%s: no query", name)
		}
		refIDs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.RefID == "" || refIDs[tg.RefID] {
				add("%s: refId %q empty or used twice", name, tg.RefID)
			}
			refIDs[tg.RefID] = true
			if !isDSRef(tg.Datasource) {
				add("%s, query %s: datasource %+v, want %s", name, tg.RefID, tg.Datasource, dsReference)
			}
			if strings.TrimSpace(tg.Expr) == "" {
				add("%s, query %s: no expr", name, tg.RefID)
			}
		}
	}
	return probs
}

// expandGrafana fills a query's variables as Grafana's Prometheus
// datasource does: a multi-value variable becomes the regex of its values,
// (a|b), each value's regex characters escaped for a PromQL string; the
// interval variables become step, Grafana's $__rate_interval and rng. A
// variable it does not know is an error naming it.
func expandGrafana(expr string, vars map[string][]string, step, rng time.Duration) (string, error) {
	var unknown []string
	out := grafanaVariable.ReplaceAllStringFunc(expr, func(m string) string {
		name := strings.Trim(m, "${}[]")
		switch name {
		case "__interval":
			return promDuration(step)
		case "__rate_interval":
			return grafanaRateInterval
		case "__range":
			return promDuration(rng)
		}
		values, ok := vars[name]
		if !ok {
			unknown = append(unknown, m)
			return m
		}
		escaped := make([]string, len(values))
		for i, v := range values {
			escaped[i] = grafanaRegexEscape(v)
		}
		if len(escaped) == 1 {
			return escaped[0]
		}
		return "(" + strings.Join(escaped, "|") + ")"
	})
	if len(unknown) > 0 {
		return "", fmt.Errorf("query %q: unknown variables %v", expr, unknown)
	}
	return out, nil
}

// grafanaVariable is $name, ${name} or [[name]].
var grafanaVariable = regexp.MustCompile(`\$\{\w+\}|\$\w+|\[\[\w+\]\]`)

// grafanaRegexEscape escapes v's regex characters with a doubled backslash,
// as Grafana does, so that the PromQL string holds \. for a dot.
func grafanaRegexEscape(v string) string {
	var b strings.Builder
	for _, r := range v {
		if strings.ContainsRune(`\$^*+?.()|{}[]'`, r) {
			b.WriteString(`\\`)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// promDuration writes d in whole seconds, at least 1s, as PromQL reads it.
func promDuration(d time.Duration) string {
	return fmt.Sprintf("%ds", max(1, int(d.Round(time.Second)/time.Second)))
}

// labelValuesQuery is a label_values() variable query: the series
// selector and the label.
var labelValuesQuery = regexp.MustCompile(`^label_values\((outrider_\w+(?:\{.*\})?),\s*(\w+)\)$`)

func isDSRef(r *dsRef) bool {
	return r != nil && r.Type == "prometheus" && r.UID == dsReference
}

// TestGrafanaDashboardIsWellFormed checks the shipped dashboard as Grafana
// reads it: schema, the datasource, service and instance variables, and
// every panel with a unique id, a place on the grid and queries of the
// chosen datasource.
func TestGrafanaDashboardIsWellFormed(t *testing.T) {
	d, err := readDashboard(grafanaDashboard)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range dashboardProblems(d) {
		t.Errorf("%s: %s", grafanaDashboard, p)
	}
	queries := 0
	for _, p := range d.allPanels() {
		queries += len(p.Targets)
	}
	t.Logf("%s: schemaVersion %d, %d panels, %d queries", grafanaDashboard, d.SchemaVersion, len(d.allPanels()), queries)
}

// TestDashboardProblems proves the check above can fail: each broken
// dashboard gives the problem named.
func TestDashboardProblems(t *testing.T) {
	const (
		vars = `"templating": {"list": [
			{"name": "datasource", "type": "datasource", "query": "prometheus"},
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
		{name: "no variables", json: dash(39, `"templating": {"list": []}`), want: `no template variable "service"`},
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
			d, err := readDashboard(path)
			if err != nil {
				t.Fatal(err)
			}
			got := dashboardProblems(d)
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

func TestExpandGrafana(t *testing.T) {
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
			got, err := expandGrafana(tc.expr, vars, 2*time.Second, 90*time.Second)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("expandGrafana error = %v, want %s", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("expandGrafana = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
