package main

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// summary is the whole benchmark, as printed and as saved in summary.json.
type summary struct {
	Info        map[string]string `json:"info"`
	Unavailable []unavailable     `json:"unavailable,omitempty"`
	// Rows are one per workload and core budget, in the order of the
	// workloads' first appearance and then of the budgets.
	Rows []row `json:"rows"`
}

// unavailable is a target left out of the run, and why.
type unavailable struct {
	Target string `json:"target"`
	Reason string `json:"reason"`
}

// row is one workload at one core budget: direct (which has no budget)
// and every proxy run with that budget.
type row struct {
	Workload string          `json:"workload"`
	Cores    string          `json:"cores"`
	Targets  []targetSummary `json:"targets"`
}

// targetSummary is one target's medians over the measured rounds of a row.
type targetSummary struct {
	Target         string  `json:"target"`
	Rounds         int     `json:"rounds"`
	RequestsPerSec float64 `json:"requests_per_sec"`
	P50ms          float64 `json:"p50_ms"`
	P99ms          float64 `json:"p99_ms"`
	// AddedP50ms and AddedP99ms are the target's median latency less
	// direct's in the same row; only at a fixed rate, where the latency
	// does not depend on how fast the target answers the next request.
	AddedP50ms *float64 `json:"added_p50_ms,omitempty"`
	AddedP99ms *float64 `json:"added_p99_ms,omitempty"`
	// ProxyCPU and AppCPU are CPU seconds per 100k requests; ProxyCPU is
	// absent for direct, which has no proxy.
	ProxyCPU *float64 `json:"proxy_cpu_s_per_100k,omitempty"`
	AppCPU   float64  `json:"app_cpu_s_per_100k"`
	// RSSMB is the largest VmRSS sampled during the run, summed over the
	// target's processes (the app's for direct).
	RSSMB  float64 `json:"rss_mb"`
	Errors int64   `json:"errors"`
	// FailedRuns counts rounds in which the load generator reported
	// nothing; the medians leave them out.
	FailedRuns int `json:"failed_runs,omitempty"`
}

// measured is what one run of any load generator gives the summary.
type measured struct {
	RequestsPerSec float64
	Requests       int64
	P50, P99       float64 // milliseconds
	Errors         int64
}

// run is one measured run of one target in one workload.
type run struct {
	workload, cores, target string
	m                       measured
	failed                  bool // the load generator reported nothing
	proxyCPU, appCPU        float64
	hasProxyCPU             bool
	rssKB                   float64
}

// runsColumns is runs.tsv's header, which load checks.
const runsColumns = "workload\tcores\ttarget\tround\ttool\tfile\tlatency_file\tproxy_ticks\tapp_ticks\trss_kb"

