// Command benchsummary turns the raw outputs of bench/run.sh into the
// benchmark's table: per target the median over rounds of requests/s, p50,
// p99 and proxy CPU per 100k requests, the proxies' peak memory, the ratios
// of outrider to its peers, and the memory run at many connections.
//
// It reads, from -dir:
//
//	info.tsv     key<TAB>value lines (clk_tck, duration, rounds, …; "unavailable" per missing target)
//	runs.tsv     target, round, wrk_file, proxy_ticks, app_ticks (header line first)
//	memory.tsv   target, peak_rss_kb, load_rss_kb, load_hwm_kb, wrk_file (header line first;
//	             the last three are "-" when the memory run was skipped)
//
// prints the summary on stdout and writes summary.json beside them.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

func main() {
	dir := flag.String("dir", "", "results directory written by bench/run.sh")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "benchsummary: -dir is required")
		os.Exit(2)
	}
	s, err := load(*dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchsummary: %v\n", err)
		os.Exit(1)
	}
	render(os.Stdout, s)
	out, err := json.MarshalIndent(s, "", "  ")
	if err == nil {
		err = os.WriteFile(filepath.Join(*dir, "summary.json"), append(out, '\n'), 0o644)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchsummary: write summary.json: %v\n", err)
		os.Exit(1)
	}
}

// summary is the whole benchmark, as printed and as saved in summary.json.
type summary struct {
	Info        map[string]string `json:"info"`
	Unavailable []unavailable     `json:"unavailable,omitempty"`
	Targets     []targetSummary   `json:"targets"`
	Memory      []memoryRun       `json:"memory"`
}

// unavailable is a target left out of the run, and why.
type unavailable struct {
	Target string `json:"target"`
	Reason string `json:"reason"`
}

// targetSummary is one target's medians over the measured rounds.
type targetSummary struct {
	Target         string  `json:"target"`
	Rounds         int     `json:"rounds"`
	RequestsPerSec float64 `json:"requests_per_sec"`
	P50ms          float64 `json:"p50_ms"`
	P99ms          float64 `json:"p99_ms"`
	// ProxyCPU and AppCPU are CPU seconds per 100k requests; ProxyCPU is
	// absent for direct, which has no proxy.
	ProxyCPU *float64 `json:"proxy_cpu_s_per_100k,omitempty"`
	AppCPU   float64  `json:"app_cpu_s_per_100k"`
	// PeakRSSMB is the proxy's VmHWM after the measured rounds (the app's
	// for direct).
	PeakRSSMB float64 `json:"peak_rss_mb"`
	Errors    int64   `json:"errors"`
	// FailedRuns counts rounds in which wrk reported nothing; the medians
	// leave them out.
	FailedRuns int `json:"failed_runs,omitempty"`
}

// memoryRun is one target under many concurrent connections.
type memoryRun struct {
	Target         string  `json:"target"`
	RequestsPerSec float64 `json:"requests_per_sec"`
	Errors         int64   `json:"errors"`
	// LoadRSSMB is the largest VmRSS seen during the load, HWMMB the VmHWM
	// after it.
	LoadRSSMB float64 `json:"load_rss_mb"`
	HWMMB     float64 `json:"hwm_mb"`
}

// outriderRSSGoalMB is outrider's memory goal at 1,000 connections.
const outriderRSSGoalMB = 30

