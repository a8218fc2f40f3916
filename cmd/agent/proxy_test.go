package main

import "testing"

func TestMaxConnsFromTheOpenFileLimit(t *testing.T) {
	tests := []struct {
		name string
		soft uint64
		want int
	}{
		{name: "a common container limit", soft: 1 << 20, want: 471827},
		{name: "a small limit", soft: 20000, want: 8968},
		{name: "below the reserve", soft: 32, want: 1},
		{name: "unlimited", soft: ^uint64(0), want: 1 << 30},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := (fdLimit{soft: tc.soft, hard: tc.soft}).maxConns(); got != tc.want {
				t.Errorf("maxConns at a soft limit of %d: got %d, want %d", tc.soft, got, tc.want)
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
