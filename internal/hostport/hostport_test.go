package hostport

import "testing"

func TestBareIPv6(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"::1", true},
		{"::", true},
		{"::1:8080", true},
		{":::15090", true},
		{"fd00::7:8080", true},
		{"fe80::1%eth0:8080", true},
		{"[::1]:8080", false},
		{"[::1]", false},
		{"127.0.0.1:8080", false},
		{"app:8080", false},
		{":8080", false},
		{"::1:http", false},
		{"u:pass:word", false},
		{"", false},
	}
	for _, tc := range tests {
		if got := BareIPv6(tc.in); got != tc.want {
			t.Errorf("BareIPv6(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
