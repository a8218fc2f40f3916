package apicheck_test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/outrider-sidecar/outrider/inject"
)

// inputs are workloads as users write them. Each must be injected into
// objects the API server accepts, lose nothing of the input, and come out
// unchanged when injected again; or, where refuse is set, be refused by
// inject with an error holding refuse; or, where unchanged is set, come
// out byte for byte and be accepted as it is.
var inputs = []struct {
	name, yaml string
	// refuse is a part of inject's error; "" when inject must accept it.
	refuse string
	// unchanged: a kind that inject leaves alone, even when it asks.
	unchanged bool
}{
	{name: "job", unchanged: true, yaml: `
apiVersion: batch/v1
kind: Job
metadata:
  name: migrate
spec:
  backoffLimit: 2
  template:
    metadata:
      annotations:
        outrider.io/inject: "true"
    spec:
      restartPolicy: Never
      containers:
        - name: migrate
          image: migrate:1
          args: ["up"]
`},
	{name: "cronjob", unchanged: true, yaml: `
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        metadata:
          annotations:
            outrider.io/inject: "true"
        spec:
          restartPolicy: OnFailure
          containers:
            - name: report
              image: report:1
              ports: [{name: http, containerPort: 9000}]
`},
	{name: "list", yaml: `
apiVersion: v1
kind: List
metadata:
  resourceVersion: ""
items:
  - apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: web
      annotations:
        outrider.io/inject: "true"
    spec:
      selector: {matchLabels: {app: web}}
      template:
        metadata: {labels: {app: web}}
        spec:
          containers: [{name: web, image: web:1, ports: [{containerPort: 8080}]}]
  - apiVersion: v1
    kind: Service
    metadata: {name: web}
    spec:
      selector: {app: web}
      ports: [{port: 80, targetPort: 15001}]
  - apiVersion: v1
    kind: Pod
    metadata:
      name: tool
      annotations: {outrider.io/inject: "true"}
    spec:
      containers: [{name: tool, image: tool:1}]
`},
	{name: "init container and native sidecar of the user's", yaml: `
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
  namespace: shop
spec:
  selector: {matchLabels: {app: shop}}
  template:
    metadata:
      labels: {app: shop}
      annotations: {outrider.io/inject: "true"}
    spec:
      initContainers:
        - name: wait-db
          image: busybox:1
          command: ["sh", "-c", "until nc -z db 5432; do sleep 1; done"]
        - name: logs
          image: fluent-bit:3
          restartPolicy: Always
          ports: [{name: metrics, containerPort: 2020}]
          resources: {requests: {cpu: 10m, memory: 16Mi}}
      containers:
        - name: shop
          image: shop:1
          ports:
            - {name: http, containerPort: 8080}
            - {name: grpc, containerPort: 9090}
`},
	{name: "host network", yaml: `
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: edge
spec:
  selector: {matchLabels: {app: edge}}
  template:
    metadata:
      labels: {app: edge}
      annotations: {outrider.io/inject: "true"}
    spec:
      hostNetwork: true
      dnsPolicy: ClusterFirstWithHostNet
      containers:
        - name: edge
          image: edge:1
          ports: [{name: http, containerPort: 8081, hostPort: 8081}]
`},
	{name: "app without ports", yaml: `
apiVersion: v1
kind: Pod
metadata:
  name: worker
  annotations: {outrider.io/inject: "true"}
spec:
  containers:
    - name: worker
      image: worker:1
`},
	{name: "statefulset with volume claims", yaml: `
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata:
      labels: {app: db}
      annotations: {outrider.io/inject: "true"}
    spec:
      containers:
        - name: db
          image: postgres:16
          ports: [{name: pg, containerPort: 5432}]
          volumeMounts: [{name: data, mountPath: /var/lib/postgresql/data}]
  volumeClaimTemplates:
    - metadata: {name: data}
      spec:
        accessModes: [ReadWriteOnce]
        resources: {requests: {storage: 10Gi}}
`},
	{name: "comments and empty documents", yaml: `# shop, all of it
---
---
# nothing here
---   # the app
apiVersion: v1
kind: Pod
metadata:
  name: commented  # its name
  annotations:
    outrider.io/inject: "true"  # yes
spec:
  # the app
  containers:
    - name: app
      image: app:1
...
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {a: "1"}
---
`},
	{name: "integer resources", yaml: `
apiVersion: apps/v1
kind: Deployment
metadata:
  name: big
spec:
  selector: {matchLabels: {app: big}}
  template:
    metadata:
      labels: {app: big}
      annotations: {outrider.io/inject: "true"}
    spec:
      resources:
        requests: {cpu: 2, memory: 2147483648}
      containers:
        - name: big
          image: big:1
          resources:
            requests: {cpu: 1, memory: 1073741824}
            limits: {cpu: 2, memory: 2147483648}
`},
	{name: "anchors", yaml: `
apiVersion: apps/v1
kind: Deployment
metadata:
  name: anchored
  labels: &labels
    app: anchored
  annotations: &ann
    outrider.io/inject: "true"
spec:
  selector:
    matchLabels: *labels
  template:
    metadata:
      labels: *labels
      annotations: *ann
    spec:
      containers:
        - name: anchored
          image: anchored:1
          env: &env
            - {name: MODE, value: prod}
          resources: &res
            requests: {cpu: 100m}
          lifecycle: &hooks
            postStart: {exec: {command: [touch, /tmp/started]}}
        - name: helper
          image: helper:1
          env: *env
          resources: *res
          lifecycle: *hooks
`},
}

