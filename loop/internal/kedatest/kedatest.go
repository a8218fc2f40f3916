// Package kedatest runs KEDA for a test against a kubetest control plane:
// its CustomResourceDefinitions from KEDA's own module source, and its
// operator and metrics adapter as processes on loopback, from the binaries
// that `make keda` builds into bin/. The adapter serves the external
// metrics API to the apiserver through an APIService, so that the
// HorizontalPodAutoscaler KEDA makes for a ScaledObject scales for real.
package kedatest

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/outrider-sidecar/outrider/internal/consultest"
	"github.com/outrider-sidecar/outrider/loop/internal/kubetest"
	"github.com/outrider-sidecar/outrider/loop/internal/server"
)

const (
	// Namespace is where KEDA "runs": the operator and adapter's
	// POD_NAMESPACE, and the namespace of the adapter's Service.
	Namespace = "keda"
	// adapterService is the Service the APIService points at, the name
	// KEDA's own manifests give it.
	adapterService = "keda-metrics-apiserver"
	// apiServiceName is the name of the external metrics APIService.
	apiServiceName = "v1beta1.external.metrics.k8s.io"
)

var (
	crdResource        = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	apiServiceResource = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}
	// ScaledObjects is the resource of KEDA's ScaledObjects, for a
	// dynamic client.
	ScaledObjects = schema.GroupVersionResource{Group: "keda.sh", Version: "v1alpha1", Resource: "scaledobjects"}
)

// KEDA is KEDA's operator and metrics adapter, running for one test.
type KEDA struct {
	t        testing.TB
	cp       *kubetest.ControlPlane
	dynamic  dynamic.Interface
	dir      string
	operator *server.Process
	adapter  *server.Process
}

