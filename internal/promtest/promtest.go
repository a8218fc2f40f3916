// Package promtest starts a throw-away Prometheus server for a test, on a
// free loopback port with its own storage, from the bin/prometheus that
// `make prometheus` builds, and reads it through its HTTP API.
//
// Debian's prometheus package is built without consul_sd_configs and
// kubernetes_sd_configs, so the server is never looked up on PATH: a test
// that needs service discovery must run the build of tools/prometheus.
package promtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outrider-sidecar/outrider/internal/consultest"
	"github.com/outrider-sidecar/outrider/internal/testbin"
)

// Config is what the test's Prometheus scrapes and evaluates.
type Config struct {
	// ScrapeConfigs is YAML that starts with "scrape_configs:", as a user
	// writes it in prometheus.yml.
	ScrapeConfigs string
	// RuleFiles are rule files to evaluate.
	RuleFiles []string
	// Interval is the global scrape and rule evaluation interval;
	// 1s when zero.
	Interval time.Duration
	// DiscoveryReload is how often the scrape manager applies what service
	// discovery found (Prometheus' --scrape.discovery-reload-interval,
	// 5s in production); 1s when zero, so that a test measures the
	// discovery and not this throttle.
	DiscoveryReload time.Duration
}

// Server is one running Prometheus.
type Server struct {
	// URL is the base URL of the HTTP API, http://127.0.0.1:port.
	URL string
	// ConfigFile is the prometheus.yml the server runs with.
	ConfigFile string

	t       testing.TB
	cmd     *exec.Cmd
	done    chan struct{}
	logFile string
	client  *http.Client
}

// Start writes a prometheus.yml from cfg and runs Prometheus with it until
// the test ends. It fails the test (never skips it) when the binary is
// missing, the configuration is refused, or the server is not ready within
// a minute.
func Start(t testing.TB, cfg Config) *Server {
	t.Helper()
	if cfg.Interval == 0 {
		cfg.Interval = time.Second
	}
	if cfg.DiscoveryReload == 0 {
		cfg.DiscoveryReload = time.Second
	}
	dir := t.TempDir()
	s := &Server{
		t:          t,
		URL:        "http://" + testbin.FreeAddr(t),
		ConfigFile: filepath.Join(dir, "prometheus.yml"),
		logFile:    filepath.Join(dir, "prometheus.log"),
		done:       make(chan struct{}),
		client:     &http.Client{Timeout: 10 * time.Second},
	}
	yml, err := configYAML(cfg)
	if err != nil {
		t.Fatalf("promtest: %v", err)
	}
	if err := os.WriteFile(s.ConfigFile, []byte(yml), 0o644); err != nil {
		t.Fatalf("promtest: write %s: %v", s.ConfigFile, err)
	}
	log, err := os.Create(s.logFile)
	if err != nil {
		t.Fatalf("promtest: create log: %v", err)
	}
	s.cmd = exec.Command(Binary(t),
		"--config.file="+s.ConfigFile,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+strings.TrimPrefix(s.URL, "http://"),
		"--scrape.discovery-reload-interval="+cfg.DiscoveryReload.String(),
		"--log.level=warn",
	)
	s.cmd.Stdout, s.cmd.Stderr = log, log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		log.Close()
		t.Fatalf("promtest: start %s: %v", s.cmd.Path, err)
	}
	go func() {
		_ = s.cmd.Wait()
		log.Close()
		close(s.done)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
		if t.Failed() {
			t.Logf("prometheus config:\n%s\nprometheus log:\n%s", yml, s.Log(4000))
		}
	})
	s.waitReady(time.Minute)
	return s
}

// configYAML is the prometheus.yml of cfg.
func configYAML(cfg Config) (string, error) {
	if !strings.HasPrefix(strings.TrimSpace(cfg.ScrapeConfigs), "scrape_configs:") {
		return "", fmt.Errorf("scrape configs %q do not start with scrape_configs:", firstLine(cfg.ScrapeConfigs))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  scrape_timeout: %s\n  evaluation_interval: %s\n",
		cfg.Interval, cfg.Interval, cfg.Interval)
	if len(cfg.RuleFiles) > 0 {
		b.WriteString("rule_files:\n")
		for _, f := range cfg.RuleFiles {
			abs, err := filepath.Abs(f)
			if err != nil {
				return "", fmt.Errorf("rule file %s: %w", f, err)
			}
			fmt.Fprintf(&b, "  - %q\n", abs)
		}
	}
	b.WriteString(strings.TrimSpace(cfg.ScrapeConfigs))
	b.WriteString("\n")
	return b.String(), nil
}

