package testbin

import (
	"bytes"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRunning(t *testing.T) {
	if !Running(os.Getpid()) {
		t.Errorf("Running(this process) = false, want true")
	}
	cmd := exec.Command("/bin/sh", "-c", "exit 0")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	// Not waited for yet, so it stays a zombie once it exits.
	for deadline := time.Now().Add(10 * time.Second); Running(pid); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Running(%d) still true 10 s after it exited, as a zombie", pid)
		}
	}
	_ = cmd.Wait()
	if Running(pid) {
		t.Errorf("Running(%d) = true after it was reaped, want false", pid)
	}
}

// mainThreadExitsEnv makes the test binary a process whose main thread
// exits at once while its other threads (the runtime's) go on.
const mainThreadExitsEnv = "OUTRIDER_TESTBIN_MAIN_THREAD_EXITS"

func init() {
	// In init the main goroutine is on the main thread; SYS_EXIT ends
	// that thread alone, as pthread_exit from main does.
	if os.Getenv(mainThreadExitsEnv) != "" {
		_, _, _ = syscall.RawSyscall(syscall.SYS_EXIT, 0, 0, 0)
	}
}

// TestRunningWhileOtherThreadsRun: a process whose main thread has exited
// shows as a zombie, yet runs while its other threads do; a test that
// took it for exited went on to find its sockets open.
func TestRunningWhileOtherThreadsRun(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), mainThreadExitsEnv+"=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); state(t, pid) != "Z"; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d: main thread still running after 10 s", pid)
		}
	}
	if !Running(pid) {
		t.Errorf("Running(%d) = false with its main thread exited and other threads running, want true", pid)
	}
	_ = cmd.Process.Kill()
	for deadline := time.Now().Add(10 * time.Second); Running(pid); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Running(%d) still true 10 s after it was killed", pid)
		}
	}
}

// state returns the state letter of pid's main thread.
func state(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return f[0]
}
