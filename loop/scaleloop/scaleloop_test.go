package scaleloop_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/outrider-sidecar/outrider/internal/consultest"
	"github.com/outrider-sidecar/outrider/internal/grafanatest"
	"github.com/outrider-sidecar/outrider/internal/loadreport"
	"github.com/outrider-sidecar/outrider/internal/promtest"
	"github.com/outrider-sidecar/outrider/internal/testbin"
	"github.com/outrider-sidecar/outrider/internal/testlog"
	"github.com/outrider-sidecar/outrider/loop/internal/kedatest"
	"github.com/outrider-sidecar/outrider/loop/internal/kubetest"
	"github.com/outrider-sidecar/outrider/loop/internal/podrunner"
	"github.com/outrider-sidecar/outrider/loop/scaleloop"
)

// The project's files this test runs, relative to this package.
const (
	overlay      = "testdata/local"
	promDoc      = "../../docs/prometheus.md"
	promRules    = "../../deploy/prometheus/rules.yml"
	adapterRules = "../../deploy/k8s/prometheus-adapter/config.yaml"
	dashboard    = "../../deploy/grafana/outrider.json"
)

const (
	namespace = "default" // the namespace in the shipped trigger's query
	service   = "echo"
	// ciProfile is the load of the CI run: a low rate for one replica, a
	// rate for four (the threshold is 100 requests/s per replica), then the
	// low rate again until the HPA is back at one replica. 33,200 requests.
	ciProfile = "40:20s,400:70s,40:110s"
)

func TestMain(m *testing.M) { testbin.Main(m) }

