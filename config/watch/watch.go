// Package watch tells when a file's content changes.
//
// It watches the file's directory, not the file: editors replace a file by
// renaming a new one over it, and Kubernetes updates a mounted ConfigMap
// by swapping its ..data symlink, and a watch on the file itself would
// stay on the old inode. A watch of a directory stays on its inode too, so
// it also watches the directories where the directory could be replaced:
// its parent and the directory of each symlink on the way to the file
// (the kubelet's conf -> ..data/conf, a release's current -> release-2);
// after each event that may concern the file it watches again each
// directory that is not the one watched any more. Only such events count:
// an app's log written beside the file does not hold a look off. Bursts
// of events are debounced, the content is read twice a moment apart and
// must agree (a file caught between a truncate and a write is not a
// change), and it is reported with that content, so that the caller
// loads what was confirmed. A change is reported only when the content
// differs from what was last reported, so one update gives one report
// however many events it took. Every poll interval it also checks the directories and
// the file, so a change whose events were lost is still reported. When
// the directory cannot be watched (inotify limits), it polls the content
// instead and says so once in the log. A file that is a mount point of its
// own (a Kubernetes subPath mount) keeps what it was mounted from, whatever
// takes its source's name later: it says so too.
package watch

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/procfs"

	"github.com/outrider-sidecar/outrider/internal/regularfile"
)

// Options tunes a Watcher; the zero value of each field picks a default.
type Options struct {
	// Debounce is how long the directory must stay quiet after an event
	// before the file is read; default 200ms. A burst of events that
	// does not stop is read every 5 debounces.
	Debounce time.Duration
	// PollInterval is how often the file is read when the directory
	// cannot be watched, and how often the watches and the file are
	// checked when it can; default 2s.
	PollInterval time.Duration
	Log          *slog.Logger
	// From is the content to report changes from, SnapshotOf what the
	// caller read; the zero value is the content at New.
	From Snapshot
}

// Snapshot is a file's content (or its read error) at one time.
type Snapshot struct{ state string }

// SnapshotOf returns the snapshot of a file that holds data: pass the
// content the caller read as Options.From, and any change since that
// read is reported.
func SnapshotOf(data []byte) Snapshot { return Snapshot{sum(data)} }

// absPath is path made absolute from the current directory, if it can be.
func absPath(path string) string {
	if abs, err := filepath.Abs(path); err == nil {
		return abs
	}
	return path
}

// Watcher reports changes of one file's content. It is an actor: Run
// owns its only goroutine.
type Watcher struct {
	path     string
	onChange func(data []byte)
	debounce time.Duration
	poll     time.Duration
	log      *slog.Logger
	// watchDir starts a watch of dir; tests replace it to make it fail.
	watchDir func(dir string) (*fsnotify.Watcher, error)
	// addWatch adds dir to a watch; tests replace it to lose events.
	addWatch func(fw *fsnotify.Watcher, dir string) error
	// started, when set, is called once the watch or the polling is set
	// up; tests wait for it before they change the file.
	started func()

	seen      string // the content's hash, or the read error, last reported
	candidate string // a different state seen once, to be confirmed

	names   map[string]bool        // the paths on the way to the file
	watched map[string]os.FileInfo // each directory watched, as stat saw it
	warned  bool                   // the log said the directory is unwatched
}

