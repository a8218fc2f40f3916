package main

import (
	"bufio"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// errNoRate is returned for wrk output without a "Requests/sec:" line,
// such as that of a run that could not connect at all.
var errNoRate = errors.New("no Requests/sec line")

// wrkResult is what one `wrk --latency` run reports.
type wrkResult struct {
	RequestsPerSec float64
	Requests       int64
	// Latency percentiles in milliseconds, from the --latency table.
	P50, P75, P90, P99 float64
	// SocketErrors adds up connect, read, write and timeout errors.
	SocketErrors int64
	// Non2xx counts responses that were not 2xx or 3xx.
	Non2xx int64
}

// Errors is every failed request or connection of the run.
func (r wrkResult) Errors() int64 { return r.SocketErrors + r.Non2xx }

// parseWrk reads the text wrk prints.
func parseWrk(text string) (wrkResult, error) {
	var r wrkResult
	var haveRate, inDist bool
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		fields := strings.Fields(line)
		switch {
		case line == "Latency Distribution":
			inDist = true
		case inDist && len(fields) == 2 && strings.HasSuffix(fields[0], "%"):
			ms, err := parseWrkTime(fields[1])
			if err != nil {
				return r, fmt.Errorf("latency line %q: %w", line, err)
			}
			switch fields[0] {
			case "50%":
				r.P50 = ms
			case "75%":
				r.P75 = ms
			case "90%":
				r.P90 = ms
			case "99%":
				r.P99 = ms
			}
		case strings.HasPrefix(line, "Requests/sec:") && len(fields) == 2:
			v, err := strconv.ParseFloat(fields[1], 64)
			if err != nil {
				return r, fmt.Errorf("rate line %q: %w", line, err)
			}
			r.RequestsPerSec, haveRate = v, true
		case len(fields) >= 3 && fields[1] == "requests" && fields[2] == "in":
			inDist = false
			v, err := strconv.ParseInt(fields[0], 10, 64)
			if err != nil {
				return r, fmt.Errorf("total line %q: %w", line, err)
			}
			r.Requests = v
		case strings.HasPrefix(line, "Socket errors:"):
			// Socket errors: connect 0, read 0, write 0, timeout 0
			for _, part := range strings.Split(strings.TrimPrefix(line, "Socket errors:"), ",") {
				kv := strings.Fields(part)
				if len(kv) != 2 {
					return r, fmt.Errorf("socket errors line %q: want \"name count\" pairs", line)
				}
				v, err := strconv.ParseInt(kv[1], 10, 64)
				if err != nil {
					return r, fmt.Errorf("socket errors line %q: %w", line, err)
				}
				r.SocketErrors += v
			}
		case strings.HasPrefix(line, "Non-2xx or 3xx responses:") && len(fields) == 5:
			v, err := strconv.ParseInt(fields[4], 10, 64)
			if err != nil {
				return r, fmt.Errorf("non-2xx line %q: %w", line, err)
			}
			r.Non2xx = v
		}
	}
	if err := sc.Err(); err != nil {
		return r, err
	}
	if !haveRate {
		return r, errNoRate
	}
	return r, nil
}

// parseWrkTime converts a wrk duration such as 812.00us, 1.20ms, 2.01s or
// 1.00m to milliseconds.
func parseWrkTime(s string) (float64, error) {
	units := []struct {
		suffix string
		ms     float64
	}{
		// Longest suffixes first: "ms" and "us" also end in "s".
		{"us", 1e-3},
		{"ms", 1},
		{"s", 1e3},
		{"m", 60e3},
		{"h", 3600e3},
	}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(num, 64)
			if err != nil {
				return 0, fmt.Errorf("time %q: %w", s, err)
			}
			return v * u.ms, nil
		}
	}
	return 0, fmt.Errorf("time %q: want a number followed by us, ms, s, m or h", s)
}
