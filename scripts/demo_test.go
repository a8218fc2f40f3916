package scripts_test

import (
	"net"
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
	// consulSlow takes 2 s to stop, as a server that saves its state. A
	// further SIGTERM meanwhile (the demo passes a second Ctrl-C on) does
	// not start the 2 s again.
	consulSlow = "#!/bin/sh\necho $$ >\"$1\"\ntrap 'trap \"\" TERM; sleep 2; exit 0' TERM\nwhile :; do sleep 0.1; done\n"
)

// demoTree lays out what demo.sh runs in a scratch copy of the repository:
// the script, the sample app, and consul, a stand-in for Consul. Each of
// the two records its pid in dir/<name>.pid, and Consul its command line
// in dir/consul.args. The returned function reads those pids.
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
	write("bin/consul", "#!/bin/sh\necho \"$*\" >"+filepath.Join(dir, "consul.args")+
		"\nexec "+filepath.Join(dir, "bin", "consul.stub")+" "+filepath.Join(dir, "consul.pid")+"\n")
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

// waitStarted waits until the demo has started both servers: the sample
// app answers, and Consul's stand-in has recorded its command line and its
// pid. The app answering says nothing of Consul, started just before it:
// its stand-in may still be on its way.
func waitStarted(t *testing.T, vars map[string]string, pids func() map[string]int) {
	t.Helper()
	testbin.WaitHTTP(t, "http://"+vars["APP_ADDR"]+"/healthz", 200, 10*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for len(pids()) != 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := pids(); len(got) != 2 {
		t.Fatalf("started %v, want consul and echo", got)
	}
}

// demoPorts are the variables that move the demo's listeners: Consul's
// ports, then the replicas' host:port addresses.
var demoPorts = []string{"CONSUL_PORT", "CONSUL_SERVER_PORT", "CONSUL_SERF_LAN_PORT", "CONSUL_SERF_WAN_PORT",
	"APP_ADDR", "PROXY_ADDR", "METRICS_ADDR", "ADMIN_ADDR", "APP2_ADDR", "PROXY2_ADDR", "METRICS2_ADDR", "ADMIN2_ADDR"}

// demoEnv is demo.sh's environment with every listener on a free loopback
// port, and its logs in dir; set overrides some of them.
func demoEnv(t *testing.T, dir string, set map[string]string) (env []string, vars map[string]string) {
	t.Helper()
	vars = map[string]string{}
	for _, v := range demoPorts {
		addr := testbin.FreeAddr(t)
		if strings.HasPrefix(v, "CONSUL_") {
			addr = strings.TrimPrefix(addr, "127.0.0.1:")
		}
		vars[v] = addr
	}
	for k, v := range set {
		vars[k] = v
	}
	env = []string{"TMPDIR=" + dir} // where mktemp puts the logs
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	return env, vars
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
			env, vars := demoEnv(t, dir, nil)
			p := testbin.Start(t, "bash", env, filepath.Join(dir, "scripts", "demo.sh"))
			waitStarted(t, vars, pids)
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

// Consul's dev server listens on three ports besides its HTTP one, which a
// Consul agent already on the host (a VM's client agent) holds whatever
// its HTTP port. The demo checks them before it starts anything, naming
// the variable that moves each, and gives them to Consul; it used to
// suggest moving CONSUL_PORT alone, after which Consul failed to start
// and the demo said so only 20 s later.
func TestDemoConsulPorts(t *testing.T) {
	t.Run("taken", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		dir, pids := demoTree(t, consulQuick)
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		env, _ := demoEnv(t, dir, map[string]string{"CONSUL_SERF_LAN_PORT": port})
		p := testbin.Start(t, "bash", env, filepath.Join(dir, "scripts", "demo.sh"))
		if code := p.Wait(5 * time.Second); code != 1 {
			t.Errorf("demo.sh exited with %d, want 1", code)
		}
		want := "demo: 127.0.0.1:" + port + " is already in use; stop what listens there, or set CONSUL_SERF_LAN_PORT to a free one"
		if out := p.Output(); !strings.Contains(out, want) {
			t.Errorf("output:\n%s\nwant the line %q", out, want)
		}
		if got := pids(); len(got) > 0 {
			t.Errorf("started %v despite a taken port", got)
		}
	})
	t.Run("given to consul", func(t *testing.T) {
		dir, pids := demoTree(t, consulQuick)
		env, vars := demoEnv(t, dir, nil)
		p := testbin.Start(t, "bash", env, filepath.Join(dir, "scripts", "demo.sh"))
		// Stopped before its stand-in has run, Consul would have no
		// command line to look at.
		waitStarted(t, vars, pids)
		p.Signal(syscall.SIGTERM)
		p.Wait(5 * time.Second)
		args, err := os.ReadFile(filepath.Join(dir, "consul.args"))
		if err != nil {
			t.Fatal(err)
		}
		for _, flag := range []string{
			"-http-port " + vars["CONSUL_PORT"],
			"-server-port " + vars["CONSUL_SERVER_PORT"],
			"-serf-lan-port " + vars["CONSUL_SERF_LAN_PORT"],
			"-serf-wan-port " + vars["CONSUL_SERF_WAN_PORT"],
		} {
			if !strings.Contains(string(args), flag) {
				t.Errorf("consul %s: want %s", strings.TrimSpace(string(args)), flag)
			}
		}
	})
}
