package scaleloop

import (
	"fmt"
	"time"
)

// Sample is the state of the loop at one moment of a run.
type Sample struct {
	At time.Time
	// Desired is the Deployment's spec.replicas, as the HPA set it.
	Desired int
	// Ready is the Deployment's ready replicas.
	Ready int
	// Metric is the request rate the HPA saw: the external metric KEDA
	// served (per replica, for AverageValue) times the replicas it was
	// averaged over; negative while the HPA has not reported one.
	Metric float64
}

// LoadSecond is one second of the load client's timeline.
type LoadSecond struct {
	At      time.Time
	Offered float64 // the rate the profile asked for
	OK      int     // answered with a status below 500
	Failed  int     // failed, refused, reset or answered 5xx
}

// Run is what one run of the loop recorded.
type Run struct {
	Start   time.Time
	Samples []Sample
	Load    []LoadSecond
}

// Summary is the outcome of a run, in the figures its one-line report
// gives.
type Summary struct {
	Requests, Failed int
	// PeakReplicas and FinalReplicas are the Deployment's desired
	// replicas at their highest and at the end.
	PeakReplicas, FinalReplicas int
	// FirstServed is how long after the first pod added by the HPA
	// started its app that pod answered its first request.
	FirstServed time.Duration
}

// String is the run's summary line.
func (s Summary) String() string {
	return fmt.Sprintf("requests %d, failed %d, peak replicas %d, final replicas %d, first new pod served after %.1f s",
		s.Requests, s.Failed, s.PeakReplicas, s.FinalReplicas, s.FirstServed.Seconds())
}

// Peak returns the highest desired replica count of the samples.
func (r Run) Peak() int {
	peak := 0
	for _, s := range r.Samples {
		peak = max(peak, s.Desired)
	}
	return peak
}

// ScaledIn returns how many replicas the HPA removed in the samples taken
// before until: the sum of every fall of the desired count.
func (r Run) ScaledIn(until time.Time) int {
	in := 0
	for i, s := range r.Samples {
		if !s.At.Before(until) {
			break
		}
		if i > 0 {
			in += max(0, r.Samples[i-1].Desired-s.Desired)
		}
	}
	return in
}
