package inject

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	"go.yaml.in/yaml/v3"

	"github.com/outrider-sidecar/outrider/config"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.yaml from the injector's output")

// fixedRand makes the token of a first injection predictable.
func fixedRand() *strings.Reader { return strings.NewReader(strings.Repeat("k", 24*8)) }

func run(t *testing.T, name string, in []byte, opts Options) []byte {
	t.Helper()
	var out bytes.Buffer
	if _, err := Stream(name, in, &out, opts); err != nil {
		t.Fatalf("inject %s: %v", name, err)
	}
	return out.Bytes()
}

var goldenCases = []string{"deployment", "statefulset", "daemonset", "pod", "multi"}

func TestGolden(t *testing.T) {
	for _, name := range goldenCases {
		t.Run(name, func(t *testing.T) {
			in, err := os.ReadFile(filepath.Join("testdata", name+".in.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			got := run(t, name, in, Options{Rand: fixedRand()})
			golden := filepath.Join("testdata", name+".golden.yaml")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("inject %s differs from %s (go test ./inject -update rewrites it):\n%s", name, golden, got)
			}
		})
	}
}

// Injecting the output again changes nothing, and needs no new token: a
// token source that fails proves the first injection's token is kept.
func TestIdempotent(t *testing.T) {
	for _, name := range goldenCases {
		t.Run(name, func(t *testing.T) {
			once, err := os.ReadFile(filepath.Join("testdata", name+".golden.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			twice := run(t, name, once, Options{Rand: iotest.ErrReader(errors.New("a second injection asked for a new token"))})
			if !bytes.Equal(once, twice) {
				t.Errorf("injecting %s twice changed it:\n%s", name, twice)
			}
		})
	}
}

// Unannotated documents, and kinds without a long-lived pod, come back byte
// for byte.
func TestPassThrough(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("testdata", "plain.in.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	results, err := Stream("plain", in, &out, Options{Rand: fixedRand()})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), in) {
		t.Errorf("output differs from the input:\n%s", out.Bytes())
	}
	want := []Result{
		{Kind: "Deployment", Name: "plain", Reason: "no outrider.io/inject annotation"},
		{Kind: "Job", Name: "once", Reason: "kind Job is not injected (only Deployment, StatefulSet, DaemonSet, ReplicaSet, Pod and PodTemplate are, alone or as items of a List)"},
	}
	if !reflect.DeepEqual(results, want) {
		t.Errorf("results %+v, want %+v", results, want)
	}
}

// TestList checks that the items of a List, what `kubectl get -o yaml`
// prints for several objects, are injected one by one.
func TestList(t *testing.T) {
	in := []byte(`apiVersion: v1
kind: List
items:
  - apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: web
    spec:
      template:
        metadata:
          annotations:
            outrider.io/inject: "true"
        spec:
          containers:
            - name: web
              image: web:1
  - apiVersion: v1
    kind: ConfigMap
    metadata:
      name: settings
  - apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: plain
    spec:
      template:
        spec:
          containers:
            - name: plain
              image: plain:1
metadata:
  resourceVersion: ""
`)
	var out bytes.Buffer
	results, err := Stream("list", in, &out, Options{Rand: fixedRand()})
	if err != nil {
		t.Fatal(err)
	}
	want := []Result{
		{Kind: "Deployment", Name: "web", Injected: true},
		{Kind: "ConfigMap", Name: "settings", Reason: "kind ConfigMap is not injected (only Deployment, StatefulSet, DaemonSet, ReplicaSet, Pod and PodTemplate are, alone or as items of a List)"},
		{Kind: "Deployment", Name: "plain", Reason: "no outrider.io/inject annotation"},
	}
	if !reflect.DeepEqual(results, want) {
		t.Errorf("results %+v, want %+v", results, want)
	}
	var list struct {
		Kind  string
		Items []struct {
			Metadata struct{ Name string }
			Spec     struct {
				Template struct {
					Spec struct {
						Containers     []struct{ Name string }
						InitContainers []struct{ Name string } `yaml:"initContainers"`
					}
				}
			}
		}
	}
	if err := yaml.Unmarshal(out.Bytes(), &list); err != nil {
		t.Fatalf("output is not YAML: %v\n%s", err, out.String())
	}
	if list.Kind != "List" || len(list.Items) != 3 {
		t.Fatalf("output is not the list of 3:\n%s", out.String())
	}
	names := func(i int) (n []string) {
		tmpl := list.Items[i].Spec.Template.Spec
		for _, c := range append(tmpl.InitContainers, tmpl.Containers...) {
			n = append(n, c.Name)
		}
		return n
	}
	if got := names(0); !slices.Contains(got, "outrider") {
		t.Errorf("web's containers %v, want outrider among them", got)
	}
	if got := names(2); slices.Contains(got, "outrider") {
		t.Errorf("plain's containers %v, want no outrider", got)
	}
	if again := run(t, "list again", out.Bytes(), Options{Rand: fixedRand()}); !bytes.Equal(again, out.Bytes()) {
		t.Errorf("injecting the list twice changed it:\n%s", again)
	}
}

// TestWarnings checks what an injected pod is warned of: on the node's
// network, the sidecar's ports are the node's; an exec probe runs in the
// sidecar's image.
func TestWarnings(t *testing.T) {
	for _, tc := range []struct {
		name, annotations, spec string
		want                    string // a part of the one warning; "" for none
	}{
		{name: "pod network"},
		{name: "hostNetwork false", spec: "  hostNetwork: false\n"},
		{name: "hostNetwork", spec: "  hostNetwork: true\n", want: "15000, 15001 and 15090 are the node's"},
		{name: "http probe", annotations: "    outrider.io/probe: http://127.0.0.1:8080/healthz\n"},
		{name: "exec probe", annotations: "    outrider.io/probe: exec:/bin/check\n", want: "runs its command in the sidecar's container"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    outrider.io/inject: \"true\"\n" + tc.annotations + "spec:\n" + tc.spec +
				"  containers:\n    - name: app\n      image: app:1\n"
			var out bytes.Buffer
			results, err := Stream(tc.name, []byte(in), &out, Options{Rand: fixedRand()})
			if err != nil {
				t.Fatal(err)
			}
			if len(results) != 1 || !results[0].Injected {
				t.Fatalf("results %+v, want the pod injected", results)
			}
			warnings := results[0].Warnings
			if tc.want == "" && len(warnings) > 0 || tc.want != "" && (len(warnings) != 1 || !strings.Contains(warnings[0], tc.want)) {
				t.Errorf("warnings %q, want one with %q", warnings, tc.want)
			}
		})
	}
}

// --all injects what has no annotation, but never what says "false".
func TestAll(t *testing.T) {
	in := []byte(`apiVersion: v1
kind: Pod
metadata:
  name: a
spec:
  containers:
    - name: a
      image: a:1
---
apiVersion: v1
kind: Pod
metadata:
  name: b
  annotations:
    outrider.io/inject: "false"
spec:
  containers:
    - name: b
      image: b:1
`)
	var out bytes.Buffer
	results, err := Stream("all", in, &out, Options{All: true, AdminToken: "t0k"})
	if err != nil {
		t.Fatal(err)
	}
	if !results[0].Injected || results[1].Injected {
		t.Errorf("results %+v, want a injected and b not", results)
	}
	if !strings.Contains(out.String(), "Bearer t0k") {
		t.Errorf("--admin-token not used:\n%s", out.String())
	}
	if _, b, _ := strings.Cut(out.String(), "---\n"); !strings.HasPrefix(string(in[strings.Index(string(in), "---\n")+4:]), b) {
		t.Errorf("pod b changed:\n%s", b)
	}
}

func TestBadInput(t *testing.T) {
	pod := func(annotations, containers string) string {
		return "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    outrider.io/inject: \"true\"\n" + annotations +
			"spec:\n  containers:\n" + containers
	}
	app := "    - name: app\n      image: app:1\n"
	for _, tc := range []struct {
		name, in, want string
	}{
		{name: "not YAML", in: "kind: Pod\nmetadata: [\n", want: "bad.yaml: document 1: bad input: yaml: line 2: did not find expected node content"},
		{name: "bad YAML in the second document", in: "kind: ConfigMap\n---\nkind: Pod\n  name: x\n", want: "bad.yaml: document 2: bad input: yaml: line 4: mapping values are not allowed in this context"},
		{name: "not a mapping", in: "- a\n- b\n", want: "bad.yaml: document 1: bad input: not a Kubernetes object (a YAML mapping with kind and metadata)"},
		{name: "no pod spec", in: "kind: Deployment\nmetadata:\n  name: d\n  annotations: {outrider.io/inject: \"true\"}\nspec: {}\n", want: "bad.yaml: document 1: Deployment d: bad input: no pod spec"},
		{name: "no containers", in: pod("", "    []\n"), want: "bad.yaml: document 1: Pod p: bad input: the pod has no container besides outrider"},
		{name: "unknown app container", in: pod("    outrider.io/app-container: web\n", app), want: `bad.yaml: document 1: Pod p: bad input: annotation outrider.io/app-container: no container "web" (the pod has [app])`},
		{name: "bad port", in: pod("    outrider.io/app-port: http\n", app), want: `bad.yaml: document 1: Pod p: bad input: annotation outrider.io/app-port: "http" is not a port number (want 1-65535)`},
		{name: "only UDP ports", in: pod("", app+"      ports:\n        - {name: dns, containerPort: 53, protocol: UDP}\n"),
			want: "bad.yaml: document 1: Pod p: bad input: container app has no TCP port for outrider to front (its ports are UDP or SCTP); set outrider.io/app-port"},
		{name: "outrider's port", in: pod("    outrider.io/app-port: \"15001\"\n", app), want: "bad.yaml: document 1: Pod p: bad input: the app port 15001 is one of outrider's own (15000, 15001, 15090); set outrider.io/app-port"},
		{name: "outrider's port on another container", in: pod("", app+"    - name: istio-proxy\n      image: proxyv2:1\n      ports:\n        - name: http-envoy-prom\n          containerPort: 15090\n"),
			want: "bad.yaml: document 1: Pod p: bad input: container istio-proxy has port 15090, one of outrider's own (15000, 15001, 15090): both cannot listen on it in one pod"},
		{name: "outrider's port on an init container", in: pod("", app) + "  initContainers:\n    - name: agent\n      image: agent:1\n      restartPolicy: Always\n      ports: [{containerPort: 15000}]\n",
			want: "bad.yaml: document 1: Pod p: bad input: container agent has port 15000, one of outrider's own (15000, 15001, 15090): both cannot listen on it in one pod"},
		{name: "bad duration", in: pod("    outrider.io/drain-delay: five\n", app), want: `bad.yaml: document 1: Pod p: bad input: annotation outrider.io/drain-delay: "five" is not a duration (want e.g. 5s)`},
		{name: "service name too long", in: pod("    outrider.io/service-name: "+strings.Repeat("a", 254)+"\n", app), want: `bad.yaml: document 1: Pod p: bad input: annotation outrider.io/service-name: "` + strings.Repeat("a", 254) + `" is not a valid service name (want letters, digits, '-', '_' and '.', starting with a letter or digit, at most 253 characters)`},
		{name: "no service name to derive", in: "apiVersion: v1\nkind: Pod\nmetadata:\n  generateName: worker-\n  annotations:\n    outrider.io/inject: \"true\"\nspec:\n  containers:\n" + app,
			want: "bad.yaml: document 1: Pod worker-*: bad input: no service name: the pod has no label app.kubernetes.io/name or app and the object no name; set outrider.io/service-name"},
		{name: "bad service name", in: pod("    outrider.io/service-name: a/b\n", app), want: `bad.yaml: document 1: Pod p: bad input: annotation outrider.io/service-name: "a/b" is not a valid service name (want letters, digits, '-', '_' and '.', starting with a letter or digit, at most 253 characters)`},
		{name: "bad probe", in: pod("    outrider.io/probe: htp://127.0.0.1:8080/healthz\n", app),
			want: `bad.yaml: document 1: Pod p: bad input: annotation outrider.io/probe: "htp://127.0.0.1:8080/healthz" unknown scheme "htp" (want http, https, tcp, grpc or exec)`},
		{name: "bad probe, its password masked", in: pod("    outrider.io/probe: http://u:secret@/healthz\n", app),
			want: `bad.yaml: document 1: Pod p: bad input: annotation outrider.io/probe: "http://u:xxxxx@/healthz" http URL has no host (want e.g. http://127.0.0.1:8080/healthz)`},
		{name: "bad consul-token-secret", in: pod("    outrider.io/consul-token-secret: Consul_Token\n", app), want: `bad.yaml: document 1: Pod p: bad input: annotation outrider.io/consul-token-secret: "Consul_Token" is not a Secret name (want at most 253 lowercase letters, digits, '-' and '.', each part between dots starting and ending with a letter or digit)`},
		{name: "consul-token-secret with an empty part", in: pod("    outrider.io/consul-token-secret: tok..en\n", app), want: `bad.yaml: document 1: Pod p: bad input: annotation outrider.io/consul-token-secret: "tok..en" is not a Secret name (want at most 253 lowercase letters, digits, '-' and '.', each part between dots starting and ending with a letter or digit)`},
		{name: "consul-token-secret too long", in: pod("    outrider.io/consul-token-secret: "+strings.Repeat("a", 254)+"\n", app), want: `bad.yaml: document 1: Pod p: bad input: annotation outrider.io/consul-token-secret: "` + strings.Repeat("a", 254) + `" is not a Secret name (want at most 253 lowercase letters, digits, '-' and '.', each part between dots starting and ending with a letter or digit)`},
		{name: "bad native-sidecar", in: pod("    outrider.io/native-sidecar: maybe\n", app), want: `bad.yaml: document 1: Pod p: bad input: annotation outrider.io/native-sidecar: "maybe" is neither true nor false`},
		{name: "classic sidecar in a pod that runs to completion", in: pod("    outrider.io/native-sidecar: \"false\"\n", app) + "  restartPolicy: Never\n",
			want: `bad.yaml: document 1: Pod p: bad input: annotation outrider.io/native-sidecar: "false" with restartPolicy Never: outrider as a regular container never exits, so the pod would never complete (use the native sidecar, Kubernetes 1.29 or later, which stops when the app has exited)`},
		{name: "classic sidecar in a pod restarted on failure only", in: pod("    outrider.io/native-sidecar: \"false\"\n", app) + "  restartPolicy: OnFailure\n",
			want: `bad.yaml: document 1: Pod p: bad input: annotation outrider.io/native-sidecar: "false" with restartPolicy OnFailure: outrider as a regular container never exits, so the pod would never complete (use the native sidecar, Kubernetes 1.29 or later, which stops when the app has exited)`},
		{name: "bad runAsUser", in: pod("", app+"      securityContext: {runAsUser: nobody}\n"),
			want: `bad.yaml: document 1: Pod p: bad input: container app: securityContext.runAsUser "nobody" is not a user or group id (want a number from 0)`},
		{name: "mistyped inject", in: "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    outrider.io/inject: \"True\"\nspec:\n  containers:\n" + app,
			want: `bad.yaml: document 1: Pod p: bad input: annotation outrider.io/inject: "True" is neither true nor false (want "true" or "false", in lower case)`},
		{name: "a container of the user's named outrider", in: pod("", app+"    - name: outrider\n      image: my-helper:1\n"),
			want: "bad.yaml: document 1: Pod p: bad input: the pod has a container named outrider that outrider inject did not add (no outrider.io/injected annotation): rename that container, or remove it to have inject add the sidecar"},
		{name: "a hand-written sidecar", in: pod("", app) + "  initContainers:\n    - name: outrider\n      image: outrider:1\n      restartPolicy: Always\n      envFrom: [{configMapRef: {name: outrider-settings}}]\n",
			want: "bad.yaml: document 1: Pod p: bad input: the pod has a container named outrider that outrider inject did not add (no outrider.io/injected annotation): rename that container, or remove it to have inject add the sidecar"},
		{name: "aliases that expand without bound", in: pod("", app+aliasBomb(6)),
			want: "bad.yaml: document 1: Pod p: bad input: the aliases of the pod spec expand to more than 100000 nodes: write the values out, or alias fewer of them"},
		{name: "own preStop hook", in: pod("", app+"      lifecycle:\n        preStop:\n          exec:\n            command: [sleep, \"5\"]\n"),
			want: `bad.yaml: document 1: Pod p: bad input: container app already has a preStop hook; outrider's drain needs it (remove the hook, or set outrider.io/inject: "false")`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			_, err := Stream("bad.yaml", []byte(tc.in), &out, Options{Rand: fixedRand()})
			if err == nil || err.Error() != tc.want {
				t.Fatalf("got error %v\nwant %s", err, tc.want)
			}
			if !errors.Is(err, ErrBadInput) {
				t.Errorf("error %v is not ErrBadInput", err)
			}
			if out.Len() != 0 {
				t.Errorf("wrote %q despite the error", out.String())
			}
		})
	}
}

// aliasBomb is an app container's env whose aliases of aliases name 10ⁿ
// variables: a "billion laughs" document, small as written.
func aliasBomb(n int) string {
	var b strings.Builder
	b.WriteString("      env: &e\n        - &a0 {name: A, value: a}\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "        - &a%d [%s]\n", i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*a%d, ", i-1), 10), ", "))
	}
	return b.String()
}

