package main

import (
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
	return parseSummary(text, "rate:", `a "requests:" and a "rate:" line`, func(line string) (float64, error) {
		f := strings.Fields(strings.TrimPrefix(line, "rate:"))
		if len(f) < 2 || f[1] != "req/s" {
			return 0, fmt.Errorf("rate line %q: want \"rate: N req/s …\"", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, fmt.Errorf("rate line %q: %w", line, err)
		}
		return v, nil
	})
}
