package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outrider-sidecar/outrider/internal/testbin"
)

// memoryCgroup creates a cgroup with a memory limit of limit bytes, as a
// container runtime or systemd would for outrider, and removes it at the
// end of the test (after the processes the test starts later are gone).
// It returns the cgroup's directory and the file where the kernel counts
// its OOM kills. It needs root, as every runtime that sets limits does.
func memoryCgroup(t *testing.T, limit int) (dir, events string) {
	t.Helper()
	name := fmt.Sprintf("outrider-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	var limitFile string
	switch {
	case exists("/sys/fs/cgroup/memory/memory.limit_in_bytes"): // version 1
		dir = filepath.Join("/sys/fs/cgroup/memory", name)
		limitFile, events = "memory.limit_in_bytes", "memory.oom_control"
	case exists("/sys/fs/cgroup/cgroup.controllers"): // version 2
		if err := os.WriteFile("/sys/fs/cgroup/cgroup.subtree_control", []byte("+memory"), 0); err != nil {
			t.Fatalf("enable the memory controller for child cgroups: %v (this test needs root, as setting a memory limit does)", err)
		}
		dir = filepath.Join("/sys/fs/cgroup", name)
		limitFile, events = "memory.max", "memory.events"
	default:
		t.Fatal("no cgroup memory controller under /sys/fs/cgroup: this test runs outrider under a memory limit, which needs one")
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("create a cgroup: %v (this test needs root, as setting a memory limit does)", err)
	}
	t.Cleanup(func() {
		// The processes in it are killed by the cleanups registered
		// after this one; their exit can take a moment to reach it.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			err := os.Remove(dir)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("remove cgroup %s: %v", dir, err)
				return
			}
		}
	})
	if err := os.WriteFile(filepath.Join(dir, limitFile), []byte(fmt.Sprint(limit)), 0); err != nil {
		t.Fatalf("set the memory limit: %v", err)
	}
	if limitFile == "memory.max" {
		// No swap either, as in a Kubernetes container.
		_ = os.WriteFile(filepath.Join(dir, "memory.swap.max"), []byte("0"), 0)
	}
	return dir, filepath.Join(dir, events)
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// oomKills reads the kernel's count of OOM kills in a cgroup.
func oomKills(t *testing.T, events string) string {
	t.Helper()
	raw, err := os.ReadFile(events)
	if err != nil {
		t.Fatalf("read %s: %v", events, err)
	}
	for line := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "oom_kill "); ok {
			return v
		}
	}
	t.Fatalf("%s has no oom_kill count:\n%s", events, raw)
	return ""
}

// failedConnection fails a flood test whose connection n failed with err,
// saying whether outrider exited (and was killed for memory) or not.
func failedConnection(t *testing.T, o outrider, events string, n int, err error) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !o.Exited() && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if o.Exited() {
		t.Fatalf("outrider exited after %d connections (OOM kills in its cgroup: %s):\n%s", n, oomKills(t, events), o.Output())
	}
	t.Fatalf("connection %d: %v", n, err)
}

// TestConnectionFloodUnderAMemoryLimit runs bin/outrider in a cgroup with
// a 32 MiB memory limit, as a container with that limit, and opens 4,000
// keep-alive connections that each send a request. Bounded by the open-file
// limit only, outrider would hold them all and be killed for memory at
// about 2,500 (a client connection with its app connection takes about
// 10 KiB, the kernel's socket memory included); the automatic bound
// follows the memory limit, so past it connections are closed and counted,
// and outrider keeps serving.
func TestConnectionFloodUnderAMemoryLimit(t *testing.T) {
	const (
		limit  = 32 << 20
		bound  = (limit - memReserve) / connMemory // 512
		floods = 4000
	)
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur < 2*floods {
		t.Fatalf("the open-file limit (%d, %v) is too low to open %d connections and serve them: raise it (ulimit -n)", rl.Cur, err, floods)
	}
	cg, events := memoryCgroup(t, limit)
	// sh joins the cgroup, then becomes outrider: all of its memory is
	// counted there from the start.
	o, proxyAddr := startOutriderFromShell(t, fmt.Sprintf(`echo $$ > %s/cgroup.procs && exec "$0"`, cg))
	if want := fmt.Sprintf(`"max_connections":%d,"bounded_by":"memory limit (32 MiB)"`, bound); !strings.Contains(o.Output(), want) {
		t.Fatalf("the start-up log does not show the bound set by the memory limit (%s):\n%s", want, o.Output())
	}

	served, closed := 0, 0
	var conns []net.Conn
	for i := range floods {
		nc, err := net.DialTimeout("tcp", proxyAddr, 5*time.Second)
		if err != nil {
			failedConnection(t, o, events, i, err)
		}
		conns = append(conns, nc)
		_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(sendGet(nc)), nil)
		if err != nil {
			closed++
			continue
		}
		resp.Body.Close()
		served++
	}
	for _, nc := range conns {
		nc.Close()
	}
	t.Logf("%d connections served, %d closed by outrider", served, closed)
	if o.Exited() {
		t.Fatalf("outrider exited during the flood (OOM kills in its cgroup: %s):\n%s", oomKills(t, events), o.Output())
	}
	if served > bound || served < bound/2 {
		t.Errorf("%d connections were served, want at most the bound, %d, and most of it", served, bound)
	}
	rejected := waitSeries(t, o.metrics, "outrider_proxy_connections_rejected_total", 10*time.Second)
	if rejected < floods-bound {
		t.Errorf("outrider_proxy_connections_rejected_total = %v, want the %d connections past the bound counted", rejected, floods-bound)
	}
	serveAgainWithin(t, proxyAddr, 5*time.Second)
	if n := oomKills(t, events); n != "0" {
		t.Errorf("%s: oom_kill %s, want 0", events, n)
	}
}