func (s *Server) waitReady(limit time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(limit)
	last := "no answer"
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			s.t.Fatalf("promtest: prometheus exited while starting:\n%s", s.Log(4000))
		default:
		}
		resp, err := s.client.Get(s.URL + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-s.done:
		case <-time.After(50 * time.Millisecond):
		}
	}
	s.t.Fatalf("promtest: prometheus on %s not ready after %s, last: %s\n%s", s.URL, limit, last, s.Log(4000))
}

// Log returns the last n bytes of the server's log.
func (s *Server) Log(n int) string {
	b, err := os.ReadFile(s.logFile)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// Sample is one element of an instant vector.
type Sample struct {
	Labels map[string]string
	// Time is the evaluation time of the query.
	Time time.Time
	// Value may be NaN or ±Inf: Prometheus answers those as strings and
	// Query parses them.
	Value float64
}

// Query evaluates expr at the current time and returns the instant vector
// it gives. A query that is not a vector is an error.
func (s *Server) Query(ctx context.Context, expr string) ([]Sample, error) {
	return s.QueryAt(ctx, expr, time.Time{})
}

// QueryAt is Query evaluated at the time at (now when zero), so that two
// queries can read the same moment.
func (s *Server) QueryAt(ctx context.Context, expr string, at time.Time) ([]Sample, error) {
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	q := url.Values{"query": {expr}}
	if !at.IsZero() {
		q.Set("time", unixSeconds(at))
	}
	if err := s.get(ctx, "/api/v1/query?"+q.Encode(), &data); err != nil {
		return nil, fmt.Errorf("query %q: %w", expr, err)
	}
	if data.ResultType != "vector" {
		return nil, fmt.Errorf("query %q: result is a %s, want a vector", expr, data.ResultType)
	}
	out := make([]Sample, 0, len(data.Result))
	for _, r := range data.Result {
		sample, err := parseSample(r.Value)
		if err != nil {
			return nil, fmt.Errorf("query %q: %w", expr, err)
		}
		sample.Labels = r.Metric
		out = append(out, sample)
	}
	return out, nil
}

// Series is one element of a range vector: a series' samples over time.
type Series struct {
	Labels map[string]string
	// Samples are in time order; a value may be NaN or ±Inf.
	Samples []Sample
}

// QueryRange evaluates expr from start to end every step, as a dashboard
// panel does, and returns the range vector it gives. A query whose result
// is not a matrix is an error.
func (s *Server) QueryRange(ctx context.Context, expr string, start, end time.Time, step time.Duration) ([]Series, error) {
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Values [][2]any          `json:"values"`
		} `json:"result"`
	}
	q := url.Values{
		"query": {expr},
		"start": {unixSeconds(start)},
		"end":   {unixSeconds(end)},
		"step":  {strconv.FormatFloat(step.Seconds(), 'f', -1, 64)},
	}
	if err := s.get(ctx, "/api/v1/query_range?"+q.Encode(), &data); err != nil {
		return nil, fmt.Errorf("query %q over %s: %w", expr, end.Sub(start), err)
	}
	if data.ResultType != "matrix" {
		return nil, fmt.Errorf("query %q over %s: result is a %s, want a matrix", expr, end.Sub(start), data.ResultType)
	}
	out := make([]Series, 0, len(data.Result))
	for _, r := range data.Result {
		series := Series{Labels: r.Metric}
		for _, v := range r.Values {
			sample, err := parseSample(v)
			if err != nil {
				return nil, fmt.Errorf("query %q: %w", expr, err)
			}
			sample.Labels = r.Metric
			series.Samples = append(series.Samples, sample)
		}
		out = append(out, series)
	}
	return out, nil
}

// LabelValues returns the values label takes on the series that match
// selects (every series when match is empty), as Grafana's label_values()
// asks for them.
func (s *Server) LabelValues(ctx context.Context, label, match string) ([]string, error) {
	q := url.Values{}
	if match != "" {
		q.Set("match[]", match)
	}
	var values []string
	if err := s.get(ctx, "/api/v1/label/"+url.PathEscape(label)+"/values?"+q.Encode(), &values); err != nil {
		return nil, fmt.Errorf("values of label %q on %q: %w", label, match, err)
	}
	return values, nil
}

// parseSample reads one [time, "value"] pair of Prometheus' API.
func parseSample(v [2]any) (Sample, error) {
	ts, ok := v[0].(float64)
	str, ok2 := v[1].(string)
	if !ok || !ok2 {
		return Sample{}, fmt.Errorf("sample %v is not [time, \"value\"]", v)
	}
	f, err := strconv.ParseFloat(str, 64)
	if err != nil {
		return Sample{}, fmt.Errorf("value %q: %w", str, err)
	}
	sec := int64(ts)
	return Sample{Time: time.Unix(sec, int64((ts-float64(sec))*1e9)), Value: f}, nil
}

