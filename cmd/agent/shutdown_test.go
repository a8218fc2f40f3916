package main

import (
	"cmp"
	"encoding/json"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outrider-sidecar/outrider/config"
	"github.com/outrider-sidecar/outrider/probe"
)

// TestStatusDrainTimings: /status shows the drain timings a reload set
// until a drain starts, and from then on those the drain started with.
func TestStatusDrainTimings(t *testing.T) {
	cfg := config.Config{Drain: config.Drain{Delay: time.Hour, Timeout: 2 * time.Hour}}
	a := newAgent(cfg, slog.New(slog.DiscardHandler))
	a.subscribeVerdicts = func() <-chan probe.Verdict { return nil }
	if err := a.addShutdown(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if a.drain.Started() {
			a.drain.Abort("test over")
			<-a.drain.Done()
		}
	})

	steps := []struct {
		name           string
		do             func()
		started        bool
		delay, timeout float64
	}{
		{"at start", func() {}, false, 3600, 7200},
		{"reloaded before a drain: the next drain's", func() { a.onDrainTimings(time.Minute, 2*time.Minute) }, false, 60, 120},
		{"drain started", func() { a.drain.Start("test") }, true, 60, 120},
		{"reloaded during the drain: the drain's own", func() { a.onDrainTimings(time.Second, 2*time.Second) }, true, 60, 120},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.do()
			w := httptest.NewRecorder()
			a.serveStatus(w, httptest.NewRequest("GET", "/status", nil))
			var got struct {
				Drain struct {
					Started        bool    `json:"started"`
					DelaySeconds   float64 `json:"delay_seconds"`
					TimeoutSeconds float64 `json:"timeout_seconds"`
				} `json:"drain"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatalf("/status %q: %v", w.Body, err)
			}
			d := got.Drain
			if d.Started != s.started || d.DelaySeconds != s.delay || d.TimeoutSeconds != s.timeout {
				t.Errorf("/status drain: got started=%v delay=%gs timeout=%gs, want started=%v delay=%gs timeout=%gs",
					d.Started, d.DelaySeconds, d.TimeoutSeconds, s.started, s.delay, s.timeout)
			}
		})
	}
}

// TestPrestopOtherMethods: every method but GET and POST gets 405 on
// /prestop, with an Allow that names only those two (HEAD, which drains
// nothing, was named too), and drains nothing.
func TestPrestopOtherMethods(t *testing.T) {
	a := newAgent(config.Config{Drain: config.Drain{Delay: time.Hour}}, slog.New(slog.DiscardHandler))
	a.subscribeVerdicts = func() <-chan probe.Verdict { return nil }
	if err := a.addShutdown(); err != nil {
		t.Fatal(err)
	}
	for _, method := range []string{"HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"} {
		w := httptest.NewRecorder()
		a.admin.ServeHTTP(w, httptest.NewRequest(method, "/prestop", nil))
		if allow := w.Header().Get("Allow"); w.Code != http.StatusMethodNotAllowed || allow != "GET, POST" {
			t.Errorf("%s /prestop: %d, Allow %q; want 405, Allow %q", method, w.Code, allow, "GET, POST")
		}
	}
	if a.drain.Started() {
		t.Error("a refused method started the drain")
	}
}

// TestStatusDocumented: every top-level field of /status, and the drain
// section's, is named in the README's description of /status.
func TestStatusDocumented(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, doc, _ := strings.Cut(string(readme), "- `GET /status`")
	doc, _, _ = strings.Cut(doc, "\n- ")
	a := newAgent(config.Config{}, slog.New(slog.DiscardHandler))
	a.subscribeVerdicts = func() <-chan probe.Verdict { return nil }
	if err := a.addShutdown(); err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	a.serveStatus(w, httptest.NewRequest("GET", "/status", nil))
	var status map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &status); err != nil {
		t.Fatalf("/status %q: %v", w.Body, err)
	}
	fields := slices.Collect(maps.Keys(status))
	for k := range status["drain"].(map[string]any) {
		fields = append(fields, k)
	}
	for _, f := range fields {
		if !strings.Contains(doc, "`"+f+"`") {
			t.Errorf("/status has %q, which the README's /status does not name", f)
		}
	}
}

// TestCheckConfigGracePeriod: check-config shows an unset
// OUTRIDER_GRACE_PERIOD as unset and says what that means, not as 0s,
// which reads as no grace period at all; a set one as its value.
func TestCheckConfigGracePeriod(t *testing.T) {
	tests := []struct {
		value    string
		want     string
		wantNote bool
	}{
		{"", "OUTRIDER_GRACE_PERIOD=\n", true},
		{"45s", "OUTRIDER_GRACE_PERIOD=45s\n", false},
	}
	for _, tc := range tests {
		t.Run(cmp.Or(tc.value, "unset"), func(t *testing.T) {
			env := map[string]string{"OUTRIDER_REGISTRY": "none", "OUTRIDER_GRACE_PERIOD": tc.value}
			var stdout, stderr strings.Builder
			if code := checkConfig(func(k string) string { return env[k] }, &stdout, &stderr); code != exitOK {
				t.Fatalf("check-config: exit %d:\n%s", code, stderr.String())
			}
			out := stdout.String()
			note := "# OUTRIDER_GRACE_PERIOD is unset: whether the stop fits in the platform's grace period is not checked, " +
				"and the watch for an app restarted after a preStop drain counts Kubernetes' default, 30s\n"
			if !strings.Contains(out, tc.want) || strings.Contains(out, note) != tc.wantNote {
				t.Errorf("check-config printed:\n%s\nwant %q, and the note of an unset grace period: %v", out, tc.want, tc.wantNote)
			}
		})
	}
}
