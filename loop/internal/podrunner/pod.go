package podrunner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
)

// minStopWindow is the least time a container gets between SIGTERM and
// SIGKILL, even when the grace period is used up (the kubelet's
// minimumGracePeriodInSeconds).
const minStopWindow = 2 * time.Second

// podWorker runs one pod: it starts the containers in order, probes their
// readiness, reports the pod's status, and on deletion stops them as the
// kubelet does. Its run method owns every goroutine it starts.
type podWorker struct {
	cfg    Config
	pod    *corev1.Pod // as first seen; a pod's containers do not change
	uid    types.UID
	ip     net.IP
	ns     *netns     // the pod's network namespace, once made
	fwd    *forwarder // the pod's ports on the host, the node's in the pod
	prober *prober    // the kubelet's probes and hooks, once the network is open

	terminating chan struct{} // closed by terminate, after grace is set
	killed      chan struct{} // closed by kill
	termOnce    sync.Once
	killOnce    sync.Once
	grace       time.Duration

	dirty chan struct{} // a status change to report; capacity 1

	mu          sync.Mutex
	containers  []*container // init containers in order, then app containers
	phase       corev1.PodPhase
	initialized bool
	message     string // why the pod failed, if it did
	startTime   metav1.Time
	transitions map[corev1.PodConditionType]condition

	goroutines sync.WaitGroup // probers and process waiters
}

type condition struct {
	status corev1.ConditionStatus
	since  metav1.Time
}

func newPodWorker(cfg Config, pod *corev1.Pod, ip net.IP) *podWorker {
	w := &podWorker{
		cfg: cfg, pod: pod, uid: pod.UID, ip: ip,
		fwd:         newForwarder(cfg.Log),
		terminating: make(chan struct{}),
		killed:      make(chan struct{}),
		dirty:       make(chan struct{}, 1),
		phase:       corev1.PodPending,
		startTime:   metav1.Now(),
		transitions: map[corev1.PodConditionType]condition{},
	}
	for _, c := range pod.Spec.InitContainers {
		sidecar := c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
		w.containers = append(w.containers, &container{spec: c, sidecar: sidecar, init: !sidecar,
			waiting: "PodInitializing", started: make(chan struct{})})
	}
	for _, c := range pod.Spec.Containers {
		w.containers = append(w.containers, &container{spec: c, waiting: "PodInitializing", started: make(chan struct{})})
	}
	return w
}

// terminate asks for the kubelet's graceful stop with the given grace
// period. Only the first call counts.
func (w *podWorker) terminate(grace time.Duration) {
	w.termOnce.Do(func() {
		w.grace = grace
		close(w.terminating)
	})
}

// kill asks for every container to be killed at once, for when the runner
// stops.
func (w *podWorker) kill() { w.killOnce.Do(func() { close(w.killed) }) }

// vanished handles a pod that is gone from the apiserver (deleted with
// grace period 0): a pod still running is stopped with grace period 0, as
// the kubelet does (no preStop hook, SIGTERM, SIGKILL minStopWindow
// later); a pod already stopping is killed at once, where the kubelet would
// shorten its grace period to that minimum.
func (w *podWorker) vanished() {
	select {
	case <-w.terminating:
		w.kill()
	default:
		w.terminate(0)
	}
}

func (w *podWorker) run(ctx context.Context) {
	log := w.cfg.Log.With("pod", w.pod.Name, "ip", w.ip.String())
	defer w.goroutines.Wait()
	defer w.closeNetwork()
	w.report(ctx)
	if err := w.openNetwork(); err != nil {
		w.fail(nil, err)
	} else {
		w.startAll(ctx, log)
	}
	for {
		select {
		case <-ctx.Done():
			w.killAll()
			return
		case <-w.killed:
			w.killAll()
			return
		case <-w.terminating:
			log.Info("stopping pod", "grace", w.grace)
			w.stopGracefully(ctx, log)
			w.remove(ctx, log)
			return
		case <-w.dirty:
			w.report(ctx)
		}
	}
}

