package podrunner

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"POD_IP": "127.0.1.7", "EMPTY": ""}
	tests := []struct{ name, in, want string }{
		{name: "reference", in: "$(POD_IP):8080", want: "127.0.1.7:8080"},
		{name: "twice", in: "$(POD_IP)-$(POD_IP)", want: "127.0.1.7-127.0.1.7"},
		{name: "empty value", in: "a$(EMPTY)b", want: "ab"},
		{name: "undefined stays", in: "$(NOPE):1", want: "$(NOPE):1"},
		{name: "escaped", in: "$$(POD_IP)", want: "$(POD_IP)"},
		{name: "double dollar", in: "a$$b", want: "a$b"},
		{name: "lone dollar", in: "cost $5 $", want: "cost $5 $"},
		{name: "unclosed", in: "$(POD_IP", want: "$(POD_IP"},
		{name: "empty name", in: "$()", want: "$()"},
		{name: "shell syntax untouched", in: "${POD_IP} $POD_IP", want: "${POD_IP} $POD_IP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := expand(tt.in, vars); got != tt.want {
				t.Errorf("expand(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestContainerEnv(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "web-1", Namespace: "shop", UID: "u-1",
			Labels:      map[string]string{"app": "web"},
			Annotations: map[string]string{"team": "a"},
		},
		Spec:   corev1.PodSpec{NodeName: "podrunner", ServiceAccountName: "default"},
		Status: corev1.PodStatus{PodIP: "127.0.1.3", PodIPs: []corev1.PodIP{{IP: "127.0.1.3"}}, HostIP: "127.0.0.1"},
	}
	client := fake.NewClientset(
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "admin", Namespace: "shop"}, Data: map[string][]byte{"token": []byte("s3cret")}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: "shop"}, Data: map[string]string{"LEVEL": "debug", "MODE": "x"}},
	)
	field := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	yes := true
	c := &corev1.Container{
		Name:    "app",
		EnvFrom: []corev1.EnvFromSource{{Prefix: "CFG_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
		Env: []corev1.EnvVar{
			field("POD_NAME", "metadata.name"),
			field("POD_NAMESPACE", "metadata.namespace"),
			field("POD_UID", "metadata.uid"),
			field("POD_IP", "status.podIP"),
			field("POD_IPS", "status.podIPs"),
			field("HOST_IP", "status.hostIP"),
			field("NODE", "spec.nodeName"),
			field("SA", "spec.serviceAccountName"),
			field("APP", "metadata.labels['app']"),
			field("TEAM", "metadata.annotations['team']"),
			{Name: "LISTEN", Value: "$(POD_IP):15000"},
			{Name: "LATER", Value: "$(DEFINED_LATER)"},
			{Name: "DEFINED_LATER", Value: "x"},
			{Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "admin"}, Key: "token"}}},
			{Name: "MISSING_OK", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Key: "k", Optional: &yes}}},
			{Name: "IMAGE_VAR", Value: "overridden"},
		},
	}
	env, err := containerEnv(context.Background(), client, pod, c, []string{"PATH=/bin", "IMAGE_VAR=image"})
	if err != nil {
		t.Fatal(err)
	}
	got := envMap(env)
	want := map[string]string{
		"PATH": "/bin", "HOSTNAME": "web-1", "IMAGE_VAR": "overridden",
		"CFG_LEVEL": "debug", "CFG_MODE": "x",
		"POD_NAME": "web-1", "POD_NAMESPACE": "shop", "POD_UID": "u-1", "POD_IP": "127.0.1.3",
		"POD_IPS": "127.0.1.3", "HOST_IP": "127.0.0.1", "NODE": "podrunner", "SA": "default",
		"APP": "web", "TEAM": "a", "LISTEN": "127.0.1.3:15000",
		"LATER": "$(DEFINED_LATER)", "DEFINED_LATER": "x", "TOKEN": "s3cret", "MISSING_OK": "",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("env has %d variables, want %d: %q", len(got), len(want), env)
	}
}

