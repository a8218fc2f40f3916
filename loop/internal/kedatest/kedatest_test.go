package kedatest

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/outrider-sidecar/outrider/internal/consultest"
	"github.com/outrider-sidecar/outrider/internal/promtest"
	"github.com/outrider-sidecar/outrider/loop/internal/kubetest"
)

// rateQuery is the trigger's query: the request rate of all echo pods.
// The window is 15s, not the usual 1m, so that the rate falls to 0
// within seconds of the load stopping; Prometheus scrapes every second.
const rateQuery = `sum(rate(outrider_http_requests_total{service="echo"}[15s]))`

// TestScaledObjectScalesDeployment runs the whole metrics path of the
// scaling loop on real servers: a counter that the test drives, scraped by
// a real Prometheus, read by KEDA's prometheus scaler through the
// ScaledObject, served by KEDA's metrics adapter as an external metric to
// the real HorizontalPodAutoscaler controller, which scales the
// Deployment. 350 requests/s against a target of 100 per replica is 4
// replicas; no requests is minReplicaCount, 1.
func TestScaledObjectScalesDeployment(t *testing.T) {
	cp := kubetest.Start(t)
	Start(t, cp)
	client := cp.Client()
	const ns = "kedatest"
	cp.Namespace(ns)

	requests := newCounter(350)
	app := httptest.NewServer(requests)
	t.Cleanup(app.Close)
	prom := promtest.Start(t, promtest.Config{ScrapeConfigs: fmt.Sprintf(`
scrape_configs:
  - job_name: echo
    static_configs:
      - targets: [%q]
`, strings.TrimPrefix(app.URL, "http://"))})
	// The ScaledObject goes in once Prometheus sees the rate, so that the
	// first thing the HPA sees is the load, not an empty answer.
	prom.WaitFor(t, time.Minute, rateQuery, func(s []promtest.Sample) bool {
		return len(s) == 1 && math.Abs(s[0].Value-350) < 10
	})

	ctx := context.Background()
	labels := map[string]string{"app": "echo"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: new(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				// No kubelet runs: the pods stay Pending. What the HPA
				// changes is the Deployment's spec.replicas.
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "echo", Image: "example.test/echo"}}},
			},
		},
	}
	if _, err := client.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create deployment: %v", err)
	}
	so := scaledObject(t, ns, prom.URL)
	dyn, err := dynamic.NewForConfig(cp.Config())
	if err != nil {
		t.Fatal(err)
	}
	created := time.Now()
	if _, err := dyn.Resource(ScaledObjects).Namespace(ns).Create(ctx, so, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create ScaledObject: %v", err)
	}

	replicas := &replicaLog{}
	waitReplicas := func(want int32, limit time.Duration) {
		t.Helper()
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, limit, true, func(ctx context.Context) (bool, error) {
			d, err := client.AppsV1().Deployments(ns).Get(ctx, "echo", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			replicas.add(*d.Spec.Replicas)
			return *d.Spec.Replicas == want, nil
		})
		if err != nil {
			t.Fatalf("Deployment echo: spec.replicas never %d within %s (seen %v): %v\n%s",
				want, limit, replicas.seen(), err, hpaState(ctx, client, ns))
		}
	}
	hpaName := "keda-hpa-echo"
	var hpa *autoscalingv2.HorizontalPodAutoscaler
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		hpa, err = client.AutoscalingV2().HorizontalPodAutoscalers(ns).Get(ctx, hpaName, metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("KEDA made no HorizontalPodAutoscaler %s within a minute: %v", hpaName, err)
	}
	t.Logf("HPA %s made %s after the ScaledObject", hpaName, time.Since(created).Round(time.Millisecond))
	if got := hpa.Spec.ScaleTargetRef.Name; got != "echo" {
		t.Errorf("HPA scale target = %q, want echo", got)
	}
	if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas != 1 || hpa.Spec.MaxReplicas != 5 {
		t.Errorf("HPA min/max = %v/%d, want 1/5", hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas)
	}
	if len(hpa.Spec.Metrics) != 1 || hpa.Spec.Metrics[0].External == nil {
		t.Fatalf("HPA metrics = %+v, want one external metric", hpa.Spec.Metrics)
	}

	waitReplicas(4, 2*time.Minute)
	t.Logf("Deployment at 4 replicas %s after the ScaledObject", time.Since(created).Round(time.Millisecond))
	// The HPA reports an AverageValue external metric per replica: the
	// total KEDA served is that times the replicas it divided by.
	waitHPAMetric(t, client, ns, hpaName, 4, 350, 35)
	if got := slices.Max(replicas.seen()); got != 4 {
		t.Errorf("Deployment replicas seen %v, want at most 4 (350/s at 100/s each)", replicas.seen())
	}
	// The apiserver serves the adapter's answer itself, as the HPA
	// controller reads it.
	if got := externalMetric(t, cp, ns, "s0-prometheus", "scaledobject.keda.sh/name=echo"); math.Abs(got-350) > 35 {
		t.Errorf("external metric s0-prometheus through the apiserver = %.2f, want 350 ± 35", got)
	}
	if err := conditionOf(ctx, dyn, ns, "echo", "Ready"); err != nil {
		t.Errorf("ScaledObject: %v", err)
	}

	requests.setRate(0)
	stopped := time.Now()
	waitReplicas(1, 2*time.Minute)
	t.Logf("Deployment back at 1 replica %s after the load stopped; spec.replicas went %v",
		time.Since(stopped).Round(time.Millisecond), replicas.seen())
	waitHPAMetric(t, client, ns, hpaName, 1, 0, 0.5)
}