// load reads and summarizes the results directory.
func load(dir string) (summary, error) {
	s := summary{Info: map[string]string{}}
	infoRows, _, err := readTSV(filepath.Join(dir, "info.tsv"), false)
	if err != nil {
		return s, err
	}
	for _, r := range infoRows {
		if len(r) < 2 {
			continue
		}
		if r[0] == "unavailable" {
			u := unavailable{Target: r[1]}
			if len(r) > 2 {
				u.Reason = r[2]
			}
			s.Unavailable = append(s.Unavailable, u)
			continue
		}
		s.Info[r[0]] = r[1]
	}
	clkTck, err := strconv.ParseFloat(s.Info["clk_tck"], 64)
	if err != nil || clkTck <= 0 {
		return s, fmt.Errorf("info.tsv: clk_tck %q: want a positive number", s.Info["clk_tck"])
	}

	runRows, header, err := readTSV(filepath.Join(dir, "runs.tsv"), true)
	if err != nil {
		return s, err
	}
	if header != runsColumns {
		return s, fmt.Errorf("runs.tsv: header %q: want %q (a results directory of an older bench/run.sh?)", header, runsColumns)
	}
	var runs []run
	for i, f := range runRows {
		line := i + 2
		if len(f) != 10 {
			return s, fmt.Errorf("runs.tsv line %d: want 10 fields, got %d", line, len(f))
		}
		r := run{workload: f[0], cores: f[1], target: f[2]}
		if f[7] != "-" {
			ticks, err := strconv.ParseInt(f[7], 10, 64)
			if err != nil {
				return s, fmt.Errorf("runs.tsv line %d: proxy_ticks %q: want an integer or -", line, f[7])
			}
			r.proxyCPU, r.hasProxyCPU = float64(ticks)/clkTck, true
		}
		appTicks, err := strconv.ParseInt(f[8], 10, 64)
		if err != nil {
			return s, fmt.Errorf("runs.tsv line %d: app_ticks %q: want an integer", line, f[8])
		}
		r.appCPU = float64(appTicks) / clkTck
		r.rssKB, err = strconv.ParseFloat(f[9], 64)
		if err != nil {
			return s, fmt.Errorf("runs.tsv line %d: rss_kb %q: want kB", line, f[9])
		}
		switch f[4] {
		case "wrk":
			r.m, err = readWrk(filepath.Join(dir, f[5]))
		case "fixedrate":
			r.m, err = readLogged(filepath.Join(dir, f[5]), filepath.Join(dir, f[6]), parseFixedrate)
		case "h2load":
			r.m, err = readLogged(filepath.Join(dir, f[5]), filepath.Join(dir, f[6]), parseH2load)
		default:
			return s, fmt.Errorf("runs.tsv line %d: tool %q: want wrk, fixedrate or h2load", line, f[4])
		}
		if errors.Is(err, errNoRate) || errors.Is(err, errNoRequests) {
			r.failed = true
		} else if err != nil {
			return s, fmt.Errorf("runs.tsv line %d: %w", line, err)
		}
		runs = append(runs, r)
	}
	s.Rows = summarize(runs)
	return s, nil
}

// summarize groups the runs into rows and takes the median of each figure
// over a target's runs in a row. direct's runs (cores "-") go into every
// row of their workload.
func summarize(runs []run) []row {
	var workloads []string
	cores := map[string][]string{}
	seen := map[string]bool{}
	for _, r := range runs {
		if !seen[r.workload] {
			seen[r.workload] = true
			workloads = append(workloads, r.workload)
		}
		if r.cores != "-" && !seen[r.workload+"@"+r.cores] {
			seen[r.workload+"@"+r.cores] = true
			cores[r.workload] = append(cores[r.workload], r.cores)
		}
	}
	var out []row
	for _, w := range workloads {
		budgets := cores[w]
		sort.SliceStable(budgets, func(i, j int) bool { return numeric(budgets[i]) < numeric(budgets[j]) })
		if len(budgets) == 0 {
			budgets = []string{"-"} // direct alone
		}
		for _, c := range budgets {
			byTarget := map[string][]run{}
			var order []string
			for _, r := range runs {
				if r.workload != w || (r.cores != c && r.cores != "-") {
					continue
				}
				if _, ok := byTarget[r.target]; !ok {
					order = append(order, r.target)
				}
				byTarget[r.target] = append(byTarget[r.target], r)
			}
			sort.SliceStable(order, func(i, j int) bool { return targetRank(order[i]) < targetRank(order[j]) })
			rw := row{Workload: w, Cores: c}
			for _, t := range order {
				rw.Targets = append(rw.Targets, medians(t, byTarget[t]))
			}
			if w == "fixedrate" {
				addLatency(rw.Targets)
			}
			out = append(out, rw)
		}
	}
	return out
}