func unixSeconds(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', 3, 64)
}

// WaitFor evaluates expr every 100ms until ok accepts the answer, and
// returns that answer. It fails the test after limit, showing the last
// answer or error.
func (s *Server) WaitFor(t testing.TB, limit time.Duration, expr string, ok func([]Sample) bool) []Sample {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		got, err := s.Query(ctx, expr)
		if err == nil && ok(got) {
			return got
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("%+v", got)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("promtest: %s not as wanted within %s; last answer: %s", expr, limit, last)
			return nil
		case <-tick.C:
		}
	}
}

// Target is one active scrape target.
type Target struct {
	ScrapePool string `json:"scrapePool"`
	// Labels are the target's labels after relabelling: job, instance and
	// what the relabel rules kept.
	Labels map[string]string `json:"labels"`
	// DiscoveredLabels are the labels service discovery gave, before
	// relabelling.
	DiscoveredLabels map[string]string `json:"discoveredLabels"`
	ScrapeURL        string            `json:"scrapeUrl"`
	// Health is "up", "down" or "unknown" (not scraped yet).
	Health    string `json:"health"`
	LastError string `json:"lastError"`
}

// Targets returns the active targets of every scrape pool.
func (s *Server) Targets(ctx context.Context) ([]Target, error) {
	var data struct {
		ActiveTargets []Target `json:"activeTargets"`
	}
	if err := s.get(ctx, "/api/v1/targets?state=active", &data); err != nil {
		return nil, fmt.Errorf("targets: %w", err)
	}
	return data.ActiveTargets, nil
}

// get GETs path and decodes the "data" of Prometheus' API envelope into data.
func (s *Server) get(ctx context.Context, path string, data any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+path, nil)
	if err != nil {
		return err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("GET %s: read body: %w", path, err)
	}
	var envelope struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
		Error  string          `json:"error"`
	}
	if err := json.Unmarshal(body, &envelope); err != nil {
		return fmt.Errorf("GET %s: %s: %w", path, resp.Status, err)
	}
	if envelope.Status != "success" {
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, envelope.Error)
	}
	return json.Unmarshal(envelope.Data, data)
}

// Binary finds the prometheus binary: $OUTRIDER_PROMETHEUS_BIN, else
// bin/prometheus in the module root. It fails the test when neither is.
func Binary(t testing.TB) string {
	t.Helper()
	return find(t, "OUTRIDER_PROMETHEUS_BIN", "prometheus")
}

// Promtool finds the promtool binary: $OUTRIDER_PROMTOOL_BIN, else
// bin/promtool in the module root. It fails the test when neither is.
// The one from the same build as the server, not an older one on PATH, so
// that `promtool test rules` reads the same rule language the tests run.
func Promtool(t testing.TB) string {
	t.Helper()
	return find(t, "OUTRIDER_PROMTOOL_BIN", "promtool")
}

func find(t testing.TB, envVar, name string) string {
	t.Helper()
	if p := os.Getenv(envVar); p != "" {
		return p
	}
	if root, err := consultest.ModuleRoot(); err == nil {
		p := filepath.Join(root, "bin", name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatalf("%s binary not found: run `make prometheus` (it builds bin/prometheus and bin/promtool from tools/prometheus/go.mod), or set %s",
		name, envVar)
	return ""
}

// DocBlock returns the fenced code block that follows the line
// "<!-- marker -->" in the Markdown file path, without its fences, so a
// test can run exactly what a document shows. It fails the test when the
// marker or the block is missing, or when the marker is there twice.
func DocBlock(t testing.TB, path, marker string) string {
	t.Helper()
	block, err := docBlock(path, marker)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return block
}

func docBlock(path, marker string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read the document: %w", err)
	}
	tag := "<!-- " + marker + " -->"
	parts := strings.Split(string(b), tag+"\n")
	switch {
	case len(parts) < 2:
		return "", fmt.Errorf("%s: no line %q", path, tag)
	case len(parts) > 2:
		return "", fmt.Errorf("%s: the line %q is there %d times, want once", path, tag, len(parts)-1)
	}
	rest := parts[1]
	open, body, ok := strings.Cut(rest, "\n")
	if !ok || !strings.HasPrefix(open, "```") {
		return "", fmt.Errorf("%s: the line after %q is %q, want a ``` fence", path, tag, open)
	}
	block, _, ok := strings.Cut(body, "\n```")
	if !ok {
		return "", fmt.Errorf("%s: the block after %q has no closing ``` fence", path, tag)
	}
	return block + "\n", nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}