func TestSplitDocumentsKeepsEveryByte(t *testing.T) {
	for _, in := range []string{"", "a: 1\n", "---\na: 1\n---\nb: 2", "a: 1\n--- # c\nb: 2\n---\n", "a: |\n  ---\n  x\n"} {
		docs := splitDocuments([]byte(in))
		if got := string(bytes.Join(docs, nil)); got != in {
			t.Errorf("split %q joined back to %q", in, got)
		}
	}
	if n := len(splitDocuments([]byte("a: 1\n---\nb: 2\n---\nc: 3\n"))); n != 3 {
		t.Errorf("got %d documents, want 3", n)
	}
}

// Changing an annotation and injecting again updates the sidecar in place:
// here it moves between the init containers and the containers.
func TestReinjectFollowsTheAnnotations(t *testing.T) {
	native, err := os.ReadFile(filepath.Join("testdata", "pod.golden.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	classicIn := bytes.Replace(native, []byte(`outrider.io/inject: "true"`), []byte(`outrider.io/inject: "true"`+"\n    outrider.io/native-sidecar: \"false\""), 1)
	classic := run(t, "classic", classicIn, Options{})
	if bytes.Contains(classic, []byte("initContainers:")) || bytes.Count(classic, []byte("- name: outrider\n")) != 1 || bytes.Contains(classic, []byte("restartPolicy")) {
		t.Fatalf("classic re-injection did not move the sidecar into the containers:\n%s", classic)
	}
	back := run(t, "native again", bytes.Replace(classic, []byte("outrider.io/native-sidecar: \"false\""), []byte("outrider.io/native-sidecar: \"true\""), 1), Options{})
	if !bytes.Contains(back, []byte("initContainers:\n    - name: outrider\n")) || bytes.Count(back, []byte("- name: outrider\n")) != 1 {
		t.Fatalf("native re-injection did not move the sidecar back:\n%s", back)
	}
	if !bytes.Contains(back, []byte("Bearer 6b6b")) {
		t.Errorf("re-injection changed the admin token:\n%s", back)
	}
}

