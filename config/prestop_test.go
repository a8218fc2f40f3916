package config

import (
	"strings"
	"testing"
	"time"
)

func TestLoadPrestop(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    Prestop
		wantErr string
	}{
		{
			name: "defaults",
			want: Prestop{URL: "http://127.0.0.1:15000/prestop"},
		},
		{
			name: "all interfaces and token",
			env: map[string]string{"OUTRIDER_ADMIN_LISTEN": ":15000", "OUTRIDER_ADMIN_TOKEN": "s3cret",
				"OUTRIDER_DRAIN_DELAY": "2s", "OUTRIDER_DRAIN_TIMEOUT": "3s"},
			want: Prestop{URL: "http://127.0.0.1:15000/prestop", Token: "s3cret"},
		},
		{
			// [::] takes IPv4 too; ::1 is not there with IPv6 off.
			name: "IPv6 unspecified",
			env:  map[string]string{"OUTRIDER_ADMIN_LISTEN": "[::]:9000"},
			want: Prestop{URL: "http://127.0.0.1:9000/prestop"},
		},
		{
			name: "IPv6 loopback",
			env:  map[string]string{"OUTRIDER_ADMIN_LISTEN": "[::1]:9000"},
			want: Prestop{URL: "http://[::1]:9000/prestop"},
		},
		{
			name: "pod IP",
			env:  map[string]string{"OUTRIDER_ADMIN_LISTEN": "10.1.2.3:15000", "OUTRIDER_ADMIN_TOKEN": "x"},
			want: Prestop{URL: "http://10.1.2.3:15000/prestop", Token: "x"},
		},
		{
			name: "unrelated bad variables are not read",
			env:  map[string]string{"OUTRIDER_PROBE_PERIOD": "soon", "OUTRIDER_SERVICE_NAME": ""},
			want: Prestop{URL: "http://127.0.0.1:15000/prestop"},
		},
		{
			name: "the drain timings are the agent's, not read",
			env:  map[string]string{"OUTRIDER_DRAIN_TIMEOUT": "25"},
			want: Prestop{URL: "http://127.0.0.1:15000/prestop"},
		},
		{
			name:    "bad admin listener",
			env:     map[string]string{"OUTRIDER_ADMIN_LISTEN": "15000"},
			wantErr: "OUTRIDER_ADMIN_LISTEN",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := LoadPrestop(func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error: got %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestWarnings(t *testing.T) {
	tests := []struct {
		name  string
		drain Drain
		want  string
	}{
		{"no grace period set", Drain{Delay: time.Hour}, ""},
		{"fits", Drain{Delay: 5 * time.Second, Timeout: 25 * time.Second, AppStopTimeout: 10 * time.Second, GracePeriod: time.Minute}, ""},
		{"exactly", Drain{Delay: 5 * time.Second, Timeout: 25 * time.Second, AppStopTimeout: 10 * time.Second, GracePeriod: 45 * time.Second}, ""},
		{"no room for a Consul agent that does not answer", Drain{Delay: 5 * time.Second, Timeout: 25 * time.Second, AppStopTimeout: 10 * time.Second, GracePeriod: 40 * time.Second},
			"up to 5s to deregister + OUTRIDER_DRAIN_DELAY (5s) + OUTRIDER_DRAIN_TIMEOUT (25s) + OUTRIDER_APP_STOP_TIMEOUT (10s) = 45s does not fit in OUTRIDER_GRACE_PERIOD (40s)"},
		{"Kubernetes default of 30s with outrider's defaults", Drain{Delay: 5 * time.Second, Timeout: 25 * time.Second, AppStopTimeout: 10 * time.Second, GracePeriod: 30 * time.Second},
			"= 45s does not fit in OUTRIDER_GRACE_PERIOD (30s)"},
		{"durations whose sum would wrap", Drain{Delay: 2000000 * time.Hour, Timeout: 2000000 * time.Hour, GracePeriod: 30 * time.Second},
			"does not fit in OUTRIDER_GRACE_PERIOD (30s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := strings.Join(Config{Drain: tt.drain}.Warnings(), "\n")
			if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestWarningsOfAWeakAdminToken(t *testing.T) {
	tests := []struct {
		token, want string
	}{
		{"", ""},
		{"0123456789abcdef0123456789abcdef", ""},
		{ExampleAdminToken, "OUTRIDER_ADMIN_TOKEN is the example value of the shipped manifests"},
		{"abc", "OUTRIDER_ADMIN_TOKEN is 3 characters long: a token under 16 is easy to guess"},
	}
	for _, tt := range tests {
		got := strings.Join(Config{Listen: Listen{AdminToken: Secret(tt.token)}}.Warnings(), "\n")
		if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
			t.Errorf("token %q: got %q, want %q", tt.token, got, tt.want)
		}
		if tt.token != "" && strings.Contains(got, tt.token) {
			t.Errorf("the warning shows the token: %q", got)
		}
	}
}

// TestWarningsOfAMetricsListenerConsulCannotPublish: a metrics listener on
// loopback, with the instance registered at another address, cannot be
// scraped through Consul; start-up says so and names the variables.
func TestWarningsOfAMetricsListenerConsulCannotPublish(t *testing.T) {
	consul := Registry{Kind: RegistryConsul}
	tests := []struct {
		name     string
		registry Registry
		metrics  string
		address  string
		want     string
	}{
		{"every address", consul, ":15090", "10.0.0.7", ""},
		{"the registered address", consul, "10.0.0.7:15090", "10.0.0.7", ""},
		{"loopback, registered on loopback", consul, "127.0.0.1:15090", "127.0.0.1", ""},
		{"port chosen at start", consul, "127.0.0.1:0", "10.0.0.7", ""},
		{"no registry", Registry{Kind: RegistryNone}, "127.0.0.1:15090", "", ""},
		{"IPv4 loopback", consul, "127.0.0.1:15090", "10.0.0.7",
			`OUTRIDER_METRICS_LISTEN="127.0.0.1:15090" takes connections from this host only, and the instance is registered at 10.0.0.7 (OUTRIDER_SERVICE_ADDRESS, else POD_IP)`},
		{"IPv6 loopback", consul, "[::1]:15090", "fd00::7", `OUTRIDER_METRICS_LISTEN="[::1]:15090"`},
		{"localhost", consul, "localhost:15090", "app.example.com", "the registration carries no metrics_port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{Registry: tt.registry, Listen: Listen{Metrics: tt.metrics}, Service: Service{Address: tt.address}}
			got := strings.Join(c.Warnings(), "\n")
			if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	// The user publishes a port of their own, a scrape proxy's.
	c := Config{Registry: consul, Listen: Listen{Metrics: "127.0.0.1:15090"},
		Service: Service{Address: "10.0.0.7", Meta: map[string]string{MetricsPortMeta: "8443"}}}
	if got := c.Warnings(); len(got) != 0 {
		t.Errorf("with metrics_port=8443 in OUTRIDER_SERVICE_META: got %q, want no warning", got)
	}
}
