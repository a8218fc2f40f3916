package main

import "testing"

func TestMaxConnsFromTheOpenFileLimit(t *testing.T) {
	tests := []struct {
		name    string
		soft    uint64
		maxIdle int
		want    int
	}{
		{name: "a common container limit", soft: 1 << 20, maxIdle: 128, want: 471763},
		{name: "a small limit", soft: 20000, maxIdle: 128, want: 8904},
		{name: "a large idle pool", soft: 20000, maxIdle: 4096, want: 6920},
		{name: "below the reserve", soft: 32, maxIdle: 128, want: 1},
		{name: "unlimited", soft: ^uint64(0), maxIdle: 128, want: 1 << 30},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := (fdLimit{soft: tc.soft, hard: tc.soft}).maxConns(tc.maxIdle); got != tc.want {
				t.Errorf("maxConns at a soft limit of %d with %d idle app connections: got %d, want %d", tc.soft, tc.maxIdle, got, tc.want)
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
