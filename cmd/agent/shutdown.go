package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"time"

	"github.com/outrider-sidecar/outrider/config"
	"github.com/outrider-sidecar/outrider/probe"
	"github.com/outrider-sidecar/outrider/proxy"
	"github.com/outrider-sidecar/outrider/shutdown"
)

// addShutdown wires the drain sequence to the registrar, the proxy and
// readiness, and serves /prestop. It comes after addProxy and addRegistry.
func (a *agent) addShutdown() error {
	a.gate.Set(condDraining, true, "no")
	o := shutdown.Options{
		Delay:             a.cfg.Drain.Delay,
		Timeout:           a.cfg.Drain.Timeout,
		DeregisterTimeout: config.DeregisterTimeout,
		OnDraining: func() {
			a.gate.Set(condDraining, false, "drain in progress")
			if a.proxy != nil {
				// Through the delay, keep-alive clients leave one answer
				// at a time rather than have idle connections closed under
				// them when the proxy stops accepting.
				a.proxy.CloseKeepAlives()
			}
		},
		Log:        a.log.With("component", "shutdown"),
		Registerer: a.reg,
	}
	if a.registrar != nil {
		o.Registry = a.registrar
	}
	if a.proxy != nil {
		o.Traffic = proxyTraffic{a.proxy}
	}
	seq, err := shutdown.New(o)
	if err != nil {
		return err
	}
	a.drain = seq
	a.onDrainTimings = seq.SetTimings
	a.status["drain"] = func() any {
		delay, timeout := seq.Timings()
		return map[string]any{
			"started":         seq.Started(),
			"delay_seconds":   delay.Seconds(),
			"timeout_seconds": timeout.Seconds(),
			"report":          reportOrNil(seq),
		}
	}
	// Every method: servePrestop answers the others itself, as the mux
	// would name HEAD among the methods allowed with GET.
	a.admin.HandleFunc("/prestop", a.servePrestop)
	a.admin.HandleFunc("POST /drain", a.serveDrain)
	verdicts := a.subscribeVerdicts()
	a.addContext("drain watch", func(ctx context.Context) error {
		return a.afterDrain(ctx, seq, verdicts)
	})
	return nil
}

// afterDrain says on /ready that the drain is done and, on Kubernetes after
// one a preStop hook started, stops outrider once the app is back: Kubernetes
// runs the app container's preStop hook whenever it kills the container,
// after a failed liveness probe too, and then restarts the app in the same
// pod beside an outrider that has deregistered it and closed its proxy.
// outrider then exits 1, so that Kubernetes restarts it too and it
// registers the app again. The app is back when its probe, after the
// drain, goes unhealthy and then healthy again, or when it is healthy
// once the grace period since the drain began is over: a pod being deleted
// is gone by then, and a restart quicker than the probe's failure
// threshold leaves the verdict healthy throughout.
func (a *agent) afterDrain(ctx context.Context, seq *shutdown.Sequence, verdicts <-chan probe.Verdict) error {
	select {
	case <-ctx.Done():
		return nil
	case <-seq.Done():
	}
	a.gate.Set(condDraining, false, "drained; waiting to be stopped")
	rep := seq.Report()
	if rep.Trigger != "prestop" || a.wrapMode || !inKubernetes(a.lookupEnv()) {
		// Wrap mode: the app is outrider's child, restarted only with it.
		// Off Kubernetes nothing restarts a container after its preStop
		// hook: a /prestop by hand (the demo's) stays drained.
		<-ctx.Done()
		return nil
	}
	grace := a.cfg.Drain.GracePeriod
	if grace <= 0 {
		grace = defaultGracePeriod
	}
	over := time.NewTimer(time.Until(rep.Started.Add(grace)))
	defer over.Stop()
	// What the channel holds now may be from before the drain.
	select {
	case <-verdicts:
	default:
	}
	down, pastGrace := !a.prober.Verdict().Healthy, false
	back := stopStatus{code: exitFailed, reason: "the app is back after a preStop drain, and outrider was not stopped: " +
		"its container was restarted in the pod; outrider stops so that it is restarted too and registers the app again"}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-over.C:
			pastGrace = true
			if a.prober.Verdict().Healthy {
				return back
			}
		case v := <-verdicts:
			if !v.Healthy {
				down = true
			} else if down || pastGrace {
				return back
			}
		}
	}
}

// lookupEnv is the agent's getenv, os.Getenv when none was given: the
// reloader and the drain watch read the environment through it.
func (a *agent) lookupEnv() func(string) string {
	if a.getenv == nil {
		return os.Getenv
	}
	return a.getenv
}

// inKubernetes reports whether outrider runs in a Kubernetes container:
// the kubelet sets KUBERNETES_SERVICE_HOST in every one.
func inKubernetes(getenv func(string) string) bool {
	return getenv("KUBERNETES_SERVICE_HOST") != ""
}

// defaultGracePeriod is Kubernetes' terminationGracePeriodSeconds when a
// pod sets none, for an OUTRIDER_GRACE_PERIOD that is not set.
const defaultGracePeriod = 30 * time.Second

func reportOrNil(seq *shutdown.Sequence) any {
	select {
	case <-seq.Done():
		return seq.Report()
	default:
		return nil
	}
}

// servePrestop answers GET|POST /prestop: it runs the drain (or joins the
// one running) and answers when it is done, with the report as JSON: 200
// when everything in flight finished, 500 when the drain had problems.
// The drain goes on if the caller leaves. Any other method, HEAD
// included (a checker asking whether the URL is there must not take the
// instance out), gets 405 with Allow: GET, POST.
func (a *agent) servePrestop(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, r.Method+" /prestop: want GET or POST", http.StatusMethodNotAllowed)
		return
	}
	// The answer waits for the drain, whose timings a config file may
	// have lengthened since the admin server was set up: no write deadline
	// for it.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	rep, err := a.drain.Run(r.Context(), "prestop")
	if err != nil {
		return // the caller left; nobody reads an answer
	}
	w.Header().Set("Content-Type", "application/json")
	if !rep.OK() {
		w.WriteHeader(http.StatusInternalServerError)
	}
	_ = json.NewEncoder(w).Encode(rep)
}

// serveDrain answers POST /drain: it starts the drain (or finds it
// running) and answers 202 at once, for an operator or a script that takes
// an instance out without waiting; /status shows the drain and, once it is
// done, its report, and /prestop joins it. outrider keeps running after
// the drain until it is stopped, as after /prestop.
func (a *agent) serveDrain(w http.ResponseWriter, r *http.Request) {
	a.drain.Start("drain")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(map[string]any{"draining": true})
}

// proxyTraffic adapts the proxy to what the drain sequence needs.
type proxyTraffic struct{ p *proxy.Proxy }

func (t proxyTraffic) Drain(ctx context.Context) (shutdown.Drained, error) {
	err := t.p.Drain(ctx)
	r := t.p.DrainReport()
	return shutdown.Drained{Finished: r.Finished, Cut: r.Cut, TunnelsCut: r.TunnelsCut}, err
}

func (t proxyTraffic) Answered() uint64 { return t.p.Answered() }