// New returns a watcher of the file at path that calls onChange, from
// Run's goroutine, each time the content differs from what it was, with
// the content it confirmed: the caller uses that, not a read of its own,
// which could find the file changed again or caught half written. data
// is nil when the file cannot be read (gone, not a regular file): the
// caller's read then says why. The
// baseline is o.From, or else the content now: then create the watcher
// right after reading the file. A change before Run starts is still
// reported. A relative path is taken from the current directory now.
func New(path string, onChange func(data []byte), o Options) *Watcher {
	path = absPath(path)
	if o.Debounce <= 0 {
		o.Debounce = 200 * time.Millisecond
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 2 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{path: path, onChange: onChange, debounce: o.Debounce, poll: o.PollInterval, log: o.Log,
		watchDir: watchDir, addWatch: (*fsnotify.Watcher).Add, watched: make(map[string]os.FileInfo)}
	w.seen = o.From.state
	if w.seen == "" {
		w.seen, _ = w.state()
	}
	return w
}

// mountedAlone reports whether the file at path is a mount point, as
// /proc/self/mountinfo lists them: the mount holds the file it was made
// from, not what later takes that file's name at the source.
func mountedAlone(path string) bool {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return false
	}
	mounts, err := procfs.GetMounts()
	if err != nil {
		return false
	}
	point := mountEscaper.Replace(real)
	for _, m := range mounts {
		if m.MountPoint == point {
			return true
		}
	}
	return false
}

