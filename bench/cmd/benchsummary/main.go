// Command benchsummary turns the raw outputs of bench/run.sh into the
// benchmark's tables: per workload and core budget, each target's medians
// over rounds (requests/s, p50, p99, CPU per 100k requests, RSS), the
// ratios of outrider to each peer, and a chart of outrider/peer throughput
// per workload.
//
// It reads, from -dir:
//
//	info.tsv   key<TAB>value lines (clk_tck, duration, rounds, load_start, …;
//	           "unavailable<TAB>target<TAB>reason" per missing target)
//	runs.tsv   workload, cores, target, round, tool, file, latency_file,
//	           proxy_ticks, app_ticks, rss_kb (header line first; cores and
//	           proxy_ticks are "-" for direct, latency_file "-" for wrk)
//
// and the tool outputs runs.tsv names (wrk's text; h2load's text and its
// --log-file, gzipped or not). It prints the summary on stdout and writes
// summary.json, chart.svg (throughput ratios) and latency.svg (latency
// added at a fixed rate) beside them.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
)

func main() {
	dir := flag.String("dir", "", "results directory written by bench/run.sh")
	chart := flag.String("chart", "", "throughput chart, .svg or .png (default DIR/chart.svg)")
	latencyChart := flag.String("latency-chart", "", "fixed-rate added-latency chart, .svg or .png (default DIR/latency.svg)")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "benchsummary: -dir is required")
		os.Exit(2)
	}
	if *chart == "" {
		*chart = filepath.Join(*dir, "chart.svg")
	}
	if *latencyChart == "" {
		*latencyChart = filepath.Join(*dir, "latency.svg")
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
	fmt.Println()
	for _, c := range []struct {
		name, path string
		write      func(string, summary) (bool, error)
	}{
		{"chart", *chart, writeChart},
		{"latency chart", *latencyChart, writeLatencyChart},
	} {
		drawn, err := c.write(c.path, s)
		if err != nil {
			fmt.Fprintf(os.Stderr, "benchsummary: %v\n", err)
			os.Exit(1)
		}
		if drawn {
			fmt.Printf("%s: %s\n", c.name, c.path)
		}
	}
}
