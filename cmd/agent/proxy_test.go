package main

import (
	"strings"
	"testing"

	"github.com/outrider-sidecar/outrider/internal/cgroup"
)

func TestMaxConnsFromTheOpenFileLimit(t *testing.T) {
	tests := []struct {
		name    string
		soft    uint64
		maxIdle int
		want    int // 0: an error
	}{
		{name: "a common container limit", soft: 1 << 20, maxIdle: 128, want: 471763},
		{name: "a small limit", soft: 20000, maxIdle: 128, want: 8904},
		{name: "a large idle pool", soft: 20000, maxIdle: 4096, want: 6920},
		{name: "the idle pool takes all but two", soft: 224, maxIdle: 136, want: 1},
		{name: "the idle pool takes all", soft: 224, maxIdle: 138},
		{name: "below the reserve", soft: 32, maxIdle: 128},
		{name: "unlimited", soft: ^uint64(0), maxIdle: 128, want: 1 << 30},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := (fdLimit{soft: tc.soft, hard: tc.soft}).maxConns(tc.maxIdle)
			switch {
			case tc.want == 0 && err == nil:
				t.Errorf("maxConns at a soft limit of %d with %d idle app connections: got %d, want an error", tc.soft, tc.maxIdle, got)
			case tc.want == 0 && !strings.Contains(err.Error(), "OUTRIDER_PROXY_MAX_IDLE_APP_CONNS"):
				t.Errorf("error %q does not name OUTRIDER_PROXY_MAX_IDLE_APP_CONNS", err)
			case tc.want != 0 && (err != nil || got != tc.want):
				t.Errorf("maxConns at a soft limit of %d with %d idle app connections: got %d, %v; want %d", tc.soft, tc.maxIdle, got, err, tc.want)
			}
		})
	}
}

func TestRaiseFDLimit(t *testing.T) {
	l, err := raiseFDLimit()
	if err != nil {
		t.Fatalf("raiseFDLimit: %v", err)
	}
	if l.soft != l.hard || l.soft == 0 {
		t.Errorf("after raising: soft %d, hard %d, want soft = hard", l.soft, l.hard)
	}
}

func TestConnectionBound(t *testing.T) {
	const mb = 1 << 20
	tests := []struct {
		name     string
		soft     uint64
		memory   uint64 // 0: no limit
		maxConns int    // OUTRIDER_PROXY_MAX_CONNS; 0: auto
		want     int    // 0: an error
		wantBy   string
		warning  string // part of the warning wanted; "": none
	}{
		{name: "no memory limit: the open-file limit's", soft: 1 << 20, want: 471763, wantBy: "open-file limit (1048576)"},
		{name: "the manifests' sidecar, 128 MiB", soft: 1 << 20, memory: 128 * mb, want: 3584, wantBy: "memory limit (128 MiB)"},
		{name: "a memory limit above what descriptors allow", soft: 20000, memory: 8 << 30, want: 8904, wantBy: "open-file limit (20000)"},
		{name: "a memory limit below the idle pool", soft: 1 << 20, memory: 18 * mb, want: 64, wantBy: "memory limit (18 MiB)",
			warning: "OUTRIDER_PROXY_MAX_IDLE_APP_CONNS=128 is more than the 64 client connections the memory limit (18 MiB) allows"},
		{name: "a memory limit that leaves nothing", soft: 1 << 20, memory: 16 * mb},
		{name: "set: kept, and warned of past the memory limit", soft: 1 << 20, memory: 128 * mb, maxConns: 10000, want: 10000,
			wantBy: "OUTRIDER_PROXY_MAX_CONNS", warning: "OUTRIDER_PROXY_MAX_CONNS=10000 is more client connections than the memory limit (128 MiB, /sys/fs/cgroup/memory.max) holds at 32 KiB each (3584)"},
		{name: "set within the memory limit", soft: 1 << 20, memory: 128 * mb, maxConns: 2000, want: 2000, wantBy: "OUTRIDER_PROXY_MAX_CONNS"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := connLimits{fds: fdLimit{soft: tc.soft, hard: tc.soft}}
			if tc.memory != 0 {
				l.mem = cgroup.Limit{Bytes: tc.memory, File: "/sys/fs/cgroup/memory.max"}
			}
			got, by, warning, err := l.bound(tc.maxConns, 128)
			if tc.want == 0 {
				if err == nil || !strings.Contains(err.Error(), "raise the memory limit or set OUTRIDER_PROXY_MAX_CONNS") {
					t.Errorf("bound: got %d, %v; want an error naming the memory limit and OUTRIDER_PROXY_MAX_CONNS", got, err)
				}
				return
			}
			if err != nil || got != tc.want || by != tc.wantBy {
				t.Errorf("bound: got %d set by %q, %v; want %d set by %q", got, by, err, tc.want, tc.wantBy)
			}
			if (tc.warning == "") != (warning == "") || !strings.Contains(warning, tc.warning) {
				t.Errorf("warning %q, want one containing %q", warning, tc.warning)
			}
		})
	}
}
