package podrunner

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
)

// TestStopOrder checks the native-sidecar stop order: app containers stop
// first, each sidecar waits for the app containers and for the sidecars
// declared after it.
func TestStopOrder(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	pod := &corev1.Pod{Spec: corev1.PodSpec{
		InitContainers: []corev1.Container{
			{Name: "setup"},
			{Name: "proxy", RestartPolicy: &always},
			{Name: "outrider", RestartPolicy: &always},
		},
		Containers: []corev1.Container{{Name: "app"}, {Name: "worker"}},
	}}
	w := newPodWorker(Config{}, pod, nil)
	for _, c := range w.containers {
		c.done = make(chan struct{}) // started
	}
	want := map[string]string{"setup": "", "proxy": "outrider app worker", "outrider": "app worker", "app": "", "worker": ""}
	for i, c := range w.containers {
		var names []string
		for _, b := range w.stopsBefore(i) {
			names = append(names, b.spec.Name)
		}
		if got := strings.Join(names, " "); got != want[c.spec.Name] {
			t.Errorf("%s waits for %q, want %q", c.spec.Name, got, want[c.spec.Name])
		}
	}
}

// TestUnknownImageFailsThePod checks that a pod whose image is not in the
// table never runs, and says why in its status.
func TestUnknownImageFailsThePod(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "shop"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.test/unknown"}}},
	}
	ip := testPodIP(t, 9)
	w := newPodWorker(Config{Client: fake.NewClientset(pod), Dir: t.TempDir(), Log: slog.New(slog.DiscardHandler)}, pod, ip)
	startPod(t, w)
	st := w.status()
	if st.Phase != corev1.PodFailed || !strings.Contains(st.Message, `image "example.test/unknown" is not in podrunner's image table`) {
		t.Errorf("pod phase %s message %q, want Failed naming the image", st.Phase, st.Message)
	}
	if cs := st.ContainerStatuses[0]; cs.State.Waiting == nil || cs.State.Waiting.Reason != "ErrImagePull" {
		t.Errorf("container state = %+v, want waiting with ErrImagePull", cs.State)
	}
	if st.PodIP != ip.String() {
		t.Errorf("podIP = %q, want %s", st.PodIP, ip)
	}
}

// TestInitContainersRunToCompletionFirst checks that an init container
// runs to completion before the app starts, and that one failing fails the
// pod.
func TestInitContainersRunToCompletionFirst(t *testing.T) {
	tests := []struct {
		name        string
		initScript  string
		wantOrder   string
		wantPhase   corev1.PodPhase
		wantMessage string
	}{
		{name: "succeeds", initScript: "sleep 0.2; echo init >> order", wantOrder: "init\napp\n", wantPhase: corev1.PodRunning},
		{name: "fails", initScript: "echo init >> order; exit 3", wantOrder: "init\n", wantPhase: corev1.PodFailed,
			wantMessage: `init container "setup" exited with status 3`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "shop"},
				Spec: corev1.PodSpec{
					InitContainers: []corev1.Container{{Name: "setup", Image: "sh", Args: []string{tt.initScript}}},
					Containers:     []corev1.Container{{Name: "app", Image: "sh", Args: []string{"echo app >> order; exec sleep 60"}}},
				},
			}
			dir := t.TempDir()
			cfg := Config{
				Client: fake.NewClientset(pod), Dir: dir, Log: slog.New(slog.DiscardHandler),
				Images: map[string]Image{"sh": {Entrypoint: []string{"/bin/sh", "-c"}}},
			}
			w := newPodWorker(cfg, pod, testPodIP(t, 9))
			defer w.goroutines.Wait()
			defer w.killAll()
			startPod(t, w)
			st := w.status()
			if st.Phase != tt.wantPhase || !strings.Contains(st.Message, tt.wantMessage) {
				t.Errorf("phase %s message %q, want %s with %q", st.Phase, st.Message, tt.wantPhase, tt.wantMessage)
			}
			// The app's line is written once it runs; poll for it.
			var got []byte
			_ = wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
				got, _ = os.ReadFile(filepath.Join(dir, "p", "order"))
				return string(got) == tt.wantOrder, nil
			})
			if string(got) != tt.wantOrder {
				t.Errorf("containers ran in order %q, want %q", got, tt.wantOrder)
			}
		})
	}
}

