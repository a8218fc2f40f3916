package main

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
)

// parseFixedrate reads the summary bench/cmd/fixedrate prints:
//
//	requests: 20000 total, 20000 done, 20000 succeeded, 0 failed
//	rate: 4999.8 req/s over 4.000s
//
// Lines it prints about failed requests ("fixedrate: …") are skipped.
func parseFixedrate(text string) (loggedResult, error) {
	var r loggedResult
	var haveRate, haveCounts bool
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "rate:"):
			f := strings.Fields(strings.TrimPrefix(line, "rate:"))
			if len(f) < 2 || f[1] != "req/s" {
				return r, fmt.Errorf("rate line %q: want \"rate: N req/s …\"", line)
			}
			v, err := strconv.ParseFloat(f[0], 64)
			if err != nil {
				return r, fmt.Errorf("rate line %q: %w", line, err)
			}
			r.RequestsPerSec, haveRate = v, true
		case strings.HasPrefix(line, "requests:"):
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
		return r, fmt.Errorf("want a \"requests:\" and a \"rate:\" line: %w", errNoRequests)
	}
	if r.Done == 0 {
		return r, errNoRequests
	}
	return r, nil
}
