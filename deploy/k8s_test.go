package deploy_test

import (
	"fmt"
	iofs "io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/outrider-sidecar/outrider/config"
	"github.com/outrider-sidecar/outrider/internal/promtest"
)

// manifests is the output of one kustomization, decoded strictly into the
// k8s.io/api types (custom resources as unstructured objects).
type manifests struct {
	deployments []*appsv1.Deployment
	services    []*corev1.Service
	configMaps  []*corev1.ConfigMap
	secrets     []*corev1.Secret
	pdbs        []*policyv1.PodDisruptionBudget
	policies    []*networkingv1.NetworkPolicy
	hpas        []*autoscalingv2.HorizontalPodAutoscaler
	custom      []*unstructured.Unstructured
}

// build runs kustomize on dir (relative to k8s/) and decodes every object;
// an unknown field anywhere is an error.
func build(t *testing.T, dir string) manifests {
	t.Helper()
	return run(t, filesys.MakeFsOnDisk(), filepath.Join("k8s", dir), dir)
}

// buildWith builds dir with the kustomize Components comps added (both
// relative to k8s/), as an operator's own overlay that lists them would:
// a copy of k8s/ in memory, and beside it a kustomization of dir and comps.
func buildWith(t *testing.T, dir string, comps ...string) manifests {
	t.Helper()
	fs := filesys.MakeFsInMemory()
	err := filepath.WalkDir("k8s", func(path string, d iofs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return fs.WriteFile(filepath.Join("/", path), b)
	})
	if err != nil {
		t.Fatalf("copy k8s/: %v", err)
	}
	k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../" + dir + "\ncomponents:\n"
	for _, c := range comps {
		k += "  - ../" + c + "\n"
	}
	if err := fs.WriteFile("/k8s/with-components/kustomization.yaml", []byte(k)); err != nil {
		t.Fatal(err)
	}
	return run(t, fs, "/k8s/with-components", dir+" with "+strings.Join(comps, ", "))
}

// run runs kustomize on the kustomization at path in fs and decodes every
// object; messages call the kustomization name.
func run(t *testing.T, fs filesys.FileSystem, path, name string) manifests {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(fs, path)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", name, err)
	}
	var m manifests
	for _, r := range rm.Resources() {
		raw, err := r.MarshalJSON()
		if err != nil {
			t.Fatalf("%s: %s %s: %v", name, r.GetKind(), r.GetName(), err)
		}
		what := fmt.Sprintf("%s: %s %s", name, r.GetKind(), r.GetName())
		switch r.GetApiVersion() + " " + r.GetKind() {
		case "apps/v1 Deployment":
			m.deployments = append(m.deployments, decode[appsv1.Deployment](t, what, raw))
		case "v1 Service":
			m.services = append(m.services, decode[corev1.Service](t, what, raw))
		case "v1 ConfigMap":
			m.configMaps = append(m.configMaps, decode[corev1.ConfigMap](t, what, raw))
		case "v1 Secret":
			m.secrets = append(m.secrets, decode[corev1.Secret](t, what, raw))
		case "policy/v1 PodDisruptionBudget":
			m.pdbs = append(m.pdbs, decode[policyv1.PodDisruptionBudget](t, what, raw))
		case "networking.k8s.io/v1 NetworkPolicy":
			m.policies = append(m.policies, decode[networkingv1.NetworkPolicy](t, what, raw))
		case "autoscaling/v2 HorizontalPodAutoscaler":
			m.hpas = append(m.hpas, decode[autoscalingv2.HorizontalPodAutoscaler](t, what, raw))
		case "monitoring.coreos.com/v1 PodMonitor", "keda.sh/v1alpha1 ScaledObject":
			u := &unstructured.Unstructured{}
			if err := u.UnmarshalJSON(raw); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			m.custom = append(m.custom, u)
		default:
			t.Fatalf("%s: no decoder for %s %s; add it to the test", what, r.GetApiVersion(), r.GetKind())
		}
	}
	return m
}

// decode is strict: unknown fields, duplicate fields and fields whose case
// differs from the API's are errors.
func decode[T any](t *testing.T, what string, raw []byte) *T {
	t.Helper()
	v := new(T)
	strict, err := kjson.UnmarshalStrict(raw, v)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if len(strict) > 0 {
		t.Fatalf("%s: not a valid object: %v", what, strict)
	}
	return v
}

