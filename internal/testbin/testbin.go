// Package testbin builds outrider's binaries once per test process, so that
// end-to-end tests start them the way a user would: as processes.
//
// A package that uses it runs its tests through Main:
//
//	func TestMain(m *testing.M) { testbin.Main(m) }
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/outrider-sidecar/outrider/internal/consultest"
)

var (
	mu    sync.Mutex
	dir   string
	built = map[string]string{}
)

// Main runs the tests with a build directory that is removed afterwards.
func Main(m *testing.M) {
	d, err := os.MkdirTemp("", "outrider-testbin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "testbin:", err)
		os.Exit(1)
	}
	dir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

// Outrider returns the path of a freshly built outrider binary.
func Outrider(t testing.TB) string { return Build(t, "./cmd/agent", "outrider") }

// Echo returns the path of a freshly built sample app.
func Echo(t testing.TB) string { return Build(t, "./examples/echo", "echo") }

// Build compiles the package pkg (relative to the module root) to name,
// once per test process.
func Build(t testing.TB, pkg, name string) string {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if dir == "" {
		t.Fatalf("testbin: call testbin.Main from TestMain")
	}
	if p, ok := built[pkg]; ok {
		return p
	}
	root, err := consultest.ModuleRoot()
	if err != nil {
		t.Fatalf("testbin: %v", err)
	}
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testbin: go build %s: %v\n%s", pkg, err, b)
	}
	built[pkg] = out
	return out
}