// The metrics port is named metrics, as the kubernetes scrape job and the
// PodMonitor select it, unless another container has that name.
func TestMetricsPortName(t *testing.T) {
	for _, tc := range []struct {
		name, spec, want string
	}{
		{name: "no other metrics port", want: "metrics",
			spec: "containers:\n  - name: app\n    ports:\n      - name: http\n        containerPort: 8080\n"},
		{name: "the app's metrics port", want: "outrider-metric",
			spec: "containers:\n  - name: app\n    ports:\n      - name: metrics\n        containerPort: 9100\n"},
		{name: "another container's", want: "outrider-metric",
			spec: "containers:\n  - name: app\n  - name: shipper\n    ports:\n      - name: metrics\n        containerPort: 9100\n"},
		{name: "an init container's", want: "outrider-metric",
			spec: "initContainers:\n  - name: agent\n    restartPolicy: Always\n    ports:\n      - name: metrics\n        containerPort: 9100\ncontainers:\n  - name: app\n"},
		{name: "outrider's own, from an earlier injection", want: "metrics",
			spec: "initContainers:\n  - name: outrider\n    ports:\n      - name: metrics\n        containerPort: 15090\ncontainers:\n  - name: app\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var pod yaml.Node
			if err := yaml.Unmarshal([]byte(tc.spec), &pod); err != nil {
				t.Fatal(err)
			}
			if got := metricsPortNameIn(pod.Content[0]); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// The sidecar runs as the app container's user and group, so that it can
// read the app's /proc entries; nil is inherited from the pod.
func TestSidecarUser(t *testing.T) {
	const none = -1
	for _, tc := range []struct {
		name        string
		annotations string // under the pod's annotations
		pod         string // the pod's securityContext
		containers  string
		user, group int64
	}{
		{name: "nobody names a user", containers: "  - name: app\n", user: 65532, group: 65532},
		{name: "the pod's user", pod: "{runAsUser: 1000}", containers: "  - name: app\n", user: none, group: none},
		{name: "the pod's user and group", pod: "{runAsUser: 1000, runAsGroup: 3000}", containers: "  - name: app\n", user: none, group: none},
		{name: "the app's user and group", containers: "  - name: app\n    securityContext: {runAsUser: 1000, runAsGroup: 3000}\n", user: 1000, group: 3000},
		{name: "the app's user alone", containers: "  - name: app\n    securityContext: {runAsUser: 1000}\n", user: 1000, group: none},
		{name: "the app's group alone", containers: "  - name: app\n    securityContext: {runAsGroup: 3000}\n", user: 65532, group: 3000},
		{name: "the app's user over the pod's", pod: "{runAsUser: 2000, runAsGroup: 2000}",
			containers: "  - name: app\n    securityContext: {runAsUser: 1000}\n", user: 1000, group: none},
		{name: "the app's user, the pod's group", pod: "{runAsGroup: 3000}",
			containers: "  - name: app\n    securityContext: {runAsUser: 1000}\n", user: 1000, group: none},
		{name: "the pod's group alone", pod: "{runAsGroup: 3000}", containers: "  - name: app\n", user: 65532, group: none},
		{name: "the first container is the app", containers: "  - name: app\n    securityContext: {runAsUser: 1000}\n" +
			"  - name: shipper\n    securityContext: {runAsUser: 2000}\n", user: 1000, group: none},
		{name: "the annotation names the app", annotations: "    outrider.io/app-container: api\n",
			containers: "  - name: shipper\n    securityContext: {runAsUser: 2000, runAsGroup: 2000}\n" +
				"  - name: api\n    securityContext: {runAsUser: 1000, runAsGroup: 1000}\n", user: 1000, group: 1000},
		{name: "a root app is not followed", containers: "  - name: app\n    securityContext: {runAsUser: 0, runAsGroup: 0}\n", user: 65532, group: 65532},
		{name: "a root pod is not followed", pod: "{runAsUser: 0, runAsGroup: 0}", containers: "  - name: app\n", user: 65532, group: 65532},
		{name: "a root pod, the app's own user", pod: "{runAsUser: 0}",
			containers: "  - name: app\n    securityContext: {runAsUser: 1000}\n", user: 1000, group: none},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    outrider.io/inject: \"true\"\n" + tc.annotations + "spec:\n"
			if tc.pod != "" {
				in += "  securityContext: " + tc.pod + "\n"
			}
			in += "  containers:\n" + tc.containers
			var out struct {
				Spec struct {
					InitContainers []struct {
						Name            string
						SecurityContext struct {
							RunAsUser  *int64 `yaml:"runAsUser"`
							RunAsGroup *int64 `yaml:"runAsGroup"`
						} `yaml:"securityContext"`
					} `yaml:"initContainers"`
				}
			}
			if err := yaml.Unmarshal(run(t, tc.name, []byte(in), Options{Rand: fixedRand()}), &out); err != nil {
				t.Fatal(err)
			}
			if len(out.Spec.InitContainers) != 1 || out.Spec.InitContainers[0].Name != "outrider" {
				t.Fatalf("init containers %+v, want outrider alone", out.Spec.InitContainers)
			}
			sc := out.Spec.InitContainers[0].SecurityContext
			for _, id := range []struct {
				key  string
				got  *int64
				want int64
			}{{"runAsUser", sc.RunAsUser, tc.user}, {"runAsGroup", sc.RunAsGroup, tc.group}} {
				want := "it unset (the pod's)"
				if id.want != none {
					want = strconv.FormatInt(id.want, 10)
				}
				switch {
				case id.got == nil && id.want != none:
					t.Errorf("sidecar %s unset, want %s", id.key, want)
				case id.got != nil && *id.got != id.want:
					t.Errorf("sidecar %s %d, want %s", id.key, *id.got, want)
				}
			}
		})
	}
}

// Naming another app container and injecting again moves the preStop hook
// to it and keeps the token: the container that was the app keeps no hook
// of outrider's (its stale token would be refused, and it would stop
// without a drain).
func TestReinjectMovesThePreStopHook(t *testing.T) {
	in := []byte(`apiVersion: v1
kind: Pod
metadata:
  name: p
  annotations:
    outrider.io/inject: "true"
spec:
  containers:
    - name: web
      image: web:1
    - name: api
      image: api:1
`)
	once := run(t, "once", in, Options{Rand: fixedRand()})
	for _, tc := range []struct {
		name, annotation, hooked string
	}{
		{name: "the second container", annotation: "api", hooked: "api"},
		{name: "the first again", annotation: "web", hooked: "web"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			again := bytes.Replace(once, []byte(`outrider.io/inject: "true"`), []byte(`outrider.io/inject: "true"`+"\n    outrider.io/app-container: "+tc.annotation), 1)
			out := run(t, tc.name, again, Options{Rand: iotest.ErrReader(errors.New("a second injection asked for a new token"))})
			var pod struct {
				Spec struct {
					InitContainers []struct {
						Env []struct{ Name, Value string }
					} `yaml:"initContainers"`
					Containers []struct {
						Name      string
						Lifecycle struct {
							PreStop struct {
								HTTPGet struct {
									Headers []struct{ Name, Value string } `yaml:"httpHeaders"`
								} `yaml:"httpGet"`
							} `yaml:"preStop"`
						}
					}
				}
			}
			if err := yaml.Unmarshal(out, &pod); err != nil {
				t.Fatal(err)
			}
			token := ""
			for _, e := range pod.Spec.InitContainers[0].Env {
				if e.Name == "OUTRIDER_ADMIN_TOKEN" {
					token = e.Value
				}
			}
			for _, c := range pod.Spec.Containers {
				headers := c.Lifecycle.PreStop.HTTPGet.Headers
				switch {
				case c.Name == tc.hooked && (len(headers) != 1 || headers[0].Value != "Bearer "+token):
					t.Errorf("container %s: preStop headers %+v, want the sidecar's token %q", c.Name, headers, token)
				case c.Name != tc.hooked && len(headers) > 0:
					t.Errorf("container %s kept a preStop hook (headers %+v); only %s, the app, should have one", c.Name, headers, tc.hooked)
				}
			}
		})
	}
}

