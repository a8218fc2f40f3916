package exporter

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/outrider-sidecar/outrider/internal/regularfile"
)

// fromPIDFile finds the process whose pid the file holds.
func (c *AppCollector) fromPIDFile(path string) finder {
	return finder{how: howPIDFile, find: func() (int, string, error) {
		data, err := readPIDFile(path)
		if err != nil {
			return 0, "", err
		}
		pid, err := parsePID(string(data))
		if err != nil {
			return 0, "", fmt.Errorf("pid file %s: %w", path, err)
		}
		if err := c.startedBeforeWritten(pid, path); err != nil {
			return 0, "", err
		}
		return pid, path, nil
	}}
}

// startedBeforeWritten refuses a pid whose process started after the pid
// file was last written: the app that wrote it is gone, and its pid went
// to another process, whose figures would pass for the app's. An app
// writes its pid once it runs, so its own process always started before.
// A process that cannot be read is left to the collector, which reports
// it.
func (c *AppCollector) startedBeforeWritten(pid int, path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return nil
	}
	p, err := c.fs.Proc(pid)
	if err != nil {
		return nil
	}
	st, err := p.Stat()
	if err != nil {
		return nil
	}
	secs, err := st.StartTime()
	if err != nil {
		return nil
	}
	started := time.Unix(0, int64(secs*1e9))
	if written := fi.ModTime(); started.After(written.Add(pidFileSlack)) {
		return fmt.Errorf("pid file %s names pid %d, which started at %s, after the file was written (%s): the app is gone and its pid reused",
			path, pid, started.Format(time.TimeOnly), written.Format(time.TimeOnly))
	}
	return nil
}

// pidFileSlack is how much later than its pid file a process may seem to
// have started and still be the app that wrote it: its start time is
// counted from a boot time given to the second, and a pid file on a
// network file system takes its time from the server's clock. A pid
// reused within it is still adopted; an app that ran for longer than it
// is caught.
const pidFileSlack = time.Minute

// maxPIDFile is the most of a pid file read: a pid and white space take a
// few bytes, and a longer file is not a pid file.
const maxPIDFile = 64

// readPIDFile returns the content of the pid file at path. A named pipe
// is refused without waiting for a writer, which would hold up the
// scrape, and a file longer than maxPIDFile (a log named by mistake) is
// refused without reading it whole.
func readPIDFile(path string) ([]byte, error) {
	data, err := regularfile.ReadAtMost(path, maxPIDFile)
	var notRegular *regularfile.NotRegularError
	var tooLong *regularfile.TooLongError
	switch {
	case errors.As(err, &notRegular):
		return nil, fmt.Errorf("pid file %s is not a regular file (%s): name the file the app writes its pid to", path, notRegular.Kind())
	case errors.As(err, &tooLong):
		return nil, fmt.Errorf("pid file %s holds more than %d bytes, which no pid takes: name the file the app writes its pid to", path, maxPIDFile)
	case err != nil:
		return nil, fmt.Errorf("read pid file: %w", err)
	}
	return data, nil
}

// fromCmdline finds the oldest process, outrider and its exec probes
// excepted, whose command line matches re. The oldest is the parent of a
// pre-forking server, and the choice stays the same from one look to the
// next.
func (c *AppCollector) fromCmdline(re *regexp.Regexp) finder {
	detail := "command line matches " + strconv.Quote(re.String())
	return finder{how: howProcess, find: func() (int, string, error) {
		procs, err := c.fs.AllProcs()
		if err != nil {
			return 0, "", fmt.Errorf("list processes under %s: %w", c.root, err)
		}
		var found []candidate
		for _, p := range procs {
			if p.PID == c.self {
				continue
			}
			args, err := p.CmdLine()
			// Kernel threads and zombies have no command line.
			if err != nil || len(args) == 0 || !re.MatchString(strings.Join(args, " ")) {
				continue
			}
			if st, err := p.Stat(); err == nil {
				found = append(found, candidate{pid: p.PID, pgid: st.PGRP, startTicks: st.Starttime})
			}
		}
		// An exec probe whose command matches too (python check.py for
		// a Python app) would pass for the app while it is down.
		found = c.withoutProbes(found)
		if len(found) == 0 {
			return 0, "", fmt.Errorf("no process but outrider and its exec probes has a command line matching %q", re)
		}
		return oldest(found).pid, detail, nil
	}}
}

// fromChild finds the wrap-mode child.
func fromChild(child func() int) finder {
	return finder{how: howChild, find: func() (int, string, error) {
		pid := child()
		if pid <= 0 {
			return 0, "", errors.New("the wrap-mode child is not running")
		}
		return pid, "wrap-mode child", nil
	}}
}