// mountEscaper spells a path as /proc/self/mountinfo does.
var mountEscaper = strings.NewReplacer(`\`, `\134`, " ", `\040`, "\t", `\011`, "\n", `\012`)

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
	if mountedAlone(w.path) {
		w.log.Warn("the config file is a mount of its own (a Kubernetes subPath mount, or a bind mount of the file): "+
			"a file put in place of its source, as the kubelet does on a ConfigMap update and most editors on a save, never reaches it; "+
			"mount the directory that holds the file instead", "file", w.path)
	}
	dir := filepath.Dir(w.path)
	fw, err := w.watchDir(dir)
	if err != nil {
		return w.runPoll(ctx, dir, err.Error())
	}
	defer fw.Close()
	w.rewatch(fw)
	w.setUp()

	// Look once a quiet time after the watch is set up, for a change
	// between New and now; a write may be under way.
	q := newQuiet(w.debounce, 5*w.debounce)
	defer q.timer.Stop()
	q.after(w.debounce, q.maxWait)
	tick := time.NewTicker(w.poll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fw.Events:
			if !ok {
				return w.runPoll(ctx, dir, "the watch ended")
			}
			if w.matters(ev.Name) {
				q.event()
			}
		case err, ok := <-fw.Errors:
			if !ok {
				return w.runPoll(ctx, dir, "the watch ended")
			}
			// An overflow loses events: look at the content soon.
			w.log.Warn("config file watch error; checking the file", "dir", dir, "err", err)
			q.event()
		case <-q.c:
			q.fired()
			w.check(fw, q)
		case <-tick.C:
			// The safety net, for events lost or never sent.
			w.check(fw, q)
		}
	}
}

// check watches again what needs it, then looks at the file; when the
// look wants another, q gives it.
func (w *Watcher) check(fw *fsnotify.Watcher, q *quiet) {
	w.rewatch(fw)
	if !w.look() {
		// Look again before reporting: the event of a write in progress
		// may not have arrived yet. Events may put the look off, but by
		// no more than a debounce, however busy the file.
		q.after(w.debounce/2, w.debounce)
	}
}

// matters tells whether an event about name may concern the file: the
// file, a directory or symlink on the way to it, or one of the kubelet's
// ..data and timestamped entries. Another file in the same directory,
// such as an app's log written all the time, does not.
func (w *Watcher) matters(name string) bool {
	name = filepath.Clean(name)
	return w.names[name] || strings.HasPrefix(filepath.Base(name), "..")
}

// rewatch watches the directories of the file's trail, again where a
// directory was replaced or came back since it was watched (inotify
// follows the inode, and drops the watch of a directory removed), and
// stops watching those no longer on the trail. A directory that is
// missing is left to an event or the next tick.
func (w *Watcher) rewatch(fw *fsnotify.Watcher) {
	t := trailOf(w.path)
	w.names = t.names
	live := make(map[string]bool)
	for _, dir := range fw.WatchList() {
		live[dir] = true
	}
	// Stat before the watch is added: a directory replaced in between is
	// then seen as changed at the next check.
	want := make(map[string]os.FileInfo)
	var order []string
	for _, dir := range t.dirs {
		fi, err := os.Stat(dir)
		if err != nil || sameAsOne(want, fi) {
			// Missing, or wanted already under another name: inotify
			// has one watch per directory.
			continue
		}
		want[dir] = fi
		order = append(order, dir)
	}
	// Drop first, so that a stale watch cannot stand in for a new one
	// of the same directory under another name.
	for dir, was := range w.watched {
		if fi, ok := want[dir]; !ok || !live[dir] || !os.SameFile(was, fi) {
			_ = fw.Remove(dir) // fails when inotify dropped it already
			delete(w.watched, dir)
			delete(live, dir)
		}
	}
	for _, dir := range order {
		if _, ok := w.watched[dir]; ok {
			continue
		}
		if live[dir] {
			_ = fw.Remove(dir) // set up before it was tracked
		}
		if err := w.addWatch(fw, dir); err != nil {
			w.watchFailed(dir, dir == filepath.Dir(w.path), err)
			continue
		}
		w.watched[dir] = want[dir]
	}
}

// watchFailed logs that dir could not be watched: at debug level, but
// once as a warning for the file's own directory when it exists, since
// then a change is seen only at the next poll interval.
func (w *Watcher) watchFailed(dir string, own bool, err error) {
	if !own || w.warned || errors.Is(err, fs.ErrNotExist) {
		w.log.Debug("cannot watch a directory on the way to the config file", "dir", dir, "err", err)
		return
	}
	w.warned = true
	w.log.Warn("cannot watch the config file's directory again; checking the file every poll interval",
		"dir", dir, "file", w.path, "interval", w.poll.String(), "err", err)
}

// sameAsOne tells whether fi is the same directory as one in m.
func sameAsOne(m map[string]os.FileInfo, fi os.FileInfo) bool {
	for _, o := range m {
		if os.SameFile(o, fi) {
			return true
		}
	}
	return false
}

// quiet is the debounce timer: it fires once events have stopped for
// the debounce time, but no later than maxWait after the first of them,
// so that a burst that never stops still gets a look.
type quiet struct {
	timer    *time.Timer
	c        <-chan time.Time // the timer's channel when armed, else nil
	debounce time.Duration
	maxWait  time.Duration
	deadline time.Time // the latest look for the burst under way, or zero
}

// newQuiet returns a quiet timer, not armed.
func newQuiet(debounce, maxWait time.Duration) *quiet {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &quiet{timer: t, debounce: debounce, maxWait: maxWait}
}

// event arms the timer for an event of a burst.
func (q *quiet) event() {
	now := time.Now()
	if q.deadline.IsZero() {
		q.deadline = now.Add(q.maxWait)
	}
	q.arm(min(q.debounce, q.deadline.Sub(now)))
}

// after arms the timer to fire in d; events until then may put the firing
// off until bound from now.
func (q *quiet) after(d, bound time.Duration) {
	q.deadline = time.Now().Add(bound)
	q.arm(d)
}

// arm sets the timer to fire in d.
func (q *quiet) arm(d time.Duration) {
	q.timer.Reset(d)
	q.c = q.timer.C
}

// fired disarms the timer once it fired; the burst is over.
func (q *quiet) fired() {
	q.c = nil
	q.deadline = time.Time{}
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
	s, data := w.state()
	switch s {
	case w.seen:
		w.candidate = ""
		return true
	case w.candidate:
		w.seen, w.candidate = s, ""
		w.onChange(data)
		return true
	default:
		w.candidate = s
		return false
	}
}

// state is the content's hash, or the read error, and the content (nil
// on an error): a file that goes away, or is replaced by a named pipe, is
// a change too, which the reader will report. Only a regular file is
// read: a pipe would block the watch until a writer came, or take the
// content its reader is after.
func (w *Watcher) state() (string, []byte) { return state(w.path) }

func state(path string) (string, []byte) {
	data, err := regularfile.Read(path)
	if err != nil {
		return "error: " + err.Error(), nil
	}
	if data == nil {
		data = []byte{}
	}
	return sum(data), data
}

func sum(data []byte) string { return fmt.Sprintf("sha256:%x", sha256.Sum256(data)) }