// A pod in the host's PID namespace already sees the app's processes, and
// the API server refuses shareProcessNamespace beside hostPID
// ("ShareProcessNamespace and HostPID cannot both be enabled"): the
// injector sets it only for the others.
func TestShareProcessNamespace(t *testing.T) {
	for _, tc := range []struct {
		name, spec string
		want       string // the pod's shareProcessNamespace, "" for unset
	}{
		{name: "a pod of its own", spec: "", want: "true"},
		{name: "hostPID false", spec: "  hostPID: false\n", want: "true"},
		{name: "hostPID", spec: "  hostPID: true\n", want: ""},
		{name: "hostPID after an injection", spec: "  hostPID: true\n  shareProcessNamespace: true\n", want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    outrider.io/inject: \"true\"\nspec:\n" + tc.spec +
				"  containers:\n    - name: app\n      image: app:1\n"
			var pod struct {
				Spec struct {
					ShareProcessNamespace *bool `yaml:"shareProcessNamespace"`
				}
			}
			if err := yaml.Unmarshal(run(t, tc.name, []byte(in), Options{Rand: fixedRand()}), &pod); err != nil {
				t.Fatal(err)
			}
			got := ""
			if pod.Spec.ShareProcessNamespace != nil {
				got = strconv.FormatBool(*pod.Spec.ShareProcessNamespace)
			}
			if got != tc.want {
				t.Errorf("shareProcessNamespace %q, want %q", got, tc.want)
			}
		})
	}
}

