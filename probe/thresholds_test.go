package probe

import (
	"strings"
	"testing"
	"time"
)

func TestThresholds(t *testing.T) {
	// Each step is one result: S success, F failure, T timeout, E error.
	// want is the verdict after each step: + healthy, - unhealthy; a
	// capital letter marks a step that publishes a transition.
	tests := []struct {
		name             string
		failure, success int
		steps            string
		want             string
	}{
		{name: "starts unhealthy, first success turns healthy", failure: 3, success: 1,
			steps: "S", want: "H"},
		{name: "failures below the threshold keep it healthy", failure: 3, success: 1,
			steps: "SFF", want: "H++"},
		{name: "the threshold-th failure in a row turns it unhealthy", failure: 3, success: 1,
			steps: "SFFFF", want: "H++U-"},
		{name: "a success breaks the run of failures", failure: 3, success: 1,
			steps: "SFFSFFS", want: "H++++++"},
		{name: "timeouts and errors are failures", failure: 3, success: 1,
			steps: "STEF", want: "H++U"},
		{name: "failures at start: found unhealthy once", failure: 3, success: 1,
			steps: "FFFFF", want: "--U--"},
		{name: "failure threshold 1", failure: 1, success: 1,
			steps: "SFSF", want: "HUHU"},
		// The kubelet counts the first successes like any others: with a
		// success threshold of 3 the app is healthy after the third.
		{name: "success threshold applies to the very first successes", failure: 3, success: 3,
			steps: "SSS", want: "--H"},
		{name: "success threshold after failures", failure: 2, success: 2,
			steps: "SSFFSFSS", want: "-H+U---H"},
		{name: "a failure breaks the run of successes", failure: 1, success: 3,
			steps: "FSSFSSS", want: "U-----H"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			m := newThresholds(tc.failure, tc.success, t0)
			if v := m.verdict; v.Healthy || v.Output != "no probe yet" || !v.Since.Equal(t0) {
				t.Fatalf("initial verdict = %+v, want unhealthy, no probe yet, since t0", v)
			}
			var got strings.Builder
			since := t0
			for i, step := range tc.steps {
				now := t0.Add(time.Duration(i+1) * time.Second)
				r := Result{Outcome: map[rune]Outcome{'S': Success, 'F': Failure, 'T': Timeout, 'E': Error}[step], Output: "step " + string(step)}
				was := m.verdict.Healthy
				v, changed := m.observe(r, now)
				mark := map[bool]string{true: "+", false: "-"}[v.Healthy]
				if changed {
					mark = map[bool]string{true: "H", false: "U"}[v.Healthy]
				}
				got.WriteString(mark)
				if v.Output != r.Output {
					t.Errorf("step %d: output = %q, want the last result's %q", i, v.Output, r.Output)
				}
				if v.Healthy != was {
					since = now
				}
				if !v.Since.Equal(since) {
					t.Errorf("step %d: since = %s, want %s (when Healthy last changed)", i, v.Since, since)
				}
			}
			if got.String() != tc.want {
				t.Errorf("verdicts = %s, want %s", got.String(), tc.want)
			}
		})
	}
}
