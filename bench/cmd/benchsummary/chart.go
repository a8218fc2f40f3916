package main

import (
	"fmt"
	"math"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// chartData is what the chart shows: for each row with a throughput to
// compare (every workload but fixedrate, whose rate is set by the load
// generator), outrider's median requests/s over each peer's.
type chartData struct {
	Labels []string
	// Ratios holds, per peer, one value per label; 0 where that peer or
	// outrider did not run.
	Ratios map[string][]float64
	Peers  []string
}

// throughputRatios collects the chart's values from the summary.
func throughputRatios(s summary) chartData {
	d := chartData{Ratios: map[string][]float64{}}
	present := map[string]bool{}
	for _, rw := range s.Rows {
		if rw.Workload == "fixedrate" {
			continue
		}
		byName := map[string]targetSummary{}
		for _, t := range rw.Targets {
			if t.Rounds > t.FailedRuns {
				byName[t.Target] = t
			}
		}
		o, ok := byName["outrider"]
		if !ok || o.RequestsPerSec <= 0 {
			continue
		}
		d.Labels = append(d.Labels, fmt.Sprintf("%s %sc", rw.Workload, rw.Cores))
		for _, p := range peers {
			v := 0.0
			if b, ok := byName[p]; ok && b.RequestsPerSec > 0 {
				v = o.RequestsPerSec / b.RequestsPerSec
				present[p] = true
			}
			d.Ratios[p] = append(d.Ratios[p], v)
		}
	}
	for _, p := range peers {
		if present[p] {
			d.Peers = append(d.Peers, p)
		}
	}
	return d
}

// writeChart draws outrider/peer throughput per workload and core budget
// as grouped bars to path (.svg, .png or any other format gonum/plot
// knows by its extension). The axis is logarithmic, so that 0.5× and 2×
// lie as far from parity and a peer six times slower does not flatten the
// bars near 1.0×: a bar rises from the dashed line at 1.0× when outrider
// is faster and falls below it when it is slower. It draws nothing, and
// says false, when the summary has no ratio to show.
func writeChart(path string, s summary) (bool, error) {
	d := throughputRatios(s)
	if len(d.Labels) == 0 || len(d.Peers) == 0 {
		return false, nil
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("outrider / peer throughput, medians over rounds (rounds: %s, %s)", s.Info["rounds"], s.Info["date"])
	p.Y.Label.Text = "outrider req/s ÷ peer req/s (above 1×: outrider faster)"
	// Bars are drawn from 0 = log2(1×); a peer that did not run (ratio 0)
	// gets none.
	bottom, top := 0.0, 0.0
	heights := map[string]plotter.Values{}
	for _, peer := range d.Peers {
		for _, v := range d.Ratios[peer] {
			h := 0.0
			if v > 0 {
				h = math.Log2(v)
			}
			heights[peer] = append(heights[peer], h)
			bottom, top = min(bottom, h), max(top, h)
		}
	}
	// Room below for the smallest bar and above for the legend, which sits
	// at the top.
	p.Y.Min = min(bottom, -0.5) - 0.25
	p.Y.Max = top + 0.4*(top-p.Y.Min) + 0.25
	p.Y.Tick.Marker = ratioTicks{}
	width := vg.Points(10)
	n := len(d.Peers)
	for i, peer := range d.Peers {
		bars, err := plotter.NewBarChart(heights[peer], width)
		if err != nil {
			return false, fmt.Errorf("chart bars for %s: %w", peer, err)
		}
		bars.LineStyle.Width = 0
		bars.Color = plotutil.Color(i)
		bars.Offset = vg.Length(float64(i)-float64(n-1)/2) * width
		p.Add(bars)
		p.Legend.Add("outrider/"+peer, bars)
	}
	parity := plotter.NewFunction(func(float64) float64 { return 0 })
	parity.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	p.Add(parity)
	p.Legend.Top = true
	p.NominalX(d.Labels...)
	w := max(vg.Length(len(d.Labels))*vg.Points(float64(n)*10+40), 7*vg.Inch)
	if err := p.Save(w, 4*vg.Inch, path); err != nil {
		return false, fmt.Errorf("write chart %s: %w", path, err)
	}
	return true, nil
}

// ratioTicks marks an axis of log2(ratio) in ratios: a labelled tick at
// each power of two (0.5×, 1×, 2×, …) and unlabelled ones at a quarter
// and a half past it (0.625×, 0.75×, 1.25×, 1.5×, 2.5×, 3×, …).
type ratioTicks struct{}

func (ratioTicks) Ticks(min, max float64) []plot.Tick {
	var ticks []plot.Tick
	for e := math.Floor(min); e <= math.Ceil(max); e++ {
		if e >= min && e <= max {
			ticks = append(ticks, plot.Tick{Value: e, Label: ratioLabel(math.Exp2(e))})
		}
		for _, f := range []float64{1.25, 1.5} {
			if v := e + math.Log2(f); v >= min && v <= max {
				ticks = append(ticks, plot.Tick{Value: v})
			}
		}
	}
	return ticks
}

// ratioLabel writes a ratio as 0.25×, 0.5×, 1×, 2×, 16×.
func ratioLabel(r float64) string {
	return strconv.FormatFloat(r, 'f', -1, 64) + "×"
}

// addedLatency collects the latency chart's values: for each fixedrate row,
// the p50 and then the p99 that each proxy adds over direct, in ms.
func addedLatency(s summary) chartData {
	d := chartData{Ratios: map[string][]float64{}}
	present := map[string]bool{}
	proxies := []string{"nginx", "haproxy", "caddy", "goloop", "gnetloop", "uringloop", "outrider"}
	for _, rw := range s.Rows {
		if rw.Workload != "fixedrate" {
			continue
		}
		byName := map[string]targetSummary{}
		for _, t := range rw.Targets {
			if t.AddedP50ms != nil && t.AddedP99ms != nil {
				byName[t.Target] = t
			}
		}
		if len(byName) == 0 {
			continue
		}
		d.Labels = append(d.Labels, fmt.Sprintf("p50 %sc", rw.Cores), fmt.Sprintf("p99 %sc", rw.Cores))
		for _, p := range proxies {
			t, ok := byName[p]
			if !ok {
				d.Ratios[p] = append(d.Ratios[p], 0, 0)
				continue
			}
			present[p] = true
			d.Ratios[p] = append(d.Ratios[p], *t.AddedP50ms, *t.AddedP99ms)
		}
	}
	for _, p := range proxies {
		if present[p] {
			d.Peers = append(d.Peers, p)
		}
	}
	return d
}

// writeLatencyChart draws the latency each proxy adds over direct at a
// fixed rate, p50 and p99 per core budget, to path. It draws nothing, and
// says false, when the summary has no fixedrate row with a proxy and
// direct.
func writeLatencyChart(path string, s summary) (bool, error) {
	d := addedLatency(s)
	if len(d.Labels) == 0 || len(d.Peers) == 0 {
		return false, nil
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("latency added over direct at %s req/s, medians over rounds (rounds: %s, %s)",
		s.Info["fixed_rate"], s.Info["rounds"], s.Info["date"])
	p.Y.Label.Text = "proxy latency − direct latency, ms (lower is better)"
	width := vg.Points(10)
	n := len(d.Peers)
	top, bottom := 0.0, 0.0
	for i, peer := range d.Peers {
		for _, v := range d.Ratios[peer] {
			top, bottom = max(top, v), min(bottom, v)
		}
		bars, err := plotter.NewBarChart(plotter.Values(d.Ratios[peer]), width)
		if err != nil {
			return false, fmt.Errorf("latency chart bars for %s: %w", peer, err)
		}
		bars.LineStyle.Width = 0
		bars.Color = plotutil.Color(i)
		bars.Offset = vg.Length(float64(i)-float64(n-1)/2) * width
		p.Add(bars)
		p.Legend.Add(peer, bars)
	}
	p.Y.Min = bottom * 1.1
	p.Y.Max = max(top, 0.001) * 1.35 // headroom for the legend
	p.Legend.Top = true
	p.NominalX(d.Labels...)
	w := max(vg.Length(len(d.Labels))*vg.Points(float64(n)*10+24), 7*vg.Inch)
	if err := p.Save(w, 4*vg.Inch, path); err != nil {
		return false, fmt.Errorf("write latency chart %s: %w", path, err)
	}
	return true, nil
}