// interrupted reports whether starting should give up.
func (w *podWorker) interrupted(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return true
	case <-w.killed:
		return true
	case <-w.terminating:
		return true
	default:
		return false
	}
}

// await waits for ready and reports whether it came before gone (nil for
// none) or before starting should give up, as interrupted says.
func (w *podWorker) await(ctx context.Context, ready, gone <-chan struct{}) bool {
	select {
	case <-ready:
		return true
	case <-gone:
	case <-ctx.Done():
	case <-w.killed:
	case <-w.terminating:
	}
	return false
}

// startAll starts the containers in the kubelet's order: each init
// container in turn (a sidecar is left running, any other must exit 0
// first), then the app containers.
func (w *podWorker) startAll(ctx context.Context, log interface{ Info(string, ...any) }) {
	for _, c := range w.containers {
		if w.interrupted(ctx) {
			return
		}
		if !c.init && !c.sidecar {
			w.setInitialized()
		}
		if err := w.startContainer(ctx, c); err != nil {
			w.fail(c, err)
			return
		}
		log.Info("started container", "container", c.spec.Name, "pid", c.cmd.Process.Pid)
		if c.sidecar {
			// The next container starts once the sidecar's startup probe
			// has passed.
			// c.done: fail() has been called, or it exited.
			if !w.await(ctx, c.started, c.done) {
				return
			}
		}
		if !c.init {
			continue
		}
		if !w.await(ctx, c.done, nil) {
			return
		}
		w.mu.Lock()
		code := c.exitCode
		w.mu.Unlock()
		if code != 0 {
			w.fail(c, fmt.Errorf("init container %q exited with status %d", c.spec.Name, code))
			return
		}
	}
	w.mu.Lock()
	if w.phase == corev1.PodPending {
		w.phase = corev1.PodRunning
	}
	w.mu.Unlock()
	w.markDirty()
}

func (w *podWorker) setInitialized() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.initialized {
		w.initialized = true
		w.markDirty()
	}
}

// fail records that the pod cannot run, and why.
func (w *podWorker) fail(c *container, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.phase, w.message = corev1.PodFailed, err.Error()
	if c != nil && c.done == nil {
		if c.waiting == "PodInitializing" {
			c.waiting = "CreateContainerError"
		}
		c.message = err.Error()
	}
	w.cfg.Log.Error("pod failed", "pod", w.pod.Name, "err", err)
	w.markDirty()
}

// startContainer starts the process of c and the goroutines that wait for
// it and probe its readiness.
func (w *podWorker) startContainer(ctx context.Context, c *container) error {
	img, ok := w.cfg.Images[c.spec.Image]
	if !ok {
		w.mu.Lock()
		c.waiting = "ErrImagePull"
		w.mu.Unlock()
		return fmt.Errorf("container %q: image %q is not in podrunner's image table", c.spec.Name, c.spec.Image)
	}
	imageEnv := img.Env
	if !slices.ContainsFunc(imageEnv, func(kv string) bool { return strings.HasPrefix(kv, "PATH=") }) {
		imageEnv = append([]string{defaultPath}, imageEnv...)
	}
	env, err := w.environment(ctx, c, imageEnv)
	if err != nil {
		return err
	}
	line, err := argv(img, &c.spec, envMap(env))
	if err != nil {
		return err
	}
	dir := filepath.Join(w.cfg.Dir, w.pod.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("container %q: %w", c.spec.Name, err)
	}
	err = w.ns.do(func() error { return c.start(line, env, dir, logFile(w.cfg.Dir, w.pod.Name, c.spec.Name)) })
	if err != nil {
		return err
	}
	now := time.Now()
	if w.cfg.Started != nil {
		w.cfg.Started(w.pod.Name, c.spec.Name, now)
	}
	w.mu.Lock()
	c.waiting, c.startedAt = "", now
	// A container without a readiness probe is ready once it runs (and its
	// startup probe, if any, has passed).
	c.ready = c.spec.ReadinessProbe == nil && c.spec.StartupProbe == nil && !c.init
	w.mu.Unlock()
	w.goroutines.Go(func() {
		code := c.wait()
		w.mu.Lock()
		c.exitCode, c.finishedAt, c.ready = code, time.Now(), false
		w.mu.Unlock()
		close(c.done)
		w.cfg.Log.Info("container exited", "pod", w.pod.Name, "container", c.spec.Name, "status", code)
		w.markDirty()
	})
	if p := c.spec.StartupProbe; p != nil && !c.init {
		w.goroutines.Go(func() { w.startup(ctx, c, p) })
	} else {
		close(c.started)
	}
	if p := c.spec.ReadinessProbe; p != nil && !c.init {
		w.goroutines.Go(func() { w.probe(ctx, c, p) })
	}
	w.markDirty()
	return nil
}

