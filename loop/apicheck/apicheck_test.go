package apicheck_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"github.com/outrider-sidecar/outrider/inject"
	"github.com/outrider-sidecar/outrider/loop/internal/kubetest"
	"github.com/outrider-sidecar/outrider/loop/scaleloop"
)

const namespace = "apicheck"

// TestAgainstAPIServer sends what outrider ships for Kubernetes to a real
// kube-apiserver as dry-run creates: every object of the kustomizations
// without a custom resource (the KEDA overlay is applied by the scaling
// loop's test) and of inject's golden outputs must be accepted, inject
// must refuse a pod with pod-level resources exactly when the API server
// would refuse it with the sidecar in, and the workloads of inputs, as
// users write them, must be injected into objects it accepts.
func TestAgainstAPIServer(t *testing.T) {
	cp := kubetest.Start(t)
	cp.Namespace(namespace)
	create := dryRunCreator(t, cp.Config())

	t.Run("kustomizations", func(t *testing.T) { testKustomizations(t, create) })
	t.Run("inject golden", func(t *testing.T) { testGolden(t, create) })
	t.Run("inject pod-level resources", func(t *testing.T) { testPodResources(t, create) })
	t.Run("inject inputs", func(t *testing.T) { testInputs(t, create) })
}

func testKustomizations(t *testing.T, create func(*unstructured.Unstructured) error) {
	for _, dir := range []string{"base", "overlays/classic-sidecar"} {
		objs, err := scaleloop.Render(filepath.Join("../../deploy/k8s", dir))
		if err != nil {
			t.Fatal(err)
		}
		if len(objs) < 5 {
			t.Errorf("deploy/k8s/%s renders %d objects, want the app's five at least", dir, len(objs))
		}
		for _, obj := range objs {
			if err := create(obj); err != nil {
				t.Errorf("deploy/k8s/%s: %s %s: the API server refuses it: %v", dir, obj.GetKind(), obj.GetName(), err)
			}
		}
	}
}

func testGolden(t *testing.T, create func(*unstructured.Unstructured) error) {
	files, err := filepath.Glob("../../inject/testdata/*.golden.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files of inject (%v)", err)
	}
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for i, obj := range decode(t, raw) {
			if err := create(obj); err != nil {
				t.Errorf("%s: document %d, %s %s: the API server refuses it: %v",
					filepath.Base(file), i+1, obj.GetKind(), obj.GetName(), err)
			}
		}
	}
}