// TestSidecarStartupProbeGatesTheApp checks the native-sidecar start order:
// the app starts only once the sidecar's startup probe has passed, and a
// sidecar that never passes it fails the pod.
func TestSidecarStartupProbeGatesTheApp(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		listen    string // the sidecar's port, on the pod's address; the probe checks 15000
		wantPhase corev1.PodPhase
		wantApp   string // the app's first record line, "" if it never starts
	}{
		{name: "passes", listen: "15000", wantPhase: corev1.PodRunning, wantApp: "start app=up"},
		{name: "never passes", listen: "15999", wantPhase: corev1.PodFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			ip := testPodIP(t, 9)
			at := func(port string) string { return net.JoinHostPort(ip.String(), port) }
			always := corev1.ContainerRestartPolicyAlways
			env := func(kv ...string) []corev1.EnvVar {
				var out []corev1.EnvVar
				for i := 0; i < len(kv); i += 2 {
					out = append(out, corev1.EnvVar{Name: kv[i], Value: kv[i+1]})
				}
				return out
			}
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "shop"},
				Spec: corev1.PodSpec{
					InitContainers: []corev1.Container{{
						Name: "gate", Image: "helper", RestartPolicy: &always,
						Env: env("LISTEN", at(tt.listen), "START_DELAY", "1s", "RECORD", filepath.Join(dir, "gate")),
						StartupProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(15000)}},
							PeriodSeconds: 1, FailureThreshold: 3,
						},
					}},
					Containers: []corev1.Container{{
						Name: "app", Image: "helper",
						Env: env("LISTEN", at("8080"), "APP_ADDR", at("15000"), "CHECK_AT_START", "1",
							"RECORD", filepath.Join(dir, "app")),
					}},
				},
			}
			cfg := Config{
				Client: fake.NewClientset(pod), Dir: dir, Log: slog.New(slog.DiscardHandler),
				Images: map[string]Image{"helper": {Entrypoint: []string{self}, Env: []string{"PODRUNNER_TEST_SIDECAR=1"}}},
			}
			w := newPodWorker(cfg, pod, ip)
			defer w.goroutines.Wait()
			defer w.killAll()
			startPod(t, w)
			if st := w.status(); st.Phase != tt.wantPhase {
				t.Fatalf("phase %s (%s), want %s", st.Phase, st.Message, tt.wantPhase)
			}
			var got string
			if tt.wantApp != "" {
				_ = wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
					b, _ := os.ReadFile(filepath.Join(dir, "app"))
					got = strings.TrimSpace(string(b))
					return got != "", nil
				})
			} else if b, err := os.ReadFile(filepath.Join(dir, "app")); err == nil {
				got = string(b)
			}
			if got != tt.wantApp {
				t.Errorf("the app recorded %q at its start, want %q", got, tt.wantApp)
			}
		})
	}
}

// startPod opens w's network and starts its containers, as run does.
func startPod(t *testing.T, w *podWorker) {
	t.Helper()
	t.Cleanup(w.closeNetwork)
	if err := w.openNetwork(); err != nil {
		t.Fatal(err)
	}
	w.startAll(context.Background(), w.cfg.Log)
}

