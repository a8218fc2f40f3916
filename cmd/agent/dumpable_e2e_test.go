package main

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outrider-sidecar/outrider/internal/testbin"
)

// nobody is the unprivileged user the test runs outrider and its
// neighbour as: one user, as the app and outrider share one in a pod.
const nobody = 65534

// TestTheAppsUserCannotReadOutridersEnvironment runs outrider as an
// unprivileged user and reads its /proc/<pid>/environ as the same user,
// as the app beside it in a pod with shareProcessNamespace could: the
// tokens in outrider's environment must not be readable. It needs root,
// to start both as another user.
func TestTheAppsUserCannotReadOutridersEnvironment(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test needs root: it starts outrider and a reader as an unprivileged user")
	}
	// A copy of the binary that the unprivileged user can run.
	bin, cred := unprivilegedOutrider(t)

	const token = "admin-token-the-app-must-not-read"
	appAddr := testbin.FreeAddr(t)
	startEcho(t, appAddr, 20*time.Second)
	metrics := testbin.FreeAddr(t)
	cmd := exec.Command(bin)
	cmd.Env = []string{"OUTRIDER_REGISTRY=none", "OUTRIDER_APP_ADDR=" + appAddr,
		"OUTRIDER_PROXY_LISTEN=" + testbin.FreeAddr(t), "OUTRIDER_METRICS_LISTEN=" + metrics,
		"OUTRIDER_ADMIN_LISTEN=" + testbin.FreeAddr(t), "OUTRIDER_ADMIN_TOKEN=" + token}
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	testbin.WaitHTTP(t, "http://"+metrics+"/healthz", http.StatusOK, 20*time.Second)

	// outrider runs as that user: the check below is about a neighbour of
	// its own user, not about root's files.
	status, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(status), "\nUid:\t65534\t") {
		t.Fatalf("outrider does not run as uid %d:\n%s", nobody, status)
	}

	reader := exec.Command("/bin/cat", "/proc/"+strconv.Itoa(cmd.Process.Pid)+"/environ")
	reader.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := reader.CombinedOutput()
	if strings.Contains(string(out), token) {
		t.Fatalf("a process of outrider's user read its environment, admin token included")
	}
	if err == nil || !strings.Contains(string(out), "Permission denied") {
		t.Errorf("reading outrider's environment as its user: %v, %q; want permission denied", err, out)
	}
}
