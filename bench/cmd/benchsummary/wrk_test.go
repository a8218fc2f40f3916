package main

import (
	"errors"
	"math"
	"os"
	"path/filepath"
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
