package scaleloop

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// WriteChart draws a run as a PNG at path: above, requests per second (the
// load offered, the requests answered, the rate the HPA saw, and failed
// requests); below, the Deployment's desired and ready replicas; both over
// seconds since the run began.
func WriteChart(path string, r Run) error {
	if len(r.Samples) == 0 && len(r.Load) == 0 {
		return fmt.Errorf("chart %s: the run recorded nothing", path)
	}
	rate := plot.New()
	rate.Title.Text = "outrider scaling loop: load, and the rate the HPA saw"
	rate.Y.Label.Text = "requests per second"
	rate.Legend.Top = true // the right-hand end is the quiet end of a run
	offered, answered, failed := plotter.XYs{}, plotter.XYs{}, plotter.XYs{}
	for _, l := range r.Load {
		x := l.At.Sub(r.Start).Seconds()
		offered = append(offered, plotter.XY{X: x, Y: l.Offered})
		answered = append(answered, plotter.XY{X: x, Y: float64(l.OK)})
		failed = append(failed, plotter.XY{X: x, Y: float64(l.Failed)})
	}
	seen := plotter.XYs{}
	desired, ready := plotter.XYs{}, plotter.XYs{}
	for _, s := range r.Samples {
		x := s.At.Sub(r.Start).Seconds()
		if s.Metric >= 0 {
			seen = append(seen, plotter.XY{X: x, Y: s.Metric})
		}
		desired = append(desired, plotter.XY{X: x, Y: float64(s.Desired)})
		ready = append(ready, plotter.XY{X: x, Y: float64(s.Ready)})
	}
	if err := addLines(rate, []line{
		{"offered", offered, plotutil.Color(0), nil},
		{"answered", answered, plotutil.Color(1), nil},
		{"seen by the HPA", seen, plotutil.Color(2), []vg.Length{vg.Points(4), vg.Points(2)}},
		{"failed", failed, color.RGBA{R: 220, A: 255}, nil},
	}); err != nil {
		return fmt.Errorf("chart %s: %w", path, err)
	}
	replicas := plot.New()
	replicas.X.Label.Text = "seconds since the load began"
	replicas.Y.Label.Text = "replicas"
	replicas.Y.Min = 0
	replicas.Legend.Top = true
	replicas.Y.Tick.Marker = wholeTicks{}
	if err := addLines(replicas, []line{
		{"desired (HPA)", desired, plotutil.Color(3), nil},
		{"ready", ready, plotutil.Color(4), []vg.Length{vg.Points(4), vg.Points(2)}},
	}); err != nil {
		return fmt.Errorf("chart %s: %w", path, err)
	}
	// One time axis for both.
	lo, hi := min(rate.X.Min, replicas.X.Min), max(rate.X.Max, replicas.X.Max)
	rate.X.Min, rate.X.Max, replicas.X.Min, replicas.X.Max = lo, hi, lo, hi
	replicas.Y.Max = max(replicas.Y.Max, 1) * 1.25
	rate.Y.Max *= 1.15

	img := vgimg.New(9*vg.Inch, 7*vg.Inch)
	canvas := draw.New(img)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadX: vg.Millimeter, PadY: 4 * vg.Millimeter,
		PadTop: 2 * vg.Millimeter, PadBottom: 2 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 4 * vg.Millimeter}
	cells := plot.Align([][]*plot.Plot{{rate}, {replicas}}, tiles, canvas)
	rate.Draw(cells[0][0])
	replicas.Draw(cells[1][0])
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("chart %s: %w", path, err)
	}
	return f.Close()
}

type line struct {
	name   string
	xys    plotter.XYs
	color  color.Color
	dashes []vg.Length
}

func addLines(p *plot.Plot, lines []line) error {
	for _, l := range lines {
		if len(l.xys) == 0 {
			continue
		}
		ln, err := plotter.NewLine(l.xys)
		if err != nil {
			return fmt.Errorf("line %q: %w", l.name, err)
		}
		ln.Color, ln.Dashes, ln.Width = l.color, l.dashes, vg.Points(1.5)
		p.Add(ln)
		p.Legend.Add(l.name, ln)
	}
	return nil
}

// wholeTicks marks whole numbers only, one per unit up to ten, then every
// other.
type wholeTicks struct{}

func (wholeTicks) Ticks(lo, hi float64) []plot.Tick {
	step := 1
	if hi-lo > 10 {
		step = 2
	}
	var ticks []plot.Tick
	for v := int(math.Ceil(lo)); float64(v) <= hi; v += step {
		ticks = append(ticks, plot.Tick{Value: float64(v), Label: strconv.Itoa(v)})
	}
	return ticks
}
