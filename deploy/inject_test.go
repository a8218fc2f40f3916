package deploy_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/outrider-sidecar/outrider/config"
)

// What `outrider inject` writes (its golden files) must be valid Kubernetes
// objects, strictly decoded, and satisfy the same contract as deploy/k8s.
func TestInjectOutputIsValid(t *testing.T) {
	goldens, err := filepath.Glob(filepath.Join(root, "inject", "testdata", "*.golden.yaml"))
	if err != nil || len(goldens) == 0 {
		t.Fatalf("no golden files of outrider inject (%v)", err)
	}
	injected := 0
	for _, file := range goldens {
		t.Run(filepath.Base(file), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
			for {
				doc, err := r.Read()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				js, err := yaml.YAMLToJSONStrict(doc)
				if err != nil {
					t.Fatal(err)
				}
				if string(js) == "null" {
					continue
				}
				var head struct{ Kind string }
				if err := yaml.Unmarshal(doc, &head); err != nil {
					t.Fatal(err)
				}
				var spec *corev1.PodSpec
				switch head.Kind {
				case "Deployment":
					spec = &decode[appsv1.Deployment](t, file, js).Spec.Template.Spec
				case "StatefulSet":
					spec = &decode[appsv1.StatefulSet](t, file, js).Spec.Template.Spec
				case "DaemonSet":
					spec = &decode[appsv1.DaemonSet](t, file, js).Spec.Template.Spec
				case "Pod":
					spec = &decode[corev1.Pod](t, file, js).Spec
				case "PodTemplate":
					spec = &decode[corev1.PodTemplate](t, file, js).Template.Spec
				case "Service":
					decode[corev1.Service](t, file, js)
				case "ConfigMap":
					decode[corev1.ConfigMap](t, file, js)
				default:
					t.Fatalf("no decoder for kind %q", head.Kind)
				}
				if spec != nil && checkInjected(t, *spec) {
					injected++
				}
			}
		})
	}
	if injected < 6 {
		t.Errorf("found %d injected pod specs in the golden files, want one per kind at least", injected)
	}
}

// checkInjected checks a pod spec that has the sidecar; false if it has none.
func checkInjected(t *testing.T, spec corev1.PodSpec) bool {
	t.Helper()
	var sidecar *corev1.Container
	for i, c := range spec.InitContainers {
		if c.Name == "outrider" {
			sidecar = &spec.InitContainers[i]
			if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
				t.Errorf("outrider is an init container without restartPolicy Always: it would block the app")
			}
		}
	}
	for i, c := range spec.Containers {
		if c.Name == "outrider" {
			sidecar = &spec.Containers[i]
		}
	}
	if sidecar == nil {
		return false
	}
	known := map[string]bool{}
	for _, s := range (config.Config{}).Effective() {
		known[s.Var] = true
	}
	env := containerEnv(t, *sidecar, nil, nil)
	for k := range env {
		if strings.HasPrefix(k, "OUTRIDER_") && !known[k] {
			t.Errorf("the sidecar sets %s, which the config package does not read", k)
		}
	}
	cfg, err := config.Load(func(k string) string { return env[k] }, "unused", func() (string, error) { return "", errors.New("POD_IP should have been used") })
	if err != nil {
		t.Fatalf("outrider would not start with the injected environment: %v", err)
	}
	if w := cfg.Warnings(); len(w) > 0 {
		t.Errorf("outrider warns about the injected settings: %v", w)
	}
	if spec.ShareProcessNamespace == nil || !*spec.ShareProcessNamespace {
		t.Error("shareProcessNamespace is not true")
	}
	grace := time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
	if grace < cfg.Drain.Delay+cfg.Drain.Timeout+5*time.Second || cfg.Drain.GracePeriod != grace {
		t.Errorf("grace period %s, drain %s + %s, OUTRIDER_GRACE_PERIOD %s", grace, cfg.Drain.Delay, cfg.Drain.Timeout, cfg.Drain.GracePeriod)
	}
	hooks := 0
	for _, c := range spec.Containers {
		if c.Lifecycle == nil || c.Lifecycle.PreStop == nil {
			continue
		}
		hooks++
		get := c.Lifecycle.PreStop.HTTPGet
		if get == nil || get.Path != "/prestop" || get.Port.IntValue() != int(portOf(t, cfg.Listen.Admin)) ||
			!slices.Contains(get.HTTPHeaders, corev1.HTTPHeader{Name: "Authorization", Value: "Bearer " + cfg.Listen.AdminToken.Reveal()}) {
			t.Errorf("container %s preStop %+v does not call the admin listener %s with the token", c.Name, c.Lifecycle.PreStop, cfg.Listen.Admin)
		}
		if _, port, _ := strings.Cut(cfg.App.Addr, ":"); !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return port == strconv.Itoa(int(p.ContainerPort)) }) && len(c.Ports) > 0 {
			t.Errorf("OUTRIDER_APP_ADDR %s is none of container %s's ports %v", cfg.App.Addr, c.Name, c.Ports)
		}
	}
	if hooks != 1 {
		t.Errorf("%d containers have a preStop hook, want the app's only", hooks)
	}
	if r := sidecar.ReadinessProbe; r == nil || r.HTTPGet == nil || r.HTTPGet.Path != "/ready" || r.HTTPGet.Port.IntValue() != int(portOf(t, cfg.Listen.Metrics)) {
		t.Errorf("sidecar readiness probe %+v", r)
	}
	sc := sidecar.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("sidecar securityContext %+v", sc)
	}
	return true
}