// OUTRIDER_APP_ADDR is the app container's first TCP port: outrider's
// proxy and its default tcp probe reach no UDP or SCTP port.
func TestAppPort(t *testing.T) {
	for _, tc := range []struct {
		name, ports, annotation string
		want                    string
	}{
		{name: "no ports", want: "127.0.0.1:8080"},
		{name: "the first port", ports: "[{name: http, containerPort: 3000}, {name: admin, containerPort: 3001}]", want: "127.0.0.1:3000"},
		{name: "a named TCP port", ports: "[{name: http, containerPort: 3000, protocol: TCP}]", want: "127.0.0.1:3000"},
		{name: "a UDP port first", ports: "[{name: game, containerPort: 7777, protocol: UDP}, {name: http, containerPort: 8081}]", want: "127.0.0.1:8081"},
		{name: "DNS over UDP and TCP", ports: "[{name: dns, containerPort: 53, protocol: UDP}, {name: dns-tcp, containerPort: 5353, protocol: TCP}]", want: "127.0.0.1:5353"},
		{name: "an SCTP port first", ports: "[{containerPort: 9899, protocol: SCTP}, {containerPort: 9000}]", want: "127.0.0.1:9000"},
		{name: "the annotation wins", ports: "[{containerPort: 7777, protocol: UDP}]", annotation: "    outrider.io/app-port: \"9000\"\n", want: "127.0.0.1:9000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    outrider.io/inject: \"true\"\n" + tc.annotation +
				"spec:\n  containers:\n    - name: app\n      image: app:1\n"
			if tc.ports != "" {
				in += "      ports: " + tc.ports + "\n"
			}
			var pod struct {
				Spec struct {
					InitContainers []struct {
						Name string
						Env  []struct{ Name, Value string }
					} `yaml:"initContainers"`
				}
			}
			if err := yaml.Unmarshal(run(t, tc.name, []byte(in), Options{Rand: fixedRand()}), &pod); err != nil {
				t.Fatal(err)
			}
			got := ""
			for _, c := range pod.Spec.InitContainers {
				for _, e := range c.Env {
					if c.Name == "outrider" && e.Name == "OUTRIDER_APP_ADDR" {
						got = e.Value
					}
				}
			}
			if got != tc.want {
				t.Errorf("OUTRIDER_APP_ADDR %q, want %q", got, tc.want)
			}
		})
	}
}

// A pod that runs to completion (restartPolicy Never or OnFailure) gets the
// native sidecar, which the kubelet stops once the app has exited; the
// classic one, which would keep the pod running, is refused (TestBadInput).
func TestPodThatRunsToCompletion(t *testing.T) {
	for _, policy := range []string{"Never", "OnFailure"} {
		t.Run(policy, func(t *testing.T) {
			in := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    outrider.io/inject: \"true\"\nspec:\n  restartPolicy: " + policy +
				"\n  containers:\n    - name: app\n      image: app:1\n"
			var pod struct {
				Spec struct {
					InitContainers []struct {
						Name          string
						RestartPolicy string `yaml:"restartPolicy"`
					} `yaml:"initContainers"`
				}
			}
			if err := yaml.Unmarshal(run(t, policy, []byte(in), Options{Rand: fixedRand()}), &pod); err != nil {
				t.Fatal(err)
			}
			if c := pod.Spec.InitContainers; len(c) != 1 || c[0].Name != "outrider" || c[0].RestartPolicy != "Always" {
				t.Errorf("init containers %+v, want outrider as a native sidecar", c)
			}
		})
	}
}

