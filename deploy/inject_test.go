package deploy_test

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
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
	"github.com/outrider-sidecar/outrider/internal/promtest"
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
			for _, spec := range goldenPodSpecs(t, file) {
				if checkInjected(t, spec) {
					injected++
				}
			}
		})
	}
	if injected < 6 {
		t.Errorf("found %d injected pod specs in the golden files, want one per kind at least", injected)
	}
}

// goldenPodSpecs decodes every document of file strictly and returns the
// pod specs among them.
func goldenPodSpecs(t *testing.T, file string) []corev1.PodSpec {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var specs []corev1.PodSpec
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return specs
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
		switch head.Kind {
		case "Deployment":
			specs = append(specs, decode[appsv1.Deployment](t, file, js).Spec.Template.Spec)
		case "StatefulSet":
			specs = append(specs, decode[appsv1.StatefulSet](t, file, js).Spec.Template.Spec)
		case "DaemonSet":
			specs = append(specs, decode[appsv1.DaemonSet](t, file, js).Spec.Template.Spec)
		case "Pod":
			specs = append(specs, decode[corev1.Pod](t, file, js).Spec)
		case "PodTemplate":
			specs = append(specs, decode[corev1.PodTemplate](t, file, js).Template.Spec)
		case "Service":
			decode[corev1.Service](t, file, js)
		case "ConfigMap":
			decode[corev1.ConfigMap](t, file, js)
		default:
			t.Fatalf("no decoder for kind %q", head.Kind)
		}
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

// relabel is the part of a Prometheus relabel rule (or a PodMonitor
// relabeling) that keeps or drops targets.
type relabel struct {
	Source    []string `json:"source_labels"`
	Sources   []string `json:"sourceLabels"` // the operator's spelling
	Separator string   `json:"separator"`
	Regex     string   `json:"regex"`
	Action    string   `json:"action"`
	Target    string   `json:"target_label"`
	Targets   string   `json:"targetLabel"` // the operator's spelling
}

// relabeled applies the replace rules whose source labels are all in
// target, as Prometheus does (default regex (.*), replacement $1), and
// returns the labels they set.
func relabeled(t *testing.T, rules []relabel, target map[string]string) map[string]string {
	t.Helper()
	set := map[string]string{}
	for _, r := range rules {
		if a := strings.ToLower(cmp.Or(r.Action, "replace")); a != "replace" {
			continue
		}
		src := append(r.Source, r.Sources...)
		values := make([]string, len(src))
		for i, l := range src {
			values[i] = target[l]
		}
		re, err := regexp.Compile("^(?:" + cmp.Or(r.Regex, "(.*)") + ")$")
		if err != nil {
			t.Fatalf("relabel regex %q: %v", r.Regex, err)
		}
		v := strings.Join(values, cmp.Or(r.Separator, ";"))
		if m := re.FindStringSubmatchIndex(v); m != nil {
			set[r.Target+r.Targets] = string(re.ExpandString(nil, "$1", v, m))
		}
	}
	return set
}

// kept applies the keep and drop rules whose source labels are all in
// target to it, as Prometheus does; other rules are left out.
func kept(t *testing.T, rules []relabel, target map[string]string) bool {
	t.Helper()
	for _, r := range rules {
		action := strings.ToLower(r.Action)
		if action != "keep" && action != "drop" {
			continue
		}
		src := append(r.Source, r.Sources...)
		values := make([]string, len(src))
		known := len(src) > 0
		for i, l := range src {
			v, ok := target[l]
			values[i], known = v, known && ok
		}
		if !known {
			continue
		}
		sep := r.Separator
		if sep == "" {
			sep = ";"
		}
		re, err := regexp.Compile("^(?:" + cmp.Or(r.Regex, "(.*)") + ")$")
		if err != nil {
			t.Fatalf("relabel regex %q: %v", r.Regex, err)
		}
		if re.MatchString(strings.Join(values, sep)) != (action == "keep") {
			return false
		}
	}
	return true
}

// The kubernetes scrape job of docs/prometheus.md and the PodMonitor of
// deploy/k8s/base find outrider's metrics port in every pod that `outrider
// inject` writes, and no other port: the sidecar's port is named metrics,
// or outrider-metric where another container has a port named metrics.
func TestInjectedPodsAreScraped(t *testing.T) {
	jobRules, endpoints := kubernetesJobRules(t), podMonitorEndpoints(t)
	goldens, err := filepath.Glob(filepath.Join(root, "inject", "testdata", "*.golden.yaml"))
	if err != nil || len(goldens) == 0 {
		t.Fatalf("no golden files of outrider inject (%v)", err)
	}
	names := map[string]bool{}
	for _, file := range goldens {
		t.Run(filepath.Base(file), func(t *testing.T) {
			for _, spec := range goldenPodSpecs(t, file) {
				all := append(spec.InitContainers, spec.Containers...)
				i := slices.IndexFunc(all, func(c corev1.Container) bool { return c.Name == "outrider" })
				if i < 0 {
					continue
				}
				metrics := portOf(t, containerEnv(t, all[i], nil, nil)["OUTRIDER_METRICS_LISTEN"])
				want := ""
				for _, p := range all[i].Ports {
					if p.ContainerPort == metrics {
						want = "outrider;" + p.Name
						names[p.Name] = true
					}
				}
				var byJob, byMonitor []string
				for _, c := range all {
					for _, p := range c.Ports {
						target := map[string]string{
							"__meta_kubernetes_pod_container_name":      c.Name,
							"__meta_kubernetes_pod_container_port_name": p.Name,
						}
						if kept(t, jobRules, target) {
							byJob = append(byJob, c.Name+";"+p.Name)
						}
						for _, ep := range endpoints {
							if ep.Port == p.Name && kept(t, ep.Relabelings, target) {
								byMonitor = append(byMonitor, c.Name+";"+p.Name)
							}
						}
					}
				}
				if len(byJob) != 1 || byJob[0] != want {
					t.Errorf("the kubernetes job of docs/prometheus.md keeps %v, want the metrics port %s only", byJob, want)
				}
				if len(byMonitor) != 1 || byMonitor[0] != want {
					t.Errorf("the PodMonitor scrapes %v, want the metrics port %s only", byMonitor, want)
				}
			}
		})
	}
	if !names["metrics"] || !names["outrider-metric"] {
		t.Errorf("the golden files name the metrics port %v, want both metrics and outrider-metric", names)
	}
}

// The PodMonitor sets the service label from the pod's labels as the
// kubernetes job of docs/prometheus.md does: the recording rules and
// KEDA's query group by it, whichever of the two scrapes.
func TestPodMonitorSetsServiceAsTheJobDoes(t *testing.T) {
	jobRules, endpoints := kubernetesJobRules(t), podMonitorEndpoints(t)
	const app, name = "__meta_kubernetes_pod_label_app", "__meta_kubernetes_pod_label_app_kubernetes_io_name"
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   string
	}{
		{name: "app label only", labels: map[string]string{app: "web"}, want: "web"},
		{name: "app.kubernetes.io/name only", labels: map[string]string{name: "web"}, want: "web"},
		{name: "both", labels: map[string]string{app: "legacy", name: "web"}, want: "web"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := relabeled(t, jobRules, tc.labels)["service"]; got != tc.want {
				t.Errorf("the kubernetes job of docs/prometheus.md sets service %q, want %q", got, tc.want)
			}
			for _, ep := range endpoints {
				if got := relabeled(t, ep.Relabelings, tc.labels)["service"]; got != tc.want {
					t.Errorf("the PodMonitor's endpoint on port %s sets service %q, want %q", ep.Port, got, tc.want)
				}
			}
		})
	}
}

