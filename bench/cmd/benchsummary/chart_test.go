package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func chartSummary() summary {
	ts := func(target string, rate float64) targetSummary {
		return targetSummary{Target: target, Rounds: 1, RequestsPerSec: rate}
	}
	return summary{
		Info: map[string]string{"rounds": "5", "date": "2026-01-01T00:00:00Z"},
		Rows: []row{
			{Workload: "small", Cores: "1", Targets: []targetSummary{ts("direct", 400), ts("nginx", 100), ts("haproxy", 200), ts("outrider", 150)}},
			{Workload: "1m", Cores: "2", Targets: []targetSummary{ts("direct", 40), ts("nginx", 10), ts("outrider", 20)}},
			{Workload: "fixedrate", Cores: "1", Targets: []targetSummary{ts("nginx", 5000), ts("outrider", 5000)}},
		},
	}
}

func TestThroughputRatios(t *testing.T) {
	d := throughputRatios(chartSummary())
	if got, want := strings.Join(d.Labels, ","), "small 1c,1m 2c"; got != want {
		t.Errorf("labels: want %q (fixedrate left out), got %q", want, got)
	}
	if got, want := strings.Join(d.Peers, ","), "nginx,haproxy,direct"; got != want {
		t.Errorf("peers: want %q (caddy never ran), got %q", want, got)
	}
	for peer, want := range map[string][]float64{
		"nginx":   {1.5, 2},
		"haproxy": {0.75, 0}, // no HAProxy in the 1m row
		"direct":  {0.375, 0.5},
	} {
		got := d.Ratios[peer]
		if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
			t.Errorf("outrider/%s: want %v, got %v", peer, want, got)
		}
	}
}

func TestWriteChart(t *testing.T) {
	tests := []struct {
		name      string
		file      string
		s         summary
		wantDrawn bool
		wantIn    []string
		wantMagic []byte
	}{
		{
			name:      "svg",
			file:      "chart.svg",
			s:         chartSummary(),
			wantDrawn: true,
			wantIn:    []string{"<svg", "small 1c", "1m 2c", "outrider/nginx", "outrider/haproxy", "outrider/direct", "0.5×", "1×", "2×"},
		},
		{
			name:      "png",
			file:      "chart.png",
			s:         chartSummary(),
			wantDrawn: true,
			wantMagic: []byte("\x89PNG\r\n\x1a\n"),
		},
		{
			name: "no outrider",
			file: "chart.svg",
			s: summary{Rows: []row{
				{Workload: "small", Cores: "1", Targets: []targetSummary{{Target: "nginx", Rounds: 1, RequestsPerSec: 100}}},
			}},
			wantDrawn: false,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), tt.file)
			drawn, err := writeChart(path, tt.s)
			if err != nil {
				t.Fatal(err)
			}
			if drawn != tt.wantDrawn {
				t.Fatalf("drawn: want %v, got %v", tt.wantDrawn, drawn)
			}
			b, err := os.ReadFile(path)
			if !tt.wantDrawn {
				if !os.IsNotExist(err) {
					t.Errorf("want no chart file, got %d bytes, err %v", len(b), err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range tt.wantIn {
				if !bytes.Contains(b, []byte(want)) {
					t.Errorf("chart lacks %q", want)
				}
			}
			if tt.wantMagic != nil && !bytes.HasPrefix(b, tt.wantMagic) {
				t.Errorf("want a file starting %q, got %q", tt.wantMagic, b[:min(len(b), 8)])
			}
		})
	}
}

