package probe

import (
	"context"
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"

	"golang.org/x/sys/unix"
)

// execOutputLimit is how much of a command's combined output is kept.
const execOutputLimit = 4 << 10

// execWaitDelay bounds the wait for the output pipes once the command has
// exited: a process that left the group (setsid) may still hold them.
const execWaitDelay = time.Second

// probeExec runs spec.Command without a shell, in a process group of its
// own: exit status 0 is success. At ctx's deadline the whole group is
// killed; it is killed too when the command exits, so that nothing it
// started in the background outlives the probe, unless it left the group
// (setsid, a daemon), as under the kubelet.
func probeExec(ctx context.Context, spec Spec) Result {
	start := time.Now()
	if spec.Kind != KindExec || len(spec.Command) == 0 {
		return result(start, Error, "exec probe of a %q spec without a command", spec.Kind)
	}
	what := "exec " + spec.Command[0]
	out := &headBuffer{limit: execOutputLimit}
	cmd := exec.Command(spec.Command[0], spec.Command[1:]...)
	// Never nil, which would hand the command outrider's secrets.
	cmd.Env = spec.Env
	if cmd.Env == nil {
		cmd.Env = ExecEnv(os.Environ(), nil, nil)
	}
	if path, ok := envValue(cmd.Env, "PATH"); ok && !strings.Contains(spec.Command[0], "/") {
		// exec.Command looked in outrider's PATH; the command's own
		// (OUTRIDER_PROBE_ENV=PATH=…) is the one that finds it, as
		// under a shell.
		cmd.Path, cmd.Err = lookPathIn(spec.Command[0], path)
	}
	cmd.Stdout, cmd.Stderr = out, out
	// Pdeathsig: should outrider be killed (OOM, SIGKILL) while the
	// command runs, nothing is left to enforce its timeout; the kernel
	// kills it then. The signal follows the thread that started the
	// command, not the process, and Go ends a thread whose locked
	// goroutine returns: this goroutine keeps its thread until the reap,
	// so that no other goroutine's return ends it early.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = execWaitDelay
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := execGroups.start(cmd); err != nil {
		// Start's error repeats the path that what already names.
		if inner := errors.Unwrap(err); inner != nil {
			err = inner
		}
		return result(start, Error, "%s: %v", what, err)
	}
	pgid := cmd.Process.Pid

	exited := make(chan struct{})
	go func() {
		defer close(exited)
		waitExited(pgid)
	}()
	timedOut := false
	select {
	case <-exited:
	case <-ctx.Done():
		timedOut = true
	}
	// The leader is not reaped yet, so its id still names this group and
	// no other: killing the group cannot hit an unrelated process.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-exited
	err := cmd.Wait()
	execGroups.end(pgid)

	output := out.String()
	switch {
	case timedOut && deadlinePassed(ctx):
		return withOutput(result(start, Timeout, "%s: killed after %s", what, timeoutOf(ctx, start)), output)
	case timedOut:
		return withOutput(result(start, Error, "%s: killed: %v", what, ctx.Err()), output)
	case cmd.ProcessState != nil && cmd.ProcessState.Success():
		return withOutput(result(start, Success, "%s: exit status 0", what), output)
	case cmd.ProcessState != nil:
		return withOutput(result(start, Failure, "%s: %s", what, cmd.ProcessState), output)
	default:
		return result(start, Failure, "%s: %v", what, err)
	}
}

// execGroups holds the process groups of the exec probes running in
// this process.
var execGroups = groups{ids: map[int]bool{}}

// ExecGroups returns the process groups of outrider's exec probes
// running now, each named by its leader's pid, so that the app's figures
// never count a probe's command. Every exec-probe process already to be
// seen in /proc when ExecGroups is called is in one of them.
func ExecGroups() map[int]bool { return execGroups.now() }

// groups is a set of process groups, each added as its leader starts.
type groups struct {
	mu  sync.Mutex
	ids map[int]bool
}

// start starts cmd, the leader of a new group, and adds the group. The
// lock is held from before the fork until the group is added: now, which
// waits for it, cannot miss a process that was already running.
func (g *groups) start(cmd *exec.Cmd) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	g.ids[cmd.Process.Pid] = true
	return nil
}

// end removes the group led by pgid, once its leader is reaped.
func (g *groups) end(pgid int) {
	g.mu.Lock()
	delete(g.ids, pgid)
	g.mu.Unlock()
}

// now returns a copy of the set.
func (g *groups) now() map[int]bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return maps.Clone(g.ids)
}

// envValue is the value of name in env (NAME=value pairs), the last one
// when it is there more than once, as exec does.
func envValue(env []string, name string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// lookPathIn finds the executable file name in the directories of path,
// as exec.LookPath does in outrider's PATH. A relative directory is
// skipped: what it names depends on the working directory.
func lookPathIn(name, path string) (string, error) {
	for _, dir := range filepath.SplitList(path) {
		if !filepath.IsAbs(dir) {
			continue
		}
		file := filepath.Join(dir, name)
		if fi, err := os.Stat(file); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return file, nil
		}
	}
	return name, &exec.Error{Name: name, Err: exec.ErrNotFound}
}

// waitExited blocks until process pid has exited, without reaping it.
func waitExited(pid int) {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return
		}
	}
}

// withOutput appends the command's output to the reason; the summary
// keeps the reason alone.
func withOutput(r Result, output string) Result { return withDetail(r, output) }

// headBuffer keeps the first limit bytes written to it and discards the
// rest, without failing the writer.
type headBuffer struct {
	limit int
	b     []byte
	cut   bool
}

func (h *headBuffer) Write(p []byte) (int, error) {
	keep := p
	if room := max(h.limit-len(h.b), 0); len(keep) > room {
		keep, h.cut = keep[:room], true
	}
	h.b = append(h.b, keep...)
	return len(p), nil
}

// String is the kept output, valid UTF-8 and printable (line breaks and
// tabs kept, carriage returns dropped, other control characters as '?'),
// marked when it was cut:
// it goes into Consul's check output, the log and /status, where a NUL or
// an escape sequence from a command's binary output does not belong.
func (h *headBuffer) String() string {
	s := strings.Map(func(r rune) rune {
		switch {
		case r == '\n' || r == '\t' || unicode.IsPrint(r):
			return r
		case r == '\r':
			return -1
		}
		return '?'
	}, strings.ToValidUTF8(string(h.b), "?"))
	if h.cut {
		s += "…"
	}
	return s
}
