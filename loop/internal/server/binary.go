package server

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/outrider-sidecar/outrider/internal/consultest"
)

// Binary says where a test's server program comes from.
type Binary struct {
	Name   string // the program, built as bin/<Name>
	EnvVar string // a path here overrides the search
	Make   string // the make target that builds it from tools/<Make>/go.mod
}

// Find returns the program's path: $EnvVar when set (it must exist), else
// bin/<Name> under root (outrider's module root; skipped when empty), else
// <Name> on PATH. The error says how to build it.
func (b Binary) Find(root string) (string, error) {
	if p := os.Getenv(b.EnvVar); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s binary from %s=%s: %w", b.Name, b.EnvVar, p, err)
		}
		return p, nil
	}
	if root != "" {
		p := filepath.Join(root, "bin", b.Name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath(b.Name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s binary not found: run `make %s` (it builds bin/%s from tools/%s/go.mod), or set %s",
		b.Name, b.Make, b.Name, b.Make, b.EnvVar)
}

// Path is Find from outrider's module root, failing the test (never
// skipping it) with how to build the program when it is missing.
func (b Binary) Path(t testing.TB) string {
	t.Helper()
	root, _ := consultest.ModuleRoot()
	p, err := b.Find(root)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return p
}