func TestRatioTicks(t *testing.T) {
	tests := []struct {
		min, max   float64
		wantLabels string
		wantMinor  int
	}{
		{min: -1.2, max: 2.8, wantLabels: "0.5× 1× 2× 4×", wantMinor: 8},
		{min: -0.75, max: 0.5, wantLabels: "1×", wantMinor: 3},     // 0.625×, 1.25×, … no 0.5× or 2×
		{min: 3.5, max: 4.2, wantLabels: "16×", wantMinor: 1},      // 12×; 10× and 20× fall outside
		{min: -3.1, max: -2.9, wantLabels: "0.125×", wantMinor: 0}, // no room for minor ticks
	}
	for _, tt := range tests {
		var labels []string
		minor := 0
		for _, tk := range (ratioTicks{}).Ticks(tt.min, tt.max) {
			if tk.Value < tt.min || tk.Value > tt.max {
				t.Errorf("Ticks(%v, %v): tick at %v is outside the axis", tt.min, tt.max, tk.Value)
			}
			if tk.IsMinor() {
				minor++
			} else {
				labels = append(labels, tk.Label)
			}
		}
		if got := strings.Join(labels, " "); got != tt.wantLabels || minor != tt.wantMinor {
			t.Errorf("Ticks(%v, %v): labels %q and %d minor ticks, want %q and %d",
				tt.min, tt.max, got, minor, tt.wantLabels, tt.wantMinor)
		}
	}
}

func latencySummary() summary {
	ts := func(target string, p50, p99 float64) targetSummary {
		return targetSummary{Target: target, Rounds: 1, AddedP50ms: &p50, AddedP99ms: &p99}
	}
	return summary{
		Info: map[string]string{"rounds": "5", "date": "2026-01-01T00:00:00Z", "fixed_rate": "5000"},
		Rows: []row{
			{Workload: "small", Cores: "1", Targets: []targetSummary{ts("nginx", 9, 9)}},
			{Workload: "fixedrate", Cores: "1", Targets: []targetSummary{
				{Target: "direct", Rounds: 1}, ts("nginx", 0.2, 1.5), ts("outrider", 0.1, -0.5),
			}},
			{Workload: "fixedrate", Cores: "2", Targets: []targetSummary{{Target: "direct", Rounds: 1}, ts("outrider", 0.3, 2)}},
		},
	}
}

func TestAddedLatency(t *testing.T) {
	d := addedLatency(latencySummary())
	if got, want := strings.Join(d.Labels, ","), "p50 1c,p99 1c,p50 2c,p99 2c"; got != want {
		t.Errorf("labels: want %q (only fixedrate rows), got %q", want, got)
	}
	if got, want := strings.Join(d.Peers, ","), "nginx,outrider"; got != want {
		t.Errorf("proxies: want %q, got %q", want, got)
	}
	for proxy, want := range map[string][]float64{
		"nginx":    {0.2, 1.5, 0, 0}, // no nginx at two cores
		"outrider": {0.1, -0.5, 0.3, 2},
	} {
		got := d.Ratios[proxy]
		if len(got) != len(want) {
			t.Fatalf("%s: want %v, got %v", proxy, want, got)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("%s: want %v, got %v", proxy, want, got)
				break
			}
		}
	}
}

func TestWriteLatencyChart(t *testing.T) {
	tests := []struct {
		name      string
		s         summary
		wantDrawn bool
	}{
		{name: "fixedrate rows", s: latencySummary(), wantDrawn: true},
		{name: "no fixedrate row", s: chartSummary(), wantDrawn: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "latency.svg")
			drawn, err := writeLatencyChart(path, tt.s)
			if err != nil {
				t.Fatal(err)
			}
			if drawn != tt.wantDrawn {
				t.Fatalf("drawn: want %v, got %v", tt.wantDrawn, drawn)
			}
			b, err := os.ReadFile(path)
			if !tt.wantDrawn {
				if !os.IsNotExist(err) {
					t.Errorf("want no chart file, got %d bytes, err %v", len(b), err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"<svg", "p50 1c", "p99 2c", "nginx", "outrider", "5000 req/s"} {
				if !bytes.Contains(b, []byte(want)) {
					t.Errorf("chart lacks %q", want)
				}
			}
		})
	}
}
