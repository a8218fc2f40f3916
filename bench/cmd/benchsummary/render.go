package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// peers are the targets outrider is compared with, in the ratio tables'
// and the chart's order. goloop is the bench's own minimal event-loop
// proxy (bench/cmd/goloop): a floor for that design in Go, not a product;
// gnetloop is the same proxy on the gnet library (bench/cmd/gnetloop),
// uringloop the same on io_uring (bench/cmd/uringloop).
var peers = []string{"nginx", "haproxy", "caddy", "goloop", "gnetloop", "uringloop", "direct"}

// describe says what a workload's load generator does, from info.tsv.
func describe(workload string, info map[string]string) string {
	c := info["connections"]
	switch workload {
	case "small":
		return "GET / (53-byte answer), keep-alive, wrk -t1 -c" + c
	case "16k":
		return "GET /bytes?n=16384 (16 KiB answer), keep-alive, wrk -t1 -c" + c
	case "1m":
		return "GET /bytes?n=1048576 (1 MiB answer), keep-alive, wrk -t1 -c" + c
	case "upload":
		return "POST /echo with a 64 KiB body (echoed back), keep-alive, wrk -t1 -c" + c
	case "close":
		return "GET / with Connection: close (a new connection per request), wrk -t1 -c" + c
	case "conns1000":
		return "GET /, keep-alive, wrk -t1 -c" + info["high_connections"]
	case "fixedrate":
		tool := "bench/cmd/fixedrate"
		if info["h2load"] != "" {
			tool = "h2load --h1 with a timing script" // results from before bench/cmd/fixedrate
		}
		return fmt.Sprintf("GET / at a fixed %s req/s over %s keep-alive connections, %s",
			info["fixed_rate"], info["fixed_clients"], tool)
	}
	return workload
}

// budget says what the row's core budget meant for each peer that ran in
// it: nginx's workers, HAProxy's threads, and GOMAXPROCS for the Go peers.
func budget(rw row) string {
	if rw.Cores == "-" {
		return "direct only"
	}
	ran := make(map[string]bool, len(rw.Targets))
	for _, t := range rw.Targets {
		ran[t.Target] = true
	}
	var parts []string
	if ran["nginx"] {
		workers := "workers"
		if rw.Cores == "1" {
			workers = "worker"
		}
		parts = append(parts, fmt.Sprintf("nginx %s %s", rw.Cores, workers))
	}
	if ran["haproxy"] {
		parts = append(parts, "HAProxy nbthread "+rw.Cores)
	}
	var gos []string
	for _, p := range goPeers {
		if ran[p.target] {
			gos = append(gos, p.name)
		}
	}
	if len(gos) > 0 {
		parts = append(parts, joinAnd(gos)+" GOMAXPROCS "+rw.Cores)
	}
	if len(parts) == 0 {
		return rw.Cores + " core(s)"
	}
	return rw.Cores + " core(s): " + strings.Join(parts, ", ")
}

// goPeers are the peers a budget runs at GOMAXPROCS, in the budget line's
// order, each with the name the line gives it.
var goPeers = []struct{ target, name string }{
	{"caddy", "Caddy"}, {"goloop", "goloop"}, {"gnetloop", "gnetloop"},
	{"uringloop", "uringloop"}, {"outrider", "outrider"},
}

