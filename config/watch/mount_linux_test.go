package watch

import (
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/outrider-sidecar/outrider/internal/testlog"
)

// TestFileMountedAloneIsWarnedOf: a file that is a mount point of its own
// (a Kubernetes subPath mount, docker's -v file:file) keeps the file it was
// made from, so the watch can never see an update: it says so once at the
// start. A file in a mounted directory, as a ConfigMap volume's, is not
// warned of.
func TestFileMountedAloneIsWarnedOf(t *testing.T) {
	const warning = "the config file is a mount of its own"
	for _, tc := range []struct {
		name string
		// setUp makes the layout under dir and returns the path to watch.
		setUp func(t *testing.T, dir string) string
		warns bool
	}{
		{"a plain file", func(t *testing.T, dir string) string {
			return filepath.Join(dir, "config.yaml")
		}, false},
		{"a file mounted alone", func(t *testing.T, dir string) string {
			return mountConfigAt(t, dir, "mounted.yaml")
		}, true},
		{"a file mounted alone, with a space in its path", func(t *testing.T, dir string) string {
			return mountConfigAt(t, dir, "my config.yaml")
		}, true},
		{"a symlink to a file mounted alone", func(t *testing.T, dir string) string {
			path := mountConfigAt(t, dir, "mounted.yaml")
			link := filepath.Join(dir, "link.yaml")
			if err := os.Symlink(path, link); err != nil {
				t.Fatal(err)
			}
			return link
		}, true},
		{"a file in a mounted directory", func(t *testing.T, dir string) string {
			mnt := filepath.Join(dir, "mnt")
			if err := os.Mkdir(mnt, 0o755); err != nil {
				t.Fatal(err)
			}
			bindMount(t, dir, mnt)
			return filepath.Join(mnt, "config.yaml")
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			write(t, filepath.Join(dir, "config.yaml"), "a: 1\n")
			path := tc.setUp(t, dir)
			logs := &testlog.Buffer{}
			reports(t, path, Options{Debounce: 20 * time.Millisecond, PollInterval: time.Hour, Log: slog.New(slog.NewTextHandler(logs, nil))}, nil)
			want := 0
			if tc.warns {
				want = 1
			}
			if n := logs.Count(warning); n != want {
				t.Errorf("warned %d times, want %d:\n%s", n, want, logs.String())
			}
		})
	}
}

// mountConfigAt mounts dir/config.yaml alone on dir/name, as a subPath
// mount does, and returns the mount's path.
func mountConfigAt(t *testing.T, dir, name string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	write(t, path, "")
	bindMount(t, filepath.Join(dir, "config.yaml"), path)
	return path
}

// bindMount mounts the file or directory src on dst until the test ends.
// It needs root, as the suite runs.
func bindMount(t *testing.T, src, dst string) {
	t.Helper()
	if err := syscall.Mount(src, dst, "", syscall.MS_BIND, ""); err != nil {
		t.Fatalf("bind-mount %s on %s: %v (this test needs root, as making a mount does)", src, dst, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dst, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dst, err)
		}
	})
}
