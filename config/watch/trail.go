package watch

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// maxHops is how many symlinks a path may go through, as in Linux.
const maxHops = 40

// trail is what leads to a file: the paths whose change may change what
// the file's path reads, and the directories to watch to hear of them.
type trail struct {
	// names holds the file's path and every path met on the way to it,
	// as written and as its symlinks resolve.
	names map[string]bool
	// dirs are the directories to watch: the file's directory first (its
	// events name the file as written), then that directory's parent,
	// the directory of each symlink on the way, and the directory the
	// file resolves to; or, where the way is broken, the last directory
	// that exists, to hear it mended.
	dirs []string
}

// trailOf follows the absolute path as the kernel does, from the root,
// one component and one symlink at a time.
func trailOf(path string) trail {
	t := trail{names: make(map[string]bool)}
	for p := path; !t.names[p]; p = filepath.Dir(p) {
		t.names[p] = true
	}
	dir := filepath.Dir(path)
	t.watch(dir)
	t.watch(filepath.Dir(dir))
	at, end := t.follow(path)
	if end {
		at = filepath.Dir(at)
	}
	t.watch(at)
	return t
}

// follow walks path from its root and returns where it got to: the file
// it resolves to and true, or the last directory that exists and false.
func (t *trail) follow(path string) (string, bool) {
	at := root(path)
	todo := components(path)
	for hops := 0; len(todo) > 0; {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			at = filepath.Dir(at)
			continue
		}
		p := filepath.Join(at, c)
		t.names[p] = true
		fi, err := os.Lstat(p)
		if err != nil {
			return at, false
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			at = p
			continue
		}
		t.watch(at)
		target, err := os.Readlink(p)
		if hops++; err != nil || hops > maxHops {
			return at, false
		}
		if filepath.IsAbs(target) {
			at = root(target)
		}
		todo = append(components(target), todo...)
	}
	return at, true
}

// watch adds dir to the directories to watch, once.
func (t *trail) watch(dir string) {
	if !slices.Contains(t.dirs, dir) {
		t.dirs = append(t.dirs, dir)
	}
}

// root is the root of the absolute path p, such as / or C:\.
func root(p string) string {
	return filepath.VolumeName(p) + string(filepath.Separator)
}

// components splits p, after its root if it has one, at each separator.
func components(p string) []string {
	if filepath.IsAbs(p) {
		p = p[len(root(p)):]
	}
	return strings.Split(p, string(filepath.Separator))
}
