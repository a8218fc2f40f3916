package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFind(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	built := filepath.Join(root, "bin", "kube-apiserver")
	if err := os.WriteFile(built, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	apiserver := Binary{Name: "kube-apiserver", EnvVar: "TEST_APISERVER_BIN", Make: "kube"}
	adapter := Binary{Name: "keda-adapter", EnvVar: "TEST_ADAPTER_BIN", Make: "keda"}
	tests := []struct {
		name     string
		binary   Binary
		override string
		want     string
		wantErr  string
	}{
		{name: "override", binary: adapter, override: built, want: built},
		{name: "missing override", binary: adapter, override: "/nonexistent/keda-adapter",
			wantErr: "keda-adapter binary from TEST_ADAPTER_BIN=/nonexistent/keda-adapter"},
		{name: "bin of the module root", binary: apiserver, want: built},
		{name: "not built", binary: adapter,
			wantErr: "keda-adapter binary not found: run `make keda` (it builds bin/keda-adapter from tools/keda/go.mod), or set TEST_ADAPTER_BIN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("PATH", t.TempDir())
			t.Setenv(tt.binary.EnvVar, tt.override)
			got, err := tt.binary.Find(root)
			switch {
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("Find(%s) error = %v, want one containing %q", tt.binary.Name, err, tt.wantErr)
				}
			case err != nil:
				t.Errorf("Find(%s): %v", tt.binary.Name, err)
			case got != tt.want:
				t.Errorf("Find(%s) = %q, want %q", tt.binary.Name, got, tt.want)
			}
		})
	}
}