// sendGet writes a keep-alive GET / on nc and returns nc.
func sendGet(nc net.Conn) net.Conn {
	_, _ = nc.Write([]byte("GET / HTTP/1.1\r\nHost: flood\r\n\r\n"))
	return nc
}

// TestMetricsFloodUnderAMemoryLimit runs bin/outrider under a 32 MiB
// memory limit and opens 4,000 connections to its metrics listener, which
// other pods may reach, each with half a request head and no end. Held
// all at once, they would have outrider killed for memory; the server
// holds at most maxServerConns, closing the one that has waited longest
// for each new one, so outrider keeps running and a new client, such as
// the kubelet's readiness probe, is still answered.
func TestMetricsFloodUnderAMemoryLimit(t *testing.T) {
	const (
		limit  = 32 << 20
		floods = 4000
	)
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur < 2*floods {
		t.Fatalf("the open-file limit (%d, %v) is too low to open %d connections: raise it (ulimit -n)", rl.Cur, err, floods)
	}
	cg, events := memoryCgroup(t, limit)
	o, _ := startOutriderFromShell(t, fmt.Sprintf(`echo $$ > %s/cgroup.procs && exec "$0"`, cg))
	addr := strings.TrimPrefix(o.metrics, "http://")

	var conns []net.Conn
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	for i := range floods {
		nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err == nil {
			_, err = nc.Write([]byte("GET /metrics HTTP/1.1\r\nHost: flood\r\n"))
		}
		if err != nil {
			failedConnection(t, o, events, i, err)
		}
		conns = append(conns, nc)
	}
	if code, body := httpGet(t, o.metrics+"/ready"); code != http.StatusOK {
		t.Errorf("GET /ready with %d connections open: %d %q, want 200", floods, code, body)
	}
	if closed := waitSeries(t, o.metrics, `outrider_server_connections_closed_total{server="metrics"}`, 5*time.Second); closed < floods-maxServerConns {
		t.Errorf(`outrider_server_connections_closed_total{server="metrics"} = %v, want at least the %d connections past the bound`, closed, floods-maxServerConns)
	}
	if o.Exited() {
		t.Fatalf("outrider exited during the flood (OOM kills in its cgroup: %s):\n%s", oomKills(t, events), o.Output())
	}
	if n := oomKills(t, events); n != "0" {
		t.Errorf("%s: oom_kill %s, want 0", events, n)
	}
}

// TestMemoryLimitInCheckConfig runs bin/outrider in cgroups with memory
// limits: check-config shows the limit and the bound it sets, warns of a
// bound set past it, and a limit that leaves outrider no room for client
// connections stops it at start-up, naming what to change.
func TestMemoryLimitInCheckConfig(t *testing.T) {
	tests := []struct {
		name     string
		limit    int
		maxConns string // OUTRIDER_PROXY_MAX_CONNS; "": auto
		args     []string
		code     int
		want     []string
	}{
		{"check-config, auto", 32 << 20, "", []string{"check-config"}, exitOK, []string{
			"# memory: limit 32 MiB (/sys/fs/cgroup/",
			"# OUTRIDER_PROXY_MAX_CONNS=auto allows 512 client connections, set by the memory limit (32 MiB)\n"}},
		{"check-config, a bound past the limit", 32 << 20, "10000", []string{"check-config"}, exitOK, []string{
			"# warning: OUTRIDER_PROXY_MAX_CONNS=10000 is more client connections than the memory limit (32 MiB, /sys/fs/cgroup/",
			"holds at 32 KiB each (512)"}},
		{"the agent, a limit that leaves no room", 16 << 20, "", nil, exitFailed, []string{
			"the memory limit (16 MiB, /sys/fs/cgroup/",
			"leaves no room for client connections once 16 MiB are kept for outrider: raise the memory limit or set OUTRIDER_PROXY_MAX_CONNS"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cg, _ := memoryCgroup(t, tc.limit)
			env := proxyOnFreePorts(t)
			if tc.maxConns != "" {
				env = append(env, "OUTRIDER_PROXY_MAX_CONNS="+tc.maxConns)
			}
			script := fmt.Sprintf(`echo $$ > %s/cgroup.procs && exec "$0" "$@"`, cg)
			p := testbin.Start(t, "/bin/sh", env, append([]string{"-c", script, testbin.Outrider(t)}, tc.args...)...)
			code := p.Wait(30 * time.Second)
			out := p.Output()
			if code != tc.code {
				t.Errorf("exit %d, want %d:\n%s", code, tc.code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("the output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}