func (m manifests) kind(t *testing.T, n int, what string) {
	t.Helper()
	if n != 1 {
		t.Fatalf("got %d %s, want 1", n, what)
	}
}

func (m manifests) customOf(kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, u := range m.custom {
		if u.GetKind() == kind {
			out = append(out, u)
		}
	}
	return out
}

// app is what the tests read out of the one Deployment: the sidecar, the app
// container and outrider's configuration as the kubelet would hand it over.
type app struct {
	deploy  *appsv1.Deployment
	sidecar corev1.Container
	native  bool // the sidecar is an init container with restartPolicy Always
	app     corev1.Container
	env     map[string]string // the sidecar's environment, downward API filled in
	cfg     config.Config
}

// pod values for the downward API, as the kubelet would fill them.
var downward = map[string]string{
	"metadata.name":      "echo-7d4b9c-x2k8p",
	"metadata.namespace": "shop",
	"status.podIP":       "10.1.2.3",
	"status.hostIP":      "192.168.0.7",
}

func (m manifests) app(t *testing.T) app {
	t.Helper()
	m.kind(t, len(m.deployments), "Deployments")
	d := m.deployments[0]
	spec := d.Spec.Template.Spec
	a := app{deploy: d}
	found := 0
	for _, c := range spec.InitContainers {
		if c.Name == "outrider" {
			a.sidecar, a.native, found = c, c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways, found+1
		}
	}
	for _, c := range spec.Containers {
		switch c.Name {
		case "outrider":
			a.sidecar, found = c, found+1
		case "app":
			a.app = c
		}
	}
	if found != 1 || a.app.Name == "" {
		t.Fatalf("want one container named outrider (init or regular) and one named app; got init %v, containers %v",
			names(spec.InitContainers), names(spec.Containers))
	}
	a.env = containerEnv(t, a.sidecar, m.configMaps, m.secrets)
	cfg, err := config.Load(func(k string) string { return a.env[k] }, "unused-hostname", func() (string, error) {
		return "", fmt.Errorf("POD_IP should have been used")
	})
	if err != nil {
		t.Fatalf("outrider would not start with the sidecar's environment %v: %v", a.env, err)
	}
	a.cfg = cfg
	return a
}

