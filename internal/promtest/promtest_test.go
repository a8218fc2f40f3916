package promtest

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

func TestDocBlock(t *testing.T) {
	for _, tc := range []struct {
		name    string
		marker  string
		want    string
		wantErr string
	}{
		{name: "block after the marker", marker: "job: good", want: "scrape_configs:\n  - job_name: good\n"},
		{name: "no marker", marker: "job: absent", wantErr: `testdata/doc.md: no line "<!-- job: absent -->"`},
		{name: "marker twice", marker: "job: twice", wantErr: `testdata/doc.md: the line "<!-- job: twice -->" is there 2 times, want once`},
		{name: "no fence", marker: "job: no fence", wantErr: `testdata/doc.md: the line after "<!-- job: no fence -->" is "Some prose instead of a block.", want a ` + "```" + ` fence`},
		{name: "unclosed", marker: "job: unclosed", wantErr: `testdata/doc.md: the block after "<!-- job: unclosed -->" has no closing ` + "```" + ` fence`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := docBlock("testdata/doc.md", tc.marker)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("docBlock error = %v, want %s", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("docBlock = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestConfigYAMLRefusesAFragment(t *testing.T) {
	_, err := configYAML(Config{ScrapeConfigs: "- job_name: x\n"})
	want := `scrape configs "- job_name: x" do not start with scrape_configs:`
	if err == nil || err.Error() != want {
		t.Errorf("configYAML error = %v, want %s", err, want)
	}
}

// TestScrapeAndRecord proves the throw-away Prometheus is real: it scrapes
// a static target, evaluates a recording rule over it, and both read back
// through the API, NaN included.
func TestScrapeAndRecord(t *testing.T) {
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = w.Write([]byte("# TYPE demo_value gauge\ndemo_value 2\ndemo_nan NaN\n"))
	}))
	defer target.Close()
	rules := t.TempDir() + "/rules.yml"
	writeFile(t, rules, "groups:\n  - name: demo\n    rules:\n      - record: demo:doubled\n        expr: demo_value * 2\n")
	addr := strings.TrimPrefix(target.URL, "http://")
	srv := Start(t, Config{
		ScrapeConfigs: "scrape_configs:\n  - job_name: demo\n    static_configs:\n      - targets: ['" + addr + "']\n",
		RuleFiles:     []string{rules},
	})

	doubled := srv.WaitFor(t, 30*time.Second, "demo:doubled", func(s []Sample) bool { return len(s) == 1 })
	if doubled[0].Value != 4 || doubled[0].Labels["instance"] != addr || doubled[0].Labels["job"] != "demo" {
		t.Errorf("demo:doubled = %+v, want 4 with instance %s, job demo", doubled[0], addr)
	}
	nan := srv.WaitFor(t, 30*time.Second, "demo_nan", func(s []Sample) bool { return len(s) == 1 })
	if !math.IsNaN(nan[0].Value) {
		t.Errorf("demo_nan = %v, want NaN", nan[0].Value)
	}

	ctx := context.Background()
	end := time.Now()
	series, err := srv.QueryRange(ctx, "demo:doubled", end.Add(-5*time.Second), end, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(series) != 1 || len(series[0].Samples) == 0 || series[0].Labels["instance"] != addr {
		t.Fatalf("demo:doubled over 5s = %+v, want one series of instance %s", series, addr)
	}
	for _, s := range series[0].Samples {
		if s.Value != 4 || s.Time.After(end) {
			t.Errorf("demo:doubled sample %+v, want 4 at or before %s", s, end)
		}
	}
	values, err := srv.LabelValues(ctx, "instance", "demo_value")
	if err != nil {
		t.Fatal(err)
	}
	if len(values) != 1 || values[0] != addr {
		t.Errorf("instance values of demo_value = %v, want [%s]", values, addr)
	}
	if values, err := srv.LabelValues(ctx, "instance", "absent_metric"); err != nil || len(values) != 0 {
		t.Errorf("instance values of absent_metric = %v, %v; want none", values, err)
	}

	targets, err := srv.Targets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(targets) != 1 || targets[0].ScrapePool != "demo" || targets[0].Health != "up" ||
		targets[0].ScrapeURL != target.URL+"/metrics" {
		t.Errorf("targets = %+v, want one up target of pool demo at %s/metrics", targets, target.URL)
	}
}

// TestQueryErrorNamesTheQuery checks that a query Prometheus refuses comes
// back as an error naming the expression and Prometheus' reason.
func TestQueryErrorNamesTheQuery(t *testing.T) {
	srv := Start(t, Config{ScrapeConfigs: "scrape_configs: []\n"})
	_, err := srv.Query(context.Background(), "sum(")
	if err == nil || !strings.Contains(err.Error(), `query "sum(":`) || !strings.Contains(err.Error(), "400 Bad Request") {
		t.Errorf("Query(sum() error = %v, want one naming the query and the 400", err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
