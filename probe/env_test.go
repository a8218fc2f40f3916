package probe

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/outrider-sidecar/outrider/internal/testbin"
)

func TestExecEnv(t *testing.T) {
	const probeMasked = "OUTRIDER_PROBE=http://u:xxxxx@127.0.0.1:8080/healthz"
	environ := []string{"PATH=/bin", "HOME=/home/o", "CONSUL_HTTP_TOKEN=ct", "CONSUL_HTTP_AUTH=u:p",
		"OUTRIDER_ADMIN_TOKEN=at", "OUTRIDER_PROBE_HEADERS=Authorization: x", "VAULT_TOKEN=vt", "PGHOST=old",
		"OUTRIDER_PROBE=http://u:s3cr3t@127.0.0.1:8080/healthz"}
	tests := []struct {
		name      string
		deny, add []string
		want      []string
	}{
		{name: "secrets dropped, the probe URL's password masked", want: []string{"PATH=/bin", "HOME=/home/o", "VAULT_TOKEN=vt", "PGHOST=old", probeMasked}},
		{name: "deny list", deny: []string{"VAULT_TOKEN", "HOME"}, want: []string{"PATH=/bin", "PGHOST=old", probeMasked}},
		{name: "additions win", add: []string{"PGHOST=db", "PGPORT=5432"},
			want: []string{"PATH=/bin", "HOME=/home/o", "VAULT_TOKEN=vt", probeMasked, "PGHOST=db", "PGPORT=5432"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ExecEnv(environ, tc.deny, tc.add); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestExecProbeSeesNoSecret runs a probe that writes its environment to a
// file, with outrider's secrets in outrider's own environment.
func TestExecProbeSeesNoSecret(t *testing.T) {
	secrets := map[string]string{
		"CONSUL_HTTP_TOKEN":    "consul-s3cr3t",
		"OUTRIDER_ADMIN_TOKEN": "admin-s3cr3t",
		"VAULT_TOKEN":          "vault-s3cr3t",
	}
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	t.Setenv("PROBE_VISIBLE", "yes")
	cases := []struct {
		name string
		env  func() []string // the spec's Env
	}{
		{name: "default environment", env: func() []string { return nil }},
		{name: "as outrider builds it", env: func() []string {
			return ExecEnv(os.Environ(), []string{"VAULT_TOKEN"}, []string{"PROBE_ADDED=1"})
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "env")
			spec := Spec{Kind: KindExec, Command: []string{"/bin/sh", "-c", "env > " + out}, Env: tc.env()}
			checkResult(t, probeWithin(probeExec, spec, 0), Success)
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			got := string(b)
			for k, v := range secrets {
				if k == "VAULT_TOKEN" && tc.name == "default environment" {
					continue // not denied unless OUTRIDER_PROBE_ENV_DENY names it
				}
				if strings.Contains(got, v) {
					t.Errorf("the probe's environment has %s:\n%s", k, got)
				}
			}
			if !strings.Contains(got, "PROBE_VISIBLE=yes") {
				t.Errorf("the probe's environment lacks the other variables:\n%s", got)
			}
			if tc.name == "as outrider builds it" && !strings.Contains(got, "PROBE_ADDED=1") {
				t.Errorf("the probe's environment lacks OUTRIDER_PROBE_ENV's addition:\n%s", got)
			}
		})
	}
}

func TestSummaryLeavesOutWhatTheAppWrote(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte("db password=hunter2 refused"))
	}))
	defer app.Close()
	// odd answers 599, a code with no standard text.
	odd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(599)
		w.Write([]byte("password=hunter2"))
	}))
	defer odd.Close()
	// notHTTP answers every connection with raw, which is not HTTP.
	notHTTP := func(raw string) string {
		return "http://" + testbin.Serve(t, func(c net.Conn) {
			_, _ = c.Read(make([]byte, 4096))
			_, _ = c.Write([]byte(raw))
		}) + "/healthz"
	}
	badStatus, badHeader := notHTTP("-ERR password=hunter2\r\n\r\n"), notHTTP("HTTP/1.1 200 OK\r\npassword=hunter2\r\n\r\n")
	grpcNotGRPC := startH2C(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; password=hunter2")
	})
	grpcBadStatus := startH2C(t, grpcAnswer(0, []byte{0x08, 0x01}, "password=hunter2", ""))
	cases := []struct {
		name        string
		prober      Prober
		spec        Spec
		wantSummary string
		secret      string
	}{
		{name: "http body", prober: newHTTPProber().probe, spec: mustSpec(t, app.URL+"/healthz"),
			wantSummary: "probe failed: GET " + app.URL + "/healthz: 503 Service Unavailable", secret: "hunter2"},
		{name: "http code with no standard text", prober: newHTTPProber().probe, spec: mustSpec(t, odd.URL+"/healthz"),
			wantSummary: "probe failed: GET " + odd.URL + "/healthz: 599", secret: "hunter2"},
		{name: "http status line not HTTP", prober: newHTTPProber().probe, spec: mustSpec(t, badStatus),
			wantSummary: "probe failed: GET " + badStatus + ": the answer is malformed", secret: "hunter2"},
		{name: "http header line not HTTP", prober: newHTTPProber().probe, spec: mustSpec(t, badHeader),
			wantSummary: "probe failed: GET " + badHeader + ": the answer is malformed", secret: "hunter2"},
		{name: "grpc content type", prober: newGRPCProber().probe, spec: mustSpec(t, "grpc://"+grpcNotGRPC),
			wantSummary: "probe failed: grpc health check of " + grpcNotGRPC + ": the server answered HTTP 200, not gRPC", secret: "hunter2"},
		{name: "grpc status", prober: newGRPCProber().probe, spec: mustSpec(t, "grpc://"+grpcBadStatus),
			wantSummary: "probe failed: grpc health check of " + grpcBadStatus + ": the answer has no valid grpc-status", secret: "hunter2"},
		{name: "exec output", prober: probeExec, spec: Spec{Kind: KindExec, Command: []string{"/bin/sh", "-c", "echo token=hunter2; exit 2"}},
			wantSummary: "probe failed: exec /bin/sh: exit status 2", secret: "hunter2"},
		{name: "timeout", prober: probeExec, spec: mustSpec(t, "exec:sleep 60"),
			wantSummary: "probe timed out: exec sleep: killed after 100ms"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			timeout := 10 * time.Second
			if tc.secret == "" {
				timeout = 100 * time.Millisecond
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			r := tc.prober(ctx, tc.spec)
			if tc.secret != "" && !strings.Contains(r.Output, tc.secret) {
				t.Errorf("Output %q lost what the app wrote", r.Output)
			}
			if got := summarize(r); got != tc.wantSummary {
				t.Errorf("summary: got %q, want %q", got, tc.wantSummary)
			}
		})
	}
}