// configRetry is how often a container whose environment cannot be built
// yet (a ConfigMap or Secret it names is missing) is tried again.
const configRetry = time.Second

// environment builds c's environment. Like the kubelet, it waits while a
// ConfigMap or Secret the container needs is missing, its status saying
// CreateContainerConfigError and why, and tries again every configRetry:
// applying a Deployment before its ConfigMap is no error.
func (w *podWorker) environment(ctx context.Context, c *container, imageEnv []string) ([]string, error) {
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		select {
		case <-retry.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-w.killed:
			return nil, errors.New("pod killed while its container waited for its configuration")
		case <-w.terminating:
			return nil, errors.New("pod deleted while its container waited for its configuration")
		}
		env, err := containerEnv(ctx, w.cfg.Client, w.podForEnv(), &c.spec, imageEnv)
		if err == nil || !apierrors.IsNotFound(err) {
			return env, err
		}
		w.mu.Lock()
		changed := c.message != err.Error()
		c.waiting, c.message = "CreateContainerConfigError", err.Error()
		w.mu.Unlock()
		if changed {
			w.cfg.Log.Info("waiting for the container's configuration", "pod", w.pod.Name, "container", c.spec.Name, "err", err)
			w.markDirty()
		}
		retry.Reset(configRetry)
	}
}

// podForEnv is the pod with the status fields the downward API reads.
func (w *podWorker) podForEnv() *corev1.Pod {
	p := w.pod.DeepCopy()
	p.Status.PodIP, p.Status.PodIPs = w.ip.String(), []corev1.PodIP{{IP: w.ip.String()}}
	p.Status.HostIP, p.Status.HostIPs = hostIP, []corev1.HostIP{{IP: hostIP}}
	return p
}

// probeLoop runs probe p against container c after the probe's initial
// delay and then every period, handing each result to handle, until
// handle says to stop, c exits or the worker stops.
func (w *podWorker) probeLoop(ctx context.Context, c *container, p *corev1.Probe, handle func(err error) (stop bool)) {
	delay, period, timeout := probeTiming(p)
	timer := time.NewTimer(delay)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.killed:
			return
		case <-c.done:
			return
		case <-timer.C:
		}
		attempt, cancel := context.WithTimeout(ctx, timeout)
		err := w.prober.probeOnce(attempt, p, &c.spec)
		cancel()
		if handle(err) {
			return
		}
		timer.Reset(period)
	}
}

// startup runs c's startup probe until it passes, then marks c started.
// After failureThreshold failures in a row the pod fails and c is stopped:
// the kubelet would restart it, podrunner restarts nothing.
func (w *podWorker) startup(ctx context.Context, c *container, p *corev1.Probe) {
	limit := int(p.FailureThreshold)
	if limit < 1 {
		limit = 3
	}
	fails := 0
	w.probeLoop(ctx, c, p, func(err error) bool {
		if err == nil {
			w.mu.Lock()
			if c.spec.ReadinessProbe == nil {
				c.ready = true
			}
			w.mu.Unlock()
			close(c.started)
			w.cfg.Log.Info("started", "pod", w.pod.Name, "container", c.spec.Name)
			w.markDirty()
			return true
		}
		if fails++; fails >= limit {
			w.fail(c, fmt.Errorf("container %q: startup probe failed %d times: %w", c.spec.Name, fails, err))
			c.signal(syscall.SIGKILL)
			return true
		}
		return false
	})
}

