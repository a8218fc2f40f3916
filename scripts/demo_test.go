package scripts_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outrider-sidecar/outrider/internal/testbin"
)

func TestMain(m *testing.M) { testbin.Main(m) }

// Stand-ins for Consul: a script that records its pid in the file named
// by its first argument and never answers HTTP.
const (
	// consulQuick stops at once on SIGTERM.
	consulQuick = "#!/bin/sh\necho $$ >\"$1\"\nexec sleep 60\n"
	// consulSlow takes 2 s to stop, as a server that saves its state.
	consulSlow = "#!/bin/sh\necho $$ >\"$1\"\ntrap 'sleep 2; exit 0' TERM\nwhile :; do sleep 0.1; done\n"
)

// demoTree lays out what demo.sh runs in a scratch copy of the repository:
// the script, the sample app, and consul, a stand-in for Consul. Each of
// the two records its pid in dir/<name>.pid. The returned function reads
// those pids.
func demoTree(t *testing.T, consul string) (dir string, pids func() map[string]int) {
	t.Helper()
	dir = t.TempDir()
	for _, d := range []string{"scripts", "bin"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	script, err := os.ReadFile("demo.sh")
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write("scripts/demo.sh", string(script))
	write("bin/consul.stub", consul)
	write("bin/consul", "#!/bin/sh\nexec "+filepath.Join(dir, "bin", "consul.stub")+" "+filepath.Join(dir, "consul.pid")+"\n")
	write("bin/echo", "#!/bin/sh\necho $$ >"+filepath.Join(dir, "echo.pid")+"\nexec "+testbin.Echo(t)+" \"$@\"\n")
	pids = func() map[string]int {
		m := map[string]int{}
		for _, name := range []string{"consul", "echo"} {
			b, err := os.ReadFile(filepath.Join(dir, name+".pid"))
			if err != nil {
				continue
			}
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				m[name] = pid
			}
		}
		return m
	}
	// The servers run in sessions of their own: if the script leaves
	// them behind, kill them here rather than leave them to the machine.
	t.Cleanup(func() {
		for _, pid := range pids() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return dir, pids
}

// A Ctrl-C (or a SIGTERM) while the demo is still starting stops what it
// has started so far and ends the script at once; it used to stop nothing,
// go on waiting for Consul, and leave the sample app running. A second
// Ctrl-C while the servers stop does not end the script before they have:
// it used to, and left the rest running.
func TestDemoStoppedWhileStartingLeavesNothingRunning(t *testing.T) {
	for _, tc := range []struct {
		name   string
		consul string
		group  bool // the whole foreground process group, as a terminal's Ctrl-C
		sig    syscall.Signal
		again  bool // the same signal again once the stop has begun
		want   int
	}{
		{name: "Ctrl-C", consul: consulQuick, group: true, sig: syscall.SIGINT, want: 130},
		{name: "SIGTERM", consul: consulQuick, sig: syscall.SIGTERM, want: 143},
		{name: "Ctrl-C twice", consul: consulSlow, group: true, sig: syscall.SIGINT, again: true, want: 130},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, pids := demoTree(t, tc.consul)
			app := testbin.FreeAddr(t)
			env := []string{
				"CONSUL_PORT=" + strings.TrimPrefix(testbin.FreeAddr(t), "127.0.0.1:"),
				"APP_ADDR=" + app,
				"TMPDIR=" + dir, // where mktemp puts the logs
			}
			for _, v := range []string{"PROXY_ADDR", "METRICS_ADDR", "ADMIN_ADDR", "APP2_ADDR", "PROXY2_ADDR", "METRICS2_ADDR", "ADMIN2_ADDR"} {
				env = append(env, v+"="+testbin.FreeAddr(t))
			}
			p := testbin.Start(t, "bash", env, filepath.Join(dir, "scripts", "demo.sh"))
			testbin.WaitHTTP(t, "http://"+app+"/healthz", 200, 10*time.Second)
			if got := pids(); len(got) != 2 {
				t.Fatalf("started %v, want consul and echo", got)
			}
			pid := p.Pid()
			if tc.group {
				pid = -pid
			}
			if err := syscall.Kill(pid, tc.sig); err != nil {
				t.Fatal(err)
			}
			if tc.again {
				// The app stops at once, Consul in 2 s: press again meanwhile.
				for !strings.Contains(p.Output(), "demo: stopping") && !p.Exited() {
					time.Sleep(10 * time.Millisecond)
				}
				time.Sleep(300 * time.Millisecond)
				if err := syscall.Kill(pid, tc.sig); err != nil {
					t.Fatal(err)
				}
			}
			if code := p.Wait(5 * time.Second); code != tc.want {
				t.Errorf("demo.sh exited with %d, want %d", code, tc.want)
			}
			for name, pid := range pids() {
				if testbin.Running(pid) {
					t.Errorf("%s (pid %d) still runs after demo.sh ended", name, pid)
				}
			}
			if out := p.Output(); !strings.Contains(out, "demo: logs were in") {
				t.Errorf("demo.sh did not run its cleanup; output:\n%s", out)
			}
		})
	}
}