func TestRedactSpec(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"password", "http://u:s3cr3t@app host/", "http://u:xxxxx@app host/"},
		{"no password", "http://u@app/", "http://u@app/"},
		{"no userinfo", "http://app:8080/x", "http://app:8080/x"},
		{"exec", "exec:/bin/check a:b@c", "exec:/bin/check a:b@c"},
		// Masking up to the last '@' may hide more than the password: an
		// error message loses nothing that matters.
		{"at in the path", "https://u:p@app/x?mail=a@b", "https://u:xxxxx@b"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := RedactSpec(tc.in); got != tc.want {
				t.Errorf("RedactSpec(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// TestExplainSpecError: the reason a spec was refused never quotes its
// password, even where the parser's own error would.
func TestExplainSpecError(t *testing.T) {
	tests := []struct{ name, in, wantValue, wantWhy string }{
		{"slash in the password", "http://admin:Secr3tPa55/w0rd@127.0.0.1:8080/healthz",
			"http://admin:xxxxx@127.0.0.1:8080/healthz", "must be percent-encoded"},
		{"bad escape in the password", "http://admin:pa%zzSecr3t@127.0.0.1:8080/",
			"http://admin:xxxxx@127.0.0.1:8080/", "must be percent-encoded"},
		{"bad port", "http://admin:Secr3t@127.0.0.1:99999/",
			"http://admin:xxxxx@127.0.0.1:99999/", `bad port "99999"`},
		{"no password", "http://127.0.0.1:99999/", "http://127.0.0.1:99999/", `bad port "99999"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSpec(tc.in)
			if err == nil {
				t.Fatalf("ParseSpec(%q) took it", tc.in)
			}
			value, why := ExplainSpecError(tc.in, err)
			if value != tc.wantValue || !strings.Contains(why, tc.wantWhy) {
				t.Errorf("got %q %q, want %q and a reason with %q", value, why, tc.wantValue, tc.wantWhy)
			}
			if strings.Contains(value+why, "Secr3t") {
				t.Errorf("the password shows: %q %q", value, why)
			}
		})
	}
}