// fromSocket finds the process that owns the socket listening on port, in
// net/tcp or net/tcp6, and taking connections to host (see takesHost). Of
// several owners (a pre-forking server shares its listener) the oldest
// wins.
func (c *AppCollector) fromSocket(host netip.Addr, port int) finder {
	return finder{how: howSocket, find: func() (int, string, error) {
		if port == 0 {
			return 0, "", errors.New("the app address has port 0, so no listening socket can be matched")
		}
		inodes, elsewhere, err := c.listeners(host, port)
		if err != nil {
			return 0, "", err
		}
		if len(inodes) == 0 {
			return 0, "", noListener(host, port, elsewhere)
		}
		procs, err := c.fs.AllProcs()
		if err != nil {
			return 0, "", fmt.Errorf("list processes under %s: %w", c.root, err)
		}
		var (
			found []candidate
			inode = map[int]uint64{}
		)
		for _, p := range procs {
			if p.PID == c.self {
				continue
			}
			// Without CAP_SYS_PTRACE the fds of another user's process
			// cannot be read; such a process cannot be the owner we see.
			links, err := p.FileDescriptorTargets()
			if err != nil {
				continue
			}
			for _, l := range links {
				ino, ok := parseSocketInode(l)
				if !ok || !inodes[ino] {
					continue
				}
				if st, err := p.Stat(); err == nil {
					found = append(found, candidate{pid: p.PID, startTicks: st.Starttime})
					inode[p.PID] = ino
				}
				break
			}
		}
		if len(found) == 0 {
			return 0, "", fmt.Errorf("no visible process owns the socket listening on port %d", port)
		}
		pid := oldest(found).pid
		return pid, fmt.Sprintf("owner of the socket listening on port %d (inode %d)", port, inode[pid]), nil
	}}
}

// noListener is the error of a socket search that found nothing for host
// and port; elsewhere are the addresses that listen on port but take no
// connections to host. Each address is named once, however many sockets
// share it (SO_REUSEPORT, a pre-forking server's workers).
func noListener(host netip.Addr, port int, elsewhere []netip.Addr) error {
	if len(elsewhere) == 0 {
		return fmt.Errorf("no socket listens on port %d", port)
	}
	elsewhere = slices.Clone(elsewhere)
	slices.SortFunc(elsewhere, netip.Addr.Compare)
	elsewhere = slices.Compact(elsewhere)
	addrs := make([]string, len(elsewhere))
	for i, a := range elsewhere {
		addrs[i] = a.String()
	}
	return fmt.Errorf("no socket listens on port %d for %s, only on %s: set OUTRIDER_APP_ADDR to the address the app listens on",
		port, host, strings.Join(addrs, ", "))
}

// listeners returns the inodes of the sockets listening on port, IPv4 and
// IPv6, that take connections to host, and the addresses of those that do
// not. A missing net/tcp6 (IPv6 disabled) is no error; both missing is:
// the root is not a procfs, and "nothing listens" would be wrong.
func (c *AppCollector) listeners(host netip.Addr, port int) (inodes map[uint64]bool, elsewhere []netip.Addr, err error) {
	inodes = map[uint64]bool{}
	missing := 0
	for _, name := range []string{"tcp", "tcp6"} {
		path := filepath.Join(c.root, "net", name)
		f, err := os.Open(path)
		if errors.Is(err, fs.ErrNotExist) {
			if missing++; missing == 2 {
				return nil, nil, fmt.Errorf("read listening sockets: neither %s nor %s6 exists: is %s a procfs mount?", filepath.Join(c.root, "net", "tcp"), filepath.Join(c.root, "net", "tcp"), c.root)
			}
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("read listening sockets: %w", err)
		}
		found, other, err := parseListeners(f, host, port)
		f.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		for _, ino := range found {
			inodes[ino] = true
		}
		elsewhere = append(elsewhere, other...)
	}
	return inodes, elsewhere, nil
}

// tcpListen is the state of a listening socket in /proc/net/tcp.
const tcpListen = "0A"

