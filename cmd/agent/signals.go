package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/outrider-sidecar/outrider/register"
	"github.com/outrider-sidecar/outrider/wrap"
)

// stopStatus ends the run group with an exit status and the reason for it.
type stopStatus struct {
	code   int
	reason string
}

func (s stopStatus) Error() string { return s.reason }

// isStop reports whether sig asks outrider to drain and stop.
func isStop(sig os.Signal) bool { return sig == syscall.SIGTERM || sig == os.Interrupt }

// forwarded are the signals wrap mode passes on to the app.
var forwarded = []os.Signal{syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGQUIT}

// passedOn is forwarded less the signals outrider was started with
// ignored: SIGHUP under nohup. Catching one would end the ignore for the
// app too, whose exec resets a caught signal to its default, and the
// hangup at logout would then kill the app that nohup was to keep
// running. Left alone, it stays ignored in outrider and in the app.
func passedOn() (caught, ignored []os.Signal) {
	for _, sig := range forwarded {
		if signal.Ignored(sig) {
			ignored = append(ignored, sig)
		} else {
			caught = append(caught, sig)
		}
	}
	return caught, ignored
}

// addSignals adds the actor that turns SIGTERM or SIGINT into the drain
// sequence and then an orderly stop; in wrap mode it also owns the child.
// Signals are subscribed here, before anything runs, so none is lost, and
// until run returns: once the actor is done, the other actors still stop
// (a deregistration Consul does not answer takes its 5 s), and a stop
// signal then must not kill outrider by default and lose the exit status
// (the app's, in wrap mode). Such a signal is dropped.
func (a *agent) addSignals() {
	sigs := make(chan os.Signal, 8)
	if a.wrapMode {
		caught, ignored := passedOn()
		for _, sig := range ignored {
			a.log.Info("signal ignored since outrider started (as under nohup): the app inherits the ignore, and it is not passed on",
				"signal", signalName(sig))
		}
		signal.Notify(sigs, append([]os.Signal{os.Interrupt, syscall.SIGTERM}, caught...)...)
	} else {
		signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	}
	a.stopSignals = func() { signal.Stop(sigs) }
	stop := make(chan struct{})
	a.group.Add(func() error {
		if a.wrapMode {
			return a.superviseChild(sigs, stop)
		}
		return a.drainOnSignal(sigs, stop)
	}, func(error) { close(stop) })
}

// drainOnSignal waits for SIGTERM or SIGINT, runs the drain (or joins the
// one /prestop started) and returns when it is done: exit 0, or 1 when a
// second signal cut it short.
func (a *agent) drainOnSignal(sigs <-chan os.Signal, stop <-chan struct{}) error {
	var first os.Signal
	var done <-chan struct{}
	for {
		select {
		case sig := <-sigs:
			done = a.stopSignal(sig, &first, "stopping")
		case <-done:
			if a.drain.Report().Aborted {
				return stopStatus{exitFailed, "drain cut short by a second signal"}
			}
			return stopStatus{exitOK, "drained after " + signalName(first)}
		case <-stop:
			return nil
		}
	}
}

// stopSignal handles SIGTERM or SIGINT: the first (kept in first) starts
// the drain, a later one cuts it short. It returns the channel closed when
// the drain is done; then names what follows, for the log.
func (a *agent) stopSignal(sig os.Signal, first *os.Signal, then string, attrs ...any) <-chan struct{} {
	if *first == nil {
		*first = sig
		a.log.Info("signal received: draining, then "+then, append([]any{"signal", signalName(sig)}, attrs...)...)
		return a.drain.Start(signalName(sig))
	}
	a.log.Warn("second signal: cutting the drain short", "signal", signalName(sig))
	a.drain.Abort("second signal " + signalName(sig))
	return a.drain.Done()
}

// superviseChild is the wrap-mode actor: it passes signals on to the app,
// and on SIGTERM or SIGINT drains first, then stops the app and exits with
// its status. When the app exits on its own, the instance is deregistered
// at once and outrider exits with the app's status.
func (a *agent) superviseChild(sigs <-chan os.Signal, stop <-chan struct{}) error {
	child := a.child
	var first os.Signal
	var done <-chan struct{}
	for {
		select {
		case sig := <-sigs:
			if isStop(sig) {
				done = a.stopSignal(sig, &first, "stopping the app", "app_pid", child.Pid())
			} else {
				a.passOn(child, sig)
			}
		case <-done:
			return a.stopChild(child, sigs, a.drain.Report().Aborted)
		case <-child.Done():
			if done == nil && a.drain.Started() {
				done = a.drain.Done() // /prestop or /drain started it
			}
			return a.childExited(child, done)
		case <-stop:
			a.awaitProxyDrain(child, sigs)
			a.stopChild(child, sigs, false)
			return nil
		}
	}
}