// load reads and summarizes the results directory.
func load(dir string) (summary, error) {
	s := summary{Info: map[string]string{}}
	infoRows, err := readTSV(filepath.Join(dir, "info.tsv"), false)
	if err != nil {
		return s, err
	}
	for _, row := range infoRows {
		if len(row) < 2 {
			continue
		}
		if row[0] == "unavailable" {
			u := unavailable{Target: row[1]}
			if len(row) > 2 {
				u.Reason = row[2]
			}
			s.Unavailable = append(s.Unavailable, u)
			continue
		}
		s.Info[row[0]] = row[1]
	}
	clkTck, err := strconv.ParseFloat(s.Info["clk_tck"], 64)
	if err != nil || clkTck <= 0 {
		return s, fmt.Errorf("info.tsv: clk_tck %q: want a positive number", s.Info["clk_tck"])
	}

	runRows, err := readTSV(filepath.Join(dir, "runs.tsv"), true)
	if err != nil {
		return s, err
	}
	var runs []run
	for i, row := range runRows {
		if len(row) != 5 {
			return s, fmt.Errorf("runs.tsv line %d: want 5 fields, got %d", i+2, len(row))
		}
		r := run{target: row[0]}
		proxyTicks, err1 := strconv.ParseInt(row[3], 10, 64)
		appTicks, err2 := strconv.ParseInt(row[4], 10, 64)
		if err1 != nil || err2 != nil {
			return s, fmt.Errorf("runs.tsv line %d: ticks %q, %q: want integers", i+2, row[3], row[4])
		}
		r.proxyCPU = float64(proxyTicks) / clkTck
		r.appCPU = float64(appTicks) / clkTck
		r.wrk, err = readWrk(filepath.Join(dir, row[2]))
		if err == errNoRate {
			r.failed = true
		} else if err != nil {
			return s, err
		}
		runs = append(runs, r)
	}

	memRows, err := readTSV(filepath.Join(dir, "memory.tsv"), true)
	if err != nil && !os.IsNotExist(err) {
		return s, err
	}
	peak := map[string]float64{}
	for i, row := range memRows {
		if len(row) != 5 {
			return s, fmt.Errorf("memory.tsv line %d: want 5 fields, got %d", i+2, len(row))
		}
		peakKB, err := strconv.ParseFloat(row[1], 64)
		if err != nil {
			return s, fmt.Errorf("memory.tsv line %d: %q: want kB", i+2, row[1])
		}
		peak[row[0]] = peakKB / 1024
		if row[4] == "-" {
			continue // the memory run was skipped
		}
		loadKB, err1 := strconv.ParseFloat(row[2], 64)
		hwmKB, err2 := strconv.ParseFloat(row[3], 64)
		if err1 != nil || err2 != nil {
			return s, fmt.Errorf("memory.tsv line %d: %q, %q: want kB", i+2, row[2], row[3])
		}
		// The kernel updates VmHWM lazily, so a VmRSS sampled under load can
		// top the VmHWM read after it by a few pages: the peak is the larger.
		m := memoryRun{Target: row[0], LoadRSSMB: loadKB / 1024, HWMMB: max(loadKB, hwmKB) / 1024}
		w, err := readWrk(filepath.Join(dir, row[4]))
		if err != nil && err != errNoRate {
			return s, err
		}
		m.RequestsPerSec, m.Errors = w.RequestsPerSec, w.Errors()
		s.Memory = append(s.Memory, m)
	}

	s.Targets = summarize(runs, peak)
	return s, nil
}

// run is one measured wrk run of one target.
type run struct {
	target           string
	wrk              wrkResult
	failed           bool    // wrk printed no result, e.g. it could not connect
	proxyCPU, appCPU float64 // CPU seconds during the run
}

// summarize takes the median of each figure over a target's runs, keeping
// the targets in the order they first appear.
func summarize(runs []run, peakRSSMB map[string]float64) []targetSummary {
	var order []string
	byTarget := map[string][]run{}
	for _, r := range runs {
		if _, ok := byTarget[r.target]; !ok {
			order = append(order, r.target)
		}
		byTarget[r.target] = append(byTarget[r.target], r)
	}
	sort.SliceStable(order, func(i, j int) bool { return targetRank(order[i]) < targetRank(order[j]) })
	var out []targetSummary
	for _, t := range order {
		rs := byTarget[t]
		var rate, p50, p99, proxyCPU, appCPU []float64
		var errs int64
		failed := 0
		for _, r := range rs {
			if r.failed {
				failed++
				continue
			}
			rate = append(rate, r.wrk.RequestsPerSec)
			p50 = append(p50, r.wrk.P50)
			p99 = append(p99, r.wrk.P99)
			proxyCPU = append(proxyCPU, per100k(r.proxyCPU, r.wrk.Requests))
			appCPU = append(appCPU, per100k(r.appCPU, r.wrk.Requests))
			errs += r.wrk.Errors()
		}
		ts := targetSummary{
			Target:         t,
			Rounds:         len(rs),
			FailedRuns:     failed,
			RequestsPerSec: median(rate),
			P50ms:          median(p50),
			P99ms:          median(p99),
			AppCPU:         median(appCPU),
			PeakRSSMB:      peakRSSMB[t],
			Errors:         errs,
		}
		if t != "direct" {
			v := median(proxyCPU)
			ts.ProxyCPU = &v
		}
		out = append(out, ts)
	}
	return out
}

// targetRank orders the table: direct first, outrider last.
func targetRank(t string) int {
	switch t {
	case "direct":
		return 0
	case "nginx":
		return 1
	case "haproxy":
		return 2
	case "outrider":
		return 4
	}
	return 3
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

func readWrk(path string) (wrkResult, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return wrkResult{}, err
	}
	r, err := parseWrk(string(b))
	if err != nil && err != errNoRate {
		return r, fmt.Errorf("parse %s: %w", path, err)
	}
	return r, err
}

// readTSV reads tab-separated lines, skipping the first when header is set
// and blank lines always.
func readTSV(path string, header bool) ([][]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rows [][]string
	for i, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if (header && i == 0) || strings.TrimSpace(line) == "" {
			continue
		}
		rows = append(rows, strings.Split(line, "\t"))
	}
	return rows, nil
}