// scaledObject is the ScaledObject of the test: a prometheus trigger on
// the echo request rate, 100 requests/s per replica, 1 to 5 replicas, a
// 5 s scale-down stabilisation.
func scaledObject(t *testing.T, ns, prometheusURL string) *unstructured.Unstructured {
	t.Helper()
	doc := fmt.Sprintf(`
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: echo
  namespace: %s
spec:
  scaleTargetRef:
    name: echo
  minReplicaCount: 1
  maxReplicaCount: 5
  pollingInterval: 2
  advanced:
    horizontalPodAutoscalerConfig:
      behavior:
        scaleDown:
          stabilizationWindowSeconds: 5
          policies:
            - type: Percent
              value: 100
              periodSeconds: 5
  triggers:
    - type: prometheus
      metricType: AverageValue
      metadata:
        serverAddress: %s
        query: '%s'
        threshold: "100"
`, ns, prometheusURL, rateQuery)
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &obj.Object); err != nil {
		t.Fatalf("parse ScaledObject: %v", err)
	}
	return obj
}

// waitHPAMetric waits until the HPA's status shows replicas current
// replicas and its external metric at want (± tolerance) in total: the
// per-replica average times the replicas it was divided by.
func waitHPAMetric(t *testing.T, client kubernetes.Interface, ns, name string, replicas int32, want, tolerance float64) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		hpa, err := client.AutoscalingV2().HorizontalPodAutoscalers(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		last = fmt.Sprintf("%+v", hpa.Status)
		if len(hpa.Status.CurrentMetrics) != 1 {
			return false, nil
		}
		ext := hpa.Status.CurrentMetrics[0].External
		if ext == nil || ext.Current.AverageValue == nil {
			return false, nil
		}
		total := ext.Current.AverageValue.AsApproximateFloat64() * float64(hpa.Status.CurrentReplicas)
		last = fmt.Sprintf("%s: average %s x %d replicas = %.2f", ext.Metric.Name, ext.Current.AverageValue, hpa.Status.CurrentReplicas, total)
		return hpa.Status.CurrentReplicas == replicas && math.Abs(total-want) <= tolerance, nil
	})
	if err != nil {
		t.Fatalf("HPA %s: never %d replicas with its external metric at %.1f ± %.1f within a minute; last: %s",
			name, replicas, want, tolerance, last)
	}
	t.Logf("HPA %s status: %s", name, last)
}

