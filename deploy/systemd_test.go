package deploy_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outrider-sidecar/outrider/config"
)

// unit is a systemd unit file: section → key → values in order (a key may
// repeat).
type unit map[string]map[string][]string

func (u unit) get(section, key string) string {
	v := u[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// serviceKeys are the directives the units may use, by section: a key not
// listed is a typo as far as this test knows (systemd would ignore it with
// only a warning). Add a directive here when a unit needs it.
var serviceKeys = map[string][]string{
	"Unit": {"Description", "Documentation", "After", "Before", "Wants", "Requires", "BindsTo", "PartOf"},
	"Service": {"Type", "EnvironmentFile", "Environment", "ExecStart", "ExecStop", "ExecReload", "KillMode", "KillSignal",
		"Restart", "RestartSec", "RestartPreventExitStatus", "TimeoutStopSec", "SuccessExitStatus", "User", "Group", "NoNewPrivileges", "CapabilityBoundingSet",
		"AmbientCapabilities", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables",
		"ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock", "ProtectHostname",
		"RestrictNamespaces", "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality", "MemoryDenyWriteExecute",
		"SystemCallArchitectures", "SystemCallFilter", "SystemCallErrorNumber", "RestrictAddressFamilies", "UMask",
		"ReadWritePaths"},
	"Install": {"WantedBy"},
}

// parseUnit reads a unit file as systemd does: sections, Key=Value lines,
// '#' and ';' comments, a trailing backslash continues the line.
func parseUnit(name string, raw []byte) (unit, error) {
	u := unit{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(raw))
	n := 0
	var cont strings.Builder
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if cont.Len() > 0 {
			line = cont.String() + " " + line
			cont.Reset()
		}
		if strings.HasSuffix(line, `\`) {
			cont.WriteString(strings.TrimSuffix(line, `\`))
			continue
		}
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			if !strings.HasSuffix(line, "]") {
				return nil, fmt.Errorf("%s:%d: bad section header %q", name, n, line)
			}
			section = line[1 : len(line)-1]
			if _, ok := serviceKeys[section]; !ok {
				return nil, fmt.Errorf("%s:%d: unknown section [%s]", name, n, section)
			}
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				return nil, fmt.Errorf("%s:%d: want Key=Value, got %q", name, n, line)
			}
			if section == "" {
				return nil, fmt.Errorf("%s:%d: %s before any section", name, n, k)
			}
			k = strings.TrimSpace(k)
			if !slices.Contains(serviceKeys[section], k) {
				return nil, fmt.Errorf("%s:%d: unknown key %s in [%s]", name, n, k, section)
			}
			u[section][k] = append(u[section][k], strings.TrimSpace(v))
		}
	}
	if cont.Len() > 0 {
		return nil, fmt.Errorf("%s: ends in a continuation line", name)
	}
	return u, sc.Err()
}

func TestParseUnitRejectsTypos(t *testing.T) {
	for _, tc := range []struct {
		name, unit, want string
	}{
		{name: "unknown key", unit: "[Service]\nRestart=on-failure\nBogusKey=1\n", want: "bad.service:3: unknown key BogusKey in [Service]"},
		{name: "unknown section", unit: "[Servic]\n", want: "bad.service:1: unknown section [Servic]"},
		{name: "no equals", unit: "[Unit]\nDescription\n", want: `bad.service:2: want Key=Value, got "Description"`},
		{name: "key before section", unit: "Description=x\n", want: "bad.service:1: Description before any section"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseUnit("bad.service", []byte(tc.unit))
			if err == nil || err.Error() != tc.want {
				t.Errorf("got error %v, want %q", err, tc.want)
			}
		})
	}
}

// envFile reads a systemd EnvironmentFile (KEY=value lines, # comments).
func envFile(t *testing.T, path string) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for i, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s:%d: want KEY=value, got %q", path, i+1, line)
		}
		env[k] = v
	}
	return env
}

var units = []struct {
	file string
	wrap bool
}{
	{file: "outrider@.service", wrap: false},
	{file: "outrider-wrap@.service", wrap: true},
}

// The parse check always runs, whether or not systemd is installed.
func TestSystemdUnitsParse(t *testing.T) {
	env := envFile(t, filepath.Join("systemd", "outrider.env.example"))
	known := map[string]bool{}
	for _, s := range (config.Config{}).Effective() {
		known[s.Var] = true
	}
	for k := range env {
		if strings.HasPrefix(k, "OUTRIDER_") && !known[k] {
			t.Errorf("outrider.env.example sets %s, which the config package does not read", k)
		}
	}
	cfg, err := config.Load(func(k string) string { return env[k] }, "vm1", func() (string, error) { return "192.0.2.10", nil })
	if err != nil {
		t.Fatalf("outrider would not start with outrider.env.example: %v", err)
	}
	if w := cfg.Warnings(); len(w) > 0 {
		t.Errorf("outrider warns about outrider.env.example: %v", w)
	}
	for _, tc := range units {
		t.Run(tc.file, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("systemd", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			u, err := parseUnit(tc.file, raw)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{
				"Service/Restart":         "on-failure",
				"Service/NoNewPrivileges": "yes",
				"Service/ProtectSystem":   "strict",
				"Service/ProtectHome":     "yes",
				"Service/PrivateTmp":      "yes",
				"Service/EnvironmentFile": "/etc/outrider/%i.env",
				"Install/WantedBy":        "multi-user.target",
			}
			if tc.wrap {
				want["Service/ExecStart"] = "/usr/local/bin/outrider run -- $APP_COMMAND"
				want["Service/KillMode"] = "mixed"
				// The app's own end on the stop's SIGTERM is a clean stop.
				want["Service/SuccessExitStatus"] = "143"
			} else {
				want["Service/ExecStart"] = "/usr/local/bin/outrider"
				want["Service/ExecStop"] = "/usr/local/bin/outrider prestop"
				want["Unit/PartOf"] = "%i.service"
				// PartOf stops and restarts outrider with the app, and
				// does not start it: starting the app does, through this.
				want["Install/WantedBy"] = "multi-user.target %i.service"
				want["Service/ExecReload"] = "/bin/kill -HUP $MAINPID"
				// A refused configuration is not restarted in a loop; in
				// wrap mode 2 may be the app's own status, so it is not
				// there.
				want["Service/RestartPreventExitStatus"] = "2"
			}
			for key, v := range want {
				section, k, _ := strings.Cut(key, "/")
				if got := u.get(section, k); got != v {
					t.Errorf("%s: [%s] %s = %q, want %q", tc.file, section, k, got, v)
				}
			}
			if tc.wrap && env["APP_COMMAND"] == "" {
				t.Errorf("wrap mode needs APP_COMMAND in outrider.env.example")
			}
			if after := strings.Fields(u.get("Unit", "After")); !slices.Contains(after, "consul.service") {
				t.Errorf("%s: After=%q, want consul.service so that the local Consul agent stops after the drain's deregistration", tc.file, u.get("Unit", "After"))
			}
			if !tc.wrap && !strings.Contains(u.get("Unit", "After"), "%i.service") {
				t.Errorf("%s: After=%q, want %%i.service so outrider stops before the app", tc.file, u.get("Unit", "After"))
			}
			if caps := u["Service"]["CapabilityBoundingSet"]; len(caps) != 1 || caps[0] != "" {
				t.Errorf("%s: CapabilityBoundingSet %q, want empty (no capabilities)", tc.file, caps)
			}
			stop, err := time.ParseDuration(u.get("Service", "TimeoutStopSec"))
			if err != nil {
				t.Fatalf("%s: TimeoutStopSec: %v", tc.file, err)
			}
			// outrider counts the app's stop in both forms: it cannot tell
			// that the app has a unit of its own.
			need := config.DeregisterTimeout + cfg.Drain.Delay + cfg.Drain.Timeout + cfg.Drain.AppStopTimeout
			if stop < need {
				t.Errorf("%s: TimeoutStopSec %s < %s, the deregistration, drain and app stop of outrider.env.example", tc.file, stop, need)
			}
			if stop != cfg.Drain.GracePeriod {
				t.Errorf("%s: TimeoutStopSec %s, want OUTRIDER_GRACE_PERIOD %s so that outrider checks the same budget", tc.file, stop, cfg.Drain.GracePeriod)
			}
			// The comment that says how to size TimeoutStopSec names
			// everything outrider's grace-period check adds up, so that a
			// unit sized by it is not warned of.
			note := commentAbove(raw, "TimeoutStopSec=")
			for _, v := range []string{"5s", "OUTRIDER_DRAIN_DELAY", "OUTRIDER_DRAIN_TIMEOUT", "OUTRIDER_APP_STOP_TIMEOUT"} {
				if !strings.Contains(note, v) {
					t.Errorf("%s: the comment above TimeoutStopSec does not count %q, which outrider adds up against OUTRIDER_GRACE_PERIOD:\n%s", tc.file, v, note)
				}
			}
		})
	}
}

// TestSystemdInstallSteps: the install steps in each unit's header and in
// docs/deploy.md, followed from a fresh clone, build every binary before
// installing it, and for wrap mode install the app that APP_COMMAND of
// outrider.env.example runs and create the user the unit runs as.
func TestSystemdInstallSteps(t *testing.T) {
	makefile, err := os.ReadFile(filepath.Join("..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	// What `make T` leaves in bin/: bin/T, or for build its prerequisites'.
	builds := func(target string) []string {
		for _, line := range strings.Split(string(makefile), "\n") {
			if deps, ok := strings.CutPrefix(line, target+":"); ok && target == "build" {
				return strings.Fields(deps)
			}
		}
		return []string{target}
	}
	doc, err := os.ReadFile(filepath.Join("..", "docs", "deploy.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, vm, _ := strings.Cut(string(doc), "## A VM (systemd)")
	_, block, _ := strings.Cut(vm, "```sh\n")
	block, _, _ = strings.Cut(block, "```")
	app := strings.Fields(envFile(t, filepath.Join("systemd", "outrider.env.example"))["APP_COMMAND"])[0]
	type howTo struct {
		lines []string
		wrap  bool // the steps set up wrap mode
	}
	steps := map[string]howTo{"docs/deploy.md": {strings.Split(block, "\n"), true}}
	for _, u := range units {
		raw, err := os.ReadFile(filepath.Join("systemd", u.file))
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		for _, line := range strings.Split(string(raw), "\n") {
			if cmd, ok := strings.CutPrefix(line, "#   "); ok {
				lines = append(lines, cmd)
			}
		}
		steps[u.file] = howTo{lines, u.wrap}
	}
	for name, st := range steps {
		built := map[string]bool{}
		var installed []string
		useradd := false
		for _, line := range st.lines {
			f := strings.Fields(strings.SplitN(line, "#", 2)[0])
			switch {
			case len(f) >= 2 && f[0] == "make":
				for _, target := range f[1:] {
					for _, b := range builds(target) {
						built["bin/"+b] = true
					}
				}
			case len(f) >= 3 && f[0] == "install":
				src, dst := f[len(f)-2], f[len(f)-1]
				if strings.HasPrefix(src, "bin/") && !built[src] {
					t.Errorf("%s: %q installs %s, which no make before it builds", name, line, src)
				}
				installed = append(installed, dst)
			case slices.Contains(f, "useradd"):
				useradd = true
			}
		}
		if !st.wrap {
			continue
		}
		if !slices.Contains(installed, app) {
			t.Errorf("%s: the steps do not install %s, which APP_COMMAND of outrider.env.example runs", name, app)
		}
		if !useradd {
			t.Errorf("%s: the steps create no user for the sample app, which the unit runs as (User=%%i)", name)
		}
	}
}

// commentAbove returns the comment lines right above the line that starts
// with prefix, joined with spaces and without their '#'.
func commentAbove(raw []byte, prefix string) string {
	var block []string
	for _, line := range strings.Split(string(raw), "\n") {
		switch {
		case strings.HasPrefix(line, "#"):
			block = append(block, strings.TrimSpace(strings.TrimPrefix(line, "#")))
		case strings.HasPrefix(line, prefix):
			return strings.Join(block, " ")
		default:
			block = nil
		}
	}
	return ""
}

// systemd-analyze verify, when this machine has it (Debian's systemd
// package). The units run in a scratch root that holds systemd's own units,
// stand-ins for /usr/local/bin/outrider and /bin/kill, and the units under
// test; verify must say nothing at all.
func TestSystemdAnalyzeVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Logf("systemd-analyze is not installed: the unit files were checked by TestSystemdUnitsParse only")
		return
	}
	sysUnits := "/usr/lib/systemd/system"
	entries, err := os.ReadDir(sysUnits)
	if err != nil {
		t.Logf("systemd-analyze is installed but %s is unreadable (%v): the unit files were checked by TestSystemdUnitsParse only", sysUnits, err)
		return
	}
	root := t.TempDir()
	mkdir := func(p string) string {
		d := filepath.Join(root, p)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	lib, etc, bin := mkdir("usr/lib/systemd/system"), mkdir("etc/systemd/system"), mkdir("usr/local/bin")
	for _, e := range entries {
		src := filepath.Join(sysUnits, e.Name())
		// Regular units only; the .wants directories hold absolute symlinks
		// that would point outside the scratch root.
		if st, err := os.Stat(src); err != nil || !st.Mode().IsRegular() {
			continue
		}
		copyFile(t, src, filepath.Join(lib, e.Name()), 0o644)
	}
	// Stand-ins for the commands the units run.
	for _, cmd := range []string{filepath.Join(bin, "outrider"), filepath.Join(mkdir("bin"), "kill")} {
		if err := os.WriteFile(cmd, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var instances []string
	for _, u := range units {
		copyFile(t, filepath.Join("systemd", u.file), filepath.Join(etc, u.file), 0o644)
		instances = append(instances, strings.Replace(u.file, "@.", "@echo.", 1))
	}
	cmd := exec.Command(analyze, append([]string{"verify", "--root=" + root}, instances...)...)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify %v: %v\n%s", instances, err, out)
	}
	v, _ := exec.Command(analyze, "--version").Output()
	first, _, _ := strings.Cut(string(v), "\n")
	t.Logf("systemd-analyze verify passed on %v (%s)", instances, first)
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
}