func names(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// containerEnv resolves envFrom and env the way the kubelet does: envFrom
// first, then env in order, $(VAR) expanded from what is defined so far.
func containerEnv(t *testing.T, c corev1.Container, cms []*corev1.ConfigMap, secrets []*corev1.Secret) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, from := range c.EnvFrom {
		if from.ConfigMapRef == nil {
			t.Fatalf("container %s: envFrom other than a ConfigMap", c.Name)
		}
		cm := findConfigMap(t, cms, from.ConfigMapRef.Name)
		for k, v := range cm.Data {
			env[k] = v
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = varRef.ReplaceAllStringFunc(e.Value, func(ref string) string {
				name := varRef.FindStringSubmatch(ref)[1]
				v, ok := env[name]
				if !ok {
					t.Errorf("container %s: %s refers to %s, which is not defined before it", c.Name, e.Name, ref)
				}
				return v
			})
		case e.ValueFrom.FieldRef != nil:
			v, ok := downward[e.ValueFrom.FieldRef.FieldPath]
			if !ok {
				t.Fatalf("container %s: %s: unexpected downward API field %s", c.Name, e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
			env[e.Name] = v
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			s := findSecret(secrets, ref.Name)
			if s == nil {
				if ref.Optional == nil || !*ref.Optional {
					t.Fatalf("container %s: %s needs Secret %s, which the kustomization does not make", c.Name, e.Name, ref.Name)
				}
				continue
			}
			env[e.Name] = s.StringData[ref.Key] + string(s.Data[ref.Key])
		default:
			t.Fatalf("container %s: %s: unexpected valueFrom", c.Name, e.Name)
		}
	}
	return env
}

func findConfigMap(t *testing.T, cms []*corev1.ConfigMap, name string) *corev1.ConfigMap {
	t.Helper()
	for _, cm := range cms {
		// configMapGenerator names carry a content hash after the name.
		if cm.Name == name || strings.HasPrefix(cm.Name, name+"-") {
			return cm
		}
	}
	t.Fatalf("no ConfigMap %s", name)
	return nil
}

func findSecret(secrets []*corev1.Secret, name string) *corev1.Secret {
	for _, s := range secrets {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func portOf(t *testing.T, hostport string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatalf("listen address %q: %v", hostport, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("listen address %q: %v", hostport, err)
	}
	return int32(n)
}

// overlays are the kustomizations an operator applies, each a complete app.
var overlays = []struct {
	dir    string
	native bool
	hpa    bool
	keda   bool
}{
	{dir: "base", native: true, hpa: true},
	{dir: "overlays/classic-sidecar", native: false, hpa: true},
	{dir: "overlays/keda", native: true, keda: true},
}

func TestSidecarEnvMatchesConfigContract(t *testing.T) {
	known := map[string]bool{}
	for _, s := range (config.Config{}).Effective() {
		known[s.Var] = true
	}
	for _, o := range overlays {
		t.Run(o.dir, func(t *testing.T) {
			m := build(t, o.dir)
			a := m.app(t)
			var outriderVars []string
			for k := range a.env {
				if strings.HasPrefix(k, "OUTRIDER_") {
					outriderVars = append(outriderVars, k)
					if !known[k] {
						t.Errorf("the sidecar sets %s, which the config package does not read", k)
					}
				}
			}
			if len(outriderVars) < 5 {
				t.Errorf("the sidecar sets only %v; the ConfigMap did not reach it", outriderVars)
			}
			for _, e := range a.app.Env {
				if strings.HasPrefix(e.Name, "OUTRIDER_") {
					t.Errorf("the app container sets %s; outrider's settings belong on the sidecar", e.Name)
				}
			}
			want := map[string]string{
				"POD_NAME":             downward["metadata.name"],
				"POD_NAMESPACE":        downward["metadata.namespace"],
				"POD_IP":               downward["status.podIP"],
				"HOST_IP":              downward["status.hostIP"],
				"OUTRIDER_SERVICE_ID":  downward["metadata.name"],
				"OUTRIDER_ADMIN_TOKEN": a.env["OUTRIDER_ADMIN_TOKEN"],
			}
			for k, v := range want {
				if got := a.env[k]; got != v || v == "" {
					t.Errorf("sidecar env %s = %q, want %q (non-empty)", k, got, v)
				}
			}
			// outrider joins HOST_IP and port 8500 itself, as
			// "$(HOST_IP):8500" cannot on an IPv6 node.
			if v, ok := a.env["CONSUL_HTTP_ADDR"]; ok {
				t.Errorf("sidecar env CONSUL_HTTP_ADDR = %q, want it unset so that outrider uses HOST_IP", v)
			}
			if a.cfg.Service.Address != downward["status.podIP"] {
				t.Errorf("outrider would register address %q, want the pod IP %q", a.cfg.Service.Address, downward["status.podIP"])
			}
			if a.cfg.Service.ID != downward["metadata.name"] {
				t.Errorf("outrider would register id %q, want the pod name", a.cfg.Service.ID)
			}
			if a.native != o.native {
				t.Errorf("native sidecar = %v, want %v", a.native, o.native)
			}
			if !o.native && len(a.deploy.Spec.Template.Spec.InitContainers) != 0 {
				t.Errorf("classic sidecar overlay still has init containers %v", names(a.deploy.Spec.Template.Spec.InitContainers))
			}
			if sp := a.deploy.Spec.Template.Spec.ShareProcessNamespace; sp == nil || !*sp {
				t.Errorf("shareProcessNamespace is not true: outrider cannot read the app's /proc")
			}
		})
	}
}

func TestGracePeriodCoversTheDrain(t *testing.T) {
	for _, o := range overlays {
		t.Run(o.dir, func(t *testing.T) {
			a := build(t, o.dir).app(t)
			gp := a.deploy.Spec.Template.Spec.TerminationGracePeriodSeconds
			if gp == nil {
				t.Fatal("terminationGracePeriodSeconds is not set (the default 30s is shorter than the drain)")
			}
			grace := time.Duration(*gp) * time.Second
			need := a.cfg.Drain.Delay + a.cfg.Drain.Timeout + 5*time.Second
			if grace < need {
				t.Errorf("terminationGracePeriodSeconds %s < drain delay %s + drain timeout %s + 5s", grace, a.cfg.Drain.Delay, a.cfg.Drain.Timeout)
			}
			if a.cfg.Drain.GracePeriod != grace {
				t.Errorf("OUTRIDER_GRACE_PERIOD = %s, want the pod's grace period %s so check-config checks the same budget", a.cfg.Drain.GracePeriod, grace)
			}
			// The one warning wanted: the base's example token, which the
			// user replaces before deploying.
			want := []string{"OUTRIDER_ADMIN_TOKEN is the example value of the shipped manifests"}
			if w := a.cfg.Warnings(); len(w) != 1 || !strings.HasPrefix(w[0], want[0]) {
				t.Errorf("outrider warns about the sidecar's settings: %q, want only %q", w, want)
			}
		})
	}
}

func TestPreStopCallsTheAdminListener(t *testing.T) {
	for _, o := range overlays {
		t.Run(o.dir, func(t *testing.T) {
			m := build(t, o.dir)
			a := m.app(t)
			adminPort := portOf(t, a.cfg.Listen.Admin)
			host, _, _ := net.SplitHostPort(a.cfg.Listen.Admin)
			if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
				t.Errorf("OUTRIDER_ADMIN_LISTEN %s is loopback: the kubelet's httpGet comes to the pod IP", a.cfg.Listen.Admin)
			}
			if a.app.Lifecycle == nil || a.app.Lifecycle.PreStop == nil || a.app.Lifecycle.PreStop.HTTPGet == nil {
				t.Fatal("the app container has no preStop httpGet hook")
			}
			get := a.app.Lifecycle.PreStop.HTTPGet
			if get.Path != "/prestop" {
				t.Errorf("preStop path %q, want /prestop", get.Path)
			}
			if get.Port.IntValue() != int(adminPort) {
				t.Errorf("preStop port %s, want the admin listener's %d", get.Port.String(), adminPort)
			}
			if get.Host != "" {
				t.Errorf("preStop host %q, want empty (the pod IP)", get.Host)
			}
			token := a.cfg.Listen.AdminToken.Reveal()
			if token == "" {
				t.Fatal("OUTRIDER_ADMIN_TOKEN is empty")
			}
			auth := ""
			for _, h := range get.HTTPHeaders {
				if h.Name == "Authorization" {
					auth = h.Value
				}
			}
			if auth != "Bearer "+token {
				t.Errorf("preStop Authorization header %q, want %q (the sidecar's OUTRIDER_ADMIN_TOKEN)", auth, "Bearer "+token)
			}
			if a.app.Lifecycle.PreStop.Exec != nil || a.sidecar.Lifecycle != nil {
				t.Errorf("unexpected extra lifecycle hooks")
			}
		})
	}
}

func TestProbesAndPorts(t *testing.T) {
	for _, o := range overlays {
		t.Run(o.dir, func(t *testing.T) {
			m := build(t, o.dir)
			a := m.app(t)
			metrics := portOf(t, a.cfg.Listen.Metrics)
			proxy := portOf(t, a.cfg.Listen.Proxy)
			r := a.sidecar.ReadinessProbe
			if r == nil || r.HTTPGet == nil || r.HTTPGet.Path != "/ready" || r.HTTPGet.Port.IntValue() != int(metrics) {
				t.Errorf("sidecar readiness probe %+v, want httpGet /ready on %d", r, metrics)
			}
			if l := a.sidecar.LivenessProbe; l == nil || l.HTTPGet == nil || l.HTTPGet.Path != "/healthz" || l.HTTPGet.Port.IntValue() != int(metrics) {
				t.Errorf("sidecar liveness probe %+v, want httpGet /healthz on %d", l, metrics)
			}
			ports := map[string]int32{}
			for _, p := range a.sidecar.Ports {
				ports[p.Name] = p.ContainerPort
			}
			want := map[string]int32{"proxy": proxy, "metrics": metrics, "admin": portOf(t, a.cfg.Listen.Admin)}
			for name, n := range want {
				if ports[name] != n {
					t.Errorf("sidecar port %s = %d, want %d from the config", name, ports[name], n)
				}
			}
			if _, p, _ := net.SplitHostPort(a.cfg.App.Addr); p != "8080" || a.env["OUTRIDER_PROBE"] == "" {
				t.Errorf("app address %s, probe %q", a.cfg.App.Addr, a.env["OUTRIDER_PROBE"])
			}
			appEnv := containerEnv(t, a.app, m.configMaps, m.secrets)
			if appEnv["ECHO_LISTEN"] != a.cfg.App.Addr {
				t.Errorf("the app listens on %q, outrider forwards to %q", appEnv["ECHO_LISTEN"], a.cfg.App.Addr)
			}
		})
	}
}

func TestServiceTargetsTheProxy(t *testing.T) {
	for _, o := range overlays {
		t.Run(o.dir, func(t *testing.T) {
			m := build(t, o.dir)
			a := m.app(t)
			podLabels := labels.Set(a.deploy.Spec.Template.Labels)
			var main *corev1.Service
			for _, s := range m.services {
				if s.Name == a.deploy.Name {
					main = s
				}
				if !labels.SelectorFromSet(s.Spec.Selector).Matches(podLabels) || len(s.Spec.Selector) == 0 {
					t.Errorf("Service %s selector %v does not select the pods %v", s.Name, s.Spec.Selector, podLabels)
				}
			}
			if main == nil {
				t.Fatalf("no Service named %s", a.deploy.Name)
			}
			proxy := portOf(t, a.cfg.Listen.Proxy)
			if len(main.Spec.Ports) != 1 || main.Spec.Ports[0].TargetPort.IntValue() != int(proxy) {
				t.Errorf("Service %s ports %+v, want one port targeting the proxy port %d", main.Name, main.Spec.Ports, proxy)
			}
		})
	}
}

func TestNetworkPolicyAdmitsProxyAndMetricsOnly(t *testing.T) {
	for _, o := range overlays {
		t.Run(o.dir, func(t *testing.T) {
			m := build(t, o.dir)
			a := m.app(t)
			m.kind(t, len(m.policies), "NetworkPolicies")
			np := m.policies[0]
			sel, err := metaSelector(np.Spec.PodSelector.MatchLabels)
			if err != nil || !sel.Matches(labels.Set(a.deploy.Spec.Template.Labels)) {
				t.Errorf("NetworkPolicy selects %v, not the pods", np.Spec.PodSelector)
			}
			if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
				t.Errorf("policy types %v, want [Ingress]", np.Spec.PolicyTypes)
			}
			var got []int
			for _, rule := range np.Spec.Ingress {
				if len(rule.Ports) == 0 {
					t.Errorf("an ingress rule with no ports admits every port")
				}
				for _, p := range rule.Ports {
					if p.Port == nil || p.EndPort != nil {
						t.Errorf("ingress port %+v is not one numbered port", p)
						continue
					}
					got = append(got, p.Port.IntValue())
				}
			}
			slices.Sort(got)
			want := []int{int(portOf(t, a.cfg.Listen.Proxy)), int(portOf(t, a.cfg.Listen.Metrics))}
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("NetworkPolicy admits ports %v, want exactly the proxy and metrics ports %v", got, want)
			}
		})
	}
}

func metaSelector(m map[string]string) (labels.Selector, error) {
	if len(m) == 0 {
		return nil, fmt.Errorf("empty selector")
	}
	return labels.SelectorFromSet(m), nil
}

func TestPodDisruptionBudget(t *testing.T) {
	for _, o := range overlays {
		t.Run(o.dir, func(t *testing.T) {
			m := build(t, o.dir)
			a := m.app(t)
			m.kind(t, len(m.pdbs), "PodDisruptionBudgets")
			pdb := m.pdbs[0]
			sel, err := metaSelector(pdb.Spec.Selector.MatchLabels)
			if err != nil || !sel.Matches(labels.Set(a.deploy.Spec.Template.Labels)) {
				t.Errorf("PodDisruptionBudget selects %v, not the pods", pdb.Spec.Selector)
			}
			if pdb.Spec.MaxUnavailable == nil && pdb.Spec.MinAvailable == nil {
				t.Error("PodDisruptionBudget sets neither maxUnavailable nor minAvailable")
			}
		})
	}
}

func TestSecurityContextOnEveryContainer(t *testing.T) {
	for _, o := range overlays {
		t.Run(o.dir, func(t *testing.T) {
			d := build(t, o.dir).app(t).deploy
			spec := d.Spec.Template.Spec
			all := append(slices.Clone(spec.InitContainers), spec.Containers...)
			for _, c := range all {
				sc := c.SecurityContext
				if sc == nil {
					t.Errorf("container %s has no securityContext", c.Name)
					continue
				}
				nonRoot := sc.RunAsNonRoot != nil && *sc.RunAsNonRoot
				if !nonRoot {
					t.Errorf("container %s: runAsNonRoot is not true", c.Name)
				}
				if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
					t.Errorf("container %s runs as uid 0", c.Name)
				}
				if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
					t.Errorf("container %s: readOnlyRootFilesystem is not true", c.Name)
				}
				if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
					t.Errorf("container %s: allowPrivilegeEscalation is not false", c.Name)
				}
				if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
					t.Errorf("container %s: capabilities %+v, want drop [ALL] and no add", c.Name, sc.Capabilities)
				}
				if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
					t.Errorf("container %s: seccompProfile %+v, want RuntimeDefault", c.Name, sc.SeccompProfile)
				}
				if sc.Privileged != nil && *sc.Privileged {
					t.Errorf("container %s is privileged", c.Name)
				}
				if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
					t.Errorf("container %s: resources %+v, want cpu and memory requests and a memory limit", c.Name, c.Resources)
				}
			}
			psc := spec.SecurityContext
			if psc == nil || psc.RunAsUser == nil || *psc.RunAsUser == 0 || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
				t.Errorf("pod securityContext %+v, want a numeric non-root runAsUser and runAsNonRoot", psc)
			}
		})
	}
}

