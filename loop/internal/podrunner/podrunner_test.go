package podrunner_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/outrider-sidecar/outrider/internal/testbin"
	"github.com/outrider-sidecar/outrider/internal/testlog"
	"github.com/outrider-sidecar/outrider/loop/internal/kubetest"
	"github.com/outrider-sidecar/outrider/loop/internal/podrunner"
)

const ns = "podrunner"

// env is a control plane with a podrunner for namespace ns, and the images
// the tests' pods use: example.test/echo is bin/echo, example.test/sidecar
// is the test binary playing sidecar (see TestMain).
type env struct {
	client  kubernetes.Interface
	runner  *podrunner.Runner
	records string // directory of the sidecars' RECORD files
}

func start(t *testing.T) *env {
	t.Helper()
	cp := kubetest.Start(t)
	cp.Namespace(ns)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var logs testlog.Buffer
	runner, err := podrunner.New(podrunner.Config{
		Client:    cp.Client(),
		Namespace: ns,
		Images: map[string]podrunner.Image{
			"example.test/echo":    {Entrypoint: []string{testbin.Echo(t)}},
			"example.test/sidecar": {Entrypoint: []string{self}, Env: []string{"PODRUNNER_TEST_SIDECAR=1"}},
		},
		Dir: t.TempDir(),
		Log: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runner.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("runner: %v", err)
		}
		if t.Failed() {
			t.Logf("podrunner log:\n%s", logs.String())
		}
	})
	return &env{client: cp.Client(), runner: runner, records: t.TempDir()}
}

// podSpec is echo behind the trivial sidecar: the sidecar is a native
// sidecar (an init container with restartPolicy Always), the app's preStop
// hook calls the sidecar, as outrider's manifests do.
func (e *env) podSpec(grace int64, sidecarEnv ...corev1.EnvVar) corev1.PodSpec {
	always := corev1.ContainerRestartPolicyAlways
	fieldEnv := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	httpGet := func(path string, port intstr.IntOrString) corev1.ProbeHandler {
		return corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: port}}
	}
	return corev1.PodSpec{
		TerminationGracePeriodSeconds: &grace,
		InitContainers: []corev1.Container{{
			Name:          "sidecar",
			Image:         "example.test/sidecar",
			RestartPolicy: &always,
			Env: append([]corev1.EnvVar{
				fieldEnv("POD_NAME", "metadata.name"),
				fieldEnv("POD_IP", "status.podIP"),
				fieldEnv("NODE_NAME", "spec.nodeName"),
				{Name: "LISTEN", Value: "$(POD_IP):15000"},
				{Name: "APP_ADDR", Value: "$(POD_IP):8080"},
				{Name: "RECORD", Value: filepath.Join(e.records, "$(POD_NAME)")},
			}, sidecarEnv...),
			ReadinessProbe: &corev1.Probe{ProbeHandler: httpGet("/ready", intstr.FromInt32(15000)), PeriodSeconds: 1},
		}},
		Containers: []corev1.Container{{
			Name:           "app",
			Image:          "example.test/echo",
			Env:            []corev1.EnvVar{fieldEnv("POD_IP", "status.podIP"), {Name: "ECHO_LISTEN", Value: "$(POD_IP):8080"}},
			Ports:          []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
			ReadinessProbe: &corev1.Probe{ProbeHandler: httpGet("/healthz", intstr.FromString("http")), PeriodSeconds: 1},
			Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{
				HTTPGet: &corev1.HTTPGetAction{Path: "/prestop", Port: intstr.FromInt32(15000)},
			}},
		}},
	}
}

