package probe

import (
	"errors"
	"net/http"
	"reflect"
	"testing"
)

func TestParseSpec(t *testing.T) {
	tests := []struct {
		raw        string
		wantKind   Kind
		wantString string
		wantAddr   string
		wantSvc    string
		wantCmd    []string
	}{
		{raw: "http://127.0.0.1:8080/healthz", wantKind: KindHTTP, wantString: "http://127.0.0.1:8080/healthz"},
		{raw: "https://app:8443", wantKind: KindHTTPS, wantString: "https://app:8443/"},
		{raw: "http://u:secret@app/x", wantKind: KindHTTP, wantString: "http://u:xxxxx@app/x"},
		{raw: "tcp://127.0.0.1:8080", wantKind: KindTCP, wantString: "tcp://127.0.0.1:8080", wantAddr: "127.0.0.1:8080"},
		{raw: "grpc://[::1]:9090", wantKind: KindGRPC, wantString: "grpc://[::1]:9090", wantAddr: "[::1]:9090"},
		{raw: "grpc://app:9090/pkg.Service", wantKind: KindGRPC, wantString: "grpc://app:9090/pkg.Service", wantAddr: "app:9090", wantSvc: "pkg.Service"},
		{raw: "  exec:/bin/check  --quick   now ", wantKind: KindExec, wantString: "exec:/bin/check --quick now",
			wantCmd: []string{"/bin/check", "--quick", "now"}},
		// Schemes are case-insensitive, exec: as much as the URL ones.
		{raw: "EXEC:/bin/true", wantKind: KindExec, wantString: "exec:/bin/true", wantCmd: []string{"/bin/true"}},
		{raw: "Exec:/bin/check now", wantKind: KindExec, wantString: "exec:/bin/check now", wantCmd: []string{"/bin/check", "now"}},
		{raw: "HTTP://127.0.0.1:8080/healthz", wantKind: KindHTTP, wantString: "http://127.0.0.1:8080/healthz"},
		{raw: "Https://app:8443", wantKind: KindHTTPS, wantString: "https://app:8443/"},
		{raw: "TCP://127.0.0.1:8080", wantKind: KindTCP, wantString: "tcp://127.0.0.1:8080", wantAddr: "127.0.0.1:8080"},
		{raw: "gRPC://app:9090/pkg.Service", wantKind: KindGRPC, wantString: "grpc://app:9090/pkg.Service", wantAddr: "app:9090", wantSvc: "pkg.Service"},
		// The ends of the port range.
		{raw: "tcp://127.0.0.1:1", wantKind: KindTCP, wantString: "tcp://127.0.0.1:1", wantAddr: "127.0.0.1:1"},
		{raw: "http://127.0.0.1:65535/healthz", wantKind: KindHTTP, wantString: "http://127.0.0.1:65535/healthz"},
	}
	for _, tc := range tests {
		t.Run(tc.raw, func(t *testing.T) {
			s, err := ParseSpec(tc.raw)
			if err != nil {
				t.Fatalf("ParseSpec: %v", err)
			}
			if s.Kind != tc.wantKind || s.String() != tc.wantString || s.Address != tc.wantAddr || s.Service != tc.wantSvc ||
				!reflect.DeepEqual(s.Command, tc.wantCmd) {
				t.Errorf("got kind %s, %q, address %q, service %q, command %q; want %s, %q, %q, %q, %q",
					s.Kind, s.String(), s.Address, s.Service, s.Command, tc.wantKind, tc.wantString, tc.wantAddr, tc.wantSvc, tc.wantCmd)
			}
		})
	}
}

