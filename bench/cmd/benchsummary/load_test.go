package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// h2loadLog is an h2load --log-file with n requests of the given duration.
func h2loadLog(n int, us int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "%d\t200\t%d\n", 1796029280404807+i*10000, us)
	}
	return b.String()
}

func gzipped(t *testing.T, s string) string {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// writeResults writes a results directory as bench/run.sh leaves it: the
// given files plus the captured tool outputs of testdata under the names
// slow.txt (wrk, 29323.96 req/s), fast.txt (wrk, twice as fast, half the
// p99), refused.txt (wrk, no connection) and h2load.txt (h2load, 16 done).
func writeResults(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	ok := read("wrk-ok.txt")
	all := map[string]string{
		"slow.txt":    ok,
		"fast.txt":    strings.NewReplacer("29323.96", "58647.92", "58692 requests", "117384 requests", "8.08ms", "4.04ms").Replace(ok),
		"refused.txt": read("wrk-refused.txt"),
		"h2load.txt":  read("h2load-ok.txt"),
	}
	for name, body := range files {
		all[name] = body
	}
	for name, body := range all {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const testInfo = "date\t2026-01-01T00:00:00Z\nclk_tck\t100\ncpus\t2\nduration\t2s\nwarmup\t1s\nrounds\t3\n" +
	"workloads\tsmall fixedrate\ncores\t1 2\nconnections\t32\nhigh_connections\t1000\nfixed_rate\t5000\nfixed_clients\t50\n" +
	"pin_1\t1-1\npin_2\t0-1\nfresh\t1\nload_start\t0.50\nload_end\t7.20\n" +
	"unavailable\tcaddy:2\tnothing answers on its port\n"

// TestLoad summarizes a results directory with two workloads, two core
// budgets, a failed round and gzipped h2load logs.
func TestLoad(t *testing.T) {
	dir := writeResults(t, map[string]string{
		"info.tsv": testInfo,
		"runs.tsv": runsColumns + "\n" +
			"small\t-\tdirect\t1\twrk\tfast.txt\t-\t-\t80\t40960\n" +
			"small\t1\tnginx\t1\twrk\tslow.txt\t-\t117\t0\t5120\n" +
			"small\t1\toutrider\t1\twrk\tfast.txt\t-\t117\t0\t10240\n" +
			"small\t2\tnginx\t1\twrk\tslow.txt\t-\t50\t0\t6144\n" +
			"small\t2\toutrider\t1\twrk\tslow.txt\t-\t50\t0\t12288\n" +
			"small\t1\toutrider\t2\twrk\trefused.txt\t-\t0\t0\t10240\n" +
			"small\t1\tnginx\t2\twrk\tslow.txt\t-\t59\t0\t5120\n" +
			"small\t1\tnginx\t3\twrk\tslow.txt\t-\t300\t0\t5120\n" +
			"small\t1\toutrider\t3\twrk\tfast.txt\t-\t235\t0\t10240\n" +
			"fixedrate\t-\tdirect\t1\th2load\th2load.txt\tdirect.log.gz\t-\t5\t40960\n" +
			"fixedrate\t1\tnginx\t1\th2load\th2load.txt\tnginx.log.gz\t4\t5\t5120\n" +
			"fixedrate\t1\toutrider\t1\th2load\th2load.txt\toutrider.log\t2\t5\t10240\n",
		"direct.log.gz": gzipped(t, h2loadLog(16, 100)),
		"nginx.log.gz":  gzipped(t, h2loadLog(15, 300)+h2loadLog(1, 5300)),
		"outrider.log":  h2loadLog(16, 200),
	})
	s, err := load(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, rw := range s.Rows {
		var names []string
		for _, ts := range rw.Targets {
			names = append(names, ts.Target)
		}
		got = append(got, rw.Workload+"@"+rw.Cores+": "+strings.Join(names, " "))
	}
	want := []string{
		"small@1: direct nginx outrider",
		"small@2: direct nginx outrider",
		"fixedrate@1: direct nginx outrider",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("rows:\nwant %q\ngot  %q", want, got)
	}

	small1, fixed := s.Rows[0], s.Rows[2]
	direct, nginx, outrider := small1.Targets[0], small1.Targets[1], small1.Targets[2]
	// nginx: 58692 requests per run, CPU 0.59, 1.17 and 3.00 s: median 1.17 s.
	if got, want := *nginx.ProxyCPU, 1.17/58692*1e5; math.Abs(got-want) > 1e-9 {
		t.Errorf("nginx CPU per 100k: want %v, got %v", want, got)
	}
	if direct.ProxyCPU != nil {
		t.Errorf("direct has no proxy CPU, got %v", *direct.ProxyCPU)
	}
	if got, want := direct.AppCPU, 0.8/117384*1e5; math.Abs(got-want) > 1e-9 {
		t.Errorf("direct app CPU per 100k: want %v, got %v", want, got)
	}
	if outrider.FailedRuns != 1 || outrider.Rounds != 3 {
		t.Errorf("outrider runs: want 1 failed of 3, got %d of %d", outrider.FailedRuns, outrider.Rounds)
	}
	// The failed round is left out: the median of two equal runs.
	if outrider.RequestsPerSec != 58647.92 || outrider.P99ms != 4.04 || outrider.RSSMB != 10 {
		t.Errorf("outrider: want 58647.92 req/s, p99 4.04 ms, 10 MB; got %v, %v, %v", outrider.RequestsPerSec, outrider.P99ms, outrider.RSSMB)
	}
	if s.Rows[1].Targets[2].RequestsPerSec != 29323.96 {
		t.Errorf("outrider at 2 cores: want 29323.96 req/s, got %v", s.Rows[1].Targets[2].RequestsPerSec)
	}

	// At a fixed rate: direct 0.1 ms; nginx 0.3 ms at p50 and 5.3 ms at
	// p99; outrider 0.2 ms at both.
	fd, fn, fo := fixed.Targets[0], fixed.Targets[1], fixed.Targets[2]
	if fd.AddedP50ms != nil {
		t.Errorf("direct adds nothing to itself, got %v", *fd.AddedP50ms)
	}
	for _, c := range []struct {
		name      string
		got, want *float64
	}{
		{"nginx added p50", fn.AddedP50ms, ptr(0.2)},
		{"nginx added p99", fn.AddedP99ms, ptr(5.2)},
		{"outrider added p50", fo.AddedP50ms, ptr(0.1)},
		{"outrider added p99", fo.AddedP99ms, ptr(0.1)},
		{"outrider CPU per 100k", fo.ProxyCPU, ptr(0.02 / 16 * 1e5)},
	} {
		if c.got == nil || math.Abs(*c.got-*c.want) > 1e-9 {
			t.Errorf("%s: want %v, got %v", c.name, *c.want, c.got)
		}
	}
	if fo.RequestsPerSec != 212.29 || fo.Errors != 0 {
		t.Errorf("outrider at a fixed rate: want 212.29 req/s and no errors, got %v and %d", fo.RequestsPerSec, fo.Errors)
	}

	var out bytes.Buffer
	render(&out, s)
	for _, want := range []string{
		"caddy:2: not available (nothing answers on its port)",
		"== small, 1 core(s): nginx 1 worker, outrider GOMAXPROCS 1", // only the peers that ran
		"== small, 2 core(s): nginx 2 workers",
		"== fixedrate, 1 core(s)",
		"GET / at a fixed 5000 req/s over 50 keep-alive connections",
		"proxies pinned with taskset: 1 core(s) on CPUs 1-1, 2 core(s) on CPUs 0-1",
		"each proxy started anew before each of its runs: a row's RSS is that row's own",
		"outrider/nginx        2.00x  1.00x  0.50x  0.75x  2.00x", // small at one core
		"outrider/nginx        1.00x  1.00x  1.00x  1.00x  2.00x", // small at two cores
		"outrider/direct",
		"+0.200",           // nginx's added p50
		"0.50x      0.02x", // outrider/nginx added p50 and p99
		"the load generator reported nothing in 1 of 3 rounds for outrider",
		"0.50 at the start, 7.20 at the end (busy machine",
		// testdata's h2load run is short: 212.29 req/s.
		"warning: outrider reached 212 of the 5000 req/s asked for: its latency was not measured at the fixed rate",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func ptr(v float64) *float64 { return &v }

func TestLoadBad(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		wantErr string
	}{
		{
			name: "older results directory",
			files: map[string]string{
				"info.tsv": testInfo,
				"runs.tsv": "target\tround\twrk_file\tproxy_ticks\tapp_ticks\nnginx\t1\tslow.txt\t117\t0\n",
			},
			wantErr: "runs.tsv: header \"target\\tround\\twrk_file\\tproxy_ticks\\tapp_ticks\": want",
		},
		{
			name:    "no clock ticks",
			files:   map[string]string{"info.tsv": "cpus\t2\n", "runs.tsv": runsColumns + "\n"},
			wantErr: `info.tsv: clk_tck "": want a positive number`,
		},
		{
			name: "unknown tool",
			files: map[string]string{
				"info.tsv": testInfo,
				"runs.tsv": runsColumns + "\nsmall\t1\tnginx\t1\they\tslow.txt\t-\t1\t1\t1\n",
			},
			wantErr: `runs.tsv line 2: tool "hey": want wrk, fixedrate or h2load`,
		},
		{
			name: "short line",
			files: map[string]string{
				"info.tsv": testInfo,
				"runs.tsv": runsColumns + "\nsmall\t1\tnginx\t1\twrk\tslow.txt\n",
			},
			wantErr: "runs.tsv line 2: want 10 fields, got 6",
		},
		{
			name: "missing h2load log",
			files: map[string]string{
				"info.tsv": testInfo,
				"runs.tsv": runsColumns + "\nfixedrate\t1\tnginx\t1\th2load\th2load.txt\tnone.log.gz\t1\t1\t1\n",
			},
			wantErr: "none.log.gz",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(writeResults(t, tt.files))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("want an error containing %q, got %v", tt.wantErr, err)
			}
		})
	}
}
