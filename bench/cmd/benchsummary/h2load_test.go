package main

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseH2load(t *testing.T) {
	tests := []struct {
		name       string
		file       string
		want       loggedResult
		wantErrors int64
		wantErr    error
	}{
		{
			name:       "timing script run",
			file:       "h2load-ok.txt",
			want:       loggedResult{RequestsPerSec: 212.29, Total: 16, Done: 16, Succeeded: 16},
			wantErrors: 0,
		},
		{
			name:       "server errors",
			file:       "h2load-503.txt",
			want:       loggedResult{RequestsPerSec: 2803.74, Total: 6, Done: 6, Succeeded: 0},
			wantErrors: 6,
		},
		{
			name:    "could not connect",
			file:    "h2load-refused.txt",
			wantErr: errNoRequests,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := parseH2load(string(b))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err: want %v, got %v", tt.wantErr, err)
			}
			if tt.wantErr != nil {
				return
			}
			if got != tt.want {
				t.Errorf("want %+v\ngot  %+v", tt.want, got)
			}
			if got.Errors() != tt.wantErrors {
				t.Errorf("errors: want %d, got %d", tt.wantErrors, got.Errors())
			}
		})
	}
}

func TestParseH2loadBad(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{name: "empty", in: "", wantErr: `want a "finished in" and a "requests:" line: no request done`},
		{name: "bad rate", in: "finished in 1.00s, fast req/s, 1KB/s\n", wantErr: `finish line "finished in 1.00s, fast req/s, 1KB/s"`},
		{name: "bad count", in: "finished in 1.00s, 1.00 req/s, 1KB/s\nrequests: x total\n", wantErr: `requests line "requests: x total"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseH2load(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("want an error containing %q, got %v", tt.wantErr, err)
			}
		})
	}
}

func TestParseH2loadLog(t *testing.T) {
	f, err := os.Open(filepath.Join("testdata", "h2load-ok.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ms, err := parseH2loadLog(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 16 {
		t.Fatalf("want 16 durations, got %d", len(ms))
	}
	// Sorted, the 16 durations run from 378 µs to 6982 µs; nearest rank:
	// p50 is the 8th, p99 the 16th.
	for _, c := range []struct {
		p, want float64
	}{{50, 3.852}, {99, 6.982}, {100, 6.982}, {1, 0.378}} {
		if got := percentile(ms, c.p); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("p%v: want %v ms, got %v ms", c.p, c.want, got)
		}
	}
}

func TestParseH2loadLogBad(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{name: "two fields", in: "1796029280404807\t200\n", wantErr: "log line 1"},
		{name: "duration not a number", in: "1\t200\t5\n1\t200\tslow\n", wantErr: `log line 2 "1\t200\tslow": duration "slow": want microseconds`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseH2loadLog(strings.NewReader(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("want an error containing %q, got %v", tt.wantErr, err)
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	hundred := make([]float64, 100)
	for i := range hundred {
		hundred[i] = float64(100 - i) // 100 … 1, unsorted
	}
	tests := []struct {
		name string
		in   []float64
		p    float64
		want float64
	}{
		{name: "none", in: nil, p: 50, want: 0},
		{name: "one", in: []float64{7}, p: 99, want: 7},
		{name: "p50 of 100", in: hundred, p: 50, want: 50},
		{name: "p99 of 100", in: hundred, p: 99, want: 99},
		{name: "p99 of 4", in: []float64{4, 1, 3, 2}, p: 99, want: 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.in, tt.p); got != tt.want {
				t.Errorf("want %v, got %v", tt.want, got)
			}
		})
	}
}