// probe runs c's readiness probe, once its startup probe has passed, until
// the container exits or the worker stops.
func (w *podWorker) probe(ctx context.Context, c *container, p *corev1.Probe) {
	select {
	case <-c.started:
	case <-ctx.Done():
		return
	case <-w.killed:
		return
	case <-c.done:
		return
	}
	state := newReadiness(p)
	w.probeLoop(ctx, c, p, func(err error) bool {
		ready := state.observe(err)
		w.mu.Lock()
		changed := ready != c.ready && c.running()
		if changed {
			c.ready = ready
		}
		c.message = ""
		if err != nil {
			c.message = "readiness probe: " + err.Error()
		}
		w.mu.Unlock()
		if changed {
			w.cfg.Log.Info("readiness changed", "pod", w.pod.Name, "container", c.spec.Name, "ready", ready, "err", err)
			w.markDirty()
		}
		return false
	})
}

func (w *podWorker) markDirty() {
	select {
	case w.dirty <- struct{}{}:
	default:
	}
}

// stopGracefully does what the kubelet does when a pod is deleted: every
// container's preStop hook at once; then SIGTERM to the app containers,
// and to the sidecars in reverse order once every container after them has
// exited; SIGKILL to whatever still runs when the grace period ends (but
// no sooner than minStopWindow after its SIGTERM).
func (w *podWorker) stopGracefully(ctx context.Context, log interface {
	Info(string, ...any)
	Error(string, ...any)
}) {
	deadline := time.Now().Add(w.grace)
	hookCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var stops sync.WaitGroup
	for i, c := range w.containers {
		if c.done == nil {
			continue // never started
		}
		after := w.stopsBefore(i)
		stops.Go(func() {
			// As the kubelet, no hook without a grace period to run it in.
			if h := c.spec.Lifecycle; h != nil && h.PreStop != nil && w.grace > 0 {
				start := time.Now()
				err := w.runHook(hookCtx, c, h.PreStop)
				log.Info("preStop hook", "container", c.spec.Name, "took", time.Since(start), "err", err)
			}
			for _, other := range after {
				select {
				case <-other.done:
				case <-hookCtx.Done():
				case <-w.killed:
				}
			}
			killAt := max(time.Until(deadline), minStopWindow)
			log.Info("SIGTERM", "container", c.spec.Name)
			c.signal(syscall.SIGTERM)
			timer := time.NewTimer(killAt)
			defer timer.Stop()
			select {
			case <-c.done:
				return
			case <-timer.C:
				log.Info("SIGKILL: grace period over", "container", c.spec.Name)
			case <-w.killed:
			case <-ctx.Done():
			}
			c.signal(syscall.SIGKILL)
			<-c.done
		})
	}
	stops.Wait()
}

// stopsBefore returns the containers that must exit before container i
// gets its SIGTERM: none for an app container; for a sidecar, every app
// container and every sidecar declared after it.
func (w *podWorker) stopsBefore(i int) []*container {
	if !w.containers[i].sidecar {
		return nil
	}
	var after []*container
	for _, c := range w.containers[i+1:] {
		if !c.init && c.done != nil {
			after = append(after, c)
		}
	}
	return after
}

// runHook runs a preStop handler of container c: httpGet or sleep.
func (w *podWorker) runHook(ctx context.Context, c *container, h *corev1.LifecycleHandler) error {
	switch {
	case h.HTTPGet != nil:
		return w.prober.httpGet(ctx, h.HTTPGet, &c.spec)
	case h.Sleep != nil:
		t := time.NewTimer(time.Duration(h.Sleep.Seconds) * time.Second)
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	case h.Exec != nil:
		return fmt.Errorf("exec hooks are not supported by podrunner")
	}
	return fmt.Errorf("hook has no handler podrunner supports")
}

// killAll kills every container at once and waits for them to exit.
func (w *podWorker) killAll() {
	for _, c := range w.containers {
		if c.done != nil {
			c.signal(syscall.SIGKILL)
			<-c.done
		}
	}
}