// Start applies KEDA's CRDs to the control plane, runs the operator and
// the metrics adapter, registers the adapter as the external metrics API
// and waits until the apiserver reports that API available. Everything
// stops when the test ends, before the control plane does (kubetest.Start
// was called first, so its cleanup runs after this one). It fails the test
// (never skips it) when a binary or KEDA's module source is missing.
func Start(t testing.TB, cp *kubetest.ControlPlane) *KEDA {
	t.Helper()
	started := time.Now()
	operatorBin, adapterBin := Binary(t, "keda-operator"), Binary(t, "keda-adapter")
	root, err := consultest.ModuleRoot()
	if err != nil {
		t.Fatalf("kedatest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	src, err := moduleDir(ctx, filepath.Join(root, "tools", "keda"))
	if err != nil {
		t.Fatalf("kedatest: %v", err)
	}
	crds, err := readCRDs(src)
	if err != nil {
		t.Fatalf("kedatest: %v", err)
	}
	dyn, err := dynamic.NewForConfig(cp.Config())
	if err != nil {
		t.Fatalf("kedatest: dynamic client: %v", err)
	}
	k := &KEDA{t: t, cp: cp, dynamic: dyn, dir: t.TempDir()}
	t.Cleanup(k.stop)

	if err := k.applyCRDs(ctx, crds); err != nil {
		t.Fatalf("kedatest: %v", err)
	}
	cp.Namespace(Namespace)

	certDir := filepath.Join(k.dir, "certs")
	caDir := filepath.Join(k.dir, "ca") // scalers' extra CAs: none
	for _, d := range []string{certDir, caDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatalf("kedatest: %v", err)
		}
	}
	caPEM, err := writeCerts(certDir, []string{
		adapterService + "." + Namespace + ".svc",
		"keda-operator." + Namespace + ".svc",
	})
	if err != nil {
		t.Fatalf("kedatest: %v", err)
	}

	ports := consultest.FreePorts(t, 4)
	cfg := setup{
		kubeconfig:  cp.Kubeconfig,
		certDir:     certDir,
		caDir:       caDir,
		grpc:        "127.0.0.1:" + strconv.Itoa(ports[0]),
		probe:       "127.0.0.1:" + strconv.Itoa(ports[1]),
		adapterPort: ports[2],
		metricsPort: ports[3],
	}
	// KEDA's processes find their namespace as a pod would, and watch
	// every namespace. Without KEDA_CLUSTER_OBJECT_NAMESPACE the operator
	// reads its namespace from a pod's service-account volume, and exits.
	env := []string{"POD_NAMESPACE=" + Namespace, "WATCH_NAMESPACE=", "KEDA_CLUSTER_OBJECT_NAMESPACE=" + Namespace}

	k.operator = k.start("keda-operator", operatorBin, operatorArgs(cfg), env)
	k.waitFor("keda-operator /readyz", func(ctx context.Context) error {
		return httpOK(ctx, &http.Client{}, "http://"+cfg.probe+"/readyz")
	})
	k.adapter = k.start("keda-adapter", adapterBin, adapterArgs(cfg), env)
	if err := k.registerAdapter(ctx, cfg.adapterPort, caPEM); err != nil {
		t.Fatalf("kedatest: %v", err)
	}
	k.waitFor("APIService "+apiServiceName+" Available", k.apiServiceAvailable)
	t.Logf("kedatest: KEDA ready in %s", time.Since(started).Round(time.Millisecond))
	return k
}

// setup is the files and loopback addresses the two processes are
// started with.
type setup struct {
	kubeconfig, certDir, caDir string
	grpc, probe                string // host:port of the operator's gRPC service and health probes
	adapterPort, metricsPort   int    // the adapter's secure port and its Prometheus endpoint
}

func operatorArgs(a setup) []string {
	return []string{
		"--kubeconfig=" + a.kubeconfig,
		"--leader-elect=false",
		"--metrics-service-bind-address=" + a.grpc,
		"--health-probe-bind-address=" + a.probe,
		"--metrics-bind-address=0", // no Prometheus endpoint of its own
		"--cert-dir=" + a.certDir,
		"--enable-cert-rotation=false",
		"--ca-dir=" + a.caDir,
		"--kube-api-qps=100", "--kube-api-burst=200",
		"--zap-encoder=console", "--zap-time-encoding=rfc3339nano", "--zap-log-level=info",
	}
}

func adapterArgs(a setup) []string {
	return []string{
		"--kubeconfig=" + a.kubeconfig,
		// Outside a pod each of these defaults to the in-cluster
		// configuration, which does not exist.
		"--lister-kubeconfig=" + a.kubeconfig,
		"--authentication-kubeconfig=" + a.kubeconfig,
		"--authorization-kubeconfig=" + a.kubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(a.adapterPort),
		"--tls-cert-file=" + filepath.Join(a.certDir, "tls.crt"),
		"--tls-private-key-file=" + filepath.Join(a.certDir, "tls.key"),
		// Where the gRPC client finds ca.crt, tls.crt and tls.key.
		"--cert-dir=" + a.certDir,
		"--metrics-service-address=" + a.grpc,
		// Its Prometheus endpoint has no bind-address flag: it listens on
		// all addresses of a free port.
		"--port=" + strconv.Itoa(a.metricsPort),
		"--profiling=false",
		"--kube-api-qps=100", "--kube-api-burst=200",
		"--zap-encoder=console", "--zap-time-encoding=rfc3339nano", "--zap-log-level=info",
	}
}

// Log returns the last n bytes of the operator's and of the adapter's log.
func (k *KEDA) Log(n int) string {
	var s string
	for _, p := range []*server.Process{k.operator, k.adapter} {
		if p != nil {
			s += fmt.Sprintf("%s log (tail):\n%s\n", p.Name, p.Tail(n))
		}
	}
	return s
}

// applyCRDs creates the CRDs and waits until each is Established.
func (k *KEDA) applyCRDs(ctx context.Context, crds []*unstructured.Unstructured) error {
	client := k.dynamic.Resource(crdResource)
	for _, crd := range crds {
		if _, err := client.Create(ctx, crd, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create CRD %s: %w", crd.GetName(), err)
		}
	}
	for _, crd := range crds {
		k.waitFor("CRD "+crd.GetName()+" Established", func(ctx context.Context) error {
			got, err := client.Get(ctx, crd.GetName(), metav1.GetOptions{})
			if err != nil {
				return err
			}
			return conditionTrue(got, "Established")
		})
	}
	return nil
}

// registerAdapter makes the adapter the external metrics API: a Service
// of type ExternalName "localhost" (the apiserver refuses loopback
// endpoint IPs, but not a name that resolves to one) and an APIService on
// the adapter's port that trusts KEDA's CA for the Service's name.
func (k *KEDA) registerAdapter(ctx context.Context, port int, caPEM []byte) error {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: adapterService, Namespace: Namespace},
		Spec: corev1.ServiceSpec{
			Type:         corev1.ServiceTypeExternalName,
			ExternalName: "localhost",
			Ports:        []corev1.ServicePort{{Name: "https", Port: int32(port)}},
		},
	}
	if _, err := k.cp.Client().CoreV1().Services(Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create Service %s/%s: %w", Namespace, adapterService, err)
	}
	apiService := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1",
		"kind":       "APIService",
		"metadata":   map[string]any{"name": apiServiceName},
		"spec": map[string]any{
			"group":                "external.metrics.k8s.io",
			"version":              "v1beta1",
			"groupPriorityMinimum": int64(100),
			"versionPriority":      int64(100),
			"caBundle":             base64.StdEncoding.EncodeToString(caPEM),
			"service": map[string]any{
				"namespace": Namespace,
				"name":      adapterService,
				"port":      int64(port),
			},
		},
	}}
	if _, err := k.dynamic.Resource(apiServiceResource).Create(ctx, apiService, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create APIService %s: %w", apiServiceName, err)
	}
	return nil
}