// TestPodsHaveTheirOwnNetwork runs two pods whose containers listen on the
// same ports, one of them on 127.0.0.1 only: each pod binds them in its own
// network namespace, its declared port answers at its own IP on the host,
// its loopback-only port does not, and the node's port of
// Config.HostPorts answers inside each pod at $(HOST_IP).
func TestPodsHaveTheirOwnNetwork(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	node, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	go func() {
		for {
			c, err := node.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	dir := t.TempDir()
	helper := func(name, listen string, extra ...corev1.EnvVar) corev1.Container {
		return corev1.Container{Name: name, Image: "helper", Env: append([]corev1.EnvVar{
			{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "LISTEN", Value: listen},
			{Name: "RECORD", Value: filepath.Join(dir, "$(POD_NAME)-"+name)},
		}, extra...)}
	}
	var ips []string
	block := testPodIP(t, 0)[2]
	for i, name := range []string{"a", "b"} {
		web := helper("web", ":15000",
			corev1.EnvVar{Name: "HOST_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.hostIP"}}},
			corev1.EnvVar{Name: "APP_ADDR", Value: "$(HOST_IP):8500"},
			corev1.EnvVar{Name: "CHECK_AT_START", Value: "1"})
		web.Ports = []corev1.ContainerPort{{ContainerPort: 15000}}
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{web, helper("local", "127.0.0.1:8080")}},
		}
		cfg := Config{
			Client: fake.NewClientset(pod), Dir: dir, Log: slog.New(slog.DiscardHandler),
			Images:    map[string]Image{"helper": {Entrypoint: []string{self}, Env: []string{"PODRUNNER_TEST_SIDECAR=1"}}},
			HostPorts: map[int]string{8500: node.Addr().String()},
		}
		ip := net.IPv4(127, 0, block, byte(201+i))
		ips = append(ips, ip.String())
		w := newPodWorker(cfg, pod, ip)
		defer w.goroutines.Wait()
		defer w.killAll()
		startPod(t, w)
		defer func() {
			if t.Failed() {
				st := w.status()
				for _, cs := range st.ContainerStatuses {
					log, _ := os.ReadFile(logFile(dir, pod.Name, cs.Name))
					t.Logf("pod %s container %s: %+v; log: %s", pod.Name, cs.Name, cs.State, log)
				}
			}
		}()
	}
	for _, name := range []string{"a", "b"} {
		for file, want := range map[string]string{name + "-web": "start app=up", name + "-local": "start pod=" + name} {
			var got string
			_ = wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
				b, _ := os.ReadFile(filepath.Join(dir, file))
				got = strings.TrimSpace(string(b))
				return got != "", nil
			})
			if !strings.HasPrefix(got, want) {
				t.Errorf("%s recorded %q, want %q", file, got, want)
			}
		}
	}
	for _, ip := range ips {
		var status string
		_ = wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
			resp, err := http.Get("http://" + net.JoinHostPort(ip, "15000") + "/ready")
			if err != nil {
				status = err.Error()
				return false, nil
			}
			resp.Body.Close()
			status = resp.Status
			return resp.StatusCode == http.StatusOK, nil
		})
		if status != "200 OK" {
			t.Errorf("GET %s:15000/ready from the host: %s, want 200 OK", ip, status)
		}
		if c, err := net.DialTimeout("tcp", net.JoinHostPort(ip, "8080"), time.Second); err == nil {
			c.Close()
			t.Errorf("the pod's loopback-only port answered at %s:8080 on the host", ip)
		}
	}
}

// TestRunnersClaimDifferentAddressBlocks checks that two runners on one
// host, such as two test packages that run pods at the same time, hand out
// addresses from different blocks.
func TestRunnersClaimDifferentAddressBlocks(t *testing.T) {
	a, lockA, err := claimAddressBlock()
	if err != nil {
		t.Fatal(err)
	}
	defer lockA.Close()
	b, lockB, err := claimAddressBlock()
	if err != nil {
		t.Fatal(err)
	}
	defer lockB.Close()
	if a == b {
		t.Fatalf("two runners both claimed 127.0.%d.0/24", a)
	}
	ipA, errA := newAddresses(a).take()
	ipB, errB := newAddresses(b).take()
	if errA != nil || errB != nil {
		t.Fatalf("take: %v, %v", errA, errB)
	}
	if want := fmt.Sprintf("127.0.%d.1", a); ipA.String() != want {
		t.Errorf("first address of block %d: %s, want %s", a, ipA, want)
	}
	if ipA.Equal(ipB) {
		t.Errorf("both runners handed out %s", ipA)
	}
}

