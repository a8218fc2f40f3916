package main

import (
	"strings"
	"testing"
)

func TestMaxConnsFromTheOpenFileLimit(t *testing.T) {
	tests := []struct {
		name    string
		soft    uint64
		maxIdle int
		want    int // 0: an error
	}{
		{name: "a common container limit", soft: 1 << 20, maxIdle: 128, want: 471763},
		{name: "a small limit", soft: 20000, maxIdle: 128, want: 8904},
		{name: "a large idle pool", soft: 20000, maxIdle: 4096, want: 6920},
		{name: "the idle pool takes all but two", soft: 224, maxIdle: 136, want: 1},
		{name: "the idle pool takes all", soft: 224, maxIdle: 138},
		{name: "below the reserve", soft: 32, maxIdle: 128},
		{name: "unlimited", soft: ^uint64(0), maxIdle: 128, want: 1 << 30},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := (fdLimit{soft: tc.soft, hard: tc.soft}).maxConns(tc.maxIdle)
			switch {
			case tc.want == 0 && err == nil:
				t.Errorf("maxConns at a soft limit of %d with %d idle app connections: got %d, want an error", tc.soft, tc.maxIdle, got)
			case tc.want == 0 && !strings.Contains(err.Error(), "OUTRIDER_PROXY_MAX_IDLE_APP_CONNS"):
				t.Errorf("error %q does not name OUTRIDER_PROXY_MAX_IDLE_APP_CONNS", err)
			case tc.want != 0 && (err != nil || got != tc.want):
				t.Errorf("maxConns at a soft limit of %d with %d idle app connections: got %d, %v; want %d", tc.soft, tc.maxIdle, got, err, tc.want)
			}
		})
	}
}

func TestRaiseFDLimit(t *testing.T) {
	l, err := raiseFDLimit()
	if err != nil {
		t.Fatalf("raiseFDLimit: %v", err)
	}
	if l.soft != l.hard || l.soft == 0 {
		t.Errorf("after raising: soft %d, hard %d, want soft = hard", l.soft, l.hard)
	}
}
