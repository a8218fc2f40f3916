package podrunner

import (
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestReadinessThresholds(t *testing.T) {
	fail := errors.New("refused")
	tests := []struct {
		name             string
		success, failure int32
		results          []error
		want             []bool
	}{
		{name: "defaults", results: []error{nil, fail, fail, fail, nil},
			want: []bool{true, true, true, false, true}},
		{name: "two to pass", success: 2, failure: 1, results: []error{nil, nil, fail, nil, nil},
			want: []bool{false, true, false, false, true}},
		{name: "a pass resets failures", failure: 2, results: []error{nil, fail, nil, fail, fail},
			want: []bool{true, true, true, true, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newReadiness(&corev1.Probe{SuccessThreshold: tt.success, FailureThreshold: tt.failure})
			for i, res := range tt.results {
				if got := r.observe(res); got != tt.want[i] {
					t.Errorf("after result %d (%v): ready = %t, want %t", i, res, got, tt.want[i])
				}
			}
		})
	}
}
