package main

import "testing"

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
