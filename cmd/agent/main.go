// Command outrider is the sidecar agent: it probes an app, registers it in
// Consul, exports its metrics and drains it on shutdown. See README.md;
// outrider help lists every variable.
package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/outrider-sidecar/outrider/wrap"
)

// Exit statuses.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2 // bad command line or configuration
)

const usage = `usage: outrider [command]

Commands:
  (none)          run as a sidecar beside the app (configured by OUTRIDER_* variables)
  check-config    validate the configuration and print it, secrets masked
  version         print the version
  run -- CMD...   wrap mode: start CMD as a child, drain before stopping it, exit with its status
  prestop         ask the agent beside this shell to drain; exit 0 once it has
  inject [FILE]   add the outrider sidecar to Kubernetes YAML (stdin or files) and print it

Configuration is read from the environment: outrider help lists every variable.
`

func main() {
	if len(os.Args) > 1 && os.Args[1] == wrap.KeeperCommand {
		os.Exit(wrap.RunKeeper(os.Args[2:]))
	}
	holdHangups(os.Args[1:])
	hideFromTheApp()
	sidecarRuntime(os.Getenv)
	os.Exit(dispatch(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// hangups receives SIGHUP from the start of main to the exit when
// outrider runs as a sidecar or wraps an app (holdHangups); nil otherwise.
var hangups chan os.Signal

// holdHangups subscribes to SIGHUP first thing, for as long as the
// process lives, when args run the sidecar or wrap mode. Go's default for
// SIGHUP is to exit at once, and systemd's ExecReload or a config-map
// watcher may send one at any time: one that came while the
// configuration was being read, or once the reload handler was gone at
// exit, ended outrider without its drain and with a signal's status. The
// sidecar reloads on one that came early once it is ready; wrap mode
// drops one that came before the app ran. A SIGHUP ignored at start (as
// under nohup) is left alone in wrap mode: the app inherits the ignore.
func holdHangups(args []string) {
	switch {
	case len(args) == 0:
	case args[0] == "run" && !signal.Ignored(syscall.SIGHUP):
	default:
		return
	}
	hangups = make(chan os.Signal, 1)
	signal.Notify(hangups, syscall.SIGHUP)
}

// hideFromTheApp makes outrider's process not dumpable: its /proc/<pid>
// entries then belong to root, and a process of the same user, such as
// the app in a pod with shareProcessNamespace, cannot read its
// environment (CONSUL_HTTP_TOKEN, OUTRIDER_ADMIN_TOKEN), its memory or its
// files through /proc. outrider reads the app's entries, never the other
// way round; a process it starts (the app in wrap mode, an exec probe) is
// dumpable again from its exec, as the kernel resets the flag there.
func hideFromTheApp() {
	_ = unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
}

// gcPercent is outrider's GOGC unless the environment sets one. Its
// requests allocate nothing, so collections come only from new
// connections, and collecting at 25% growth instead of Go's 100% costs no
// measurable CPU even with a new connection per request, while the heap
// left by bursts of connections stays about 4 MB smaller at 1,000 of them
// (see docs/proxy.md). Prometheus sets its own default the same way.
const gcPercent = 25

// sidecarRuntime sets the Go runtime for a sidecar unless the environment
// says otherwise: one core (GOMAXPROCS) and a lean heap (GOGC). A sidecar
// should not compete with its app for CPU, and Go would round a container
// CPU limit below 2 up to 2 threads; on one core the proxy also does less
// cross-thread hand-off per request (see docs/proxy.md). Only this
// process is set: a wrapped app's environment is its own.
func sidecarRuntime(getenv func(string) string) {
	if getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	if getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
}

// takesNoArgs holds the commands that read nothing from the command line.
var takesNoArgs = map[string]bool{"check-config": true, "version": true, "--version": true, "prestop": true}

// dispatch runs the subcommand and returns the exit status.
func dispatch(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cmd := ""
	if len(args) > 0 {
		cmd = args[0]
	}
	if takesNoArgs[cmd] && len(args) > 1 {
		// An argument these ignored (check-config --file x) would seem to
		// have been used.
		fmt.Fprintf(stderr, "outrider %s: takes no arguments, got %q (its settings are OUTRIDER_* variables)\n\n%s", cmd, args[1:], usage)
		return exitUsage
	}
	switch cmd {
	case "":
		return runAgent(getenv, stderr)
	case "check-config":
		return checkConfig(getenv, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, versionString())
		return exitOK
	case "help", "-h", "--help":
		writeHelp(stdout)
		return exitOK
	case "run":
		return runWrapped(args[1:], getenv, stderr)
	case "prestop":
		return prestop(getenv, stdout, stderr)
	case "inject":
		return injectCmd(args[1:], os.Stdin, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "outrider: unknown command %q\n\n%s", cmd, usage)
		return exitUsage
	}
}