// medians summarizes one target's runs in a row.
func medians(target string, rs []run) targetSummary {
	var rate, p50, p99, proxyCPU, appCPU, rss []float64
	var errs int64
	failed, withCPU := 0, 0
	for _, r := range rs {
		if r.failed {
			failed++
			continue
		}
		rate = append(rate, r.m.RequestsPerSec)
		p50 = append(p50, r.m.P50)
		p99 = append(p99, r.m.P99)
		if r.hasProxyCPU {
			withCPU++
			proxyCPU = append(proxyCPU, per100k(r.proxyCPU, r.m.Requests))
		}
		appCPU = append(appCPU, per100k(r.appCPU, r.m.Requests))
		rss = append(rss, r.rssKB/1024)
		errs += r.m.Errors
	}
	ts := targetSummary{
		Target:         target,
		Rounds:         len(rs),
		FailedRuns:     failed,
		RequestsPerSec: median(rate),
		P50ms:          median(p50),
		P99ms:          median(p99),
		AppCPU:         median(appCPU),
		RSSMB:          median(rss),
		Errors:         errs,
	}
	if withCPU > 0 {
		v := median(proxyCPU)
		ts.ProxyCPU = &v
	}
	return ts
}

// addLatency sets each proxy's latency over direct's, when direct ran.
func addLatency(ts []targetSummary) {
	var direct *targetSummary
	for i := range ts {
		if ts[i].Target == "direct" {
			direct = &ts[i]
		}
	}
	if direct == nil || direct.Rounds == direct.FailedRuns {
		return
	}
	for i := range ts {
		if ts[i].Target == "direct" || ts[i].Rounds == ts[i].FailedRuns {
			continue
		}
		p50 := ts[i].P50ms - direct.P50ms
		p99 := ts[i].P99ms - direct.P99ms
		ts[i].AddedP50ms, ts[i].AddedP99ms = &p50, &p99
	}
}

// numeric orders core budgets as numbers ("10" after "2").
func numeric(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 1 << 30
	}
	return n
}

// targetRank orders a table: direct first, then the peers, outrider last.
func targetRank(t string) int {
	switch t {
	case "direct":
		return 0
	case "nginx":
		return 1
	case "haproxy":
		return 2
	case "caddy":
		return 3
	case "goloop":
		return 4
	case "gnetloop":
		return 5
	case "uringloop":
		return 6
	case "outrider":
		return 8
	}
	return 7
}

func per100k(seconds float64, requests int64) float64 {
	if requests <= 0 {
		return 0
	}
	return seconds / float64(requests) * 1e5
}

// median of vs; the mean of the middle two for an even count.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := append([]float64(nil), vs...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// readWrk reads one wrk output file.
func readWrk(path string) (measured, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return measured{}, err
	}
	r, err := parseWrk(string(b))
	if err != nil {
		return measured{}, fmt.Errorf("parse %s: %w", path, err)
	}
	return measured{RequestsPerSec: r.RequestsPerSec, Requests: r.Requests, P50: r.P50, P99: r.P99, Errors: r.Errors()}, nil
}

// readLogged reads one run of a load generator that logs each request
// (bench/cmd/fixedrate, or h2load in older results): its printed summary,
// read by parse, and its log file (gzipped when the name ends in .gz),
// from which come the percentiles.
func readLogged(path, logPath string, parse func(string) (loggedResult, error)) (measured, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return measured{}, err
	}
	r, err := parse(string(b))
	if err != nil {
		return measured{}, fmt.Errorf("parse %s: %w", path, err)
	}
	f, err := os.Open(logPath)
	if err != nil {
		return measured{}, err
	}
	defer f.Close()
	var rd io.Reader = f
	if strings.HasSuffix(logPath, ".gz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return measured{}, fmt.Errorf("read %s: %w", logPath, err)
		}
		defer gz.Close()
		rd = gz
	}
	ms, err := parseH2loadLog(rd)
	if err != nil {
		return measured{}, fmt.Errorf("parse %s: %w", logPath, err)
	}
	return measured{
		RequestsPerSec: r.RequestsPerSec,
		Requests:       r.Done,
		P50:            percentile(ms, 50),
		P99:            percentile(ms, 99),
		Errors:         r.Errors(),
	}, nil
}

// readTSV reads tab-separated lines, skipping blank lines, and returns the
// first line apart when header is set.
func readTSV(path string, header bool) (rows [][]string, head string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, "", err
	}
	for i, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if header && i == 0 {
			head = line
			continue
		}
		if strings.TrimSpace(line) == "" {
			continue
		}
		rows = append(rows, strings.Split(line, "\t"))
	}
	return rows, head, nil
}
