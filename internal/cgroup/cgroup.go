// Package cgroup reads the memory limit of the control group outrider runs
// in: its container's limit, or its systemd unit's MemoryMax. Both cgroup
// versions are read; on a host that mounts both, the version-1 memory
// controller, where mounted, is the one in force.
package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/procfs"
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
	self, err := procSelf(filepath.Join(root, "proc"))
	if errors.Is(err, fs.ErrNotExist) {
		return Limit{}, nil
	}
	if err != nil {
		return Limit{}, fmt.Errorf("read /proc/self: %w", err)
	}
	cgroups, err := self.Cgroups()
	if err != nil {
		return Limit{}, fmt.Errorf("read the process's cgroup: %w", err)
	}
	mounts, err := self.MountInfo()
	if err != nil {
		return Limit{}, fmt.Errorf("read the mount table: %w", err)
	}
	// The process's path in the version-1 memory hierarchy and in the
	// version-2 one.
	var v1, v2 *procfs.Cgroup
	for i, c := range cgroups {
		switch {
		case c.HierarchyID == 0 && len(c.Controllers) == 0:
			v2 = &cgroups[i]
		case slices.Contains(c.Controllers, "memory"):
			v1 = &cgroups[i]
		}
	}
	// The mounts of those hierarchies.
	var m1, m2 *procfs.MountInfo
	for _, m := range mounts {
		switch _, memory := m.SuperOptions["memory"]; {
		case m.FSType == "cgroup2" && m2 == nil:
			m2 = m
		case m.FSType == "cgroup" && memory && m1 == nil:
			m1 = m
		}
	}
	switch {
	case v1 != nil && m1 != nil:
		return lowest(root, m1, v1.Path, "memory.limit_in_bytes")
	case v2 != nil && m2 != nil:
		return lowest(root, m2, v2.Path, "memory.max")
	}
	return Limit{}, nil
}

// procSelf is /proc/self under the proc file system at dir.
func procSelf(dir string) (procfs.Proc, error) {
	pfs, err := procfs.NewFS(dir)
	if err != nil {
		return procfs.Proc{}, err
	}
	return pfs.Self()
}

// cgroupDir is the directory of the cgroup at path p in the hierarchy
// mounted by m, or the mount point when p is not under the mount's root
// (a cgroup namespace shows the process's own cgroup as "/", and one it
// left as "/..").
func cgroupDir(m *procfs.MountInfo, p string) string {
	mroot, point := unescape(m.Root), unescape(m.MountPoint)
	rel, ok := strings.CutPrefix(path.Clean(p), mroot)
	if !ok || (rel != "" && !strings.HasPrefix(rel, "/") && mroot != "/") {
		return point
	}
	return path.Join(point, rel)
}

// lowest reads name in the directory of the cgroup at path p, in the
// hierarchy mounted by m, and in each parent up to the mount point, and
// returns the lowest limit found. A cgroup without the file (the root of
// version 2's hierarchy) sets none.
func lowest(root string, m *procfs.MountInfo, p, name string) (Limit, error) {
	dir, point := cgroupDir(m, p), unescape(m.MountPoint)
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