// testInputs injects every input, sends the result to the API server as
// dry-run creates, checks that nothing of the input was lost and that a
// second injection changes nothing.
func testInputs(t *testing.T, create func(*unstructured.Unstructured) error) {
	for _, tc := range inputs {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			results, err := inject.Stream(tc.name, []byte(tc.yaml), &out, inject.Options{Rand: rand.Reader})
			if tc.refuse != "" {
				if err == nil || !strings.Contains(err.Error(), tc.refuse) {
					t.Fatalf("inject: %v, want an error with %q", err, tc.refuse)
				}
				return
			}
			if err != nil {
				t.Fatalf("inject: %v", err)
			}
			if tc.unchanged {
				if out.String() != tc.yaml {
					t.Errorf("inject changed it:\n%s", out.String())
				}
				for _, o := range decode(t, out.Bytes()) {
					if err := create(o); err != nil {
						t.Errorf("%s %s: the API server refuses it: %v", o.GetKind(), o.GetName(), err)
					}
				}
				return
			}
			injected := 0
			for _, r := range results {
				if r.Injected {
					injected++
				}
			}
			if injected == 0 {
				t.Fatalf("nothing injected: %+v", results)
			}
			before, after := decode(t, []byte(tc.yaml)), decode(t, out.Bytes())
			if len(before) != len(after) {
				t.Fatalf("%d objects in, %d out:\n%s", len(before), len(after), out.String())
			}
			for i := range after {
				if lost := missing(before[i].Object, after[i].Object, ""); lost != "" {
					t.Errorf("object %d: the output lost %s", i+1, lost)
				}
				for _, o := range items(after[i]) {
					if err := create(o); err != nil {
						t.Errorf("%s %s: the API server refuses it: %v\n%s", o.GetKind(), o.GetName(), err, out.String())
					}
				}
			}
			var again bytes.Buffer
			if _, err := inject.Stream(tc.name, out.Bytes(), &again, inject.Options{Rand: rand.Reader}); err != nil {
				t.Fatalf("inject again: %v", err)
			}
			if again.String() != out.String() {
				t.Errorf("injecting again changed the output:\n%s\nwas:\n%s", again.String(), out.String())
			}
		})
	}
}

// items is a List's items, or o itself.
func items(o *unstructured.Unstructured) []*unstructured.Unstructured {
	if !o.IsList() {
		return []*unstructured.Unstructured{o}
	}
	l, err := o.ToList()
	if err != nil {
		return []*unstructured.Unstructured{o}
	}
	var objs []*unstructured.Unstructured
	for i := range l.Items {
		objs = append(objs, &l.Items[i])
	}
	return objs
}

// missing is the first value of in that out lacks or changed, as a path;
// "" if out holds all of in. Lists of named objects (containers, ports)
// are matched by name, as inject adds to them; other lists by position.
// A raised grace period is inject's to make.
func missing(in, out any, path string) string {
	switch in := in.(type) {
	case map[string]any:
		o, ok := out.(map[string]any)
		if !ok {
			return path
		}
		for k, v := range in {
			if k == "terminationGracePeriodSeconds" {
				continue
			}
			if m := missing(v, o[k], path+"."+k); m != "" {
				return m
			}
		}
	case []any:
		o, ok := out.([]any)
		if !ok {
			return path
		}
		for i, v := range in {
			vm, _ := v.(map[string]any)
			name, named := vm["name"]
			if !named {
				if i >= len(o) {
					return fmt.Sprintf("%s[%d]", path, i)
				}
				if m := missing(v, o[i], fmt.Sprintf("%s[%d]", path, i)); m != "" {
					return m
				}
				continue
			}
			found := false
			for _, ov := range o {
				if om, ok := ov.(map[string]any); ok && om["name"] == name {
					found = true
					if m := missing(v, ov, fmt.Sprintf("%s[%v]", path, name)); m != "" {
						return m
					}
				}
			}
			if !found {
				return fmt.Sprintf("%s[%v]", path, name)
			}
		}
	default:
		if !reflect.DeepEqual(in, out) {
			return fmt.Sprintf("%s (%v, now %v)", path, in, out)
		}
	}
	return ""
}
