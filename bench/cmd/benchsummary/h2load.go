package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
)

// errNoRequests is returned for h2load output in which no request was
// done, such as that of a run that could not connect at all.
var errNoRequests = errors.New("no request done")

// loggedResult is what the summary of a load generator that logs each
// request (h2load --h1 --log-file, bench/cmd/fixedrate) reports.
type loggedResult struct {
	RequestsPerSec float64
	// Total, Done and Succeeded are request counts: asked for, answered,
	// answered with a success status.
	Total, Done, Succeeded int64
}

// Errors is every request that was not answered with success: failed,
// errored, timed out or never sent.
func (r loggedResult) Errors() int64 { return r.Total - r.Succeeded }

// parseH2load reads the summary text h2load prints.
func parseH2load(text string) (loggedResult, error) {
	return parseSummary(text, "finished in ", `a "finished in" and a "requests:" line`, func(line string) (float64, error) {
		// finished in 75.37ms, 212.29 req/s, 33.38KB/s
		parts := strings.Split(line, ",")
		if len(parts) < 2 {
			return 0, fmt.Errorf("finish line %q: want \"finished in T, N req/s, …\"", line)
		}
		f := strings.Fields(parts[1])
		if len(f) != 2 || f[1] != "req/s" {
			return 0, fmt.Errorf("finish line %q: want \"N req/s\" after the first comma", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, fmt.Errorf("finish line %q: %w", line, err)
		}
		return v, nil
	})
}

// parseSummary reads the summary of a load generator that logs each
// request: a "requests:" line of counts (see parseCounts) and the line
// that starts with ratePrefix, whose rate rate reads. want names the two
// lines for the error when one is missing.
func parseSummary(text, ratePrefix, want string, rate func(line string) (float64, error)) (loggedResult, error) {
	var r loggedResult
	var haveRate, haveCounts bool
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, ratePrefix):
			v, err := rate(line)
			if err != nil {
				return r, err
			}
			r.RequestsPerSec, haveRate = v, true
		case strings.HasPrefix(line, "requests:"):
			// requests: 16 total, 16 started, 16 done, 16 succeeded, 0 failed, 0 errored, 0 timeout
			if err := parseCounts(line, &r); err != nil {
				return r, err
			}
			haveCounts = true
		}
	}
	if err := sc.Err(); err != nil {
		return r, err
	}
	if !haveRate || !haveCounts {
		return r, fmt.Errorf("want %s: %w", want, errNoRequests)
	}
	if r.Done == 0 {
		return r, errNoRequests
	}
	return r, nil
}

// parseCounts reads a "requests:" line of counts into r: total, done and
// succeeded, among others.
func parseCounts(line string, r *loggedResult) error {
	counts := map[string]*int64{"total": &r.Total, "done": &r.Done, "succeeded": &r.Succeeded}
	for _, part := range strings.Split(strings.TrimPrefix(line, "requests:"), ",") {
		kv := strings.Fields(part)
		if len(kv) != 2 {
			return fmt.Errorf("requests line %q: want \"count name\" pairs", line)
		}
		v, err := strconv.ParseInt(kv[0], 10, 64)
		if err != nil {
			return fmt.Errorf("requests line %q: %w", line, err)
		}
		if p, ok := counts[kv[1]]; ok {
			*p = v
		}
	}
	return nil
}

// parseH2loadLog reads h2load's --log-file (bench/cmd/fixedrate writes the same): per request, tab-separated,
// the start time (µs since the epoch), the status code and the duration
// (µs). It returns the durations in milliseconds.
func parseH2loadLog(rd io.Reader) ([]float64, error) {
	var ms []float64
	sc := bufio.NewScanner(rd)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != 3 {
			return nil, fmt.Errorf("log line %d %q: want start, status and duration, tab-separated", n, line)
		}
		us, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil || us < 0 {
			return nil, fmt.Errorf("log line %d %q: duration %q: want microseconds", n, line, f[2])
		}
		ms = append(ms, float64(us)/1e3)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return ms, nil
}

// percentile is the nearest-rank p-th percentile (0 < p ≤ 100) of vs, or 0
// for none.
func percentile(vs []float64, p float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := append([]float64(nil), vs...)
	sort.Float64s(s)
	// p*n/100 rather than p/100*n: 99*100/100 is exactly 99.
	rank := int(math.Ceil(p * float64(len(s)) / 100))
	rank = min(max(rank, 1), len(s))
	return s[rank-1]
}
