package main

import (
	"strings"
	"testing"
)

func TestBelowRate(t *testing.T) {
	tests := []struct {
		name string
		got  float64
		want string
		low  bool
	}{
		{name: "at the rate", got: 5000, want: "5000", low: false},
		{name: "within 10%", got: 4600, want: "5000", low: false},
		{name: "short", got: 4400, want: "5000", low: true},
		{name: "no rate recorded", got: 10, want: "", low: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := belowRate(tt.got, tt.want); got != tt.low {
				t.Errorf("belowRate(%v, %q): want %v, got %v", tt.got, tt.want, tt.low, got)
			}
		})
	}
}

func TestRatioTableEventLoops(t *testing.T) {
	cpu := func(v float64) *float64 { return &v }
	rw := row{Workload: "small", Cores: "1", Targets: []targetSummary{
		{Target: "nginx", Rounds: 3, RequestsPerSec: 1000, P50ms: 2, P99ms: 4, ProxyCPU: cpu(4), RSSMB: 20},
		{Target: "goloop", Rounds: 3, RequestsPerSec: 1250, P50ms: 1, P99ms: 4, ProxyCPU: cpu(3), RSSMB: 5},
		{Target: "gnetloop", Rounds: 3, RequestsPerSec: 1000, P50ms: 2, P99ms: 8, ProxyCPU: cpu(4.5), RSSMB: 10},
		{Target: "uringloop", Rounds: 3, RequestsPerSec: 1500, P50ms: 1, P99ms: 2, ProxyCPU: cpu(2), RSSMB: 8},
		{Target: "outrider", Rounds: 3, RequestsPerSec: 1100, P50ms: 2, P99ms: 2, ProxyCPU: cpu(3.3), RSSMB: 22},
	}}
	var out strings.Builder
	ratioTable(rw, false).write(&out)
	// Rows as their cells, whatever the columns' width.
	rows := map[string]bool{}
	for _, line := range strings.Split(out.String(), "\n") {
		rows[strings.Join(strings.Fields(line), " ")] = true
	}
	for _, want := range []string{
		"outrider/nginx 1.10x 1.00x 0.50x 0.82x 1.10x",
		"outrider/goloop 0.88x 2.00x 0.50x 1.10x 4.40x",
		"outrider/gnetloop 1.10x 1.00x 0.25x 0.73x 2.20x",
		"outrider/uringloop 0.73x 2.00x 1.00x 1.65x 2.75x",
		"goloop/nginx 1.25x 0.50x 1.00x 0.75x 0.25x",
		"gnetloop/nginx 1.00x 1.00x 2.00x 1.12x 0.50x",
		"gnetloop/goloop 0.80x 2.00x 2.00x 1.50x 2.00x",
		"uringloop/nginx 1.50x 0.50x 0.50x 0.50x 0.40x",
		"uringloop/goloop 1.20x 1.00x 0.50x 0.67x 1.60x",
	} {
		if !rows[want] {
			t.Errorf("ratio table lacks the row %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "outrider/direct") {
		t.Errorf("ratio table has a row for direct, which did not run:\n%s", out.String())
	}
}

func TestProcesses(t *testing.T) {
	tests := []struct {
		fresh string
		want  string
	}{
		{"1", "each proxy started anew before each of its runs: a row's RSS is that row's own"},
		{"0", "one process per proxy and budget for the whole run: a row's RSS carries what earlier rows left"},
		{"", ""}, // results from before the knob say nothing
	}
	for _, tt := range tests {
		info := map[string]string{}
		if tt.fresh != "" {
			info["fresh"] = tt.fresh
		}
		if got := processes(info); got != tt.want {
			t.Errorf("fresh=%q: want %q, got %q", tt.fresh, tt.want, got)
		}
	}
}

// TestBudget names, for a row's core budget, only the peers that ran in it.
func TestBudget(t *testing.T) {
	ran := func(cores string, targets ...string) row {
		rw := row{Workload: "small", Cores: cores}
		for _, name := range targets {
			rw.Targets = append(rw.Targets, targetSummary{Target: name})
		}
		return rw
	}
	for _, c := range []struct {
		name string
		row  row
		want string
	}{
		{"direct", ran("-", "direct"), "direct only"},
		{"every default peer, one core", ran("1", "nginx", "haproxy", "caddy", "outrider"),
			"1 core(s): nginx 1 worker, HAProxy nbthread 1, Caddy and outrider GOMAXPROCS 1"},
		{"two cores", ran("2", "nginx", "outrider"), "2 core(s): nginx 2 workers, outrider GOMAXPROCS 2"},
		{"the floors", ran("1", "nginx", "goloop", "uringloop", "outrider"),
			"1 core(s): nginx 1 worker, goloop, uringloop and outrider GOMAXPROCS 1"},
		{"no Go peer", ran("2", "haproxy"), "2 core(s): HAProxy nbthread 2"},
		{"nothing ran", ran("2"), "2 core(s)"},
	} {
		if got := budget(c.row); got != c.want {
			t.Errorf("%s: budget = %q, want %q", c.name, got, c.want)
		}
	}
}