// adapterConfig is prometheus-adapter's configuration file, the fields this
// project uses (decoded strictly, so a misspelt key fails).
type adapterConfig struct {
	Rules []struct {
		SeriesQuery string `json:"seriesQuery"`
		Resources   struct {
			Overrides map[string]struct {
				Resource string `json:"resource"`
			} `json:"overrides"`
		} `json:"resources"`
		Name struct {
			Matches string `json:"matches"`
			As      string `json:"as"`
		} `json:"name"`
		MetricsQuery string `json:"metricsQuery"`
	} `json:"rules"`
}

func adapterRules(t *testing.T) adapterConfig {
	t.Helper()
	m := build(t, "prometheus-adapter")
	m.kind(t, len(m.configMaps), "ConfigMaps in prometheus-adapter")
	raw := m.configMaps[0].Data["config.yaml"]
	var cfg adapterConfig
	if err := yaml.UnmarshalStrict([]byte(raw), &cfg); err != nil {
		t.Fatalf("prometheus-adapter config.yaml: %v", err)
	}
	if len(cfg.Rules) == 0 {
		t.Fatal("prometheus-adapter config.yaml has no rules")
	}
	return cfg
}

// The adapter reads the rule only from its own configuration, so
// docs/deploy.md shows it as the Helm chart's rules.custom value: the same
// rules as config.yaml.
func TestDocsShowTheAdapterRule(t *testing.T) {
	var file, values struct {
		Rules any `json:"rules"`
	}
	raw, err := os.ReadFile(filepath.Join("k8s", "prometheus-adapter", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &file); err != nil {
		t.Fatalf("prometheus-adapter config.yaml: %v", err)
	}
	if file.Rules == nil {
		t.Fatal("prometheus-adapter config.yaml has no rules")
	}
	block := promtest.DocBlock(t, "../docs/deploy.md", "adapter-values")
	if err := yaml.Unmarshal([]byte(block), &values); err != nil {
		t.Fatalf("docs/deploy.md adapter-values: %v", err)
	}
	custom, _ := values.Rules.(map[string]any)
	if got, want := custom["custom"], file.Rules; !reflect.DeepEqual(got, want) {
		t.Errorf("docs/deploy.md shows rules.custom %v, want the rules of config.yaml %v", got, want)
	}
}

func TestHPAMetricComesFromTheAdapterRule(t *testing.T) {
	cfg := adapterRules(t)
	// The metric the adapter serves for each rule: its regexp applied to the
	// series the rule selects.
	served := map[string]string{}
	for _, r := range cfg.Rules {
		series := strings.SplitN(strings.Trim(r.SeriesQuery, "'"), "{", 2)[0]
		re, err := regexp.Compile(r.Name.Matches)
		if err != nil {
			t.Fatalf("rule name.matches %q: %v", r.Name.Matches, err)
		}
		if !re.MatchString(series) {
			t.Errorf("rule for %s: name.matches %q does not match its series", series, r.Name.Matches)
		}
		served[re.ReplaceAllString(series, r.Name.As)] = series
		if r.Resources.Overrides["pod"].Resource != "pod" || r.Resources.Overrides["namespace"].Resource != "namespace" {
			t.Errorf("rule for %s maps %+v, want the pod and namespace labels to pods and namespaces", series, r.Resources.Overrides)
		}
		if !strings.Contains(r.MetricsQuery, "rate(<<.Series>>{<<.LabelMatchers>>}") || !strings.Contains(r.MetricsQuery, "by (<<.GroupBy>>)") {
			t.Errorf("rule for %s: metricsQuery %q is not a per-object rate", series, r.MetricsQuery)
		}
	}
	for _, o := range overlays {
		if !o.hpa {
			continue
		}
		t.Run(o.dir, func(t *testing.T) {
			m := build(t, o.dir)
			a := m.app(t)
			m.kind(t, len(m.hpas), "HorizontalPodAutoscalers")
			h := m.hpas[0]
			ref := h.Spec.ScaleTargetRef
			if ref.Kind != "Deployment" || ref.Name != a.deploy.Name || ref.APIVersion != "apps/v1" {
				t.Errorf("HPA scales %+v, want the Deployment %s", ref, a.deploy.Name)
			}
			if len(h.Spec.Metrics) != 1 || h.Spec.Metrics[0].Type != autoscalingv2.PodsMetricSourceType || h.Spec.Metrics[0].Pods == nil {
				t.Fatalf("HPA metrics %+v, want one Pods metric", h.Spec.Metrics)
			}
			pm := h.Spec.Metrics[0].Pods
			if pm.Metric.Name != "http_requests_per_second" {
				t.Errorf("HPA metric %q, want http_requests_per_second", pm.Metric.Name)
			}
			if served[pm.Metric.Name] != "outrider_http_requests_total" {
				t.Errorf("HPA metric %q is not served by the adapter from outrider_http_requests_total (served: %v)", pm.Metric.Name, served)
			}
			if pm.Target.Type != autoscalingv2.AverageValueMetricType || pm.Target.AverageValue == nil || pm.Target.AverageValue.IsZero() {
				t.Errorf("HPA target %+v, want a non-zero AverageValue", pm.Target)
			}
			b := h.Spec.Behavior
			if b == nil || b.ScaleDown == nil || b.ScaleDown.StabilizationWindowSeconds == nil || *b.ScaleDown.StabilizationWindowSeconds < 60 {
				t.Errorf("HPA scale-down behaviour %+v, want a stabilisation window of at least 60s", b)
			}
			if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 2 || h.Spec.MaxReplicas <= *h.Spec.MinReplicas {
				t.Errorf("HPA replicas %v..%d, want at least 2 and room to grow", h.Spec.MinReplicas, h.Spec.MaxReplicas)
			}
			if a.deploy.Spec.Replicas != nil {
				t.Errorf("the Deployment sets replicas %d; every apply would reset the HPA's count", *a.deploy.Spec.Replicas)
			}
			if len(m.customOf("ScaledObject")) != 0 {
				t.Errorf("an HPA and a KEDA ScaledObject both scale the Deployment")
			}
		})
	}
}

// podMonitor is the kustomize Component that adds the PodMonitor, for
// clusters with the Prometheus operator.
const podMonitor = "components/podmonitor"

// The base and the overlays leave the PodMonitor out, so that they apply on
// a cluster without the Prometheus operator's CRDs; with the Component
// added, the PodMonitor scrapes each one's pods.
func TestPodMonitorScrapesTheMetricsPort(t *testing.T) {
	for _, o := range overlays {
		t.Run(o.dir, func(t *testing.T) {
			if n := len(build(t, o.dir).customOf("PodMonitor")); n != 0 {
				t.Errorf("%s makes %d PodMonitors; without the Prometheus operator's CRDs it would not apply (the PodMonitor is the Component %s)", o.dir, n, podMonitor)
			}
			m := buildWith(t, o.dir, podMonitor)
			a := m.app(t)
			pms := m.customOf("PodMonitor")
			m.kind(t, len(pms), "PodMonitors")
			pm := pms[0]
			sel, _, _ := unstructured.NestedStringMap(pm.Object, "spec", "selector", "matchLabels")
			if s, err := metaSelector(sel); err != nil || !s.Matches(labels.Set(a.deploy.Spec.Template.Labels)) {
				t.Errorf("PodMonitor selects %v, not the pods", sel)
			}
			// One endpoint per name `outrider inject` may give the port;
			// the one the base's sidecar has is its metrics port.
			eps, _, _ := unstructured.NestedSlice(pm.Object, "spec", "podMetricsEndpoints")
			var ports []any
			scraped := 0
			for _, ep := range eps {
				ep := ep.(map[string]any)
				port, path := ep["port"], ep["path"]
				ports = append(ports, port)
				for _, p := range a.sidecar.Ports {
					if p.Name != port {
						continue
					}
					scraped++
					if p.ContainerPort != portOf(t, a.cfg.Listen.Metrics) {
						t.Errorf("PodMonitor scrapes port %v (%d), want the metrics port %d", port, p.ContainerPort, portOf(t, a.cfg.Listen.Metrics))
					}
				}
				if path != "/metrics" {
					t.Errorf("PodMonitor endpoint on port %v scrapes path %v, want /metrics", port, path)
				}
				// Only outrider's port, and service, which the recording
				// rules and KEDA's query group by.
				relabel, _ := ep["relabelings"].([]any)
				var outrider, service bool
				for _, r := range relabel {
					r, _ := r.(map[string]any)
					src, _ := r["sourceLabels"].([]any)
					outrider = outrider || r["action"] == "keep" && r["regex"] == "outrider" && len(src) == 1 &&
						src[0] == "__meta_kubernetes_pod_container_name"
					service = service || r["targetLabel"] == "service" && len(src) == 1 &&
						src[0] == "__meta_kubernetes_pod_label_app_kubernetes_io_name"
				}
				if !outrider {
					t.Errorf("PodMonitor endpoint on port %v relabelings %v: none keeps the outrider container only", port, relabel)
				}
				if !service {
					t.Errorf("PodMonitor endpoint on port %v relabelings %v: none sets service from the pod's app.kubernetes.io/name", port, relabel)
				}
			}
			if !slices.Equal(ports, []any{"metrics", "outrider-metric"}) || scraped != 1 {
				t.Errorf("PodMonitor endpoints on ports %v, %d of them the sidecar's; want metrics and outrider-metric, one the sidecar's", ports, scraped)
			}
		})
	}
}

func TestKEDAScaledObjectReadsTheRequestRate(t *testing.T) {
	m := build(t, "overlays/keda")
	a := m.app(t)
	if len(m.hpas) != 0 {
		t.Errorf("the KEDA overlay keeps %d HPAs; KEDA makes its own", len(m.hpas))
	}
	sos := m.customOf("ScaledObject")
	m.kind(t, len(sos), "ScaledObjects")
	so := sos[0].Object
	name, _, _ := unstructured.NestedString(so, "spec", "scaleTargetRef", "name")
	if name != a.deploy.Name {
		t.Errorf("ScaledObject scales %q, want %q", name, a.deploy.Name)
	}
	min, _, _ := unstructured.NestedInt64(so, "spec", "minReplicaCount")
	max, _, _ := unstructured.NestedInt64(so, "spec", "maxReplicaCount")
	if min < 2 || max <= min {
		t.Errorf("ScaledObject replicas %d..%d", min, max)
	}
	window, ok, _ := unstructured.NestedInt64(so, "spec", "advanced", "horizontalPodAutoscalerConfig", "behavior", "scaleDown", "stabilizationWindowSeconds")
	if !ok || window < 60 {
		t.Errorf("ScaledObject scale-down stabilisation %d, want at least 60s", window)
	}
	triggers, _, _ := unstructured.NestedSlice(so, "spec", "triggers")
	if len(triggers) != 1 {
		t.Fatalf("ScaledObject triggers %v, want one", triggers)
	}
	tr := triggers[0].(map[string]any)
	md, _ := tr["metadata"].(map[string]any)
	if tr["type"] != "prometheus" || tr["metricType"] != "AverageValue" {
		t.Errorf("trigger %v, want prometheus with metricType AverageValue (replicas = total rate / threshold)", tr)
	}
	if v, err := strconv.ParseFloat(fmt.Sprint(md["threshold"]), 64); err != nil || v <= 0 {
		t.Errorf("trigger threshold %v, want a positive number", md["threshold"])
	}
	if u, err := url.Parse(fmt.Sprint(md["serverAddress"])); err != nil || u.Scheme == "" || u.Host == "" {
		t.Errorf("trigger serverAddress %v, want a URL", md["serverAddress"])
	}
	// The service's total rate, from the counter, by the labels both the
	// PodMonitor and the kubernetes job of docs/prometheus.md set.
	service := a.deploy.Spec.Template.Labels["app.kubernetes.io/name"]
	query := fmt.Sprint(md["query"])
	for _, want := range []string{"sum(rate(outrider_http_requests_total{", `service="` + service + `"`, `namespace="`} {
		if !strings.Contains(query, want) {
			t.Errorf("trigger query %q lacks %q", query, want)
		}
	}
}
