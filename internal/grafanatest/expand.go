package grafanatest

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Grafana's built-in interval variables as Query fills them: a Prometheus
// datasource left at Grafana's default scrape interval (15s) gives
// $__rate_interval = max($__interval + 15s, 4 × 15s) = 1m for any step
// under 45s.
const (
	// Step is the step of Query's range queries, and its $__interval.
	Step = time.Second
	// RateInterval is what Expand puts for $__rate_interval.
	RateInterval = "1m"
)

// Expand fills a query's variables as Grafana's Prometheus datasource
// does: a multi-value variable becomes the regex of its values, (a|b),
// each value's regex characters escaped for a PromQL string; the interval
// variables become step, RateInterval and rng. A variable it does not know
// is an error naming it.
func Expand(expr string, vars map[string][]string, step, rng time.Duration) (string, error) {
	var unknown []string
	out := variableRef.ReplaceAllStringFunc(expr, func(m string) string {
		name := strings.Trim(m, "${}[]")
		switch name {
		case "__interval":
			return promDuration(step)
		case "__rate_interval":
			return RateInterval
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
			escaped[i] = regexEscape(v)
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

// variableRef is $name, ${name} or [[name]].
var variableRef = regexp.MustCompile(`\$\{\w+\}|\$\w+|\[\[\w+\]\]`)

// regexEscape escapes v's regex characters with a doubled backslash, as
// Grafana does, so that the PromQL string holds \. for a dot.
func regexEscape(v string) string {
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
