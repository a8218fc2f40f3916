// Package watch tells when a file's content changes.
//
// It watches the file's directory, not the file: editors replace a file by
// renaming a new one over it, and Kubernetes updates a mounted ConfigMap
// by swapping its ..data symlink, and a watch on the file itself would
// stay on the old inode. Bursts of events are debounced, the content is
// read twice a moment apart and must agree (a file caught between a
// truncate and a write is not a change), and a change is reported only
// when the content differs from what was last reported, so one update
// gives one report however many events it took. When the
// directory cannot be watched (inotify limits), it polls the content
// instead and says so once in the log.
package watch

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Options tunes a Watcher; the zero value of each field picks a default.
type Options struct {
	// Debounce is how long the directory must stay quiet after an event
	// before the file is read; default 200ms.
	Debounce time.Duration
	// PollInterval is how often the file is read when the directory
	// cannot be watched; default 2s.
	PollInterval time.Duration
	Log          *slog.Logger
}

// Watcher reports changes of one file's content. It is an actor: Run
// owns its only goroutine.
type Watcher struct {
	path     string
	onChange func()
	debounce time.Duration
	poll     time.Duration
	log      *slog.Logger
	// watchDir starts a watch of dir; tests replace it to make it fail.
	watchDir func(dir string) (*fsnotify.Watcher, error)
	// started, when set, is called once the watch or the polling is set
	// up; tests wait for it before they change the file.
	started func()

	seen      string // the content's hash, or the read error, last reported
	candidate string // a different state seen once, to be confirmed
}

// New returns a watcher of the file at path that calls onChange, from
// Run's goroutine, each time the content differs from what it was. The
// content now is the baseline: create the watcher right after reading the
// file, and a change before Run starts is still reported.
func New(path string, onChange func(), o Options) *Watcher {
	if o.Debounce <= 0 {
		o.Debounce = 200 * time.Millisecond
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 2 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{path: path, onChange: onChange, debounce: o.Debounce, poll: o.PollInterval, log: o.Log, watchDir: watchDir}
	w.seen = w.state()
	return w
}

func watchDir(dir string) (*fsnotify.Watcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	if err := w.Add(dir); err != nil {
		w.Close()
		return nil, err
	}
	return w, nil
}

// Run watches until ctx ends, then returns nil.
func (w *Watcher) Run(ctx context.Context) error {
	dir := filepath.Dir(w.path)
	fw, err := w.watchDir(dir)
	if err != nil {
		return w.runPoll(ctx, dir, err.Error())
	}
	defer fw.Close()
	w.setUp()

	// Look once a quiet time after the watch is set up, for a change
	// between New and now; a write may be under way.
	timer := time.NewTimer(w.debounce)
	defer timer.Stop()
	quiet := timer.C
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-fw.Events:
			if !ok {
				return w.runPoll(ctx, dir, "the watch ended")
			}
			timer.Reset(w.debounce)
			quiet = timer.C
		case err, ok := <-fw.Errors:
			if !ok {
				return w.runPoll(ctx, dir, "the watch ended")
			}
			// An overflow loses events: look at the content soon.
			w.log.Warn("config file watch error; checking the file", "dir", dir, "err", err)
			timer.Reset(w.debounce)
			quiet = timer.C
		case <-quiet:
			quiet = nil
			if !w.look() {
				// Look again before reporting: the event of a write in
				// progress may not have arrived yet.
				timer.Reset(w.debounce / 2)
				quiet = timer.C
			}
		}
	}
}

// runPoll reads the file every poll interval, after saying once why.
func (w *Watcher) runPoll(ctx context.Context, dir, why string) error {
	w.log.Warn("cannot watch the config file's directory; polling the file instead",
		"dir", dir, "file", w.path, "interval", w.poll.String(), "err", why)
	t := time.NewTicker(w.poll)
	defer t.Stop()
	w.setUp()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			w.look()
		}
	}
}

func (w *Watcher) setUp() {
	if w.started != nil {
		w.started()
		w.started = nil
	}
}

// look reads the file's state and reports a change once two looks in a
// row agree on it, so that a file caught between a truncate and a write
// is not reported. It returns false when it wants another look.
func (w *Watcher) look() bool {
	s := w.state()
	switch s {
	case w.seen:
		w.candidate = ""
		return true
	case w.candidate:
		w.seen, w.candidate = s, ""
		w.onChange()
		return true
	default:
		w.candidate = s
		return false
	}
}

// state is the content's hash, or the read error: a file that goes away
// is a change too, which the reader will report.
func (w *Watcher) state() string {
	data, err := os.ReadFile(w.path)
	if err != nil {
		return "error: " + err.Error()
	}
	return fmt.Sprintf("sha256:%x", sha256.Sum256(data))
}