// record returns the lines the sidecar of pod wrote.
func (e *env) record(t *testing.T, pod string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.records, pod))
	if err != nil {
		t.Fatalf("sidecar record of %s: %v", pod, err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func poll(t *testing.T, limit time.Duration, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, limit, true, cond)
	if err != nil {
		t.Fatalf("waiting %s for %s: %v", limit, what, err)
	}
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// TestDeploymentScalesDownInSidecarOrder runs a Deployment of two echo
// pods with a native sidecar, then scales it to one: the removed pod's
// preStop hook reaches the sidecar while the app still serves, the app
// stops on SIGTERM, and only then does the sidecar get its SIGTERM.
func TestDeploymentScalesDownInSidecarOrder(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	labels := map[string]string{"app": "echo"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: new(int32(2)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: e.podSpec(10)},
		},
	}
	deps := e.client.AppsV1().Deployments(ns)
	if _, err := deps.Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create deployment: %v", err)
	}
	poll(t, 2*time.Minute, "2 ready replicas", func(ctx context.Context) (bool, error) {
		d, err := deps.Get(ctx, "echo", metav1.GetOptions{})
		return err == nil && d.Status.ReadyReplicas == 2, err
	})

	pods, err := e.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=echo"})
	if err != nil || len(pods.Items) != 2 {
		t.Fatalf("list pods: %d pods, err %v; want 2", len(pods.Items), err)
	}
	seen := map[string]bool{}
	for _, p := range pods.Items {
		ip := net.ParseIP(p.Status.PodIP)
		if ip == nil || !ip.IsLoopback() || ip.To4()[2] == 0 || seen[ip.String()] {
			t.Errorf("pod %s has IP %q, want its own loopback address outside 127.0.0.0/24 (the host's)", p.Name, p.Status.PodIP)
		}
		seen[p.Status.PodIP] = true
		if !ready(&p) || p.Spec.NodeName != "podrunner" {
			t.Errorf("pod %s: ready %t on node %q, want ready on podrunner", p.Name, ready(&p), p.Spec.NodeName)
		}
		want := "start pod=" + p.Name + " ip=" + p.Status.PodIP + " node=podrunner"
		if got := e.record(t, p.Name); got[0] != want {
			t.Errorf("sidecar of %s started with %q, want %q (downward API and $(VAR) expansion)", p.Name, got[0], want)
		}
		resp, err := http.Get("http://" + net.JoinHostPort(p.Status.PodIP, "8080") + "/")
		if err != nil {
			t.Fatalf("GET pod %s: %v", p.Name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), `"service":"echo"`) {
			t.Errorf("pod %s answered %q, want echo's body", p.Name, body)
		}
	}

	scale, err := deps.GetScale(ctx, "echo", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get scale: %v", err)
	}
	scale.Spec.Replicas = 1
	if _, err := deps.UpdateScale(ctx, "echo", scale, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("scale to 1: %v", err)
	}
	var left []corev1.Pod
	poll(t, time.Minute, "one pod left", func(ctx context.Context) (bool, error) {
		list, err := e.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=echo"})
		if err != nil {
			return false, err
		}
		left = list.Items
		return len(left) == 1, nil
	})
	removed := pods.Items[0]
	if removed.Name == left[0].Name {
		removed = pods.Items[1]
	}
	want := []string{
		"start pod=" + removed.Name + " ip=" + removed.Status.PodIP + " node=podrunner",
		"prestop app=up",
		"sigterm app=down",
		"exit",
	}
	if got := e.record(t, removed.Name); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("the removed pod's sidecar saw\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if b, _ := os.ReadFile(e.runner.LogFile(removed.Name, "app")); !strings.Contains(string(b), "echo stopped") {
		t.Errorf("the removed pod's app did not stop on SIGTERM; its log:\n%s", b)
	}
	if got := e.record(t, left[0].Name); len(got) != 1 {
		t.Errorf("the remaining pod's sidecar saw %q, want only its start", got)
	}
}

