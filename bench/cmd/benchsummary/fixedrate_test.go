package main

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestParseFixedrate(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    loggedResult
		wantErr string
		noneErr bool // errNoRequests
	}{
		{
			name: "all answered",
			in:   "requests: 20000 total, 20000 done, 20000 succeeded, 0 failed\nrate: 4999.8 req/s over 4.000s\n",
			want: loggedResult{RequestsPerSec: 4999.8, Total: 20000, Done: 20000, Succeeded: 20000},
		},
		{
			name: "failures reported between",
			in: "requests: 20000 total, 19998 done, 19990 succeeded, 2 failed\n" +
				"rate: 4999.3 req/s over 4.000s\n" +
				"fixedrate: read: the connection closed before the answer was whole\n" +
				"fixedrate: connect to 127.0.0.1:9: connection refused\n",
			want: loggedResult{RequestsPerSec: 4999.3, Total: 20000, Done: 19998, Succeeded: 19990},
		},
		{
			name:    "nothing answered",
			in:      "requests: 200 total, 0 done, 0 succeeded, 200 failed\nrate: 0.0 req/s over 4.000s\n",
			noneErr: true,
		},
		{
			name:    "no summary",
			in:      "fixedrate: -url \"x\": want http://IP:PORT/PATH\n",
			noneErr: true,
		},
		{
			name:    "rate without unit",
			in:      "requests: 1 total, 1 done, 1 succeeded, 0 failed\nrate: 12\n",
			wantErr: `rate line "rate: 12": want "rate: N req/s …"`,
		},
		{
			name:    "bad count",
			in:      "requests: many total\nrate: 1 req/s over 1s\n",
			wantErr: `requests line "requests: many total"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFixedrate(tt.in)
			switch {
			case tt.noneErr:
				if !errors.Is(err, errNoRequests) {
					t.Fatalf("want errNoRequests, got %v", err)
				}
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("want an error with %q, got %v", tt.wantErr, err)
				}
			case err != nil:
				t.Fatal(err)
			case got != tt.want:
				t.Fatalf("want %+v, got %+v", tt.want, got)
			}
		})
	}
}

// TestLoadFixedrate summarizes a fixedrate row measured by
// bench/cmd/fixedrate, and says which tool measured it.
func TestLoadFixedrate(t *testing.T) {
	summary := func(rate string) string {
		return "requests: 1000 total, 1000 done, 999 succeeded, 0 failed\nrate: " + rate + " req/s over 4.000s\n"
	}
	dir := writeResults(t, map[string]string{
		"info.tsv": strings.Replace(testInfo, "workloads\tsmall fixedrate", "workloads\tfixedrate", 1) +
			"fixedrate\tfixedrate (bench/cmd/fixedrate)\n",
		"runs.tsv": runsColumns + "\n" +
			"fixedrate\t-\tdirect\t1\tfixedrate\tdirect.txt\tdirect.log\t-\t5\t40960\n" +
			"fixedrate\t1\tnginx\t1\tfixedrate\tnginx.txt\tnginx.log.gz\t4\t5\t5120\n" +
			"fixedrate\t1\toutrider\t1\tfixedrate\toutrider.txt\toutrider.log\t2\t5\t10240\n",
		"direct.txt":   summary("4999.9"),
		"nginx.txt":    summary("4999.7"),
		"outrider.txt": summary("4999.8"),
		"direct.log":   h2loadLog(100, 90),
		"nginx.log.gz": gzipped(t, h2loadLog(98, 150)+h2loadLog(2, 900)),
		"outrider.log": h2loadLog(100, 130),
	})
	s, err := load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Rows) != 1 || len(s.Rows[0].Targets) != 3 {
		t.Fatalf("want one row of three targets, got %+v", s.Rows)
	}
	fn, fo := s.Rows[0].Targets[1], s.Rows[0].Targets[2]
	if fo.RequestsPerSec != 4999.8 || fo.Errors != 1 {
		t.Errorf("outrider: want 4999.8 req/s and 1 error (999 of 1000 succeeded), got %v and %d", fo.RequestsPerSec, fo.Errors)
	}
	for _, c := range []struct {
		name      string
		got, want *float64
	}{
		{"nginx added p50", fn.AddedP50ms, ptr(0.06)},
		{"nginx added p99", fn.AddedP99ms, ptr(0.81)},
		{"outrider added p50", fo.AddedP50ms, ptr(0.04)},
		{"outrider added p99", fo.AddedP99ms, ptr(0.04)},
	} {
		if c.got == nil || math.Abs(*c.got-*c.want) > 1e-9 {
			t.Errorf("%s: want %v, got %v", c.name, *c.want, c.got)
		}
	}
	var out strings.Builder
	render(&out, s)
	for _, want := range []string{
		"GET / at a fixed 5000 req/s over 50 keep-alive connections, bench/cmd/fixedrate",
		"fixedrate (bench/cmd/fixedrate)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