// kubernetesJobRules are the relabel rules of the kubernetes scrape job
// of docs/prometheus.md.
func kubernetesJobRules(t *testing.T) []relabel {
	t.Helper()
	var job struct {
		ScrapeConfigs []struct {
			Relabel []relabel `json:"relabel_configs"`
		} `json:"scrape_configs"`
	}
	if err := yaml.Unmarshal([]byte(promtest.DocBlock(t, filepath.Join(root, "docs", "prometheus.md"), "scrape-job: kubernetes")), &job); err != nil {
		t.Fatal(err)
	}
	if len(job.ScrapeConfigs) != 1 {
		t.Fatalf("docs/prometheus.md: the kubernetes job has %d scrape configs, want 1", len(job.ScrapeConfigs))
	}
	return job.ScrapeConfigs[0].Relabel
}

// podMonitorEndpoint is one podMetricsEndpoints entry of a PodMonitor.
type podMonitorEndpoint struct {
	Port        string    `json:"port"`
	Relabelings []relabel `json:"relabelings"`
}

// podMonitorEndpoints are the endpoints of the PodMonitor of
// deploy/k8s/components/podmonitor.
func podMonitorEndpoints(t *testing.T) []podMonitorEndpoint {
	t.Helper()
	var pm struct {
		Spec struct {
			Endpoints []podMonitorEndpoint `json:"podMetricsEndpoints"`
		} `json:"spec"`
	}
	raw, err := os.ReadFile(filepath.Join(root, "deploy", "k8s", "components", "podmonitor", "podmonitor.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &pm); err != nil {
		t.Fatal(err)
	}
	return pm.Spec.Endpoints
}