// remove deletes the stopped pod from the apiserver, as the kubelet does
// once its containers are gone.
func (w *podWorker) remove(ctx context.Context, log interface{ Error(string, ...any) }) {
	zero := int64(0)
	err := w.cfg.Client.CoreV1().Pods(w.pod.Namespace).Delete(ctx, w.pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero,
		Preconditions:      &metav1.Preconditions{UID: &w.uid},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		log.Error("remove pod", "err", err)
	}
}

// report writes the pod's status to the apiserver (pods/status).
func (w *podWorker) report(ctx context.Context) {
	status := w.status()
	pods := w.cfg.Client.CoreV1().Pods(w.pod.Namespace)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := pods.Get(ctx, w.pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.UID != w.uid {
			return nil
		}
		cur.Status = status
		_, err = pods.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil && !apierrors.IsNotFound(err) && ctx.Err() == nil {
		w.cfg.Log.Error("report pod status", "pod", w.pod.Name, "err", err)
	}
}

// status is the pod's status as the kubelet would report it now.
func (w *podWorker) status() corev1.PodStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	ip := w.ip.String()
	st := corev1.PodStatus{
		Phase:     w.phase,
		Message:   w.message,
		HostIP:    hostIP,
		HostIPs:   []corev1.HostIP{{IP: hostIP}},
		PodIP:     ip,
		PodIPs:    []corev1.PodIP{{IP: ip}},
		StartTime: &w.startTime,
		QOSClass:  w.pod.Status.QOSClass,
	}
	ready := true
	var unready []string
	for _, c := range w.containers {
		cs := w.containerStatus(c)
		if c.init || c.sidecar {
			st.InitContainerStatuses = append(st.InitContainerStatuses, cs)
		} else {
			st.ContainerStatuses = append(st.ContainerStatuses, cs)
		}
		if !c.init && !cs.Ready {
			ready = false
			why := c.spec.Name
			if c.message != "" {
				why += " (" + c.message + ")"
			}
			unready = append(unready, why)
		}
	}
	msg := ""
	if !ready {
		msg = "containers with unready status: " + strings.Join(unready, ", ")
	}
	st.Conditions = []corev1.PodCondition{
		w.condition(corev1.PodScheduled, true, ""),
		w.condition(corev1.PodInitialized, w.initialized, ""),
		w.condition(corev1.ContainersReady, ready, msg),
		w.condition(corev1.PodReady, ready, msg),
	}
	return st
}

// condition builds a pod condition, keeping its transition time while
// its status stays the same.
func (w *podWorker) condition(typ corev1.PodConditionType, ok bool, msg string) corev1.PodCondition {
	status := corev1.ConditionFalse
	if ok {
		status = corev1.ConditionTrue
	}
	prev, seen := w.transitions[typ]
	if !seen || prev.status != status {
		prev = condition{status: status, since: metav1.Now()}
		w.transitions[typ] = prev
	}
	return corev1.PodCondition{Type: typ, Status: status, LastTransitionTime: prev.since, Message: msg}
}

func (w *podWorker) containerStatus(c *container) corev1.ContainerStatus {
	started := c.done != nil && c.running() && isClosed(c.started)
	cs := corev1.ContainerStatus{
		Name:    c.spec.Name,
		Image:   c.spec.Image,
		ImageID: "podrunner://" + c.spec.Image,
		Ready:   c.ready,
		Started: &started,
	}
	switch {
	case c.done == nil:
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: c.waiting, Message: c.message}
	case c.running():
		cs.ContainerID = "podrunner://" + strconv.Itoa(c.cmd.Process.Pid)
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(c.startedAt)}
	default:
		reason := "Completed"
		if c.exitCode != 0 {
			reason = "Error"
		}
		cs.ContainerID = "podrunner://" + strconv.Itoa(c.cmd.Process.Pid)
		cs.State.Terminated = &corev1.ContainerStateTerminated{
			ExitCode: int32(c.exitCode), Reason: reason,
			StartedAt: metav1.NewTime(c.startedAt), FinishedAt: metav1.NewTime(c.finishedAt),
		}
	}
	return cs
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