func TestContainerEnvErrors(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "shop"}}
	tests := []struct {
		name    string
		env     corev1.EnvVar
		wantErr string
	}{
		{name: "unsupported field",
			env:     corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.hostname"}}},
			wantErr: `container "app" env X: fieldPath "spec.hostname" is not supported by podrunner`},
		{name: "missing secret",
			env: corev1.EnvVar{Name: "T", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "admin"}, Key: "token"}}},
			wantErr: `container "app" env T: secret "admin"`},
		{name: "resource field",
			env:     corev1.EnvVar{Name: "CPU", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu"}}},
			wantErr: `container "app" env CPU: resourceFieldRef "limits.cpu" is not supported by podrunner`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &corev1.Container{Name: "app", Env: []corev1.EnvVar{tt.env}}
			_, err := containerEnv(context.Background(), fake.NewClientset(), pod, c, nil)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestArgv(t *testing.T) {
	img := Image{Entrypoint: []string{"/bin/echo-app", "-v"}, Cmd: []string{"serve"}}
	env := map[string]string{"PORT": "8080"}
	tests := []struct {
		name          string
		command, args []string
		want          string
	}{
		{name: "image only", want: "/bin/echo-app -v serve"},
		{name: "args replace CMD", args: []string{"listen", "$(PORT)"}, want: "/bin/echo-app -v listen 8080"},
		{name: "command replaces both", command: []string{"/bin/sh", "-c"}, want: "/bin/sh -c"},
		{name: "command and args", command: []string{"/bin/sh"}, args: []string{"-c", "echo $(PORT)"}, want: "/bin/sh -c echo 8080"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := argv(img, &corev1.Container{Name: "c", Command: tt.command, Args: tt.args}, env)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, " ") != tt.want {
				t.Errorf("argv = %q, want %q", got, tt.want)
			}
		})
	}
	if _, err := argv(Image{}, &corev1.Container{Name: "c"}, env); err == nil {
		t.Errorf("argv with no program: no error")
	}
}

func TestReadinessThresholds(t *testing.T) {
	fail := errors.New("refused")
	tests := []struct {
		name             string
		success, failure int32
		results          []error
		want             []bool
	}{
		{name: "defaults", results: []error{nil, fail, fail, fail, nil},
			want: []bool{true, true, true, false, true}},
		{name: "two to pass", success: 2, failure: 1, results: []error{nil, nil, fail, nil, nil},
			want: []bool{false, true, false, false, true}},
		{name: "a pass resets failures", failure: 2, results: []error{nil, fail, nil, fail, fail},
			want: []bool{true, true, true, true, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newReadiness(&corev1.Probe{SuccessThreshold: tt.success, FailureThreshold: tt.failure})
			for i, res := range tt.results {
				if got := r.observe(res); got != tt.want[i] {
					t.Errorf("after result %d (%v): ready = %t, want %t", i, res, got, tt.want[i])
				}
			}
		})
	}
}

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
	w := newPodWorker(Config{Client: fake.NewClientset(pod), Dir: t.TempDir(), Log: slog.New(slog.DiscardHandler)}, pod, net.IPv4(127, 0, 1, 9))
	w.startAll(context.Background(), w.cfg.Log)
	st := w.status()
	if st.Phase != corev1.PodFailed || !strings.Contains(st.Message, `image "example.test/unknown" is not in podrunner's image table`) {
		t.Errorf("pod phase %s message %q, want Failed naming the image", st.Phase, st.Message)
	}
	if cs := st.ContainerStatuses[0]; cs.State.Waiting == nil || cs.State.Waiting.Reason != "ErrImagePull" {
		t.Errorf("container state = %+v, want waiting with ErrImagePull", cs.State)
	}
	if st.PodIP != "127.0.1.9" {
		t.Errorf("podIP = %q, want 127.0.1.9", st.PodIP)
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
			w := newPodWorker(cfg, pod, net.IPv4(127, 0, 1, 9))
			defer w.goroutines.Wait()
			defer w.killAll()
			w.startAll(context.Background(), cfg.Log)
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
