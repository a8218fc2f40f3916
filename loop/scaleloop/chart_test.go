package scaleloop

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestWriteChart(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var r Run
	r.Start = start
	for i := range 120 {
		at := start.Add(time.Duration(i) * time.Second)
		rate := 40.0
		if i >= 20 && i < 80 {
			rate = 400
		}
		r.Load = append(r.Load, LoadSecond{At: at, Offered: rate, OK: int(rate)})
		r.Samples = append(r.Samples, Sample{At: at, Desired: 1 + i/30, Ready: 1 + i/31, Metric: rate})
	}
	path := filepath.Join(t.TempDir(), "loop.png")
	if err := WriteChart(path, r); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("chart is not a PNG: %v", err)
	}
	if w, h := img.Bounds().Dx(), img.Bounds().Dy(); w < 600 || h < 400 {
		t.Errorf("chart is %dx%d, want a readable size", w, h)
	}
	if err := WriteChart(path, Run{Start: start}); err == nil {
		t.Error("an empty run was drawn, want an error")
	}
}

func TestSummaryLine(t *testing.T) {
	s := Summary{Requests: 33200, Failed: 0, PeakReplicas: 4, FinalReplicas: 1, FirstServed: 1930 * time.Millisecond}
	want := "requests 33200, failed 0, peak replicas 4, final replicas 1, first new pod served after 1.9 s"
	if got := s.String(); got != want {
		t.Errorf("summary line\n got %q\nwant %q", got, want)
	}
}