// TestGracePeriodEndsInSIGKILL deletes a pod whose sidecar ignores SIGTERM:
// it is killed when terminationGracePeriodSeconds has passed, not before,
// and the pod is then removed.
func TestGracePeriodEndsInSIGKILL(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "stubborn", Namespace: ns},
		Spec:       e.podSpec(3, corev1.EnvVar{Name: "IGNORE_TERM", Value: "1"}),
	}
	pods := e.client.CoreV1().Pods(ns)
	if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod: %v", err)
	}
	poll(t, time.Minute, "the pod to be ready", func(ctx context.Context) (bool, error) {
		p, err := pods.Get(ctx, "stubborn", metav1.GetOptions{})
		return err == nil && ready(p), err
	})
	deleted := time.Now()
	if err := pods.Delete(ctx, "stubborn", metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete pod: %v", err)
	}
	poll(t, time.Minute, "the pod to be removed", func(ctx context.Context) (bool, error) {
		_, err := pods.Get(ctx, "stubborn", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if took := time.Since(deleted); took < 3*time.Second {
		t.Errorf("pod removed %s after deletion, want no sooner than its 3s grace period", took)
	}
	want := []string{"prestop app=up", "sigterm app=down"}
	if got := e.record(t, "stubborn"); strings.Join(got[1:], "\n") != strings.Join(want, "\n") {
		t.Errorf("the sidecar saw %q, want %q and no exit (SIGKILL)", got, want)
	}
}

// TestReadinessFollowsTheProbe turns the app's health check off and on:
// the pod's Ready condition follows its readiness probe, and says why it
// is not ready.
func TestReadinessFollowsTheProbe(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	pods := e.client.CoreV1().Pods(ns)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "flaky", Namespace: ns}, Spec: e.podSpec(5)}
	if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod: %v", err)
	}
	var ip string
	waitReady := func(want bool, why string) *corev1.Pod {
		t.Helper()
		var p *corev1.Pod
		poll(t, time.Minute, why, func(ctx context.Context) (bool, error) {
			var err error
			p, err = pods.Get(ctx, "flaky", metav1.GetOptions{})
			return err == nil && ready(p) == want, err
		})
		ip = p.Status.PodIP
		return p
	}
	setHealth := func(healthy string) {
		t.Helper()
		resp, err := http.Post("http://"+net.JoinHostPort(ip, "8080")+"/admin/health?healthy="+healthy, "", nil)
		if err != nil {
			t.Fatalf("set the app's health: %v", err)
		}
		resp.Body.Close()
	}
	waitReady(true, "the pod to be ready")
	setHealth("false")
	p := waitReady(false, "the pod to turn unready after 3 failed probes")
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && !strings.Contains(c.Message, "app (readiness probe: GET http://"+ip+":8080/healthz: 503") {
			t.Errorf("Ready condition message = %q, want the app's failed probe", c.Message)
		}
	}
	setHealth("true")
	waitReady(true, "the pod to be ready again")
}

// TestForcedDeletionSkipsPreStop deletes a pod with grace period 0, as
// `kubectl delete --force` does: as the kubelet, podrunner stops its
// containers without running the preStop hook, and its address stops
// answering.
func TestForcedDeletionSkipsPreStop(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	pods := e.client.CoreV1().Pods(ns)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "doomed", Namespace: ns}, Spec: e.podSpec(30)}
	if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod: %v", err)
	}
	var ip string
	poll(t, time.Minute, "the pod to be ready", func(ctx context.Context) (bool, error) {
		p, err := pods.Get(ctx, "doomed", metav1.GetOptions{})
		if err == nil {
			ip = p.Status.PodIP
		}
		return err == nil && ready(p), err
	})
	if err := pods.Delete(ctx, "doomed", metav1.DeleteOptions{GracePeriodSeconds: new(int64(0))}); err != nil {
		t.Fatalf("delete pod: %v", err)
	}
	// Well within the pod's 30 s grace period: grace 0 overrides it.
	poll(t, 10*time.Second, "the app and sidecar to stop answering", func(context.Context) (bool, error) {
		for _, port := range []string{"8080", "15000"} {
			conn, err := net.DialTimeout("tcp", net.JoinHostPort(ip, port), time.Second)
			if err == nil {
				conn.Close()
				return false, nil
			}
		}
		return true, nil
	})
	if got := e.record(t, "doomed"); slices.Contains(got, "prestop app=up") || slices.Contains(got, "prestop app=down") {
		t.Errorf("the sidecar saw %q, want no preStop call", got)
	}
}