// awaitProxyDrain waits, when outrider stops for another reason than a
// signal (one of its parts failed), for the proxy to drain: it does so
// on the stop, within OUTRIDER_DRAIN_TIMEOUT, and the app stopped at once
// would fail the requests in flight under it. The wait ends early when
// the app exits or at SIGTERM or SIGINT; other signals are passed on.
func (a *agent) awaitProxyDrain(child *wrap.Child, sigs <-chan os.Signal) {
	if a.proxy == nil {
		return
	}
	timeout := a.cfg.Drain.Timeout
	if a.drain != nil {
		_, timeout = a.drain.Timings() // as a reload left it
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		_ = a.proxy.Drain(ctx) // joins the proxy's own drain on the stop
	}()
	for {
		select {
		case <-drained:
			return
		case <-child.Done():
			return
		case sig := <-sigs:
			if isStop(sig) {
				a.log.Warn("signal received while the proxy drains: stopping the app now", "signal", signalName(sig), "app_pid", child.Pid())
				return
			}
			a.passOn(child, sig)
		}
	}
}

// passOn sends sig on to the app.
func (a *agent) passOn(child *wrap.Child, sig os.Signal) {
	if err := child.Signal(sig); err != nil {
		a.log.Warn("could not pass a signal on to the app", "signal", signalName(sig), "err", err)
	}
}

// stopChild stops the app after the drain and returns its exit status; a
// drain cut short never exits 0. While the app has its time to stop,
// signals still count: SIGTERM or SIGINT again kills the app's group at
// once, as a second one cuts the drain short; the others are passed on.
func (a *agent) stopChild(child *wrap.Child, sigs <-chan os.Signal, aborted bool) error {
	timeout := a.cfg.Drain.AppStopTimeout
	a.log.Info("stopping the app", "app_pid", child.Pid(), "signal", "SIGTERM", "timeout", timeout)
	ctx, cut := context.WithTimeout(context.Background(), timeout)
	defer cut()
	stopped := make(chan bool, 1)
	// Stop blocks until the app is gone; the loop below hears signals
	// meanwhile and waits for it.
	go func() { stopped <- child.Stop(ctx) }()
	var killed bool
	var cutBy os.Signal
	for waiting := true; waiting; {
		select {
		case killed = <-stopped:
			waiting = false
		case sig := <-sigs:
			switch {
			case !isStop(sig):
				a.passOn(child, sig)
			case cutBy == nil:
				cutBy = sig
				a.log.Warn("signal received while the app stops: killing its process group now",
					"signal", signalName(sig), "app_pid", child.Pid())
				cut()
			}
		}
	}
	code, how := child.Status()
	if killed && cutBy == nil {
		a.log.Warn("the app did not stop in time: killed its process group", "app_pid", child.Pid(),
			"timeout", timeout, "how", how)
	} else {
		a.log.Info("the app stopped", "how", how)
	}
	reason := "the app " + how
	if killed && cutBy != nil {
		reason += ", at a further " + signalName(cutBy)
	}
	if aborted && code == 0 {
		code, reason = exitFailed, reason+", after a drain cut short by a second signal"
	}
	return stopStatus{code, reason}
}

// childExited handles the app exiting on its own: the instance leaves the
// registry at once, and outrider leaves with the app's status. draining is
// the running drain's end, whatever started it, or nil: that drain is cut
// short, so that /prestop gets its report before outrider leaves.
func (a *agent) childExited(child *wrap.Child, draining <-chan struct{}) error {
	code, how := child.Status()
	a.log.Warn("the app exited on its own: deregistering and stopping", "how", how, "status", code)
	a.gate.Set(condApp, false, "the app "+how)
	if draining != nil {
		// Nothing in flight can finish now.
		a.drain.Abort("the app " + how)
		<-draining
	} else if a.registrar != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := a.registrar.Deregister(ctx); err != nil {
			a.log.Error("could not deregister after the app exited; "+register.LeftBehind(err), "err", err)
		}
		cancel()
	}
	child.Stop(context.Background()) // whatever it left in its process group goes too
	return stopStatus{code, "the app " + how}
}

// addReaper adds, when outrider is PID 1 of its namespace, the actor that
// reaps orphaned processes the kernel hands to it.
func (a *agent) addReaper() {
	if os.Getpid() != 1 {
		return
	}
	a.log.Info("running as PID 1: reaping orphaned processes")
	a.addContext("reaper", func(ctx context.Context) error {
		wrap.ReapOrphans(ctx, time.Second)
		return nil
	})
}

// signalName names sig the way operators write it: "SIGTERM".
func signalName(sig os.Signal) string {
	if s, ok := sig.(syscall.Signal); ok {
		if name := unix.SignalName(s); name != "" {
			return name
		}
	}
	return fmt.Sprint(sig)
}
