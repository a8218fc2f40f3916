package testbin

import (
	"os"
	"os/exec"
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
