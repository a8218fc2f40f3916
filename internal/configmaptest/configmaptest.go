// Package configmaptest lays out a directory the way the kubelet lays out
// a mounted ConfigMap, and updates it the way the kubelet does, so that
// tests of a file watcher see exactly what a pod sees.
package configmaptest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Dir is a ConfigMap volume holding one file: a timestamped directory with
// the file, a ..data symlink to it, and the file's first path component a
// symlink through ..data.
type Dir struct {
	t    testing.TB
	dir  string
	name string
	n    int
}

// New makes a ConfigMap volume in a temporary directory with one file,
// name, holding content. name is the item's path and may have a
// directory, as in "conf/config.yaml": the kubelet then puts the file in
// conf in each timestamped directory and makes conf, not the file, the
// symlink through ..data.
func New(t testing.TB, name, content string) *Dir {
	t.Helper()
	d := &Dir{t: t, dir: t.TempDir(), name: filepath.FromSlash(name)}
	ts := d.version(content)
	if err := os.Symlink(ts, filepath.Join(d.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	top, _, _ := strings.Cut(d.name, string(filepath.Separator))
	if err := os.Symlink(filepath.Join("..data", top), filepath.Join(d.dir, top)); err != nil {
		t.Fatal(err)
	}
	return d
}

// Path is the file as the pod sees it.
func (d *Dir) Path() string { return filepath.Join(d.dir, d.name) }

// version writes a new timestamped directory, named as the kubelet names
// them, and returns its name.
func (d *Dir) version(content string) string {
	d.t.Helper()
	d.n++
	ts := fmt.Sprintf("..2026_11_30_08_15_%02d.%09d", 10+d.n, 123456789+d.n)
	file := filepath.Join(d.dir, ts, d.name)
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		d.t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
		d.t.Fatal(err)
	}
	return ts
}

// Update does what the kubelet's atomic writer does: write the new
// version, point ..data_tmp at it, rename ..data_tmp over ..data, and
// remove the old version.
func (d *Dir) Update(content string) {
	d.t.Helper()
	old, err := os.Readlink(filepath.Join(d.dir, "..data"))
	if err != nil {
		d.t.Fatal(err)
	}
	ts := d.version(content)
	if err := os.Symlink(ts, filepath.Join(d.dir, "..data_tmp")); err != nil {
		d.t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(d.dir, "..data_tmp"), filepath.Join(d.dir, "..data")); err != nil {
		d.t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(d.dir, old)); err != nil {
		d.t.Fatal(err)
	}
}