// The kubelet gives every container of a pod with service links (the
// default) variables named after each Service of its namespace; a Service
// named outrider (one that scrapes the sidecars, say) makes
// OUTRIDER_SERVICE_PORT, outrider's port to register in Consul. The
// sidecar's own variables win over service links, so it sets that one.
func TestServiceLinks(t *testing.T) {
	in := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    outrider.io/inject: \"true\"\nspec:\n" +
		"  containers:\n    - name: app\n      image: app:1\n"
	var pod struct {
		Spec struct {
			InitContainers []struct {
				Env []struct {
					Name, Value string
					ValueFrom   any `yaml:"valueFrom"`
				}
			} `yaml:"initContainers"`
		}
	}
	if err := yaml.Unmarshal(run(t, "links", []byte(in), Options{Rand: fixedRand()}), &pod); err != nil {
		t.Fatal(err)
	}
	// What the kubelet makes of a Service outrider at 10.0.0.9, port 15090.
	env := map[string]string{
		"OUTRIDER_SERVICE_HOST": "10.0.0.9", "OUTRIDER_SERVICE_PORT": "15090",
		"OUTRIDER_PORT": "tcp://10.0.0.9:15090", "OUTRIDER_PORT_15090_TCP": "tcp://10.0.0.9:15090",
		"OUTRIDER_PORT_15090_TCP_PROTO": "tcp", "OUTRIDER_PORT_15090_TCP_PORT": "15090", "OUTRIDER_PORT_15090_TCP_ADDR": "10.0.0.9",
	}
	downward := map[string]string{"POD_NAME": "p", "POD_NAMESPACE": "shop", "POD_IP": "10.1.0.5", "HOST_IP": "10.2.0.1"}
	expand := strings.NewReplacer("$(POD_NAME)", "p", "$(POD_NAMESPACE)", "shop", "$(HOST_IP)", "10.2.0.1")
	for _, e := range pod.Spec.InitContainers[0].Env {
		switch {
		case downward[e.Name] != "":
			env[e.Name] = downward[e.Name]
		case e.ValueFrom == nil:
			env[e.Name] = expand.Replace(e.Value)
		}
	}
	cfg, err := config.Load(func(k string) string { return env[k] }, "p", nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Service.Port != proxyPort {
		t.Errorf("outrider registers port %d, want the proxy's %d", cfg.Service.Port, proxyPort)
	}
}

// Injecting again without an image keeps the one an earlier injection
// wrote, as it keeps the token; an image given (flag or annotation)
// replaces it.
func TestReinjectKeepsTheImage(t *testing.T) {
	in := []byte("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    outrider.io/inject: \"true\"\nspec:\n" +
		"  containers:\n    - name: app\n      image: app:1\n")
	once := run(t, "once", in, Options{Image: "registry.example/outrider:v1.2.3", Rand: fixedRand()})
	for _, tc := range []struct {
		name  string
		in    []byte
		image string // the --image flag
		want  string
	}{
		{name: "no image", in: in, want: DefaultImage},
		{name: "again, no image", in: once, want: "registry.example/outrider:v1.2.3"},
		{name: "again, another image", in: once, image: "registry.example/outrider:v1.3.0", want: "registry.example/outrider:v1.3.0"},
		{name: "again, the annotation's", in: bytes.Replace(once, []byte(`outrider.io/inject: "true"`), []byte(`outrider.io/inject: "true"`+"\n    outrider.io/image: registry.example/outrider:v2"), 1),
			want: "registry.example/outrider:v2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var pod struct {
				Spec struct {
					InitContainers []struct{ Name, Image string } `yaml:"initContainers"`
				}
			}
			if err := yaml.Unmarshal(run(t, tc.name, tc.in, Options{Image: tc.image, Rand: fixedRand()}), &pod); err != nil {
				t.Fatal(err)
			}
			if got := pod.Spec.InitContainers[0].Image; got != tc.want {
				t.Errorf("sidecar image %q, want %q", got, tc.want)
			}
		})
	}
}

// What a user adds to an injected sidecar (its environment, mounts,
// resources) outlives the next injection, which updates what the
// annotations set.
func TestReinjectKeepsWhatTheUserAdded(t *testing.T) {
	in := []byte("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    outrider.io/inject: \"true\"\n" +
		"    outrider.io/probe: http://127.0.0.1:8080/healthz\nspec:\n  containers:\n    - name: app\n      image: app:1\n")
	var pod map[string]any
	if err := yaml.Unmarshal(run(t, "once", in, Options{Rand: fixedRand()}), &pod); err != nil {
		t.Fatal(err)
	}
	sidecar := pod["spec"].(map[string]any)["initContainers"].([]any)[0].(map[string]any)
	sidecar["envFrom"] = []any{map[string]any{"configMapRef": map[string]any{"name": "outrider-settings"}}}
	sidecar["volumeMounts"] = []any{map[string]any{"name": "config", "mountPath": "/etc/outrider"}}
	sidecar["env"] = append(sidecar["env"].([]any),
		map[string]any{"name": "CONSUL_HTTP_ADDR", "value": "https://consul.example:8501"},
		map[string]any{"name": "OUTRIDER_PROBE_PERIOD", "value": "1s"})
	sidecar["resources"].(map[string]any)["limits"] = map[string]any{"memory": "256Mi"}
	// The probe annotation gone: the sidecar's OUTRIDER_PROBE goes with it.
	delete(pod["metadata"].(map[string]any)["annotations"].(map[string]any), "outrider.io/probe")
	edited, err := yaml.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	again := run(t, "again", edited, Options{})
	var got struct {
		Spec struct {
			InitContainers []struct {
				Env          []struct{ Name, Value string }
				EnvFrom      []map[string]any `yaml:"envFrom"`
				VolumeMounts []map[string]any `yaml:"volumeMounts"`
				Resources    struct{ Limits map[string]string }
			} `yaml:"initContainers"`
		}
	}
	if err := yaml.Unmarshal(again, &got); err != nil {
		t.Fatal(err)
	}
	c := got.Spec.InitContainers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		if _, dup := env[e.Name]; dup {
			t.Errorf("%s twice in the sidecar's environment", e.Name)
		}
		env[e.Name] = e.Value
	}
	for name, want := range map[string]string{"CONSUL_HTTP_ADDR": "https://consul.example:8501", "OUTRIDER_PROBE_PERIOD": "1s", "OUTRIDER_SERVICE_NAME": "p"} {
		if env[name] != want {
			t.Errorf("%s=%q after injecting again, want %q", name, env[name], want)
		}
	}
	if v, ok := env["OUTRIDER_PROBE"]; ok {
		t.Errorf("OUTRIDER_PROBE=%q kept after its annotation was removed", v)
	}
	if len(c.EnvFrom) != 1 || len(c.VolumeMounts) != 1 {
		t.Errorf("envFrom %v and volumeMounts %v, want the user's one each", c.EnvFrom, c.VolumeMounts)
	}
	if c.Resources.Limits["memory"] != "256Mi" {
		t.Errorf("memory limit %q, want the user's 256Mi", c.Resources.Limits["memory"])
	}
	if third := run(t, "third", again, Options{}); !bytes.Equal(third, again) {
		t.Errorf("injecting a third time changed the pod:\n%s", third)
	}
}

// A sidecar injected before the outrider.io/injected annotation existed
// is known by the admin token it shares with the preStop hook.
func TestReinjectWithoutTheInjectedAnnotation(t *testing.T) {
	golden, err := os.ReadFile(filepath.Join("testdata", "pod.golden.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	old := bytes.Replace(golden, []byte("    outrider.io/injected: \"true\"\n"), nil, 1)
	if bytes.Equal(old, golden) {
		t.Fatal("the golden pod has no outrider.io/injected annotation to remove")
	}
	if again := run(t, "old injection", old, Options{}); !bytes.Equal(again, golden) {
		t.Errorf("injecting an older injection gave\n%s\nwant\n%s", again, golden)
	}
}

