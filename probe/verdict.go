package probe

import "time"

// Verdict is the threshold state machine's judgement of the app: what the
// registrar reports to Consul and what /ready answers.
type Verdict struct {
	// Healthy is true once SuccessThreshold probes in a row have passed,
	// and false again after FailureThreshold in a row have failed. The app
	// starts unhealthy until its first success.
	Healthy bool
	// Output is the last result's reason or output, for the check's note.
	Output string
	// Summary is the last result's outcome and reason without what the app
	// or the command wrote, for /ready on the public listener.
	Summary string
	// Since is when Healthy last changed.
	Since time.Time
}
