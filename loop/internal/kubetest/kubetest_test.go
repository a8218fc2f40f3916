package kubetest

import (
	"context"
	"os"
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
