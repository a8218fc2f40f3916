package exporter

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// Ways the app's descendants are found.
const (
	// walkUnknown: not tried yet.
	walkUnknown = iota
	// walkChildren reads /proc/<pid>/task/<tid>/children from the app
	// process down: a few files, whatever the number of processes on the
	// host. Kernels built without CONFIG_PROC_CHILDREN have no such file.
	walkChildren
	// walkScan reads the parent pid from every /proc/<pid>/stat.
	walkScan
)

// descendants returns the pids of root's live descendants, each with the
// pid of its parent, parents before children. outrider's own process and
// its children (exec probes) are left out, should outrider run under the
// app.
func (c *AppCollector) descendants(root int) ([]kin, error) {
	if c.walk != walkScan {
		kids, err := c.walkChildren(root)
		switch {
		case err == nil:
			c.walk = walkChildren
			return kids, nil
		case c.walk == walkUnknown && errors.Is(err, errNoChildrenFile):
			c.walk = walkScan
			c.log.Info("the kernel has no /proc/<pid>/task/<tid>/children (CONFIG_PROC_CHILDREN); the app's descendants are found by reading the stat of every process")
		}
		// Otherwise a process went away mid-walk, or a children file
		// could not be read: scan this once.
	}
	return c.scan(root)
}

// kin is a descendant of the app process and its parent.
type kin struct{ pid, ppid int }

var errNoChildrenFile = errors.New("no children file")

// walkChildren finds root's descendants from the children files of
// each thread: a child is listed under the thread that started it.
func (c *AppCollector) walkChildren(root int) ([]kin, error) {
	var kids []kin
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		dir := filepath.Join(c.root, strconv.Itoa(pid), "task")
		tids, err := readNames(dir)
		if err != nil {
			if pid != root && gone(err) {
				continue // it exited: so have its children, or they moved
			}
			return nil, err
		}
		for _, tid := range tids {
			err := c.readInto(filepath.Join(dir, tid, "children"))
			if err != nil && pid == root && tid == strconv.Itoa(root) && gone(err) {
				if _, serr := os.Stat(filepath.Join(dir, tid)); serr == nil {
					return nil, errNoChildrenFile
				}
			}
			if gone(err) {
				continue // the thread ended since the directory was read
			}
			if err != nil {
				return nil, err
			}
			for _, f := range bytes.Fields(c.buf.Bytes()) {
				kid, err := strconv.Atoi(string(f))
				if err != nil || kid == c.self {
					continue
				}
				kids = append(kids, kin{kid, pid})
				queue = append(queue, kid)
			}
		}
	}
	return kids, nil
}

// scan finds root's descendants from the parent pid in the stat of every
// process. It reads each stat into one buffer and parses only the parent
// pid, so that a host of thousands of processes costs a syscall or three
// each and next to no garbage.
func (c *AppCollector) scan(root int) ([]kin, error) {
	names, err := readNames(c.root)
	if err != nil {
		return nil, err
	}
	children := map[int][]int{}
	var buf [512]byte
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil || pid == root || pid == c.self {
			continue
		}
		ppid, ok := readPPID(filepath.Join(c.root, name, fileStat), buf[:])
		if ok {
			children[ppid] = append(children[ppid], pid)
		}
	}
	var kids []kin
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		for _, kid := range children[pid] {
			kids = append(kids, kin{kid, pid})
			queue = append(queue, kid)
		}
	}
	return kids, nil
}

// readPPID returns the fourth field of the stat file at path, the
// parent's pid. ok is false when the file cannot be read (the process
// has gone, or hidepid hides it) or parsed.
func readPPID(path string, buf []byte) (ppid int, ok bool) {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return 0, false
	}
	n, err := syscall.Read(fd, buf)
	syscall.Close(fd)
	if err != nil || n <= 0 {
		return 0, false
	}
	return parsePPID(buf[:n])
}

// parsePPID reads the parent pid from the text of /proc/<pid>/stat:
// "pid (comm) state ppid …", where comm may hold spaces and parentheses.
func parsePPID(b []byte) (int, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	var f [2][]byte
	if splitFields(b[i+1:], f[:]) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(string(f[1]))
	return ppid, err == nil
}

// readNames returns the names in the directory dir.
func readNames(dir string) ([]string, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Readdirnames(-1)
}
