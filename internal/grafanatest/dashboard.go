// Package grafanatest reads a Grafana dashboard JSON, checks it as Grafana
// would load it, and runs its queries against a test's Prometheus
// (internal/promtest) as Grafana's Prometheus datasource sends them.
package grafanatest

import (
	"encoding/json"
	"fmt"
	"os"
)

// The dashboard's own template variables: every query reads Prometheus
// through dsVariable, and filters on the other two.
const (
	dsVariable       = "datasource"
	dsReference      = "${" + dsVariable + "}"
	minSchemaVersion = 36 // Grafana 9: datasource references by uid
	gridWidth        = 24 // Grafana's grid is 24 columns wide
)

// Dashboard is the part of a Grafana dashboard JSON that the tests read.
type Dashboard struct {
	UID           string `json:"uid"`
	Title         string `json:"title"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []Variable `json:"list"`
	} `json:"templating"`
	// TopPanels are the panels at the top of the dashboard, rows among
	// them; Panels flattens them.
	TopPanels []Panel `json:"panels"`
}

// DatasourceRef is a panel's, a target's or a variable's datasource
// reference.
type DatasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// Variable is one of the dashboard's template variables.
type Variable struct {
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	Query      any            `json:"query"` // a string, or an object with "query"
	Datasource *DatasourceRef `json:"datasource"`
	Multi      bool           `json:"multi"`
	IncludeAll bool           `json:"includeAll"`
}

// QueryText is the variable's query, from either form Grafana stores.
func (v Variable) QueryText() string {
	switch q := v.Query.(type) {
	case string:
		return q
	case map[string]any:
		s, _ := q["query"].(string)
		return s
	}
	return ""
}

// Panel is one panel of the dashboard, or a row.
type Panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *DatasourceRef `json:"datasource"`
	GridPos    *struct {
		X int `json:"x"`
		Y int `json:"y"`
		W int `json:"w"`
		H int `json:"h"`
	} `json:"gridPos"`
	Targets []Target `json:"targets"`
	// Panels are a collapsed row's panels.
	Panels []Panel `json:"panels"`
}

// Target is one query of a panel.
type Target struct {
	RefID        string         `json:"refId"`
	Expr         string         `json:"expr"`
	LegendFormat string         `json:"legendFormat"`
	Datasource   *DatasourceRef `json:"datasource"`
}

// Read parses the dashboard JSON at path; the many fields Grafana keeps
// that the tests do not read are ignored.
func Read(path string) (Dashboard, error) {
	var d Dashboard
	b, err := os.ReadFile(path)
	if err != nil {
		return d, fmt.Errorf("read dashboard: %w", err)
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return d, fmt.Errorf("dashboard %s: %w", path, err)
	}
	return d, nil
}

// Panels returns the dashboard's panels, a collapsed row's included, in
// order.
func (d Dashboard) Panels() []Panel {
	var out []Panel
	for _, p := range d.TopPanels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

// Variable returns the template variable called name.
func (d Dashboard) Variable(name string) (Variable, bool) {
	for _, v := range d.Templating.List {
		if v.Name == name {
			return v, true
		}
	}
	return Variable{}, false
}
