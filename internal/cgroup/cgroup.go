// Package cgroup reads the memory limit of the control group outrider runs
// in: its container's limit, or its systemd unit's MemoryMax. Both cgroup
// versions are read; on a host that mounts both, the version-1 memory
// controller, where mounted, is the one in force.
package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// Limit is a memory limit and where it was read.
type Limit struct {
	// Bytes is the limit; 0 means none.
	Bytes uint64
	// File is the file it was read from, such as
	// /sys/fs/cgroup/memory.max; empty when there is no limit.
	File string
}

// unlimited is where version 1 reports no limit: it rounds its maximum
// (2^63-1) down to a page, and no machine has 2^62 bytes.
const unlimited = 1 << 62

// MemoryLimit returns the memory limit of the current process's cgroup:
// the lowest of its own and its ancestors' within the mounted hierarchy.
// root is the file system root ("/"; a directory laid out the same way in
// tests). No cgroup found, such as outside Linux, is no limit, not an
// error; a limit file that cannot be read or parsed is an error naming it.
func MemoryLimit(root string) (Limit, error) {
	own, err := os.ReadFile(filepath.Join(root, "proc/self/cgroup"))
	if errors.Is(err, fs.ErrNotExist) {
		return Limit{}, nil
	}
	if err != nil {
		return Limit{}, fmt.Errorf("read the process's cgroup: %w", err)
	}
	v1, v2, v2ok := ownPaths(string(own))
	mounts, err := os.Open(filepath.Join(root, "proc/self/mountinfo"))
	if errors.Is(err, fs.ErrNotExist) {
		return Limit{}, nil
	}
	if err != nil {
		return Limit{}, fmt.Errorf("read the mount table: %w", err)
	}
	defer mounts.Close()
	m1, m2, err := memoryMounts(mounts)
	if err != nil {
		return Limit{}, err
	}
	switch {
	case v1 != "" && m1 != nil:
		return lowest(root, m1.dir(v1), m1.point, "memory.limit_in_bytes")
	case v2ok && m2 != nil:
		return lowest(root, m2.dir(v2), m2.point, "memory.max")
	}
	return Limit{}, nil
}

// ownPaths returns the process's path in the version-1 memory hierarchy
// and in the version-2 one, from /proc/self/cgroup's lines
// ("ID:CONTROLLERS:PATH").
func ownPaths(s string) (v1, v2 string, v2ok bool) {
	for line := range strings.Lines(s) {
		id, rest, ok := strings.Cut(strings.TrimRight(line, "\n"), ":")
		if !ok {
			continue
		}
		controllers, p, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		switch {
		case id == "0" && controllers == "":
			v2, v2ok = p, true
		case hasItem(controllers, "memory"):
			v1 = p
		}
	}
	return v1, v2, v2ok
}

// mount is a cgroup file system: the cgroup at its root and where it is
// mounted.
type mount struct{ root, point string }

// dir is the directory of the cgroup at path p, or the mount point when p
// is not under the mount's root (a cgroup namespace shows the process's
// own cgroup as "/", and one it left as "/..").
func (m *mount) dir(p string) string {
	rel, ok := strings.CutPrefix(path.Clean(p), m.root)
	if !ok || (rel != "" && !strings.HasPrefix(rel, "/") && m.root != "/") {
		return m.point
	}
	return path.Join(m.point, rel)
}

// memoryMounts finds, in /proc/self/mountinfo, the version-1 hierarchy
// with the memory controller and the version-2 one.
func memoryMounts(r *os.File) (v1, v2 *mount, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 3 {
			continue
		}
		m := &mount{root: unescape(f[3]), point: unescape(f[4])}
		switch {
		case g[0] == "cgroup2" && v2 == nil:
			v2 = m
		case g[0] == "cgroup" && v1 == nil && hasItem(g[2], "memory"):
			v1 = m
		}
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("read the mount table: %w", err)
	}
	return v1, v2, nil
}

// lowest reads name in dir and in each parent up to the mount point, and
// returns the lowest limit found. A cgroup without the file (the root of
// version 2's hierarchy) sets none.
func lowest(root, dir, point, name string) (Limit, error) {
	var l Limit
	for {
		file := path.Join(dir, name)
		raw, err := os.ReadFile(filepath.Join(root, file))
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return Limit{}, fmt.Errorf("read the memory limit: %w", err)
		default:
			n, err := parseLimit(string(raw))
			if err != nil {
				return Limit{}, fmt.Errorf("%s: %w", file, err)
			}
			if n != 0 && (l.Bytes == 0 || n < l.Bytes) {
				l = Limit{Bytes: n, File: file}
			}
		}
		if dir == point || dir == "/" || dir == "." {
			return l, nil
		}
		dir = path.Dir(dir)
	}
}

// parseLimit reads a limit file's value: bytes, or "max" (version 2) or
// a value past unlimited (version 1) for none, returned as 0.
func parseLimit(s string) (uint64, error) {
	s = strings.TrimSpace(s)
	if s == "max" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("want a number of bytes or \"max\", got %q", s)
	}
	if n >= unlimited {
		return 0, nil
	}
	return n, nil
}

// hasItem reports whether the comma-separated list holds item.
func hasItem(list, item string) bool {
	for s := range strings.SplitSeq(list, ",") {
		if s == item {
			return true
		}
	}
	return false
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
