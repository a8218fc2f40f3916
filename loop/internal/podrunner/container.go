package podrunner

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// defaultPath is the PATH container runtimes give a container whose image
// sets none.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// container is one container of a pod and, once started, its process.
type container struct {
	spec    corev1.Container
	sidecar bool // an init container with restartPolicy Always
	init    bool // an init container that runs to completion

	// Guarded by the pod worker's mutex.
	waiting    string // reason while not started, e.g. ContainerCreating
	message    string
	startedAt  time.Time
	finishedAt time.Time
	exitCode   int
	ready      bool

	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	started chan struct{} // closed once its startup probe passed (at once without one)
}

// argv is the command line of c, built as a container runtime builds it
// from the image and the container's command and args, with $(VAR)
// references expanded.
func argv(img Image, c *corev1.Container, env map[string]string) ([]string, error) {
	var cmd, args []string
	if len(c.Command) > 0 {
		cmd, args = expandAll(c.Command, env), expandAll(c.Args, env)
	} else {
		cmd, args = img.Entrypoint, img.Cmd
		if len(c.Args) > 0 {
			args = expandAll(c.Args, env)
		}
	}
	line := append(append([]string{}, cmd...), args...)
	if len(line) == 0 {
		return nil, fmt.Errorf("container %q: neither the image nor the container names a program", c.Name)
	}
	return line, nil
}

func expandAll(in []string, env map[string]string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = expand(s, env)
	}
	return out
}

// start runs the container's process with its output in logPath.
func (c *container) start(line, env []string, dir, logPath string) error {
	path, err := exec.LookPath(line[0])
	if err != nil {
		return fmt.Errorf("container %q: program %q: %w", c.spec.Name, line[0], err)
	}
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("container %q: open log: %w", c.spec.Name, err)
	}
	cmd := &exec.Cmd{Path: path, Args: line, Env: env, Dir: dir, Stdout: log, Stderr: log}
	// Its own process group stands in for the container: SIGTERM goes to
	// the main process only, SIGKILL to the whole group. Killed with the
	// test process if that dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("container %q: start %s: %w", c.spec.Name, path, err)
	}
	c.cmd, c.done = cmd, make(chan struct{})
	return nil
}

// wait waits for the process and returns its exit code; the caller closes
// c.done after recording it.
func (c *container) wait() int {
	err := c.cmd.Wait()
	if f, ok := c.cmd.Stdout.(*os.File); ok {
		f.Close()
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return exit.ExitCode()
	}
	return -1
}

// running reports whether the process was started and has not exited.
func (c *container) running() bool {
	if c.done == nil {
		return false
	}
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

func (c *container) signal(sig syscall.Signal) {
	if !c.running() {
		return
	}
	if sig == syscall.SIGKILL {
		_ = syscall.Kill(-c.cmd.Process.Pid, sig)
		return
	}
	_ = c.cmd.Process.Signal(sig)
}

func logFile(dir, pod, container string) string {
	return filepath.Join(dir, strings.ReplaceAll(pod+"_"+container, "/", "_")+".log")
}
