package server

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStopAndExit(t *testing.T) {
	tests := []struct {
		name     string
		script   string
		wantStop string // "" for a clean stop
	}{
		{"stops on SIGTERM", "echo up; exec sleep 30", ""},
		{"killed after the grace period", "trap '' TERM; echo up; sleep 30 & wait", "still running 300ms after SIGTERM, killed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := filepath.Join(t.TempDir(), "srv.log")
			p, err := Start("srv", "/bin/sh", []string{"-c", tt.script}, []string{"X=1"}, log)
			if err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for !strings.Contains(p.Tail(100), "up") && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond) // until the trap is set
			}
			if done, _ := p.Exited(); done {
				t.Fatalf("exited before Stop: %s", p.Tail(200))
			}
			err = p.Stop(300 * time.Millisecond)
			if got := errString(err); !strings.Contains(got, tt.wantStop) || (tt.wantStop == "") != (err == nil) {
				t.Errorf("Stop = %q, want %q", got, tt.wantStop)
			}
			if done, _ := p.Exited(); !done {
				t.Error("Exited = false after Stop")
			}
		})
	}
}

func TestExitStatusAndTail(t *testing.T) {
	log := filepath.Join(t.TempDir(), "srv.log")
	p, err := Start("srv", "/bin/sh", []string{"-c", "echo \"$GREETING\"; exit 3"}, []string{"GREETING=hello"}, log)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	done, exitErr := p.Exited()
	for !done && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		done, exitErr = p.Exited()
	}
	if !done || !strings.Contains(errString(exitErr), "exit status 3") {
		t.Errorf("Exited = %v, %v; want true, exit status 3", done, exitErr)
	}
	if got := p.Tail(3); got != "lo\n" {
		t.Errorf("Tail(3) = %q, want the log's last 3 bytes %q", got, "lo\n")
	}
	if _, err := Start("srv", filepath.Join(t.TempDir(), "missing"), nil, nil, log); err == nil || !strings.Contains(err.Error(), "start srv") {
		t.Errorf("Start of a missing binary: %v, want an error naming srv", err)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
