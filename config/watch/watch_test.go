package watch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/outrider-sidecar/outrider/internal/configmaptest"
	"github.com/outrider-sidecar/outrider/internal/testlog"
)

// reports runs a watcher of path and returns the channel that receives
// the content of each report, or the file's read error when it has none.
func reports(t *testing.T, path string, o Options, change func(*Watcher)) <-chan string {
	t.Helper()
	got := make(chan string, 100)
	w := New(path, func(data []byte) {
		if data != nil {
			got <- string(data)
			return
		}
		if _, err := os.ReadFile(path); err != nil {
			got <- "error: " + err.Error()
			return
		}
		got <- "no content, though the file reads"
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

// eventsOnly are options that leave the periodic check out of a test
// (it would come after the test gave up waiting), so that what the test
// sees reported came from the watch's events.
var eventsOnly = Options{Debounce: 50 * time.Millisecond, PollInterval: time.Hour}

func TestKubernetesConfigMapUpdateReportsOnce(t *testing.T) {
	// The item's path, as in the ConfigMap volume's items: a path with a
	// directory makes the kubelet symlink the directory, not the file.
	for _, name := range []string{"config.yaml", "conf/config.yaml"} {
		t.Run(name, func(t *testing.T) {
			m := configmaptest.New(t, name, "service_tags: [v1]\n")
			got := reports(t, m.Path(), eventsOnly, nil)
			for _, content := range []string{"service_tags: [v2]\n", "service_tags: [v3]\n", "service_tags: [v4]\n", "service_tags: [v5]\n"} {
				m.Update(content)
				// Each update is one report with the new content: a second
				// report of the same update would come before the next one
				// and fail here.
				if s := next(t, got); s != content {
					t.Fatalf("report = %q, want %q", s, content)
				}
			}
		})
	}
}

// symlink points link at target through a temporary link renamed over
// it, as ln -sfn and deployment tools do, so that link always exists.
func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link+".tmp"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(link+".tmp", link); err != nil {
		t.Fatal(err)
	}
}

// release makes root/name/sub/config.yaml holding content.
func release(t *testing.T, root, name, sub, content string) {
	t.Helper()
	dir := filepath.Join(root, name, sub)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	replace(t, filepath.Join(dir, "config.yaml"), content)
}

func TestReplacedDirectoryReportsOnce(t *testing.T) {
	tests := []struct {
		name string
		// file is the watched file's path under root, set up by setUp
		// with content; update(n) puts content in it the n-th time.
		file   string
		setUp  func(t *testing.T, root, content string)
		update func(t *testing.T, root string, n int, content string)
	}{
		{"rm -rf the directory, make it again", "d/config.yaml",
			func(t *testing.T, root, content string) { release(t, root, "d", "", content) },
			func(t *testing.T, root string, _ int, content string) {
				if err := os.RemoveAll(filepath.Join(root, "d")); err != nil {
					t.Fatal(err)
				}
				release(t, root, "d", "", content)
			}},
		{"the directory a symlink swapped to a new release", "current/config.yaml",
			func(t *testing.T, root, content string) {
				release(t, root, "release-1", "", content)
				symlink(t, "release-1", filepath.Join(root, "current"))
			},
			func(t *testing.T, root string, n int, content string) {
				// The old release stays: its directory never goes away.
				name := fmt.Sprintf("release-%d", n)
				release(t, root, name, "", content)
				symlink(t, name, filepath.Join(root, "current"))
			}},
		{"a directory above it a symlink swapped, the old one removed", "current/conf/config.yaml",
			func(t *testing.T, root, content string) {
				release(t, root, "release-1", "conf", content)
				symlink(t, "release-1", filepath.Join(root, "current"))
			},
			func(t *testing.T, root string, n int, content string) {
				name := fmt.Sprintf("release-%d", n)
				release(t, root, name, "conf", content)
				symlink(t, name, filepath.Join(root, "current"))
				if err := os.RemoveAll(filepath.Join(root, fmt.Sprintf("release-%d", n-1))); err != nil {
					t.Fatal(err)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			tc.setUp(t, root, "a: 1\n")
			got := reports(t, filepath.Join(root, tc.file), eventsOnly, nil)
			for n := 2; n <= 5; n++ {
				content := fmt.Sprintf("a: %d\n", n)
				tc.update(t, root, n, content)
				if s := nextContent(t, got); s != content {
					t.Fatalf("update %d: report = %q, want %q", n, s, content)
				}
			}
		})
	}
}

// nextContent takes the next report of a content, skipping reports of a
// missing file: a look may fall, on a loaded machine, between a
// directory's removal and its new file.
func nextContent(t *testing.T, got <-chan string) string {
	t.Helper()
	for {
		if s := next(t, got); !strings.HasPrefix(s, "error: ") {
			return s
		}
	}
}

func TestBusyDirectoryDoesNotHoldOffTheReport(t *testing.T) {
	tests := []struct {
		name string
		busy func(dir, path string) error // done every 20ms
	}{
		{"an app's log beside the file", func(dir, _ string) error {
			f, err := os.OpenFile(filepath.Join(dir, "app.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if err != nil {
				return err
			}
			_, err = f.WriteString("GET /healthz 200\n")
			return errors.Join(err, f.Close())
		}},
		{"the file itself touched", func(_, path string) error {
			now := time.Now()
			return os.Chtimes(path, now, now)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "config.yaml")
			write(t, path, "a: 1\n")
			// The default debounce, longer than the pauses in between.
			got := reports(t, path, Options{PollInterval: time.Hour}, nil)
			every(t, 20*time.Millisecond, func() error { return tc.busy(dir, path) })
			for _, content := range []string{"a: 2\n", "a: 3\n"} {
				replace(t, path, content)
				select {
				case s := <-got:
					if s != content {
						t.Fatalf("report = %q, want %q", s, content)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("no report within 5s while busy every 20ms")
				}
			}
		})
	}
}

// every calls f every d until the test ends or f fails.
func every(t *testing.T, d time.Duration, f func() error) {
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(d)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if err := f(); err != nil {
					t.Error(err)
					return
				}
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-stopped })
}

func TestEventsThatConcernTheFile(t *testing.T) {
	m := configmaptest.New(t, "conf/config.yaml", "a: 1\n")
	vol := filepath.Dir(filepath.Dir(m.Path()))
	w := New(m.Path(), func([]byte) {}, Options{})
	tr := trailOf(w.path)
	w.names = tr.names
	tests := []struct {
		name string // under the volume
		want bool
	}{
		{"conf/config.yaml", true},
		{"conf", true},   // the symlink to the file's directory
		{".", true},      // the volume
		{"..", true},     // the volume's directory
		{"..data", true}, // the kubelet's swap
		{"..data_tmp", true},
		{"..2026_11_30_08_15_12.123456790", true},
		{"..2026_11_30_08_15_11.123456790/conf/config.yaml", true}, // the file, resolved
		{"conf/app.log", false},
		{"conf/.config.yaml.swp", false},
		{"conf/config.yaml~", false},
		{"other.yaml", false},
		{"../other", false},
	}
	for _, tc := range tests {
		if got := w.matters(filepath.Join(vol, tc.name)); got != tc.want {
			t.Errorf("matters(%s) = %v, want %v", tc.name, got, tc.want)
		}
	}
	// The file's directory first, for the events to name the file as
	// written; the volume, where conf and ..data are swapped.
	if len(tr.dirs) < 2 || tr.dirs[0] != filepath.Join(vol, "conf") || !slices.Contains(tr.dirs, vol) {
		t.Errorf("directories to watch = %q, want %s first, and %s", tr.dirs, filepath.Join(vol, "conf"), vol)
	}
}

func TestLostEventsAreCaughtByThePeriodicCheck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	write(t, path, "a: 1\n")
	logs := &testlog.Buffer{}
	o := Options{Debounce: 20 * time.Millisecond, PollInterval: 50 * time.Millisecond, Log: slog.New(slog.NewTextHandler(logs, nil))}
	// A watch that hears nothing, as after an inotify queue overflow.
	got := reports(t, path, o, func(w *Watcher) {
		w.watchDir = func(string) (*fsnotify.Watcher, error) { return fsnotify.NewWatcher() }
		w.addWatch = func(*fsnotify.Watcher, string) error { return nil }
	})
	for _, content := range []string{"a: 2\n", "a: 3\n"} {
		replace(t, path, content)
		if s := next(t, got); s != content {
			t.Fatalf("report = %q, want %q", s, content)
		}
	}
	if strings.Contains(logs.String(), "polling") {
		t.Errorf("log says it polls, but the watch was set up:\n%s", logs.String())
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

// TestNamedPipeIsAChange: a named pipe renamed over the file is reported
// as a change (the reader then refuses it) without the watch waiting for
// a writer, and the file put back is reported again.
func TestNamedPipeIsAChange(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	write(t, path, "a: 1\n")
	got := make(chan string, 100)
	w := New(path, func([]byte) { got <- "change" }, Options{Debounce: 20 * time.Millisecond, PollInterval: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Errorf("Run did not return 5s after its context ended: blocked on the pipe")
		}
	}()

	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(fifo, path); err != nil {
		t.Fatal(err)
	}
	if s := next(t, got); s != "change" {
		t.Errorf("report = %q, want a change", s)
	}
	if s, _ := w.state(); !strings.HasSuffix(s, "not a regular file (a pipe)") {
		t.Errorf("state of the pipe = %q, want the refusal", s)
	}
	replace(t, path, "a: 2\n")
	if s := next(t, got); s != "change" {
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

func TestChangeSinceFromIsReported(t *testing.T) {
	// The caller read the file and took a snapshot of what it read; the
	// file changed before New. The change is reported; with no change,
	// nothing is.
	for _, tc := range []struct {
		name, now string
		want      string // the report, "" for none
	}{
		{name: "changed before New", now: "a: 2\n", want: "a: 2\n"},
		{name: "unchanged", now: "a: 1\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.yaml")
			write(t, path, "a: 1\n")
			from := SnapshotOf([]byte("a: 1\n"))
			replace(t, path, tc.now)
			got := reports(t, path, Options{Debounce: 20 * time.Millisecond, PollInterval: time.Hour, From: from}, nil)
			select {
			case s := <-got:
				if s != tc.want {
					t.Errorf("report = %q, want %q", s, tc.want)
				}
			case <-time.After(500 * time.Millisecond):
				if tc.want != "" {
					t.Errorf("no report within 500ms, want %q", tc.want)
				}
			}
		})
	}
}