// Annotations that are a YAML alias of the workload's own keep every
// entry when the pod template is marked, and the workload's stay as they
// were.
func TestMarkWithAliasedAnnotations(t *testing.T) {
	in := []byte(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations: &ann
    outrider.io/inject: "true"
    prometheus.io/scrape: "true"
spec:
  template:
    metadata:
      annotations: *ann
    spec:
      containers:
        - name: web
          image: web:1
`)
	once := run(t, "aliased", in, Options{Rand: fixedRand()})
	var got struct {
		Metadata struct{ Annotations map[string]string }
		Spec     struct {
			Template struct {
				Metadata struct{ Annotations map[string]string }
			}
		}
	}
	if err := yaml.Unmarshal(once, &got); err != nil {
		t.Fatalf("%v in\n%s", err, once)
	}
	tmpl := got.Spec.Template.Metadata.Annotations
	if tmpl["prometheus.io/scrape"] != "true" || tmpl["outrider.io/inject"] != "true" || tmpl["outrider.io/injected"] != "true" {
		t.Errorf("template annotations %v, want the aliased ones and outrider.io/injected", tmpl)
	}
	if _, ok := got.Metadata.Annotations["outrider.io/injected"]; ok || got.Metadata.Annotations["prometheus.io/scrape"] != "true" {
		t.Errorf("the Deployment's annotations %v, want them as they were", got.Metadata.Annotations)
	}
	if again := run(t, "aliased again", once, Options{}); !bytes.Equal(again, once) {
		t.Errorf("injecting again changed it:\n%s", again)
	}
}

// inject reads and writes mappings as written, not through YAML merge
// keys (<<), which kubectl's parser follows: a workload to inject with one
// in its pod is an error, as is one whose annotations have one (it might
// give outrider.io/inject); other merge keys pass through.
func TestMergeKeys(t *testing.T) {
	const (
		podHead = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    outrider.io/inject: \"true\"\n    outrider.io/app-container: app\n"
		// The app container's preStop hook comes from the worker's.
		mergedHook = podHead + "spec:\n  containers:\n    - &worker\n      name: worker\n      image: app:1\n      lifecycle:\n        preStop:\n          exec:\n            command: [sleep, \"5\"]\n    - <<: *worker\n      name: app\n"
		deploy     = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  annotations: &ann\n    outrider.io/inject: \"true\"\nspec:\n  template:\n    metadata:\n%s    spec:\n      containers:\n        - name: web\n          image: web:1\n"
	)
	for _, tc := range []struct {
		name, in string
		opts     Options
		want     string // the error; "" passes the input through
	}{
		{name: "a preStop hook through a merge", in: mergedHook,
			want: "m.yaml: document 1: Pod p: bad input: line 17: a YAML merge key (<<) in the pod or its metadata, which inject does not follow: it would not see what the merge gives (a preStop hook, a port, a label), and kubectl might let the merge win over what inject adds; write the merged keys out (yq 'explode(.)' does) and inject again"},
		{name: "line numbers count the documents before", in: "kind: ConfigMap\nmetadata: {name: c}\n---\n" + mergedHook,
			want: "m.yaml: document 2: Pod p: bad input: line 20: a YAML merge key (<<)"},
		{name: "the inject annotation through a merge", in: fmt.Sprintf(deploy, "      annotations:\n        <<: *ann\n"),
			want: "m.yaml: document 1: Deployment web: bad input: line 11: a YAML merge key (<<) in the pod or its metadata"},
		{name: "annotations through a merge, none to inject", in: strings.Replace(fmt.Sprintf(deploy, "      annotations:\n        <<: *ann\n"), `"true"`, `"false"`, 1),
			want: ""},
		{name: "a merge in the labels, no annotation", in: "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels: &l {app: web}\nspec:\n  template:\n    metadata:\n      labels: {<<: *l, tier: front}\n    spec:\n      containers: [{name: web, image: web:1}]\n",
			want: ""},
		{name: "a merge in the labels, --all", in: "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels: &l {app: web}\nspec:\n  template:\n    metadata:\n      labels: {<<: *l, tier: front}\n    spec:\n      containers: [{name: web, image: web:1}]\n",
			opts: Options{All: true}, want: "m.yaml: document 1: Deployment web: bad input: line 9: a YAML merge key (<<)"},
		// An item of a List takes its annotations, or its metadata, from
		// another's: inject would pass it through without its sidecar.
		{name: "annotations through a merge, no annotation seen", in: "apiVersion: v1\nkind: List\nitems:\n  - {kind: ConfigMap, metadata: {name: c, annotations: &ann {outrider.io/inject: \"true\"}}}\n" +
			"  - kind: Pod\n    metadata:\n      name: p\n      annotations: {<<: *ann}\n    spec:\n      containers: [{name: app, image: app:1}]\n",
			want: "m.yaml: document 1: Pod p: bad input: line 8: the annotations use a YAML merge key (<<), which inject does not follow, so it cannot tell whether outrider.io/inject is among them; write the merged keys out (yq 'explode(.)' does) and inject again"},
		{name: "metadata through a merge, no annotation seen", in: "apiVersion: v1\nkind: List\nitems:\n  - {kind: ConfigMap, metadata: &m {name: c, annotations: {outrider.io/inject: \"true\"}}}\n" +
			"  - kind: Pod\n    metadata:\n      <<: *m\n      name: p\n    spec:\n      containers: [{name: app, image: app:1}]\n",
			want: "m.yaml: document 1: Pod p: bad input: line 7: the annotations use a YAML merge key (<<)"},
		{name: "a quoted << is a key like any other", in: strings.Replace(mergedHook, "<<: *worker\n      name: app\n", "\"<<\": x\n      name: app\n      image: app:1\n", 1),
			want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Rand = fixedRand()
			var out bytes.Buffer
			_, err := Stream("m.yaml", []byte(tc.in), &out, tc.opts)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("error %v, want none", err)
			case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want) || !errors.Is(err, ErrBadInput)):
				t.Fatalf("error %v\nwant ErrBadInput starting %s\noutput:\n%s", err, tc.want, out.String())
			case tc.want != "" && out.Len() != 0:
				t.Errorf("wrote %q despite the error", out.String())
			}
		})
	}
}

// The API server refuses a pod whose containers, the sidecar among them,
// request more than its pod-level resources (spec.resources, Kubernetes
// 1.32 and later), or one whose regular container's limit is above the
// pod's. loop/apicheck holds the same cases against a real API server.
func TestPodLevelResources(t *testing.T) {
	pod := func(podRes, appRes string, annotations ...string) string {
		return "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    outrider.io/inject: \"true\"\n" +
			strings.Join(annotations, "") +
			"spec:\n  resources: " + podRes + "\n  containers:\n    - name: app\n      image: app:1\n      resources: " + appRes + "\n"
	}
	for _, tc := range []struct {
		name, in, want string // want: the error; "" injects
	}{
		{name: "room for the sidecar", in: pod("{requests: {cpu: \"1\", memory: 1Gi}, limits: {memory: 2Gi}}", "{requests: {cpu: 500m, memory: 512Mi}}")},
		{name: "no container requests", in: pod("{requests: {cpu: 100m, memory: 64Mi}, limits: {cpu: 200m, memory: 256Mi}}", "{}")},
		{name: "requests the sidecar's would pass", in: pod("{requests: {cpu: 100m}}", "{requests: {cpu: 100m}}"),
			want: "Pod p: bad input: the pod's resources.requests.cpu is 100m, less than what its containers request with outrider's sidecar (150m): the API server would refuse the pod; raise it to at least that, or lower the app's requests"},
		{name: "memory in other units", in: pod("{requests: {memory: 0.5Gi}}", "{requests: {memory: 500Mi}}"),
			want: "Pod p: bad input: the pod's resources.requests.memory is 0.5Gi, less than what its containers request with outrider's sidecar (532Mi)"},
		{name: "an app limit stands for its request", in: pod("{limits: {cpu: 100m}}", "{limits: {cpu: 100m}}"),
			want: "Pod p: bad input: the pod's resources.limits.cpu is 100m, less than what its containers request with outrider's sidecar (150m)"},
		{name: "a limit below a native sidecar's caps it", in: pod("{limits: {memory: 100Mi}}", "{}")},
		{name: "a limit below a classic sidecar's", in: pod("{limits: {memory: 100Mi}}", "{}", "    outrider.io/native-sidecar: \"false\"\n"),
			want: "Pod p: bad input: the pod's resources.limits.memory is 100Mi, less than outrider's sidecar's limit (128Mi): the API server would refuse the pod; raise it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			_, err := Stream("r.yaml", []byte(tc.in), &out, Options{Rand: fixedRand()})
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("error %v, want none", err)
			case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), "r.yaml: document 1: "+tc.want) || !errors.Is(err, ErrBadInput)):
				t.Fatalf("error %v\nwant ErrBadInput starting %s", err, tc.want)
			}
		})
	}
}

func TestParseQuantity(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want *big.Rat // nil: not a quantity
	}{
		{"100m", big.NewRat(1, 10)}, {"1", big.NewRat(1, 1)}, {"0.5", big.NewRat(1, 2)}, {"128Mi", big.NewRat(128<<20, 1)},
		{"1G", big.NewRat(1e9, 1)}, {"1e3", big.NewRat(1000, 1)}, {"1.5Gi", big.NewRat(3<<29, 1)}, {"2k", big.NewRat(2000, 1)},
		{"", nil}, {"abc", nil}, {"1 Gi", nil}, {"Mi", nil},
	} {
		got, ok := parseQuantity(tc.in)
		if ok != (tc.want != nil) || ok && got.Cmp(tc.want) != 0 {
			t.Errorf("parseQuantity(%q) = %v, %v; want %v", tc.in, got, ok, tc.want)
		}
	}
}

// What inject adds goes to the injected pod alone: a container or
// another workload that aliases (*lc) a part of the pod that inject
// changes (the app's lifecycle) keeps what it had and gets nothing of
// outrider's.
func TestSharedAnchors(t *testing.T) {
	in := []byte(`apiVersion: v1
kind: List
items:
  - apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: web
    spec:
      template:
        metadata:
          annotations:
            outrider.io/inject: "true"
        spec:
          containers:
            - name: web
              image: web:1
              lifecycle: &lc
                postStart:
                  exec:
                    command: ["touch", "/tmp/started"]
            - name: helper
              image: helper:1
              lifecycle: *lc
  - apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: plain
    spec:
      template:
        spec:
          containers:
            - name: plain
              image: plain:1
              lifecycle: *lc
`)
	once := run(t, "shared", in, Options{Rand: fixedRand()})
	type hooks struct {
		PostStart map[string]any `yaml:"postStart"`
		PreStop   map[string]any `yaml:"preStop"`
	}
	var got struct {
		Items []struct {
			Spec struct {
				Template struct {
					Spec struct {
						Containers []struct {
							Name      string
							Lifecycle *hooks
						}
					}
				}
			}
		}
	}
	if err := yaml.Unmarshal(once, &got); err != nil {
		t.Fatalf("%v in\n%s", err, once)
	}
	for _, item := range got.Items {
		for _, c := range item.Spec.Template.Spec.Containers {
			if c.Lifecycle == nil || c.Lifecycle.PostStart == nil {
				t.Errorf("container %s lost its postStart hook:\n%s", c.Name, once)
				continue
			}
			if hasPreStop := c.Lifecycle.PreStop != nil; hasPreStop != (c.Name == "web") {
				t.Errorf("container %s: preStop hook %v, want one on web only:\n%s", c.Name, c.Lifecycle.PreStop, once)
			}
		}
	}
	if again := run(t, "shared again", once, Options{}); !bytes.Equal(again, once) {
		t.Errorf("injecting again changed it:\n%s", again)
	}
}

// A pod whose initContainers are an alias of another pod's keeps them all,
// with the sidecar before them, and the other pod gets no sidecar.
func TestAliasedInitContainers(t *testing.T) {
	in := []byte(`apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Pod
    metadata: {name: a}
    spec:
      initContainers: &inits
        - {name: setup, image: setup:1}
      containers: [{name: a, image: a:1}]
  - apiVersion: v1
    kind: Pod
    metadata: {name: b, annotations: {outrider.io/inject: "true"}}
    spec:
      initContainers: *inits
      containers: [{name: b, image: b:1}]
`)
	out := run(t, "aliased init containers", in, Options{Rand: fixedRand()})
	var got struct {
		Items []struct {
			Spec struct {
				InitContainers []struct{ Name string } `yaml:"initContainers"`
			}
		}
	}
	if err := yaml.Unmarshal(out, &got); err != nil || len(got.Items) != 2 {
		t.Fatalf("%v in\n%s", err, out)
	}
	for i, want := range [][]string{{"setup"}, {"outrider", "setup"}} {
		var names []string
		for _, c := range got.Items[i].Spec.InitContainers {
			names = append(names, c.Name)
		}
		if !slices.Equal(names, want) {
			t.Errorf("pod %d: init containers %v, want %v:\n%s", i+1, names, want, out)
		}
	}
}