func TestParseSpecRefuses(t *testing.T) {
	tests := []struct {
		raw     string
		wantErr string
	}{
		{raw: "ftp://x", wantErr: `bad probe spec: unknown scheme "ftp" (want http, https, tcp, grpc or exec)`},
		{raw: "exec:", wantErr: "bad probe spec: exec: names no command (want exec:/path/to/cmd arg…)"},
		{raw: "exec:   ", wantErr: "bad probe spec: exec: names no command (want exec:/path/to/cmd arg…)"},
		{raw: "http://", wantErr: "bad probe spec: http URL has no host (want e.g. http://127.0.0.1:8080/healthz)"},
		{raw: "https://:8443/x", wantErr: "bad probe spec: https URL has no host (want e.g. http://127.0.0.1:8080/healthz)"},
		{raw: "127.0.0.1:8080", wantErr: "bad probe spec: first path segment in URL cannot contain colon " +
			"(want http://host:port/path, https://…, tcp://host:port, grpc://host:port[/service] or exec:/cmd arg…)"},
		{raw: "app:8080", wantErr: `bad probe spec: unknown scheme "app" (want http, https, tcp, grpc or exec)`},
		{raw: "/healthz", wantErr: "bad probe spec: no scheme (want http://, https://, tcp://, grpc:// or exec:)"},
		{raw: "tcp://app", wantErr: `bad probe spec: tcp target "app": address app: missing port in address (want tcp://host:port)`},
		{raw: "tcp://:8080", wantErr: `bad probe spec: tcp target ":8080" has no host (want tcp://host:port)`},
		{raw: "tcp://app:80/x", wantErr: `bad probe spec: tcp target has a path "/x" (want tcp://host:port)`},
		// What a tcp or grpc probe would ignore: user information, a
		// query, a fragment. A grpc service is named by the path.
		{raw: "tcp://127.0.0.1:8080?x=1", wantErr: `bad probe spec: tcp target has a query "?x=1", which the probe would ignore (want tcp://host:port: a tcp probe only opens a connection)`},
		{raw: "tcp://127.0.0.1:8080/?", wantErr: `bad probe spec: tcp target has a query "?", which the probe would ignore (want tcp://host:port: a tcp probe only opens a connection)`},
		{raw: "tcp://127.0.0.1:8080#healthz", wantErr: `bad probe spec: tcp target has a fragment "#healthz", which the probe would ignore (want tcp://host:port: a tcp probe only opens a connection)`},
		{raw: "tcp://probe:s3cr3t@127.0.0.1:8080", wantErr: `bad probe spec: tcp target has user information, which the probe would ignore (want tcp://host:port: a tcp probe only opens a connection)`},
		{raw: "grpc://127.0.0.1:9090?service=pkg.Service", wantErr: `bad probe spec: grpc target has a query "?service=pkg.Service", which the probe would ignore ` +
			`(want grpc://host:port, or grpc://host:port/service to ask about one health service, e.g. grpc://127.0.0.1:9090/pkg.Service)`},
		{raw: "grpc://127.0.0.1:9090/pkg.Service#x", wantErr: `bad probe spec: grpc target has a fragment "#x", which the probe would ignore ` +
			`(want grpc://host:port, or grpc://host:port/service to ask about one health service, e.g. grpc://127.0.0.1:9090/pkg.Service)`},
		{raw: "grpc://", wantErr: "bad probe spec: grpc target is empty (want grpc://host:port)"},
		{raw: "FTP://x", wantErr: `bad probe spec: unknown scheme "ftp" (want http, https, tcp, grpc or exec)`},
		{raw: "EXEC:", wantErr: "bad probe spec: exec: names no command (want exec:/path/to/cmd arg…)"},
		// A probe dials: port 0 and ports past 65535 cannot be reached.
		{raw: "tcp://127.0.0.1:99999", wantErr: `bad probe spec: tcp target "127.0.0.1:99999" has a bad port (want 1-65535)`},
		{raw: "tcp://127.0.0.1:0", wantErr: `bad probe spec: tcp target "127.0.0.1:0" has a bad port (want 1-65535)`},
		{raw: "grpc://app:65536/pkg.Service", wantErr: `bad probe spec: grpc target "app:65536" has a bad port (want 1-65535)`},
		{raw: "grpc://[::1]:0", wantErr: `bad probe spec: grpc target "[::1]:0" has a bad port (want 1-65535)`},
		{raw: "http://127.0.0.1:99999/healthz", wantErr: `bad probe spec: http URL has a bad port "99999" (want 1-65535)`},
		{raw: "https://app:0/", wantErr: `bad probe spec: https URL has a bad port "0" (want 1-65535)`},
		{raw: "http://u:secret@app:123456789012345678901234567890/x", wantErr: `bad probe spec: http URL has a bad port "123456789012345678901234567890" (want 1-65535)`},
		// An IPv6 address goes in brackets: said so, not "too many colons".
		{raw: "tcp://::1:8080", wantErr: `bad probe spec: tcp target "::1:8080" has an IPv6 address without brackets (want e.g. tcp://[::1]:8080)`},
		{raw: "GRPC://fd00::7:9090/pkg.Service", wantErr: `bad probe spec: grpc target "fd00::7:9090" has an IPv6 address without brackets (want e.g. grpc://[::1]:8080)`},
		{raw: "http://u:secret@::1:8080/healthz", wantErr: `bad probe spec: http target "::1:8080" has an IPv6 address without brackets (want e.g. http://[::1]:8080)`},
		{raw: "https://fd00::7?x=1", wantErr: `bad probe spec: https target "fd00::7" has an IPv6 address without brackets (want e.g. https://[::1]:8080)`},
	}
	for _, tc := range tests {
		t.Run(tc.raw, func(t *testing.T) {
			_, err := ParseSpec(tc.raw)
			if err == nil || err.Error() != tc.wantErr {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			if !errors.Is(err, ErrBadSpec) {
				t.Errorf("err does not wrap ErrBadSpec")
			}
		})
	}
}

// TestParseHeaders: a comma separates headers, and an item without a
// colon continues the value of the header before it, so that a value may
// hold a comma.
func TestParseHeaders(t *testing.T) {
	tests := []struct {
		raw     string
		want    http.Header
		wantErr string
	}{
		{raw: "Host: app.example,Authorization: Bearer t0k3n", want: http.Header{"Host": {"app.example"}, "Authorization": {"Bearer t0k3n"}}},
		{raw: "Accept: application/json, text/plain", want: http.Header{"Accept": {"application/json, text/plain"}}},
		{raw: "Accept: application/json, text/plain;q=0.9, */*;q=0.1,X-Probe: yes ,",
			want: http.Header{"Accept": {"application/json, text/plain;q=0.9, */*;q=0.1"}, "X-Probe": {"yes"}}},
		{raw: "Accept: a,Accept: b", want: http.Header{"Accept": {"a", "b"}}},
		{raw: "Accept:", want: http.Header{"Accept": {""}}},
		{raw: "Authorization Bearer t0k3n", wantErr: `item 1 is not "Name: value"`},
		{raw: "X-Ok: 1,X Bad: 2", wantErr: `item 2 is not "Name: value"`},
		{raw: "Link: <http://a>, <http://b>", wantErr: "item 2 has a name that is not a header field name (letters, digits and !#$%&'*+-.^_`|~)"},
		{raw: "X-Ok: 1, two\x01", wantErr: "item 1 has a control character in its value"},
		{raw: "Host: app.example, other.example", wantErr: "item 1 has a Host value that is not a host or host:port, such as app.example:8080"},
	}
	for _, tc := range tests {
		t.Run(tc.raw, func(t *testing.T) {
			got, err := ParseHeaders(tc.raw)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestSpecEqual: Equal tells apart what String masks (a password, a
// header's value) and nothing else.
func TestSpecEqual(t *testing.T) {
	parse := func(raw string) Spec {
		t.Helper()
		s, err := ParseSpec(raw)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	withHeader := func(s Spec, name, value string) Spec {
		s.Header = http.Header{name: {value}}
		return s
	}
	base := parse("http://u:old@127.0.0.1:8080/healthz")
	tests := []struct {
		name  string
		a, b  Spec
		equal bool
	}{
		{"the same URL", base, parse("http://u:old@127.0.0.1:8080/healthz"), true},
		{"a new password", base, parse("http://u:new@127.0.0.1:8080/healthz"), false},
		{"a new path", base, parse("http://u:old@127.0.0.1:8080/ready"), false},
		{"https", base, parse("https://u:old@127.0.0.1:8080/healthz"), false},
		{"the same header", withHeader(base, "Authorization", "Bearer a"), withHeader(base, "Authorization", "Bearer a"), true},
		{"a header's new value", withHeader(base, "Authorization", "Bearer a"), withHeader(base, "Authorization", "Bearer b"), false},
		{"no header and an empty one", base, func() Spec { s := base; s.Header = http.Header{}; return s }(), true},
		{"tcp, the same", parse("tcp://127.0.0.1:8080"), parse("tcp://127.0.0.1:8080"), true},
		{"tcp and grpc", parse("tcp://127.0.0.1:8080"), parse("grpc://127.0.0.1:8080"), false},
		{"grpc, another service", parse("grpc://127.0.0.1:8080/a"), parse("grpc://127.0.0.1:8080/b"), false},
		{"exec, the same", parse("exec:/bin/check --fast"), parse("exec:/bin/check --fast"), true},
		{"exec, another argument", parse("exec:/bin/check --fast"), parse("exec:/bin/check --slow"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.a.Equal(tt.b); got != tt.equal {
				t.Errorf("%s Equal %s = %v, want %v", tt.a, tt.b, got, tt.equal)
			}
			if got := tt.b.Equal(tt.a); got != tt.equal {
				t.Errorf("%s Equal %s = %v, want %v (the other way round)", tt.b, tt.a, got, tt.equal)
			}
		})
	}
}