// apiServiceAvailable is nil once the apiserver reports the external
// metrics APIService Available, i.e. it reached the adapter.
func (k *KEDA) apiServiceAvailable(ctx context.Context) error {
	got, err := k.dynamic.Resource(apiServiceResource).Get(ctx, apiServiceName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	return conditionTrue(got, "Available")
}

func (k *KEDA) start(name, bin string, args, env []string) *server.Process {
	k.t.Helper()
	p, err := server.Start(name, bin, args, env, filepath.Join(k.dir, name+".log"))
	if err != nil {
		k.t.Fatalf("kedatest: %v", err)
	}
	return p
}

// waitFor polls check until it succeeds, failing the test when a KEDA
// server exits or two minutes pass.
func (k *KEDA) waitFor(what string, check func(ctx context.Context) error) {
	k.t.Helper()
	const limit = 2 * time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	var last error
	for {
		for _, p := range []*server.Process{k.operator, k.adapter} {
			if p == nil {
				continue
			}
			if done, err := p.Exited(); done {
				k.t.Fatalf("kedatest: %s exited (%v) while waiting for %s; log:\n%s", p.Name, err, what, p.Tail(4000))
			}
		}
		attempt, cancelAttempt := context.WithTimeout(ctx, 5*time.Second)
		last = check(attempt)
		cancelAttempt()
		if last == nil {
			return
		}
		select {
		case <-ctx.Done():
			k.t.Fatalf("kedatest: %s not ready after %s: %v\n%s", what, limit, last, k.Log(3000))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stop removes the APIService (so the control plane's discovery stops
// asking a server that is going away), then stops the adapter and the
// operator.
func (k *KEDA) stop() {
	started := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err := k.dynamic.Resource(apiServiceResource).Delete(ctx, apiServiceName, metav1.DeleteOptions{})
	cancel()
	if err != nil && !apierrors.IsNotFound(err) {
		k.t.Logf("kedatest: delete APIService %s: %v", apiServiceName, err)
	}
	for _, p := range []*server.Process{k.adapter, k.operator} {
		if p == nil {
			continue
		}
		if err := p.Stop(10 * time.Second); err != nil {
			k.t.Logf("kedatest: %v", err)
		}
	}
	k.t.Logf("kedatest: KEDA stopped in %s", time.Since(started).Round(time.Millisecond))
	if k.t.Failed() {
		k.t.Log(k.Log(4000))
	}
}

// conditionTrue is nil when obj's status has the condition typ with status
// "True", else an error with the condition's reason and message.
func conditionTrue(obj *unstructured.Unstructured, typ string) error {
	conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if !ok || m["type"] != typ {
			continue
		}
		if m["status"] == "True" {
			return nil
		}
		return fmt.Errorf("%s %s: %s=%v: %v: %v", obj.GetKind(), obj.GetName(), typ, m["status"], m["reason"], m["message"])
	}
	return fmt.Errorf("%s %s has no %s condition yet", obj.GetKind(), obj.GetName(), typ)
}

func httpOK(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// binaries are the servers this package runs, by name.
var binaries = map[string]server.Binary{
	"keda-operator": {Name: "keda-operator", EnvVar: "OUTRIDER_KEDA_OPERATOR_BIN", Make: "keda"},
	"keda-adapter":  {Name: "keda-adapter", EnvVar: "OUTRIDER_KEDA_ADAPTER_BIN", Make: "keda"},
}

// Binary finds a KEDA binary: the environment variable named in the
// error, else bin/<name> in outrider's module root, else <name> on PATH.
// It fails the test when none is.
func Binary(t testing.TB, name string) string {
	t.Helper()
	b, ok := binaries[name]
	if !ok {
		t.Fatalf("kedatest: no binary named %q", name)
	}
	return b.Path(t)
}
