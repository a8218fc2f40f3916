package scaleloop

import (
	"testing"
	"time"
)

func TestScaledIn(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	run := func(desired ...int) Run {
		r := Run{Start: start}
		for i, d := range desired {
			r.Samples = append(r.Samples, Sample{At: start.Add(time.Duration(i) * time.Second), Desired: d})
		}
		return r
	}
	for _, tc := range []struct {
		name    string
		desired []int
		until   time.Duration // after start
		want    int
	}{
		{"no samples", nil, time.Minute, 0},
		{"never scaled", []int{1, 1, 1}, time.Minute, 0},
		{"scaled out only", []int{1, 2, 4, 4}, time.Minute, 0},
		{"scaled out and back", []int{1, 2, 4, 3, 1}, time.Minute, 3},
		{"scale-in after until", []int{1, 4, 4, 3, 1}, 3 * time.Second, 0},
		{"one removal before until", []int{1, 4, 3, 1}, 3 * time.Second, 1},
		{"sample at until is after", []int{1, 4, 3}, 2 * time.Second, 0},
		{"every fall counts", []int{1, 3, 2, 5, 5, 4, 1}, time.Minute, 5},
	} {
		if got := run(tc.desired...).ScaledIn(start.Add(tc.until)); got != tc.want {
			t.Errorf("%s: ScaledIn = %d, want %d", tc.name, got, tc.want)
		}
	}
}
