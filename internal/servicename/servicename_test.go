package servicename

import (
	"strings"
	"testing"
)

func TestValid(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{"simple", "web", true},
		{"with separators", "pay-api_v2.eu", true},
		{"starts with a digit", "9lives", true},
		{"empty", "", false},
		{"space", "web api", false},
		{"leading dash", "-web", false},
		{"leading dot", ".web", false},
		{"slash", "web/x", false},
		{"253 characters", strings.Repeat("a", 253), true},
		{"254 characters", strings.Repeat("a", 254), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Valid(tc.in); got != tc.want {
				t.Errorf("Valid(%q) = %t, want %t", tc.in, got, tc.want)
			}
		})
	}
}