func testPodResources(t *testing.T, create func(*unstructured.Unstructured) error) {
	for _, tc := range []struct {
		name string
		// spec is the pod's spec as YAML flow mappings, without the
		// sidecar; inject adds it.
		pod, app, init, native string
	}{
		{name: "room for the sidecar", pod: "{requests: {cpu: '1', memory: 1Gi}, limits: {memory: 2Gi}}", app: "{requests: {cpu: 500m, memory: 512Mi}}"},
		{name: "no container requests", pod: "{requests: {cpu: 100m, memory: 64Mi}, limits: {cpu: 200m, memory: 256Mi}}", app: "{}"},
		{name: "requests exactly the sum", pod: "{requests: {cpu: 150m}}", app: "{requests: {cpu: 100m}}"},
		{name: "requests one milli-CPU short", pod: "{requests: {cpu: 149m}}", app: "{requests: {cpu: 100m}}"},
		{name: "memory in other units", pod: "{requests: {memory: 0.5Gi}}", app: "{requests: {memory: 500Mi}}"},
		{name: "an app limit stands for its request", pod: "{limits: {cpu: 100m}}", app: "{limits: {cpu: 100m}}"},
		{name: "a pod limit below the sidecar's limit", pod: "{limits: {memory: 100Mi}}", app: "{}"},
		{name: "a pod limit below the sidecar's limit, classic sidecar", pod: "{limits: {memory: 100Mi}}", app: "{}", native: "false"},
		{name: "a pod limit at the sidecar's limit, classic sidecar", pod: "{limits: {memory: 128Mi}}", app: "{}", native: "false"},
		{name: "an init container asks more than the rest", pod: "{requests: {cpu: 300m}}", app: "{requests: {cpu: 100m}}", init: "{requests: {cpu: 300m}}"},
		{name: "an init container beside the sidecar", pod: "{requests: {cpu: 320m}}", app: "{requests: {cpu: 100m}}", init: "{requests: {cpu: 300m}}"},
		{name: "an init container beside the sidecar, enough", pod: "{requests: {cpu: 350m}}", app: "{requests: {cpu: 100m}}", init: "{requests: {cpu: 300m}}"},
		{name: "an init container before a classic sidecar", pod: "{requests: {cpu: 300m}}", app: "{requests: {cpu: 100m}}", init: "{requests: {cpu: 300m}}", native: "false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := podYAML(tc.pod, tc.app, tc.init, tc.native)
			_, injectErr := inject.Stream("pod.yaml", []byte(in), &bytes.Buffer{}, inject.Options{Rand: rand.Reader})

			// What the cluster would get with the sidecar in: inject the
			// pod without its pod-level resources, then put them back.
			var out bytes.Buffer
			if _, err := inject.Stream("pod.yaml", []byte(podYAML("", tc.app, tc.init, tc.native)), &out, inject.Options{Rand: rand.Reader}); err != nil {
				t.Fatalf("inject without pod-level resources: %v", err)
			}
			objs := decode(t, out.Bytes())
			var res map[string]any
			if err := yaml.Unmarshal([]byte(tc.pod), &res); err != nil {
				t.Fatal(err)
			}
			if err := unstructured.SetNestedField(objs[0].Object, res, "spec", "resources"); err != nil {
				t.Fatal(err)
			}
			apiErr := create(objs[0])

			switch {
			case injectErr != nil && apiErr == nil:
				t.Errorf("inject refuses a pod the API server accepts with the sidecar in: %v", injectErr)
			case injectErr == nil && apiErr != nil:
				t.Errorf("inject accepts a pod the API server refuses with the sidecar in: %v", apiErr)
			default:
				t.Logf("inject: %v; API server: %v", injectErr, apiErr)
			}
		})
	}
}

// podYAML is a pod to inject with pod-level resources pod (none if
// empty), an app container with resources app, an init container with
// resources init (none if empty), and outrider.io/native-sidecar set to
// native (unset if empty).
func podYAML(pod, app, init, native string) string {
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    outrider.io/inject: \"true\"\n")
	if native != "" {
		fmt.Fprintf(&b, "    outrider.io/native-sidecar: %q\n", native)
	}
	b.WriteString("spec:\n")
	if pod != "" {
		fmt.Fprintf(&b, "  resources: %s\n", pod)
	}
	if init != "" {
		fmt.Fprintf(&b, "  initContainers:\n    - name: setup\n      image: setup:1\n      resources: %s\n", init)
	}
	fmt.Fprintf(&b, "  containers:\n    - name: app\n      image: app:1\n      ports: [{containerPort: 8080}]\n      resources: %s\n", app)
	return b.String()
}

// decode reads every document of a YAML stream as an object.
func decode(t *testing.T, raw []byte) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("read a YAML document: %v", err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var m map[string]any
		if err := yaml.Unmarshal(doc, &m); err != nil {
			t.Fatalf("decode %q: %v", doc, err)
		}
		if m == nil {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

// dryRunCreator returns a function that creates an object in the test's
// namespace as a dry run with strict field validation: the API server
// defaults, admits and validates it, and stores nothing.
func dryRunCreator(t *testing.T, cfg *rest.Config) func(*unstructured.Unstructured) error {
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return func(o *unstructured.Unstructured) error {
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return err
		}
		var r dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			o.SetNamespace(namespace)
			r = dyn.Resource(m.Resource).Namespace(namespace)
		}
		_, err = r.Create(context.Background(), o, metav1.CreateOptions{
			DryRun:          []string{metav1.DryRunAll},
			FieldValidation: metav1.FieldValidationStrict,
		})
		return err
	}
}
