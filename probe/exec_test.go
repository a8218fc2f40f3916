package probe

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// notExecutable returns the path of a file without execute permission.
func notExecutable(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "probe.sh")
	if err := os.WriteFile(path, []byte("#!/bin/sh\nexit 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestExecProber(t *testing.T) {
	tests := []struct {
		name       string
		spec       Spec
		timeout    time.Duration
		want       Outcome
		wantOutput []string
	}{
		{name: "exit 0", spec: mustSpec(t, "exec:/bin/true"), want: Success, wantOutput: []string{"exit status 0"}},
		{name: "exit 1", spec: mustSpec(t, "exec:/bin/false"), want: Failure, wantOutput: []string{"exec /bin/false: exit status 1"}},
		{name: "arguments, no shell", spec: mustSpec(t, "exec:/bin/echo $HOME *"), want: Success,
			wantOutput: []string{"exit status 0: $HOME *"}},
		{name: "output of a failure", spec: Spec{Kind: KindExec, Command: []string{"/bin/sh", "-c", "echo out; echo err >&2; exit 3"}},
			want: Failure, wantOutput: []string{"exit status 3: out\nerr"}},
		{name: "binary output", spec: Spec{Kind: KindExec, Command: []string{"/bin/sh", "-c", `printf 'a\0b\033[31mc\r\n\td\377\n'; exit 2`}},
			want: Failure, wantOutput: []string{"exit status 2: a?b?[31mc\n\td?"}},
		{name: "killed by a signal", spec: Spec{Kind: KindExec, Command: []string{"/bin/sh", "-c", "kill -TERM $$"}},
			want: Failure, wantOutput: []string{"signal: terminated"}},
		{name: "sleep beyond the timeout", spec: mustSpec(t, "exec:sleep 60"), timeout: 150 * time.Millisecond, want: Timeout,
			wantOutput: []string{"exec sleep: killed after "}},
		{name: "no such command", spec: mustSpec(t, "exec:/nonexistent/probe"), want: Error,
			wantOutput: []string{"exec /nonexistent/probe: no such file or directory"}},
		{name: "not in PATH", spec: mustSpec(t, "exec:no-such-probe-command"), want: Error,
			wantOutput: []string{"executable file not found"}},
		{name: "not executable", spec: mustSpec(t, "exec:"+notExecutable(t)), want: Error, wantOutput: []string{"permission denied"}},
		{name: "no command", spec: Spec{Kind: KindExec}, want: Error, wantOutput: []string{"without a command"}},
		{name: "not an exec spec", spec: mustSpec(t, "tcp://127.0.0.1:1"), want: Error},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := probeWithin(probeExec, tc.spec, tc.timeout)
			checkResult(t, got, tc.want, tc.wantOutput...)
			if tc.want == Timeout && got.Duration > 5*time.Second {
				t.Errorf("a %s timeout took %s", tc.timeout, got.Duration)
			}
		})
	}
}

func TestExecProberKeepsTheFirst4KiB(t *testing.T) {
	spec := Spec{Kind: KindExec, Command: []string{"/bin/sh", "-c", "yes outrider | head -c 100000; exit 1"}}
	got := probeWithin(probeExec, spec, 10*time.Second)
	checkResult(t, got, Failure, "exit status 1: outrider\noutrider", "…")
	if n := len(got.Output); n > 4<<10+100 {
		t.Errorf("output is %d bytes, want about 4 KiB", n)
	}
}

// markedGone waits until no process with hangMarker in its command line
// is running (gone or a zombie).
func markedGone(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, marked := processCounts(t)
		if marked == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d processes of the probe still run", marked)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestExecProberKillsItsProcessGroup(t *testing.T) {
	// The sleeps are told by hangMarker, not by a pid the shell prints:
	// on a loaded machine the shell may not have printed it, or even
	// started the sleep, when the timeout kills it.
	sleep := "sleep " + hangMarker
	tests := []struct {
		name    string
		script  string
		timeout time.Duration
		want    Outcome
	}{
		// A background sleep, then the shell hangs.
		{name: "at the timeout", script: sleep + " & wait", timeout: 200 * time.Millisecond, want: Timeout},
		// The shell exits at once and leaves the sleep behind.
		{name: "after the command exits", script: sleep + " >/dev/null 2>&1 & echo $!", timeout: 10 * time.Second, want: Success},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := probeWithin(probeExec, Spec{Kind: KindExec, Command: []string{"/bin/sh", "-c", tc.script}}, tc.timeout)
			checkResult(t, got, tc.want)
			markedGone(t)
		})
	}
}

// TestExecProberLooksInItsOwnPATH checks that a command named without a
// slash is found in the PATH of the command's environment
// (OUTRIDER_PROBE_ENV=PATH=…), as a shell finds it, not in outrider's.
func TestExecProberLooksInItsOwnPATH(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "app-check"), []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	relative, err := filepath.Rel(wd, dir) // dir, from the working directory
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		command    string
		path       string // the command's PATH; "-" for none
		want       Outcome
		wantOutput []string
	}{
		{name: "found in the command's PATH", command: "app-check", path: "/nonexistent:" + dir, want: Success},
		{name: "not in the command's PATH, though in outrider's", command: "true", path: dir, want: Error,
			wantOutput: []string{"exec true: executable file not found in $PATH"}},
		{name: "a directory is not a command", command: "sub", path: dir, want: Error,
			wantOutput: []string{"executable file not found"}},
		{name: "a relative directory is not searched", command: "app-check", path: relative, want: Error,
			wantOutput: []string{"executable file not found"}},
		{name: "no PATH: outrider's", command: "true", path: "-", want: Success},
		{name: "a path is not looked up", command: filepath.Join(dir, "app-check"), path: "/nonexistent", want: Success},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := []string{"HOME=" + dir}
			if tc.path != "-" {
				env = append(env, "PATH="+tc.path)
			}
			spec := Spec{Kind: KindExec, Command: []string{tc.command}, Env: env}
			checkResult(t, probeWithin(probeExec, spec, 0), tc.want, tc.wantOutput...)
		})
	}
}

// ExecGroups holds a probe's group, named by its command's pid, while the
// command runs, and not after.
func TestExecGroups(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	spec := Spec{Kind: KindExec, Command: []string{"/bin/sh", "-c", `echo $$ > "$0"; sleep 60`, pidFile}}
	done := make(chan Result, 1)
	go func() { done <- probeWithin(probeExec, spec, 3*time.Second) }()

	var pid int
	deadline := time.Now().Add(10 * time.Second)
	for pid == 0 && time.Now().Before(deadline) {
		b, _ := os.ReadFile(pidFile)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		time.Sleep(5 * time.Millisecond)
	}
	if pid == 0 {
		t.Fatal("the probe's command did not write its pid")
	}
	if groups := ExecGroups(); !groups[pid] {
		t.Errorf("while pid %d runs, want its group among %v", pid, groups)
	}
	checkResult(t, <-done, Timeout)
	if groups := ExecGroups(); groups[pid] {
		t.Errorf("after the probe, want group %d gone from %v", pid, groups)
	}
}