// parseListeners returns the inodes of the sockets in the LISTEN state on
// port that take connections to host, and the addresses of those on port
// that do not, from /proc/net/tcp or /proc/net/tcp6. It reads line by
// line and keeps nothing of a line that does not match: the file lists
// every socket of the network namespace, tens of thousands in a busy pod,
// and it is read at every scrape until the app is found.
func parseListeners(r io.Reader, host netip.Addr, port int) (inodes []uint64, elsewhere []netip.Addr, err error) {
	var fields [10][]byte
	sc := bufio.NewScanner(r)
	for i := 1; sc.Scan(); i++ {
		n := splitFields(sc.Bytes(), fields[:])
		if i == 1 || n == 0 {
			continue // the header, or an empty line
		}
		if n < len(fields) {
			return nil, nil, fmt.Errorf("line %d: %d fields, want at least 10", i, n)
		}
		local := fields[1]
		colon := bytes.LastIndexByte(local, ':')
		if colon < 0 {
			return nil, nil, fmt.Errorf("line %d: local address %q has no port", i, local)
		}
		p, err := strconv.ParseUint(string(local[colon+1:]), 16, 16)
		if err != nil {
			return nil, nil, fmt.Errorf("line %d: local address %q: bad port", i, local)
		}
		if string(fields[3]) != tcpListen || int(p) != port {
			continue
		}
		ip, ok := procAddr(local[:colon])
		if !ok {
			return nil, nil, fmt.Errorf("line %d: local address %q: bad address", i, local)
		}
		if !takesHost(ip, host) {
			elsewhere = append(elsewhere, ip)
			continue
		}
		ino, err := strconv.ParseUint(string(fields[9]), 10, 64)
		if err != nil {
			return nil, nil, fmt.Errorf("line %d: inode %q is not a number", i, fields[9])
		}
		if ino != 0 {
			inodes = append(inodes, ino)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, nil, err
	}
	return inodes, elsewhere, nil
}

// takesHost reports whether a socket listening on ip takes connections to
// host: ip is host (or host mapped into IPv6), 0.0.0.0 for an IPv4 host,
// or ::. With host not valid (the app address names a host) every
// address does.
//
// Why: ports of different addresses are different sockets. Matched by
// port alone, a process listening on 127.0.0.1:8080 was taken for an app
// listening on [::1]:8080, and its figures exported as the app's.
func takesHost(ip, host netip.Addr) bool {
	switch {
	case !host.IsValid():
		return true
	case ip.Is4() && ip.IsUnspecified():
		return host.Unmap().Is4()
	case ip.IsUnspecified():
		return true
	}
	return ip.Unmap() == host.Unmap()
}

// procAddr decodes an address of /proc/net/tcp (8 hex digits) or tcp6
// (32): 32-bit words in hex, each the value of 4 bytes of the address in
// the machine's byte order.
func procAddr(s []byte) (netip.Addr, bool) {
	if len(s) != 8 && len(s) != 32 {
		return netip.Addr{}, false
	}
	var words, b [16]byte
	if _, err := hex.Decode(words[:], s); err != nil {
		return netip.Addr{}, false
	}
	for w := range len(s) / 8 {
		binary.NativeEndian.PutUint32(b[w*4:], binary.BigEndian.Uint32(words[w*4:]))
	}
	if len(s) == 8 {
		return netip.AddrFrom4([4]byte(b[:4])), true
	}
	return netip.AddrFrom16(b), true
}

// splitFields puts the first len(dst) space-separated fields of line in
// dst, without copying, and returns how many it put.
func splitFields(line []byte, dst [][]byte) int {
	n := 0
	for n < len(dst) {
		line = bytes.TrimLeft(line, " \t")
		if len(line) == 0 {
			break
		}
		end := bytes.IndexAny(line, " \t")
		if end < 0 {
			end = len(line)
		}
		dst[n] = line[:end]
		n++
		line = line[end:]
	}
	return n
}

// parseSocketInode returns the inode of an fd link "socket:[12345]".
func parseSocketInode(link string) (uint64, bool) {
	rest, ok := strings.CutPrefix(link, "socket:[")
	if !ok {
		return 0, false
	}
	rest, ok = strings.CutSuffix(rest, "]")
	if !ok {
		return 0, false
	}
	ino, err := strconv.ParseUint(rest, 10, 64)
	return ino, err == nil
}

// parsePID reads the content of a pid file.
func parsePID(s string) (int, error) {
	t := strings.TrimSpace(s)
	pid, err := strconv.Atoi(t)
	if err != nil || pid < 1 {
		return 0, fmt.Errorf("%q is not a pid (want a whole number of 1 or more)", t)
	}
	return pid, nil
}

// withoutProbes drops the processes of outrider's exec probes from cs.
// The groups are read after cs was listed, so that a probe started while
// the list was read is among them.
func (c *AppCollector) withoutProbes(cs []candidate) []candidate {
	if c.probes == nil || len(cs) == 0 {
		return cs
	}
	probes := c.probes()
	return slices.DeleteFunc(cs, func(p candidate) bool { return probes[p.pgid] })
}

// candidate is a process that matches a finder.
type candidate struct {
	pid        int
	pgid       int
	startTicks uint64
}

// oldest returns the process that started first; of two that started in
// the same tick, the lower pid. cs is not empty.
func oldest(cs []candidate) candidate {
	best := cs[0]
	for _, c := range cs[1:] {
		if c.startTicks < best.startTicks || (c.startTicks == best.startTicks && c.pid < best.pid) {
			best = c
		}
	}
	return best
}
