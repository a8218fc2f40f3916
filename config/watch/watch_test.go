package watch

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/outrider-sidecar/outrider/internal/configmaptest"
	"github.com/outrider-sidecar/outrider/internal/testlog"
)

// reports runs a watcher of path and returns the channel that receives
// the file's content at each report.
func reports(t *testing.T, path string, o Options, change func(*Watcher)) <-chan string {
	t.Helper()
	got := make(chan string, 100)
	w := New(path, func() {
		b, err := os.ReadFile(path)
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		got <- string(b)
	}, o)
	if change != nil {
		change(w)
	}
	started := make(chan struct{})
	w.started = func() { close(started) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the watch was not set up within 10s")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run = %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return after its context ended")
		}
	})
	return got
}

// next takes the next report, failing after a bound.
func next(t *testing.T, got <-chan string) string {
	t.Helper()
	select {
	case s := <-got:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no report within 10s")
		return ""
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// replace writes content to a new file and renames it over path, so that
// no one reads it half written.
func replace(t *testing.T, path, content string) {
	t.Helper()
	write(t, path+".new", content)
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

func TestKubernetesConfigMapUpdateReportsOnce(t *testing.T) {
	m := configmaptest.New(t, "config.yaml", "service_tags: [v1]\n")
	got := reports(t, m.Path(), Options{Debounce: 50 * time.Millisecond}, nil)
	for _, content := range []string{"service_tags: [v2]\n", "service_tags: [v3]\n", "service_tags: [v4]\n"} {
		m.Update(content)
		// Each update is one report with the new content: a second report
		// of the same update would come before the next one and fail here.
		if s := next(t, got); s != content {
			t.Fatalf("report = %q, want %q", s, content)
		}
	}
}

func TestEditsReportOnce(t *testing.T) {
	tests := []struct {
		name string
		edit func(t *testing.T, path, content string)
	}{
		{"vim: backup by rename, write a new file, remove the backup", func(t *testing.T, path, content string) {
			dir := filepath.Dir(path)
			// vim first checks that it can create a file in the directory.
			write(t, filepath.Join(dir, "4913"), "")
			if err := os.Remove(filepath.Join(dir, "4913")); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(path, path+"~"); err != nil {
				t.Fatal(err)
			}
			write(t, path, content)
			if err := os.Remove(path + "~"); err != nil {
				t.Fatal(err)
			}
		}},
		{"write a new file and rename it over", func(t *testing.T, path, content string) {
			tmp := filepath.Join(filepath.Dir(path), ".config.yaml.swp")
			write(t, tmp, content)
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
		}},
		{"echo >: truncate, then write", func(t *testing.T, path, content string) {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteString(content); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.yaml")
			write(t, path, "service_tags: [v1]\n")
			// The default quiet time: a truncate-write must not be read
			// half done even on a loaded machine.
			got := reports(t, path, Options{}, nil)
			for _, content := range []string{"service_tags: [v2]\n", "service_tags: [v3]\n"} {
				tc.edit(t, path, content)
				if s := next(t, got); s != content {
					t.Fatalf("report = %q, want %q", s, content)
				}
			}
		})
	}
}

func TestSameContentAndOtherFilesReportNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	write(t, path, "a: 1\n")
	got := reports(t, path, Options{Debounce: 20 * time.Millisecond}, nil)
	replace(t, path, "a: 1\n")                         // same content
	write(t, filepath.Join(dir, "other.yaml"), "b: 2") // another file
	replace(t, path, "a: 2\n")                         // the marker
	if s := next(t, got); s != "a: 2\n" {
		t.Errorf("first report = %q, want the marker a: 2 (nothing before it)", s)
	}
}

func TestRemovedFileIsAChange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	write(t, path, "a: 1\n")
	got := reports(t, path, Options{Debounce: 20 * time.Millisecond}, nil)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if s := next(t, got); !strings.Contains(s, "no such file") {
		t.Errorf("report = %q, want the read error", s)
	}
	replace(t, path, "a: 1\n")
	if s := next(t, got); s != "a: 1\n" {
		t.Errorf("report = %q, want the file back", s)
	}
}

func TestPollsWhenTheDirectoryCannotBeWatched(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	write(t, path, "a: 1\n")
	logs := &testlog.Buffer{}
	o := Options{PollInterval: 20 * time.Millisecond, Log: slog.New(slog.NewTextHandler(logs, nil))}
	got := reports(t, path, o, func(w *Watcher) {
		w.watchDir = func(string) (*fsnotify.Watcher, error) {
			return nil, errors.Join(errors.New("inotify_add_watch"), syscall.ENOSPC)
		}
	})
	for _, content := range []string{"a: 2\n", "a: 3\n"} {
		replace(t, path, content)
		if s := next(t, got); s != content {
			t.Fatalf("report = %q, want %q", s, content)
		}
	}
	if n := strings.Count(logs.String(), "polling the file instead"); n != 1 {
		t.Errorf("log says it polls %d times, want once:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "no space left on device") {
		t.Errorf("log does not give the watch error:\n%s", logs.String())
	}
}

func TestChangeBeforeRunIsReported(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	write(t, path, "a: 1\n")
	got := reports(t, path, Options{Debounce: 20 * time.Millisecond}, func(*Watcher) {
		replace(t, path, "a: 2\n") // after New, before Run
	})
	if s := next(t, got); s != "a: 2\n" {
		t.Errorf("report = %q, want the change made before Run", s)
	}
}
