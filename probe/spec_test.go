package probe

import (
	"errors"
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
		{raw: "grpc://", wantErr: "bad probe spec: grpc target is empty (want grpc://host:port)"},
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
