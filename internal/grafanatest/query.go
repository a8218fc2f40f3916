package grafanatest

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/outrider-sidecar/outrider/internal/promtest"
)

// Query asks prom what Grafana asks it to draw d over the time from start
// to now: each template variable's label_values(), whose values must be
// wantVars[name] in any order, and then every panel's queries as range
// queries every Step with the variables filled in by Expand. Each query
// must return a series with a finite value. It returns the answers by
// "panel title/refId".
func Query(t testing.TB, d Dashboard, prom *promtest.Server, start time.Time, wantVars map[string][]string) map[string][]promtest.Series {
	t.Helper()
	ctx := context.Background()
	vars := map[string][]string{}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := labelValuesQuery.FindStringSubmatch(v.QueryText())
		if m == nil {
			t.Fatalf("variable %q: query %q is not label_values(selector, label)", v.Name, v.QueryText())
		}
		match, err := Expand(m[1], vars, Step, 0)
		if err != nil {
			t.Fatalf("variable %q: %v", v.Name, err)
		}
		values, err := prom.LabelValues(ctx, m[2], match)
		if err != nil {
			t.Fatalf("variable %q: %v", v.Name, err)
		}
		t.Logf("variable %s: label_values(%s, %s) = %v", v.Name, match, m[2], values)
		got, want := slices.Sorted(slices.Values(values)), slices.Sorted(slices.Values(wantVars[v.Name]))
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("variable %s = %v, want %v", v.Name, got, want)
		}
		vars[v.Name] = values
	}

	end := time.Now()
	results := map[string][]promtest.Series{}
	for _, p := range d.Panels() {
		for _, tg := range p.Targets {
			name := p.Title + "/" + tg.RefID
			expr, err := Expand(tg.Expr, vars, Step, end.Sub(start))
			if err != nil {
				t.Errorf("panel %q, query %s: %v", p.Title, tg.RefID, err)
				continue
			}
			series, err := prom.QueryRange(ctx, expr, start, end, Step)
			if err != nil {
				t.Errorf("panel %q, query %s: %v", p.Title, tg.RefID, err)
				continue
			}
			results[name] = series
			finite := 0
			for _, s := range series {
				finite += len(finiteValues(s))
			}
			t.Logf("%-42s %d series, %3d finite samples: %s", name, len(series), finite, summarize(series))
			if finite == 0 {
				t.Errorf("panel %q, query %s: %s gave %d series and no finite value over the run's %s, want data",
					p.Title, tg.RefID, expr, len(series), end.Sub(start).Round(time.Second))
			}
		}
	}
	return results
}

// Extremes are the smallest, largest and last finite values of a series.
type Extremes struct{ Min, Max, Last float64 }

// ExtremesBy is the extremes of each series over the range, keyed by the
// series' label; a series with no finite value is left out.
func ExtremesBy(series []promtest.Series, label string) map[string]Extremes {
	out := map[string]Extremes{}
	for _, s := range series {
		for _, v := range finiteValues(s) {
			key := s.Labels[label]
			e, ok := out[key]
			if !ok {
				e = Extremes{v, v, v}
			}
			e.Min, e.Max, e.Last = min(e.Min, v), max(e.Max, v), v
			out[key] = e
		}
	}
	return out
}

// LargestAtLeast wants a series for each key whose largest value reaches
// the key's figure; use it on ExtremesBy's answer.
func LargestAtLeast(want map[string]float64) func(map[string]Extremes) error {
	return func(got map[string]Extremes) error {
		for key, least := range want {
			e, ok := got[key]
			if !ok || e.Max < least {
				return fmt.Errorf("extremes %v, want %s to reach %g", got, key, least)
			}
		}
		return nil
	}
}

func finiteValues(s promtest.Series) []float64 {
	var out []float64
	for _, sample := range s.Samples {
		if !math.IsNaN(sample.Value) && !math.IsInf(sample.Value, 0) {
			out = append(out, sample.Value)
		}
	}
	return out
}

// summarize shows each series' labels that vary and its last finite value.
func summarize(series []promtest.Series) string {
	var parts []string
	for _, s := range series {
		var labels []string
		for _, k := range []string{"instance", "code", "quantile"} {
			if v, ok := s.Labels[k]; ok {
				labels = append(labels, k+"="+v)
			}
		}
		last := "none"
		if f := finiteValues(s); len(f) > 0 {
			last = fmt.Sprintf("%.4g", f[len(f)-1])
		}
		parts = append(parts, fmt.Sprintf("{%s} last %s", strings.Join(labels, ","), last))
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}
