package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outrider-sidecar/outrider/internal/testbin"
	"github.com/outrider-sidecar/outrider/internal/testlog"
)

// unprivilegedOutrider returns a copy of bin/outrider that nobody can run,
// and the credentials to run it as nobody; as another user than root, the
// test's own binary and user.
func unprivilegedOutrider(t *testing.T) (string, *syscall.Credential) {
	t.Helper()
	if os.Getuid() != 0 {
		return testbin.Outrider(t), nil
	}
	dir, err := os.MkdirTemp("", "outrider-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "outrider")
	raw, err := os.ReadFile(testbin.Outrider(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, raw, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, &syscall.Credential{Uid: nobody, Gid: nobody}
}

// TestSIGHUPNeverKills sends SIGHUP without a pause from the moment
// outrider's main begins until it is up, and again from its SIGTERM until
// it exits, as systemd's ExecReload or a config-map watcher may at any
// time: outrider must neither die of it at start-up nor lose its drain and
// exit status at the end. The one that came early is a reload once
// outrider is ready.
func TestSIGHUPNeverKills(t *testing.T) {
	t.Parallel()
	bin, cred := unprivilegedOutrider(t)
	cmd := exec.Command(bin)
	cmd.Env = []string{"OUTRIDER_REGISTRY=none", "OUTRIDER_PROXY_LISTEN=off", "OUTRIDER_DRAIN_DELAY=0s",
		"OUTRIDER_LOG_FORMAT=text", "OUTRIDER_METRICS_LISTEN=" + testbin.FreeAddr(t),
		"OUTRIDER_ADMIN_LISTEN=" + testbin.FreeAddr(t)}
	out := &testlog.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		if t.Failed() {
			t.Logf("output of outrider:\n%s", out.String())
		}
	})
	running := func() bool {
		select {
		case <-exited:
			return false
		default:
			return true
		}
	}

	// Go's runtime and package initialisation come before main, and a
	// SIGHUP then is fatal to any Go program. main begins by making
	// outrider not dumpable, which turns its /proc entries root's.
	status := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/status"
	// Polled without a pause: start-up takes a few milliseconds.
	for deadline := time.Now().Add(10 * time.Second); ; {
		fi, err := os.Stat(status)
		if err != nil || fi.Sys().(*syscall.Stat_t).Uid == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("outrider's main did not begin in 10s")
		}
	}
	hangUp := func(until func() bool) int {
		sent := 0
		for running() && !until() {
			_ = cmd.Process.Signal(syscall.SIGHUP)
			sent++
			time.Sleep(20 * time.Microsecond)
		}
		return sent
	}
	sent := hangUp(func() bool { return strings.Contains(out.String(), `msg="outrider started"`) })
	if !running() {
		t.Fatalf("outrider died during start-up, after %d SIGHUPs: %s", sent, cmd.ProcessState)
	}
	if sent == 0 {
		// A busy machine ran the whole start-up between two looks.
		t.Log("outrider was up before the first SIGHUP")
	} else {
		waitFor(t, 5*time.Second, "the reload asked for during start-up", func() bool {
			return strings.Contains(out.String(), "trigger=sighup")
		})
	}

	_ = cmd.Process.Signal(syscall.SIGTERM)
	sent = hangUp(func() bool { return false })
	<-exited
	if code := cmd.ProcessState.ExitCode(); code != exitOK || !strings.Contains(out.String(), `msg="drain done"`) {
		t.Errorf("outrider ended %s after SIGTERM and %d SIGHUPs; want exit 0 after its drain", cmd.ProcessState, sent)
	}
}
