package grafanatest

import (
	"fmt"
	"regexp"
	"strings"
)

// labelValuesQuery is a label_values() variable query: the series
// selector and the label.
var labelValuesQuery = regexp.MustCompile(`^label_values\((outrider_\w+(?:\{.*\})?),\s*(\w+)\)$`)

// Problems lists what keeps d from loading in Grafana as a dashboard of
// outrider's metrics that follows its datasource variable; none when it is
// fine.
func Problems(d Dashboard) []string {
	var probs []string
	add := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }
	if d.UID == "" || d.Title == "" {
		add("uid %q, title %q: want both set", d.UID, d.Title)
	}
	if d.SchemaVersion < minSchemaVersion {
		add("schemaVersion %d, want %d or later", d.SchemaVersion, minSchemaVersion)
	}

	if v, ok := d.Variable(dsVariable); !ok || v.Type != "datasource" || v.QueryText() != "prometheus" {
		add("template variable %q: %+v, want one of type datasource with query prometheus", dsVariable, v)
	}
	for _, name := range []string{"namespace", "service", "instance"} {
		v, ok := d.Variable(name)
		switch {
		case !ok:
			add("no template variable %q", name)
		case v.Type != "query" || !isDSRef(v.Datasource):
			add("template variable %q: type %q, datasource %+v; want a query of the datasource %s", name, v.Type, v.Datasource, dsReference)
		case !labelValuesQuery.MatchString(v.QueryText()):
			add("template variable %q: query %q, want label_values(<outrider_ metric>, %s)", name, v.QueryText(), name)
		case labelValuesQuery.FindStringSubmatch(v.QueryText())[2] != name:
			add("template variable %q: query %q reads another label", name, v.QueryText())
		}
	}

	ids := map[int]string{}
	type cell struct{ x, y int }
	taken := map[cell]string{}
	for _, p := range d.Panels() {
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

// isDSRef tells whether r follows the dashboard's datasource variable.
func isDSRef(r *DatasourceRef) bool {
	return r != nil && r.Type == "prometheus" && r.UID == dsReference
}