// TestScalingLoop closes the loop on real components: the kustomize output
// of deploy/k8s (the KEDA overlay, through the local overlay of testdata)
// applied to a real kube-apiserver; KEDA's operator and metrics adapter
// turning the shipped ScaledObject into an HPA that the real HPA controller
// runs, on the request rate a real Prometheus scrapes from outrider through
// the kubernetes job of docs/prometheus.md; pods of bin/outrider and
// bin/echo run by podrunner (the one stand-in, for the kubelet), registered
// in a real Consul; and examples/loadgen finding them there and sending
// each request once, as the rate profile says.
//
// It asserts the loop's promise: the HPA takes the Deployment from 1 to at
// least 3 replicas and back to 1, removing replicas while the load still
// runs; every new pod is passing in Consul and serves its first request
// within the probe period + 1 s of its app starting; not one request
// fails, and at least 60% of the profile's requests are sent (20,000 of
// the CI profile's 33,200). It also evaluates the shipped
// prometheus-adapter rule per pod, and every panel of the shipped Grafana
// dashboard, against the run's Prometheus.
//
// SCALE_PROFILE replaces the load profile; SCALE_RESULTS names a directory
// for the chart, the summary and the load client's timeline (make scale).
func TestScalingLoop(t *testing.T) {
	profile := envOr("SCALE_PROFILE", ciProfile)
	results := os.Getenv("SCALE_RESULTS")
	began := time.Now()
	progress := func(format string, args ...any) {
		t.Logf("[%5.1fs] %s", time.Since(began).Seconds(), fmt.Sprintf(format, args...))
	}

	outrider, echo := testbin.Outrider(t), testbin.Echo(t)
	loadgen := testbin.Build(t, "./examples/loadgen", "loadgen")
	cp := kubetest.Start(t, kubetest.WithHPASyncPeriod(5*time.Second))
	progress("control plane up: etcd, kube-apiserver, kube-controller-manager")
	keda := kedatest.Start(t, cp)
	progress("KEDA up: operator, metrics adapter behind the APIService")
	consul := consultest.Start(t)
	prom := promtest.Start(t, promtest.Config{
		ScrapeConfigs: kubernetesJob(t, cp.Kubeconfig),
		RuleFiles:     []string{promRules},
		Interval:      2 * time.Second,
	})
	progress("Consul and Prometheus up")

	// The stand-in kubelet, and when each app started. Its containers'
	// logs are kept with the results when there are results.
	podLogs := t.TempDir()
	if results != "" {
		podLogs = filepath.Join(results, "pods")
		if err := os.MkdirAll(podLogs, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	appStarted := map[string]time.Time{}
	var runnerLog testlog.Buffer
	runner, err := podrunner.New(podrunner.Config{
		Client:    cp.Client(),
		Namespace: namespace,
		Images: map[string]podrunner.Image{
			"outrider:dev":      {Entrypoint: []string{outrider}},
			"outrider-echo:dev": {Entrypoint: []string{echo}},
		},
		HostPorts: map[int]string{8500: consul.HTTPAddr},
		Dir:       podLogs,
		Started: func(pod, container string, at time.Time) {
			if container == "app" {
				mu.Lock()
				appStarted[pod] = at
				mu.Unlock()
			}
		},
		Log: slog.New(slog.NewTextHandler(&runnerLog, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stopRunner := context.WithCancel(context.Background())
	runnerDone := make(chan error, 1)
	go func() { runnerDone <- runner.Run(ctx) }()
	t.Cleanup(func() {
		stopRunner()
		if err := <-runnerDone; err != nil {
			t.Errorf("podrunner: %v", err)
		}
		if t.Failed() {
			t.Logf("podrunner log:\n%s", runnerLog.String())
			t.Logf("KEDA log:\n%s", keda.Log(40))
			t.Logf("Prometheus log:\n%s", prom.Log(20))
		}
	})

	objs, err := scaleloop.Render(overlay)
	if err != nil {
		t.Fatal(err)
	}
	so, err := scaleloop.Find(objs, "ScaledObject", service)
	if err != nil {
		t.Fatal(err)
	}
	setServerAddress(t, so, prom.URL)
	probePeriod := settingDuration(t, objs, "OUTRIDER_PROBE_PERIOD")
	if err := scaleloop.Apply(context.Background(), cp.Config(), namespace, objs); err != nil {
		t.Fatal(err)
	}
	progress("applied %d objects of %s (kustomize of deploy/k8s/overlays/keda)", len(objs), overlay)

	client := cp.Client()
	first := waitPassing(t, consul, 1, 2*time.Minute)
	progress("first pod %s passing in Consul", first[0])
	loadStart := time.Now()
	load := exec.Command(loadgen, "-consul", consul.HTTPAddr, "-service", service, "-profile", profile)
	var loadOut, loadErr bytes.Buffer
	load.Stdout, load.Stderr = &loadOut, &loadErr
	if err := load.Start(); err != nil {
		t.Fatal(err)
	}
	loadDone := make(chan error, 1)
	go func() { loadDone <- load.Wait() }()
	t.Cleanup(func() {
		if load.ProcessState == nil {
			_ = load.Process.Kill()
			<-loadDone
		}
	})
	progress("load started: %s", profile)

	// Every second, what the HPA wants, what is ready and what it saw;
	// at the peak, the pods' registrations and the adapter rule.
	run := scaleloop.Run{Start: loadStart}
	podIPs := map[string]string{}
	var peakChecked bool
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var loadErrExit error
sampling:
	for {
		select {
		case loadErrExit = <-loadDone:
			break sampling
		case <-tick.C:
		}
		s := sample(t, client)
		run.Samples = append(run.Samples, s)
		if len(run.Samples)%10 == 0 || s.Desired != run.Samples[max(0, len(run.Samples)-2)].Desired {
			progress("replicas desired %d, ready %d; rate seen by the HPA %.0f/s", s.Desired, s.Ready, s.Metric)
		}
		for name, ip := range podsOf(t, client, false) {
			podIPs[name] = ip
		}
		if !peakChecked && s.Ready >= 3 {
			peakChecked = true
			ready := podsOf(t, client, true)
			progress("%d pods ready: checking Consul and the prometheus-adapter rule", len(ready))
			waitPassing(t, consul, len(ready), 30*time.Second, slices.Sorted(maps.Keys(ready))...)
			checkAdapterRule(t, prom, ready)
		}
	}
	loadEnd := time.Now()
	if loadErrExit != nil {
		t.Fatalf("loadgen: %v\n%s", loadErrExit, tailString(loadErr.String(), 2000))
	}
	sum := parseLoad(t, loadOut.Bytes())
	for _, s := range sum.PerSecond {
		run.Load = append(run.Load, scaleloop.LoadSecond{
			At: loadStart.Add(time.Duration(s.Second) * time.Second), Offered: s.Offered, OK: s.OK, Failed: s.Failed,
		})
	}
	progress("load done: %d requests, %d failed, %d skipped", sum.Requests, sum.Failed, sum.Skipped)

	// The HPA should be at one replica by now; give it the scale-in's time
	// if not, sampling on.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		s := sample(t, client)
		run.Samples = append(run.Samples, s)
		if (s.Desired == 1 && s.Ready == 1) || time.Now().After(deadline) {
			break
		}
		<-tick.C
	}
	final := run.Samples[len(run.Samples)-1]

	// The first new pod, and how soon each new pod served.
	mu.Lock()
	started := maps.Clone(appStarted)
	mu.Unlock()
	var newPods []string
	for pod, at := range started {
		if pod != first[0] && at.After(loadStart) {
			newPods = append(newPods, pod)
		}
	}
	slices.SortFunc(newPods, func(a, b string) int { return started[a].Compare(started[b]) })
	summary := scaleloop.Summary{
		Requests: sum.Requests, Failed: sum.Failed,
		PeakReplicas: run.Peak(), FinalReplicas: final.Desired,
	}
	bound := probePeriod + time.Second
	for i, pod := range newPods {
		in := sum.Instances[podIPs[pod]+":15001"]
		if in == nil || in.FirstRequest.IsZero() {
			t.Errorf("new pod %s (app started %s after the load) never served a request", pod, started[pod].Sub(loadStart).Round(time.Millisecond))
			continue
		}
		after := in.FirstRequest.Sub(started[pod])
		if i == 0 {
			summary.FirstServed = after
		}
		progress("new pod %s: app started at %.1fs, first request %s later, %d requests", pod, started[pod].Sub(loadStart).Seconds(), after.Round(time.Millisecond), in.Requests)
		if after > bound {
			t.Errorf("new pod %s served its first request %s after its app started, want within the probe period + 1s (%s)", pod, after.Round(time.Millisecond), bound)
		}
	}

	line := summary.String()
	t.Log(line)
	fmt.Println(line)
	if results != "" {
		writeResults(t, results, run, line, loadOut.Bytes())
	}

	// The floor that keeps "none failed" from holding of a run that sent
	// little: 60% of what the profile asks for (20,000 of the CI run's
	// 33,200), whatever profile SCALE_PROFILE gives.
	if asked := profileRequests(t, profile); summary.Requests < asked*6/10 {
		t.Errorf("%d requests of the profile's %d sent, want at least 60%% (%d)", summary.Requests, asked, asked*6/10)
	}
	if sum.Failed != 0 {
		t.Errorf("%d requests failed, want none: %v", sum.Failed, sum.Errors)
	}
	// A skipped request was never sent (every worker of the client was
	// waiting for an answer when it was due): not a lost request, and not
	// counted among the requests, but the run offered that much less.
	if sum.Skipped != 0 {
		t.Logf("note: the load client skipped %d requests it could not send in time (all its workers busy)", sum.Skipped)
	}
	if summary.PeakReplicas < 3 {
		t.Errorf("peak replicas %d, want the HPA to reach at least 3", summary.PeakReplicas)
	}
	// Scale-in is tested only while the client sends: a pod removed after
	// the load ended has no request to lose.
	if in := run.ScaledIn(loadEnd); in == 0 {
		t.Errorf("no replica removed while the load ran (peak %d, %d at the load's end), want the scale-in under load: the profile's last stretch is too short for the HPA to scale in", run.Peak(), desiredAt(run, loadEnd))
	} else {
		progress("%d replicas removed under load", in)
	}
	if final.Desired != 1 || final.Ready != 1 {
		t.Errorf("final replicas desired %d, ready %d, want 1 and 1", final.Desired, final.Ready)
	}
	if len(newPods) < 2 {
		t.Errorf("%d new pods started under load, want at least 2", len(newPods))
	}

	// Every panel of the shipped dashboard has data from the run.
	d, err := grafanatest.Read(dashboard)
	if err != nil {
		t.Fatal(err)
	}
	var instances []string
	for _, ip := range podIPs {
		instances = append(instances, ip+":15090")
	}
	slices.Sort(instances)
	grafanatest.Query(t, d, prom, loadStart, map[string][]string{"namespace": {namespace}, "service": {service}, "instance": slices.Compact(instances)})
}

// kubernetesJob is the kubernetes scrape job of docs/prometheus.md, told
// where the apiserver is through kubeconfig.
func kubernetesJob(t *testing.T, kubeconfig string) string {
	t.Helper()
	job := promtest.DocBlock(t, promDoc, "scrape-job: kubernetes")
	const role = "      - role: pod\n"
	if strings.Count(job, role) != 1 {
		t.Fatalf("%s: the kubernetes job has no one %q", promDoc, strings.TrimSpace(role))
	}
	return strings.Replace(job, role, role+"        kubeconfig_file: "+kubeconfig+"\n", 1)
}

// setServerAddress points the ScaledObject's prometheus trigger at the
// run's Prometheus.
func setServerAddress(t *testing.T, so *unstructured.Unstructured, url string) {
	t.Helper()
	triggers, _, _ := unstructured.NestedSlice(so.Object, "spec", "triggers")
	if len(triggers) != 1 {
		t.Fatalf("ScaledObject triggers %v, want one", triggers)
	}
	tr := triggers[0].(map[string]any)
	if tr["type"] != "prometheus" {
		t.Fatalf("ScaledObject trigger type %v, want prometheus", tr["type"])
	}
	md := tr["metadata"].(map[string]any)
	md["serverAddress"] = url
	if err := unstructured.SetNestedSlice(so.Object, triggers, "spec", "triggers"); err != nil {
		t.Fatal(err)
	}
}

// settingDuration reads a duration from outrider's rendered ConfigMap.
func settingDuration(t *testing.T, objs []*unstructured.Unstructured, key string) time.Duration {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() != "ConfigMap" || !strings.HasPrefix(o.GetName(), "outrider-settings") {
			continue
		}
		v, _, _ := unstructured.NestedString(o.Object, "data", key)
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("ConfigMap %s: %s=%q: %v", o.GetName(), key, v, err)
		}
		return d
	}
	t.Fatalf("no outrider-settings ConfigMap among the rendered manifests")
	return 0
}

// sample reads the Deployment and the HPA KEDA made.
func sample(t *testing.T, client kubernetes.Interface) scaleloop.Sample {
	t.Helper()
	ctx := context.Background()
	s := scaleloop.Sample{At: time.Now(), Metric: -1}
	dep, err := client.AppsV1().Deployments(namespace).Get(ctx, service, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("read Deployment %s: %v", service, err)
	}
	if dep.Spec.Replicas != nil {
		s.Desired = int(*dep.Spec.Replicas)
	}
	s.Ready = int(dep.Status.ReadyReplicas)
	hpa, err := client.AutoscalingV2().HorizontalPodAutoscalers(namespace).Get(ctx, "keda-hpa-"+service, metav1.GetOptions{})
	if err == nil {
		s.Metric = externalTotal(hpa)
	}
	return s
}

// externalTotal is the rate the HPA saw: its external metric's current
// average times the replicas it averaged over.
func externalTotal(hpa *autoscalingv2.HorizontalPodAutoscaler) float64 {
	for _, m := range hpa.Status.CurrentMetrics {
		if m.External == nil {
			continue
		}
		switch {
		case m.External.Current.AverageValue != nil:
			return m.External.Current.AverageValue.AsApproximateFloat64() * float64(hpa.Status.CurrentReplicas)
		case m.External.Current.Value != nil:
			return m.External.Current.Value.AsApproximateFloat64()
		}
	}
	return -1
}

// podsOf lists the pods of the Deployment that have an IP, or only the
// Ready ones, name to IP.
func podsOf(t *testing.T, client kubernetes.Interface, onlyReady bool) map[string]string {
	t.Helper()
	pods, err := client.CoreV1().Pods(namespace).List(context.Background(), metav1.ListOptions{
		LabelSelector: labels.Set{"app.kubernetes.io/name": service}.String(),
	})
	if err != nil {
		t.Fatalf("list pods: %v", err)
	}
	ready := map[string]string{}
	for _, p := range pods.Items {
		if !onlyReady && p.Status.PodIP != "" {
			ready[p.Name] = p.Status.PodIP
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && p.DeletionTimestamp == nil {
				ready[p.Name] = p.Status.PodIP
			}
		}
	}
	return ready
}

// waitPassing waits until Consul has at least n passing instances of the
// service, including each of want, and returns their IDs.
func waitPassing(t *testing.T, srv *consultest.Server, n int, limit time.Duration, want ...string) []string {
	t.Helper()
	deadline := time.Now().Add(limit)
	var ids []string
	for {
		entries, _, err := srv.Client().Health().Service(service, "", true, nil)
		if err == nil {
			ids = ids[:0]
			for _, e := range entries {
				ids = append(ids, e.Service.ID)
			}
			missing := slices.DeleteFunc(slices.Clone(want), func(id string) bool { return slices.Contains(ids, id) })
			if len(ids) >= n && len(missing) == 0 {
				slices.Sort(ids)
				return ids
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s Consul has passing instances %v of %s (err %v), want %d including %v", limit, ids, service, err, n, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkAdapterRule evaluates the shipped prometheus-adapter rule as the
// adapter does for the HPA's Pods metric over the ready pods: its
// seriesQuery finds each pod's series, and its metricsQuery, templates
// filled, gives each pod a rate above 0.
func checkAdapterRule(t *testing.T, prom *promtest.Server, ready map[string]string) {
	t.Helper()
	b, err := os.ReadFile(adapterRules)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Rules []struct {
			SeriesQuery  string `json:"seriesQuery"`
			MetricsQuery string `json:"metricsQuery"`
			Name         struct {
				Matches string `json:"matches"`
			} `json:"name"`
		} `json:"rules"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("%s: %v", adapterRules, err)
	}
	if len(cfg.Rules) != 1 {
		t.Fatalf("%s: %d rules, want one", adapterRules, len(cfg.Rules))
	}
	rule := cfg.Rules[0]
	series := strings.Trim(regexp.MustCompile(`[\^$]`).ReplaceAllString(rule.Name.Matches, ""), " ")
	pods := slices.Sorted(maps.Keys(ready))
	tmpl, err := template.New("metricsQuery").Delims("<<", ">>").Parse(rule.MetricsQuery)
	if err != nil {
		t.Fatalf("%s: metricsQuery: %v", adapterRules, err)
	}
	var q strings.Builder
	err = tmpl.Execute(&q, map[string]string{
		"Series":        series,
		"LabelMatchers": fmt.Sprintf(`namespace=%q,pod=~%q`, namespace, strings.Join(pods, "|")),
		"GroupBy":       "pod",
	})
	if err != nil {
		t.Fatalf("%s: metricsQuery: %v", adapterRules, err)
	}
	// A new pod's series needs Prometheus to find and scrape it, and its
	// rate two scrapes: poll, within a bound.
	ctx := context.Background()
	var havePods map[string]bool
	var rates map[string]float64
	for deadline := time.Now().Add(30 * time.Second); ; {
		found, err := prom.Query(ctx, fmt.Sprintf("count by (pod) (%s)", rule.SeriesQuery))
		if err != nil {
			t.Fatalf("seriesQuery: %v", err)
		}
		got, err := prom.Query(ctx, q.String())
		if err != nil {
			t.Fatalf("metricsQuery %s: %v", q.String(), err)
		}
		havePods, rates = map[string]bool{}, map[string]float64{}
		for _, s := range found {
			havePods[s.Labels["pod"]] = true
		}
		complete := true
		for _, s := range got {
			rates[s.Labels["pod"]] = s.Value
		}
		for _, pod := range pods {
			complete = complete && havePods[pod] && rates[pod] > 0
		}
		if complete || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	for _, pod := range pods {
		if !havePods[pod] {
			t.Errorf("adapter seriesQuery %s finds no series of pod %s", rule.SeriesQuery, pod)
		}
		if rates[pod] <= 0 {
			t.Errorf("adapter metricsQuery %s gives pod %s %v, want a rate above 0", q.String(), pod, rates[pod])
		}
	}
	t.Logf("prometheus-adapter rule, per pod: %v", rates)
}

func parseLoad(t *testing.T, out []byte) loadreport.Summary {
	t.Helper()
	var s loadreport.Summary
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatalf("loadgen summary: %v\n%s", err, tailString(string(out), 2000))
	}
	return s
}

// writeResults puts the chart, the summary line and the load client's
// summary into dir.
func writeResults(t *testing.T, dir string, run scaleloop.Run, line string, load []byte) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	chart := filepath.Join(dir, "scaling-loop.png")
	if err := scaleloop.WriteChart(chart, run); err != nil {
		t.Error(err)
	}
	for name, data := range map[string][]byte{"summary.txt": []byte(line + "\n"), "loadgen.json": load} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Error(err)
		}
	}
	t.Logf("results in %s", dir)
}

// desiredAt is the desired replicas of the last sample before at.
func desiredAt(r scaleloop.Run, at time.Time) int {
	d := 0
	for _, s := range r.Samples {
		if s.At.Before(at) {
			d = s.Desired
		}
	}
	return d
}

// profileRequests is how many requests the load client's profile
// RATE:DURATION,… asks for, counted as examples/loadgen paces them.
func profileRequests(t *testing.T, profile string) int {
	t.Helper()
	n := 0
	for _, part := range strings.Split(profile, ",") {
		r, d, _ := strings.Cut(strings.TrimSpace(part), ":")
		rate, err := strconv.ParseFloat(r, 64)
		if err != nil {
			t.Fatalf("profile %q: %q: %v", profile, part, err)
		}
		dur, err := time.ParseDuration(d)
		if err != nil {
			t.Fatalf("profile %q: %q: %v", profile, part, err)
		}
		if rate > 0 {
			n += int(dur / time.Duration(float64(time.Second)/rate))
		}
	}
	return n
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