// joinAnd joins names as a list in prose: "a", "a and b", "a, b and c".
func joinAnd(names []string) string {
	if len(names) == 1 {
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

// render prints the summary for people.
func render(w io.Writer, s summary) {
	info := s.Info
	fmt.Fprintf(w, "outrider bench %s  commit %s  %s CPUs\n", info["date"], info["commit"], info["cpus"])
	var tools []string
	for _, k := range []string{"wrk", "fixedrate", "h2load", "nginx", "haproxy", "caddy", "goloop", "gnetloop", "uringloop"} {
		if v := info[k]; v != "" {
			tools = append(tools, v)
		}
	}
	if v := info["outrider"]; v != "" {
		tools = append(tools, "outrider "+v)
	}
	if len(tools) > 0 {
		fmt.Fprintln(w, strings.Join(tools, "; "))
	}
	fmt.Fprintf(w, "rounds: %s, interleaved and rotated; %s per run after a %s warm-up; figures are medians over rounds\n",
		info["rounds"], info["duration"], info["warmup"])
	if pins := pinning(info); pins != "" {
		fmt.Fprintf(w, "proxies pinned with taskset: %s; the app and the load generator float\n", pins)
	}
	if note := processes(info); note != "" {
		fmt.Fprintln(w, note)
	}
	if info["load_start"] != "" {
		fmt.Fprintf(w, "load average (1 min): %s at the start, %s at the end", info["load_start"], info["load_end"])
		if busy(info["load_start"], info["cpus"]) || busy(info["load_end"], info["cpus"]) {
			fmt.Fprint(w, " (busy machine: trust the ratios, not the absolute figures, least of all p99)")
		}
		fmt.Fprintln(w)
	}
	for _, u := range s.Unavailable {
		fmt.Fprintf(w, "%s: not available (%s)\n", u.Target, u.Reason)
	}

	for _, rw := range s.Rows {
		fixed := rw.Workload == "fixedrate"
		fmt.Fprintf(w, "\n== %s, %s\n   %s\n\n", rw.Workload, budget(rw), describe(rw.Workload, info))
		head := []string{"target", "req/s", "p50 ms", "p99 ms"}
		if fixed {
			head = append(head, "+p50 ms", "+p99 ms")
		}
		head = append(head, "CPU s/100k req", "app CPU s/100k", "RSS MB", "errors")
		tw := newTable(head...)
		for _, t := range rw.Targets {
			cells := []string{t.Target, fmt.Sprintf("%.0f", t.RequestsPerSec), fmt.Sprintf("%.3f", t.P50ms), fmt.Sprintf("%.3f", t.P99ms)}
			if fixed {
				cells = append(cells, optional("%+.3f", t.AddedP50ms), optional("%+.3f", t.AddedP99ms))
			}
			cells = append(cells, optional("%.2f", t.ProxyCPU), fmt.Sprintf("%.2f", t.AppCPU),
				fmt.Sprintf("%.1f", t.RSSMB), strconv.FormatInt(t.Errors, 10))
			tw.row(cells...)
		}
		tw.write(w)
		for _, t := range rw.Targets {
			if t.Errors > 0 {
				fmt.Fprintf(w, "warning: %s had %d failed requests (socket errors, timeouts or non-2xx answers); its figures are not comparable\n", t.Target, t.Errors)
			}
			if t.FailedRuns > 0 {
				fmt.Fprintf(w, "warning: the load generator reported nothing in %d of %d rounds for %s (see its round files)\n", t.FailedRuns, t.Rounds, t.Target)
			}
			if fixed && t.Rounds > t.FailedRuns && belowRate(t.RequestsPerSec, info["fixed_rate"]) {
				fmt.Fprintf(w, "warning: %s reached %.0f of the %s req/s asked for: its latency was not measured at the fixed rate\n", t.Target, t.RequestsPerSec, info["fixed_rate"])
			}
		}
		ratios := ratioTable(rw, fixed)
		if len(ratios.rows) > 0 {
			fmt.Fprintln(w)
			ratios.write(w)
		}
	}
}

// ratioTable holds outrider over each peer in a row, then goloop over
// nginx (how far the floor of an event loop in Go is from nginx) and
// gnetloop and uringloop over goloop (what the gnet library, and io_uring
// instead of epoll, change on that floor). CPU and
// RSS have no ratio against direct, which has no proxy.
func ratioTable(rw row, fixed bool) *table {
	byName := map[string]targetSummary{}
	for _, t := range rw.Targets {
		if t.Rounds > t.FailedRuns {
			byName[t.Target] = t
		}
	}
	head := []string{"ratio", "throughput", "p50", "p99"}
	if fixed {
		head = append(head, "added p50", "added p99")
	}
	head = append(head, "CPU", "RSS")
	rt := newTable(head...)
	var pairs [][2]string
	for _, p := range peers {
		pairs = append(pairs, [2]string{"outrider", p})
	}
	pairs = append(pairs, [2]string{"goloop", "nginx"}, [2]string{"gnetloop", "nginx"}, [2]string{"gnetloop", "goloop"},
		[2]string{"uringloop", "nginx"}, [2]string{"uringloop", "goloop"})
	for _, pair := range pairs {
		a, okA := byName[pair[0]]
		b, okB := byName[pair[1]]
		if !okA || !okB {
			continue
		}
		cells := []string{pair[0] + "/" + pair[1], ratio(a.RequestsPerSec, b.RequestsPerSec), ratio(a.P50ms, b.P50ms), ratio(a.P99ms, b.P99ms)}
		if fixed {
			if pair[1] == "direct" {
				cells = append(cells, "-", "-")
			} else {
				cells = append(cells, ratioOf(a.AddedP50ms, b.AddedP50ms), ratioOf(a.AddedP99ms, b.AddedP99ms))
			}
		}
		if pair[1] == "direct" {
			cells = append(cells, "-", "-")
		} else {
			cells = append(cells, ratioOf(a.ProxyCPU, b.ProxyCPU), ratio(a.RSSMB, b.RSSMB))
		}
		rt.row(cells...)
	}
	return rt
}

// processes says whether each run had a proxy process of its own, from
// info.tsv's fresh (absent in results from before the knob).
func processes(info map[string]string) string {
	switch info["fresh"] {
	case "1":
		return "each proxy started anew before each of its runs: a row's RSS is that row's own"
	case "0":
		return "one process per proxy and budget for the whole run: a row's RSS carries what earlier rows left"
	}
	return ""
}

// pinning describes the taskset pinning recorded in info.tsv.
func pinning(info map[string]string) string {
	var parts []string
	for _, c := range strings.Fields(info["cores"]) {
		if cpus := info["pin_"+c]; cpus != "" {
			parts = append(parts, fmt.Sprintf("%s core(s) on CPUs %s", c, cpus))
		}
	}
	return strings.Join(parts, ", ")
}

// belowRate tells whether a fixed-rate run fell more than 10% short of the
// rate asked for, as when the machine or the target cannot keep up.
func belowRate(got float64, want string) bool {
	r, err := strconv.ParseFloat(want, 64)
	return err == nil && r > 0 && got < 0.9*r
}

// busy tells whether a load average is above what the benchmark itself
// brings (the load generator, the app and a proxy: about the number of
// CPUs).
func busy(load, cpus string) bool {
	l, err1 := strconv.ParseFloat(load, 64)
	c, err2 := strconv.ParseFloat(cpus, 64)
	return err1 == nil && err2 == nil && l > c+1
}

// ratio formats a/b, or "-" when b is not positive.
func ratio(a, b float64) string {
	if b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

// ratioOf is ratio for figures that may be absent.
func ratioOf(a, b *float64) string {
	if a == nil || b == nil {
		return "-"
	}
	return ratio(*a, *b)
}

// optional formats v, or "-" when it is absent.
func optional(format string, v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf(format, *v)
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
