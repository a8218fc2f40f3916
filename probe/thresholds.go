package probe

import "time"

// thresholds is the kubelet readiness worker's state machine: it counts
// consecutive results that agree, and changes the verdict only when a run
// of failures reaches the failure threshold or a run of successes reaches
// the success threshold. Anything but Success counts as a failure.
type thresholds struct {
	failureThreshold, successThreshold int
	lastPass                           bool
	run                                int  // consecutive results equal to lastPass; 0 before any
	decided                            bool // a threshold has been reached at least once
	verdict                            Verdict
}

// newThresholds starts the app unhealthy, as the kubelet starts a readiness
// probe at Failure.
func newThresholds(failure, success int, now time.Time) *thresholds {
	return &thresholds{
		failureThreshold: failure,
		successThreshold: success,
		verdict:          Verdict{Healthy: false, Output: "no probe yet", Summary: "no probe yet", Since: now},
	}
}

// observe takes one result seen at now and returns the verdict. changed
// is true on a transition: Healthy flipped, or the app was found unhealthy
// for the first time (it was only presumed so until then).
func (t *thresholds) observe(r Result, now time.Time) (v Verdict, changed bool) {
	pass := r.Outcome == Success
	if t.run > 0 && pass == t.lastPass {
		t.run++
	} else {
		t.lastPass, t.run = pass, 1
	}
	t.verdict.Output = r.Output
	if t.verdict.Output == "" {
		t.verdict.Output = string(r.Outcome)
	}
	t.verdict.Summary = summarize(r)
	if (pass && t.run < t.successThreshold) || (!pass && t.run < t.failureThreshold) {
		return t.verdict, false
	}
	changed = !t.decided || t.verdict.Healthy != pass
	if t.verdict.Healthy != pass {
		t.verdict.Healthy, t.verdict.Since = pass, now
	}
	t.decided = true
	return t.verdict, changed
}