// TestAddressesAreNotReusedAtOnce checks that a freed pod address is
// handed out again only after every other free one.
func TestAddressesAreNotReusedAtOnce(t *testing.T) {
	a := newAddresses(1)
	take := func() string {
		ip, err := a.take()
		if err != nil {
			t.Fatal(err)
		}
		return ip.String()
	}
	first, second := take(), take()
	a.give(net.ParseIP(first))
	if got := take(); got != "127.0.1.3" {
		t.Errorf("after %s and %s, with %s given back, took %s, want 127.0.1.3", first, second, first, got)
	}
	for range 251 {
		take()
	}
	if got := take(); got != first {
		t.Errorf("the last free address: took %s, want %s", got, first)
	}
	if _, err := a.take(); err == nil || !strings.Contains(err.Error(), "all 254 pod addresses") {
		t.Errorf("255th address: err %v, want all 254 in use", err)
	}
}

// TestContainerWaitsForItsConfigMap checks the kubelet's behaviour for a
// container whose ConfigMap does not exist yet: it waits, its status says
// CreateContainerConfigError and names the ConfigMap, and it starts once
// the ConfigMap is created.
func TestContainerWaitsForItsConfigMap(t *testing.T) {
	dir := t.TempDir()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "shop"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "app", Image: "sh",
			Command: []string{"/bin/sh", "-c", "echo \"$GREETING\" > " + filepath.Join(dir, "out") + "; exec sleep 60"},
			EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: "settings"},
			}}},
		}}},
	}
	client := fake.NewClientset(pod)
	cfg := Config{Client: client, Dir: dir, Log: slog.New(slog.DiscardHandler), Images: map[string]Image{"sh": {}}}
	w := newPodWorker(cfg, pod, testPodIP(t, 9))
	defer w.goroutines.Wait()
	defer w.killAll()
	t.Cleanup(w.closeNetwork)
	if err := w.openNetwork(); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	go func() {
		defer close(started)
		w.startAll(context.Background(), w.cfg.Log)
	}()

	var waiting *corev1.ContainerStateWaiting
	_ = wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		waiting = w.status().ContainerStatuses[0].State.Waiting
		return waiting != nil && waiting.Reason == "CreateContainerConfigError", nil
	})
	if waiting == nil || waiting.Reason != "CreateContainerConfigError" || !strings.Contains(waiting.Message, `configmap "settings"`) {
		t.Fatalf("container waiting %+v, want CreateContainerConfigError naming configmap \"settings\"", waiting)
	}
	if st := w.status(); st.Phase != corev1.PodPending {
		t.Errorf("phase %s while the ConfigMap is missing, want Pending", st.Phase)
	}

	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "settings", Namespace: "shop"}, Data: map[string]string{"GREETING": "hello"}}
	if _, err := client.CoreV1().ConfigMaps("shop").Create(context.Background(), cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	<-started
	var got []byte
	_ = wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		got, _ = os.ReadFile(filepath.Join(dir, "out"))
		return len(got) > 0, nil
	})
	if strings.TrimSpace(string(got)) != "hello" {
		t.Errorf("the container printed %q, want the ConfigMap's hello", got)
	}
	if st := w.status(); st.Phase != corev1.PodRunning {
		t.Errorf("phase %s once the ConfigMap exists, want Running", st.Phase)
	}
}

// testPodIP claims an address block for the test, as a runner claims one
// for its pods, and returns the block's address n. A fixed address could
// be that of another runner's pod on this host (another test run's), and
// the test would find its ports taken.
func testPodIP(t *testing.T, n byte) net.IP {
	t.Helper()
	block, lock, err := claimAddressBlock()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Close() })
	return net.IPv4(127, 0, block, n).To4()
}
