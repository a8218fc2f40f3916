package main

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseWrk(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		want    wrkResult
		wantErr error
	}{
		{
			name: "clean run",
			file: "wrk-ok.txt",
			want: wrkResult{RequestsPerSec: 29323.96, Requests: 58692, P50: 0.91, P75: 1.21, P90: 1.81, P99: 8.08},
		},
		{
			name: "errors and mixed units",
			file: "wrk-errors.txt",
			want: wrkResult{
				RequestsPerSec: 20206.39, Requests: 101234,
				P50: 0.812, P75: 1.5, P90: 20.01, P99: 1200,
				SocketErrors: 22, Non2xx: 101234,
			},
		},
		{
			name:    "could not connect",
			file:    "wrk-refused.txt",
			wantErr: errNoRate,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := parseWrk(string(b))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err: want %v, got %v", tt.wantErr, err)
			}
			if tt.wantErr != nil {
				return
			}
			if !closeResult(got, tt.want) {
				t.Errorf("want %+v\ngot  %+v", tt.want, got)
			}
		})
	}
}

func closeResult(a, b wrkResult) bool {
	near := func(x, y float64) bool { return math.Abs(x-y) < 1e-9 }
	return near(a.RequestsPerSec, b.RequestsPerSec) && a.Requests == b.Requests &&
		near(a.P50, b.P50) && near(a.P75, b.P75) && near(a.P90, b.P90) && near(a.P99, b.P99) &&
		a.SocketErrors == b.SocketErrors && a.Non2xx == b.Non2xx
}

func TestParseWrkTime(t *testing.T) {
	tests := []struct {
		in      string
		want    float64
		wantErr bool
	}{
		{in: "812.00us", want: 0.812},
		{in: "1.20ms", want: 1.2},
		{in: "2.01s", want: 2010},
		{in: "1.50m", want: 90000},
		{in: "1.00h", want: 3600000},
		{in: "12", wantErr: true},
		{in: "fast ms", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseWrkTime(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err: want error %v, got %v", tt.wantErr, err)
			}
			if math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("want %v ms, got %v ms", tt.want, got)
			}
		})
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		name string
		in   []float64
		want float64
	}{
		{name: "empty", in: nil, want: 0},
		{name: "odd", in: []float64{3, 1, 2}, want: 2},
		{name: "even", in: []float64{4, 1, 3, 2}, want: 2.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := median(tt.in); got != tt.want {
				t.Errorf("want %v, got %v", tt.want, got)
			}
		})
	}
}

// TestLoad summarizes a small results directory as bench/run.sh writes it.
func TestLoad(t *testing.T) {
	dir := t.TempDir()
	ok, err := os.ReadFile(filepath.Join("testdata", "wrk-ok.txt"))
	if err != nil {
		t.Fatal(err)
	}
	faster := strings.NewReplacer("29323.96", "58647.92", "58692 requests", "117384 requests", "8.08ms", "4.04ms").Replace(string(ok))
	files := map[string]string{
		"info.tsv": "date\t2026-01-01T00:00:00Z\nclk_tck\t100\ncpus\t2\nduration\t2s\nrounds\t3\nconnections\t32\nhigh_connections\t1000\n" +
			"load_start\t0.50\nload_end\t7.20\n" +
			"unavailable\thaproxy\tnothing answers on its proxy port\n",
		"runs.tsv": "target\tround\twrk_file\tproxy_ticks\tapp_ticks\n" +
			"nginx\t1\tslow.txt\t117\t0\n" +
			"outrider\t1\tfast.txt\t117\t0\n" +
			"outrider\t2\trefused.txt\t0\t0\n" +
			"nginx\t2\tslow.txt\t59\t0\n" +
			"nginx\t3\tslow.txt\t300\t0\n" +
			"outrider\t3\tfast.txt\t235\t0\n",
		"memory.tsv": "target\tpeak_rss_kb\tload_rss_kb\tload_hwm_kb\twrk_file\n" +
			"outrider\t10240\t20480\t40960\trefused.txt\n" +
			"nginx\t5120\t-\t-\t-\n",
		"slow.txt":    string(ok),
		"fast.txt":    faster,
		"refused.txt": "unable to connect to 127.0.0.1:8083 Connection refused\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s, err := load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Targets) != 2 || s.Targets[0].Target != "nginx" || s.Targets[1].Target != "outrider" {
		t.Fatalf("targets: want nginx, outrider; got %+v", s.Targets)
	}
	nginx, outrider := s.Targets[0], s.Targets[1]
	// nginx: 58692 requests per run, CPU 0.59, 1.17 and 3.00 s: median 1.17 s.
	if got, want := *nginx.ProxyCPU, 1.17/58692*1e5; math.Abs(got-want) > 1e-9 {
		t.Errorf("nginx CPU per 100k: want %v, got %v", want, got)
	}
	if outrider.FailedRuns != 1 || outrider.Rounds != 3 {
		t.Errorf("outrider runs: want 1 failed of 3, got %d of %d", outrider.FailedRuns, outrider.Rounds)
	}
	// The failed round is left out: the median of two equal runs.
	if outrider.RequestsPerSec != 58647.92 || outrider.P99ms != 4.04 {
		t.Errorf("outrider: want 58647.92 req/s and p99 4.04 ms, got %v and %v", outrider.RequestsPerSec, outrider.P99ms)
	}
	if nginx.PeakRSSMB != 5 {
		t.Errorf("nginx peak RSS: want 5 MB, got %v", nginx.PeakRSSMB)
	}
	if outrider.PeakRSSMB != 10 {
		t.Errorf("outrider peak RSS: want 10 MB, got %v", outrider.PeakRSSMB)
	}
	if len(s.Memory) != 1 || s.Memory[0].HWMMB != 40 || s.Memory[0].LoadRSSMB != 20 {
		t.Errorf("memory: want outrider 20 MB under load, 40 MB peak; got %+v", s.Memory)
	}

	var out bytes.Buffer
	render(&out, s)
	for _, want := range []string{
		"haproxy: proxy not available (nothing answers on its proxy port)",
		"outrider/nginx",
		"2.00x  0.50x", // throughput and p99 ratios
		"< 30 MB: MISSED",
		"wrk reported nothing in 1 of 3 rounds for outrider",
		"0.50 at the start, 7.20 at the end (busy machine",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
