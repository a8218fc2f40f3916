// Package probe decides whether the app is healthy, with the kubelet's
// readiness-probe semantics: probers (http, https, tcp, grpc, exec) check
// the app once and return a Result; a threshold state machine turns a run
// of Results into a Verdict; a Runner probes on a schedule, keeps the
// verdict and publishes its transitions.
package probe

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Prober checks the app once; ctx carries the deadline.
type Prober func(ctx context.Context, spec Spec) Result

// Outcome classifies one probe.
type Outcome string

// The outcomes of a probe, as the result label of outrider_probe_total.
const (
	// Success: the app answered as healthy.
	Success Outcome = "success"
	// Failure: the app answered, or refused, as unhealthy.
	Failure Outcome = "failure"
	// Timeout: no answer before the deadline.
	Timeout Outcome = "timeout"
	// Error: the probe could not be run at all (bad spec, missing command).
	Error Outcome = "error"
)

// outcomes lists every Outcome, for metrics that start at zero.
var outcomes = []Outcome{Success, Failure, Timeout, Error}

// Result is what one probe found.
type Result struct {
	Outcome Outcome
	// Output is the reason; never empty unless Outcome is Success. It may
	// hold what the app or the command wrote (an error body, the
	// command's output).
	Output string
	// Summary is the reason without anything the app or the command
	// wrote, for listeners anyone may read; empty means Output has none.
	Summary string
	// Duration is how long the probe took.
	Duration time.Duration
}

// ErrNoProber is returned for a spec whose kind no prober speaks.
var ErrNoProber = errors.New("no prober for this kind of probe")

// newProber returns the prober for kind and a func that releases what the
// prober keeps between probes (idle connections).
func newProber(kind Kind) (Prober, func(), error) {
	switch kind {
	case KindHTTP, KindHTTPS:
		p := newHTTPProber()
		return p.probe, p.close, nil
	case KindTCP:
		return probeTCP, func() {}, nil
	case KindGRPC:
		p := newGRPCProber()
		return p.probe, p.close, nil
	case KindExec:
		return probeExec, func() {}, nil
	}
	return nil, nil, fmt.Errorf("%w: %q", ErrNoProber, kind)
}

// result builds a Result timed from start, with a formatted output.
func result(start time.Time, o Outcome, format string, args ...any) Result {
	return Result{Outcome: o, Output: fmt.Sprintf(format, args...), Duration: time.Since(start)}
}

// withDetail appends what the app or the command wrote to the output,
// keeping the summary without it.
func withDetail(r Result, detail string) Result {
	if r.Summary == "" {
		r.Summary = r.Output
	}
	if detail = strings.TrimSpace(detail); detail != "" {
		r.Output += ": " + detail
	}
	return r
}

// summarize is the one-line public account of a result: its outcome and
// its reason without the app's or the command's own words.
func summarize(r Result) string {
	reason := r.Summary
	if reason == "" {
		reason = r.Output
	}
	verb := map[Outcome]string{Success: "probe passed", Failure: "probe failed", Timeout: "probe timed out", Error: "probe could not run"}[r.Outcome]
	if reason == "" {
		return verb
	}
	return verb + ": " + reason
}

// failed classifies err from a probe: timeout when ctx's deadline passed,
// else failure.
func failed(ctx context.Context, start time.Time, what string, err error) Result {
	if deadlinePassed(ctx) {
		return result(start, Timeout, "%s: no answer within %s", what, timeoutOf(ctx, start))
	}
	if ctx.Err() != nil {
		return result(start, Error, "%s: %v", what, ctx.Err())
	}
	return result(start, Failure, "%s: %v", what, err)
}

// deadlinePassed reports whether ctx's deadline has come. It does not wait
// for ctx.Err: a socket deadline set from ctx may fire a moment earlier.
func deadlinePassed(ctx context.Context) bool {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// timeoutKey is the context key under which withTimeout keeps a probe's
// timeout.
type timeoutKey struct{}

// withTimeout is context.WithTimeout that also keeps d, for a result to
// name the timeout set rather than the time left when the probe started.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, d)
	return context.WithValue(ctx, timeoutKey{}, d), cancel
}

// timeoutOf is the probe's timeout: the one withTimeout set, or else the
// time ctx allowed from start, to two significant digits (start is taken
// a moment after the deadline was set).
func timeoutOf(ctx context.Context, start time.Time) time.Duration {
	if d, ok := ctx.Value(timeoutKey{}).(time.Duration); ok {
		return d
	}
	d := time.Since(start)
	if dl, ok := ctx.Deadline(); ok {
		d = dl.Sub(start)
	}
	unit := time.Duration(1)
	for d/unit >= 100 {
		unit *= 10
	}
	return d.Round(unit)
}

// snippet makes a single-line, printable excerpt of b, of about limit
// bytes, for a reason.
func snippet(b []byte, limit int) string {
	var sb strings.Builder
	for len(b) > 0 && sb.Len() < limit {
		r, size := utf8.DecodeRune(b)
		b = b[size:]
		switch {
		case r == utf8.RuneError && size <= 1:
			sb.WriteByte('?')
		case unicode.IsSpace(r):
			sb.WriteByte(' ')
		case unicode.IsPrint(r):
			sb.WriteRune(r)
		default:
			sb.WriteByte('?')
		}
	}
	s := strings.Join(strings.Fields(sb.String()), " ")
	if len(b) > 0 {
		s += "…"
	}
	return s
}
