package probe

import (
	"context"
	"testing"
	"time"
)

func TestTimeoutOf(t *testing.T) {
	tests := []struct {
		timeout, late time.Duration
		want          time.Duration
	}{
		{timeout: time.Second, late: 0, want: time.Second},
		{timeout: time.Second, late: 3 * time.Millisecond, want: time.Second},
		{timeout: 150 * time.Millisecond, late: 400 * time.Microsecond, want: 150 * time.Millisecond},
		{timeout: 50 * time.Millisecond, late: 300 * time.Microsecond, want: 50 * time.Millisecond},
		{timeout: 2500 * time.Millisecond, late: 0, want: 2500 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.timeout.String(), func(t *testing.T) {
			start := time.Now()
			ctx, cancel := context.WithDeadline(context.Background(), start.Add(tc.timeout))
			defer cancel()
			if got := timeoutOf(ctx, start.Add(tc.late)); got != tc.want {
				t.Errorf("timeoutOf(%s timeout, started %s late) = %s, want %s", tc.timeout, tc.late, got, tc.want)
			}
		})
	}
}

// TestTimeoutOfNamesTheTimeoutSet: a probe that starts late (a loaded
// machine, a pause) still names the timeout set: a 150 ms timeout was
// reported as "no answer within 140ms" once the probe started 6 ms after
// its deadline was set.
func TestTimeoutOfNamesTheTimeoutSet(t *testing.T) {
	for _, timeout := range []time.Duration{150 * time.Millisecond, time.Second, 2500 * time.Millisecond} {
		ctx, cancel := withTimeout(context.Background(), timeout)
		start := time.Now().Add(timeout / 20)
		if got := timeoutOf(ctx, start); got != timeout {
			t.Errorf("timeoutOf(%s timeout, started %s late) = %s, want %s", timeout, timeout/20, got, timeout)
		}
		cancel()
	}
}

func TestSnippet(t *testing.T) {
	tests := []struct {
		in    string
		limit int
		want  string
	}{
		{in: "database\tdown\n", limit: 100, want: "database down"},
		{in: "a\x00b\xffc", limit: 100, want: "a?b?c"},
		{in: "héllo wörld", limit: 5, want: "héll…"},
		{in: "", limit: 10, want: ""},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			if got := snippet([]byte(tc.in), tc.limit); got != tc.want {
				t.Errorf("snippet(%q, %d) = %q, want %q", tc.in, tc.limit, got, tc.want)
			}
		})
	}
}