// render prints the summary for people.
func render(w io.Writer, s summary) {
	info := s.Info
	fmt.Fprintf(w, "outrider bench %s  commit %s  %s CPUs\n", info["date"], info["commit"], info["cpus"])
	fmt.Fprintf(w, "%s; %s; outrider %s, GOMAXPROCS %s\n", info["nginx"], info["haproxy"], info["outrider"], info["outrider_gomaxprocs"])
	fmt.Fprintf(w, "wrk -t1 -c%s -d%s --latency; rounds: %s, interleaved; figures are medians over rounds\n",
		info["connections"], info["duration"], info["rounds"])
	if info["load_start"] != "" {
		fmt.Fprintf(w, "load average (1 min): %s at the start, %s at the end", info["load_start"], info["load_end"])
		if busy(info["load_start"], info["cpus"]) || busy(info["load_end"], info["cpus"]) {
			fmt.Fprint(w, " (busy machine: trust the ratios, not the absolute figures, least of all p99)")
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)

	tw := newTable("target", "req/s", "p50 ms", "p99 ms", "CPU s/100k req", "app CPU s/100k", "peak RSS MB", "errors")
	for _, t := range s.Targets {
		cpu, rss := "-", "-"
		if t.ProxyCPU != nil {
			cpu = fmt.Sprintf("%.2f", *t.ProxyCPU)
			rss = fmt.Sprintf("%.1f", t.PeakRSSMB)
		}
		tw.row(t.Target, fmt.Sprintf("%.0f", t.RequestsPerSec), fmt.Sprintf("%.2f", t.P50ms),
			fmt.Sprintf("%.2f", t.P99ms), cpu, fmt.Sprintf("%.2f", t.AppCPU), rss, strconv.FormatInt(t.Errors, 10))
	}
	tw.write(w)
	for _, u := range s.Unavailable {
		fmt.Fprintf(w, "%s: proxy not available (%s)\n", u.Target, u.Reason)
	}
	for _, t := range s.Targets {
		if t.Errors > 0 {
			fmt.Fprintf(w, "warning: %s had %d socket errors or non-2xx responses; its figures are not comparable\n", t.Target, t.Errors)
		}
		if t.FailedRuns > 0 {
			fmt.Fprintf(w, "warning: wrk reported nothing in %d of %d rounds for %s (see its round files)\n", t.FailedRuns, t.Rounds, t.Target)
		}
	}

	byName := map[string]targetSummary{}
	for _, t := range s.Targets {
		byName[t.Target] = t
	}
	pairs := [][2]string{
		{"outrider", "nginx"}, {"outrider", "haproxy"}, {"outrider", "direct"},
		{"nginx", "direct"}, {"haproxy", "direct"},
	}
	rt := newTable("ratio", "throughput", "p99", "CPU")
	for _, p := range pairs {
		a, okA := byName[p[0]]
		b, okB := byName[p[1]]
		if !okA || !okB {
			continue
		}
		cpu := "-"
		if a.ProxyCPU != nil && b.ProxyCPU != nil {
			cpu = ratio(*a.ProxyCPU, *b.ProxyCPU)
		}
		rt.row(p[0]+"/"+p[1], ratio(a.RequestsPerSec, b.RequestsPerSec), ratio(a.P99ms, b.P99ms), cpu)
	}
	if len(rt.rows) > 0 {
		fmt.Fprintln(w)
		rt.write(w)
	}

	if len(s.Memory) > 0 {
		fmt.Fprintf(w, "\nmemory at %s connections (wrk -t2, VmRSS during the load, VmHWM after; direct is the app)\n\n", info["high_connections"])
		mt := newTable("target", "req/s", "errors", "RSS MB", "peak RSS MB", "goal")
		for _, m := range s.Memory {
			goal := ""
			if m.Target == "outrider" {
				goal = fmt.Sprintf("< %d MB: %s", outriderRSSGoalMB, map[bool]string{true: "met", false: "MISSED"}[m.HWMMB < outriderRSSGoalMB])
			}
			mt.row(m.Target, fmt.Sprintf("%.0f", m.RequestsPerSec), strconv.FormatInt(m.Errors, 10),
				fmt.Sprintf("%.1f", m.LoadRSSMB), fmt.Sprintf("%.1f", m.HWMMB), goal)
		}
		mt.write(w)
	}
}

// busy tells whether a load average is above what the benchmark itself
// brings (wrk, the app and a proxy: about the number of CPUs).
func busy(load, cpus string) bool {
	l, err1 := strconv.ParseFloat(load, 64)
	c, err2 := strconv.ParseFloat(cpus, 64)
	return err1 == nil && err2 == nil && l > c+1
}

// ratio formats a/b, or "-" when b is zero.
func ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

// table lines up columns: the first left-aligned, the others right.
type table struct {
	head []string
	rows [][]string
}

func newTable(head ...string) *table { return &table{head: head} }

func (t *table) row(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(w io.Writer) {
	width := make([]int, len(t.head))
	for _, r := range append([][]string{t.head}, t.rows...) {
		for i, c := range r {
			width[i] = max(width[i], len(c))
		}
	}
	for _, r := range append([][]string{t.head}, t.rows...) {
		var b strings.Builder
		for i, c := range r {
			if i == 0 {
				fmt.Fprintf(&b, "%-*s", width[i], c)
				continue
			}
			fmt.Fprintf(&b, "  %*s", width[i], c)
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}