// externalMetric reads one external metric through the apiserver's
// external.metrics.k8s.io API (the aggregated adapter) and returns the sum
// of its values.
func externalMetric(t *testing.T, cp *kubetest.ControlPlane, ns, name, selector string) float64 {
	t.Helper()
	body, err := cp.Client().Discovery().RESTClient().Get().
		AbsPath("/apis/external.metrics.k8s.io/v1beta1/namespaces", ns, name).
		Param("labelSelector", selector).DoRaw(context.Background())
	if err != nil {
		t.Fatalf("GET external metric %s/%s: %v: %s", ns, name, err, body)
	}
	// The fields of k8s.io/metrics' ExternalMetricValueList this reads.
	var list struct {
		Items []struct {
			Value resource.Quantity `json:"value"`
		} `json:"items"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatalf("decode external metric %s/%s: %v: %s", ns, name, err, body)
	}
	var sum float64
	for _, item := range list.Items {
		sum += item.Value.AsApproximateFloat64()
	}
	return sum
}

// conditionOf is nil when the ScaledObject has condition typ True.
func conditionOf(ctx context.Context, dyn dynamic.Interface, ns, name, typ string) error {
	so, err := dyn.Resource(ScaledObjects).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	return conditionTrue(so, typ)
}

// hpaState describes the HPAs of ns for a failure message.
func hpaState(ctx context.Context, client kubernetes.Interface, ns string) string {
	list, err := client.AutoscalingV2().HorizontalPodAutoscalers(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return "list HPAs: " + err.Error()
	}
	var b strings.Builder
	for _, h := range list.Items {
		fmt.Fprintf(&b, "HPA %s: current %d desired %d metrics %+v\n", h.Name, h.Status.CurrentReplicas, h.Status.DesiredReplicas, h.Status.CurrentMetrics)
		for _, c := range h.Status.Conditions {
			fmt.Fprintf(&b, "  %s=%s %s: %s\n", c.Type, c.Status, c.Reason, c.Message)
		}
	}
	return b.String()
}

// counter serves outrider_http_requests_total{service="echo"} growing at
// a rate the test sets, as outrider's proxy would under that load.
type counter struct {
	mu    sync.Mutex
	base  float64 // the value at since
	rate  float64 // per second, from since on
	since time.Time
}

func newCounter(rate float64) *counter { return &counter{rate: rate, since: time.Now()} }

func (c *counter) setRate(rate float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	c.base += c.rate * now.Sub(c.since).Seconds()
	c.rate, c.since = rate, now
}

func (c *counter) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	c.mu.Lock()
	v := c.base + c.rate*time.Since(c.since).Seconds()
	c.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprintf(w, "# TYPE outrider_http_requests_total counter\noutrider_http_requests_total{service=\"echo\"} %g\n", v)
}

// replicaLog keeps the distinct spec.replicas values seen, in order.
type replicaLog struct{ values []int32 }

func (r *replicaLog) add(n int32) {
	if len(r.values) == 0 || r.values[len(r.values)-1] != n {
		r.values = append(r.values, n)
	}
}

func (r *replicaLog) seen() []int32 { return r.values }

func TestReadCRDs(t *testing.T) {
	root, err := consultest.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := moduleDir(context.Background(), filepath.Join(root, "tools", "keda"))
	if err != nil {
		t.Fatal(err)
	}
	crds, err := readCRDs(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range crds {
		names = append(names, c.GetName())
	}
	slices.Sort(names)
	want := []string{
		"cloudeventsources.eventing.keda.sh", "clustercloudeventsources.eventing.keda.sh",
		"clustertriggerauthentications.keda.sh", "scaledjobs.keda.sh",
		"scaledobjects.keda.sh", "triggerauthentications.keda.sh",
	}
	if !slices.Equal(names, want) {
		t.Errorf("CRDs = %v, want %v", names, want)
	}
	// KEDA's patch bounds the ScaledObject's scale-down stabilisation.
	for _, c := range crds {
		if c.GetName() != "scaledobjects.keda.sh" {
			continue
		}
		versions, _, _ := unstructured.NestedSlice(c.Object, "spec", "versions")
		max, found, err := unstructured.NestedFieldNoCopy(versions[0].(map[string]any), "schema", "openAPIV3Schema",
			"properties", "spec", "properties", "advanced", "properties", "horizontalPodAutoscalerConfig",
			"properties", "behavior", "properties", "scaleDown", "properties", "stabilizationWindowSeconds", "maximum")
		if !found || err != nil || fmt.Sprint(max) != "3600" {
			t.Errorf("scaledobjects.keda.sh stabilizationWindowSeconds maximum = %v (found %v, %v), want 3600 from KEDA's patch", max, found, err)
		}
	}
}

func TestReadCRDsBadInput(t *testing.T) {
	crd := func(name string) string {
		return "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: " + name + "\nspec: {}\n"
	}
	tests := []struct {
		name    string
		files   map[string]string
		wantErr string
	}{
		{name: "no kustomization", files: map[string]string{},
			wantErr: "read KEDA's CRD kustomization"},
		{name: "no resources", files: map[string]string{"kustomization.yaml": "resources: []\n"},
			wantErr: "kustomization.yaml names no resources"},
		{name: "not a CRD", files: map[string]string{
			"kustomization.yaml": "resources: [a.yaml]\n",
			"a.yaml":             "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n",
		}, wantErr: `a.yaml is a "Service", want a CustomResourceDefinition`},
		{name: "patch for another CRD", files: map[string]string{
			"kustomization.yaml": "resources: [a.yaml]\npatches:\n- path: p.yaml\n  target:\n    kind: CustomResourceDefinition\n    name: b.keda.sh\n",
			"a.yaml":             crd("a.keda.sh"),
			"p.yaml":             "- op: remove\n  path: /spec\n",
		}, wantErr: `patch p.yaml targets CustomResourceDefinition "b.keda.sh", not one of its CRDs`},
		{name: "patch that does not apply", files: map[string]string{
			"kustomization.yaml": "resources: [a.yaml]\npatches:\n- path: p.yaml\n  target:\n    kind: CustomResourceDefinition\n    name: a.keda.sh\n",
			"a.yaml":             crd("a.keda.sh"),
			"p.yaml":             "- op: remove\n  path: /spec/nothing\n",
		}, wantErr: "p.yaml to CRD a.keda.sh"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			crdDir := filepath.Join(dir, "config", "crd")
			if err := os.MkdirAll(crdDir, 0o755); err != nil {
				t.Fatal(err)
			}
			for name, content := range tt.files {
				if err := os.WriteFile(filepath.Join(crdDir, name), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			_, err := readCRDs(dir)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("readCRDs error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestModuleDirNotDownloaded(t *testing.T) {
	dir := t.TempDir()
	gomod := "module example.test/tools\n\ngo 1.26\n\nrequire " + kedaModule + " v2.0.0-not-downloaded\n"
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(gomod), 0o644); err != nil {
		t.Fatal(err)
	}
	// An empty module cache: go list cannot find the source.
	t.Setenv("GOMODCACHE", t.TempDir())
	t.Setenv("GOPROXY", "off")
	_, err := moduleDir(context.Background(), dir)
	if want := "find KEDA's module source (run `make keda`, which downloads it)"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("moduleDir with an empty module cache: error = %v, want one containing %q", err, want)
	}
}
