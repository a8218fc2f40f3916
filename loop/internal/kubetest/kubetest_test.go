package kubetest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// TestControlPlaneRunsControllers proves the control plane is real and
// complete enough for the scaling loop: the apiserver reports the version
// set by ldflags, the serviceaccount controller fills a new namespace, and
// the Deployment and ReplicaSet controllers turn a Deployment into pods.
func TestControlPlaneRunsControllers(t *testing.T) {
	cp := Start(t, WithHPASyncPeriod(2*time.Second), WithDownscaleStabilization(10*time.Second))
	client := cp.Client()
	v, err := client.Discovery().ServerVersion()
	if err != nil {
		t.Fatalf("server version: %v", err)
	}
	if v.GitVersion != "v1.37.2" || v.Major != "1" || v.Minor != "37" {
		t.Errorf("server version = %s (major %q minor %q), want v1.37.2 (1, 37): is the ldflags version set?", v.GitVersion, v.Major, v.Minor)
	}

	cp.Namespace("kubetest")
	ctx := context.Background()
	labels := map[string]string{"app": "web"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "kubetest"},
		Spec: appsv1.DeploymentSpec{
			Replicas: new(int32(2)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "example.test/web"}}},
			},
		},
	}
	if _, err := client.AppsV1().Deployments("kubetest").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create deployment: %v", err)
	}
	pods := &corev1.PodList{}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err = client.CoreV1().Pods("kubetest").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		return err == nil && len(pods.Items) == 2, err
	})
	if err != nil {
		t.Fatalf("waiting for the Deployment's 2 pods: %v (have %d)", err, len(pods.Items))
	}
	if sa := pods.Items[0].Spec.ServiceAccountName; sa != "default" {
		t.Errorf("pod service account = %q, want default (set by admission)", sa)
	}
	if b, err := os.ReadFile(cp.Kubeconfig); err != nil || !strings.Contains(string(b), cp.URL) {
		t.Errorf("kubeconfig %s does not name %s (err %v)", cp.Kubeconfig, cp.URL, err)
	}
}

func TestFindBinary(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	built := filepath.Join(root, "bin", "kube-apiserver")
	if err := os.WriteFile(built, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", t.TempDir())
	tests := []struct {
		name, binary, override string
		want, wantErr          string
	}{
		{name: "override", binary: "kube-apiserver", override: built, want: built},
		{name: "missing override", binary: "etcd", override: "/nonexistent/etcd",
			wantErr: "etcd binary from OUTRIDER_ETCD_BIN=/nonexistent/etcd"},
		{name: "bin of the module root", binary: "kube-apiserver", want: built},
		{name: "not built", binary: "kube-controller-manager",
			wantErr: "kube-controller-manager binary not found: run `make kube` (it builds bin/kube-controller-manager from tools/kube/go.mod), or set OUTRIDER_KUBE_CONTROLLER_MANAGER_BIN"},
		{name: "etcd not built", binary: "etcd",
			wantErr: "etcd binary not found: run `make etcd` (it builds bin/etcd from tools/etcd/go.mod), or set OUTRIDER_ETCD_BIN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := findBinary(tt.binary, tt.override, root)
			switch {
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("findBinary(%q) error = %v, want one containing %q", tt.binary, err, tt.wantErr)
				}
			case err != nil:
				t.Errorf("findBinary(%q): %v", tt.binary, err)
			case got != tt.want:
				t.Errorf("findBinary(%q) = %q, want %q", tt.binary, got, tt.want)
			}
		})
	}
}
