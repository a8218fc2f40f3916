// Package regularfile reads a file only when it is a regular one (after
// symlinks, so a Kubernetes ConfigMap item is one). A named pipe, the pipe
// of a shell's <(…) or /dev/stdin, a device or a directory fails at once,
// rather than blocking the reader until a writer comes, or handing it
// what another reader left.
package regularfile

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// NotRegularError is Read's error for a path that is not a regular file.
type NotRegularError struct {
	Path string
	Mode fs.FileMode
}

func (e *NotRegularError) Error() string {
	return e.Path + ": not a regular file (" + e.Kind() + ")"
}

// Kind names what the path is instead: "a pipe", "a directory", ….
func (e *NotRegularError) Kind() string {
	switch t := e.Mode.Type(); {
	case t&fs.ModeNamedPipe != 0:
		return "a pipe"
	case t&fs.ModeDir != 0:
		return "a directory"
	case t&fs.ModeSocket != 0:
		return "a socket"
	case t&fs.ModeCharDevice != 0:
		return "a character device"
	case t&fs.ModeDevice != 0:
		return "a block device"
	default:
		return "file type " + t.String()
	}
}

// Read returns the content of the regular file at path. It looks at the
// path before opening it, so that a device is never opened; opens it
// without waiting for a writer, should a pipe have taken its place since;
// and checks the file it opened, which is the one it reads.
func Read(path string) ([]byte, error) { return ReadAtMost(path, -1) }

// TooLongError is ReadAtMost's error for a file longer than its bound.
type TooLongError struct {
	Path string
	Max  int64
}

func (e *TooLongError) Error() string {
	return fmt.Sprintf("%s: holds more than %d bytes", e.Path, e.Max)
}

// ReadAtMost is Read for a file that holds at most max bytes (no bound
// when max is negative): a longer one is refused without reading it whole.
func ReadAtMost(path string, max int64) ([]byte, error) {
	// When the path cannot be looked at, the open says why.
	if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
		return nil, &NotRegularError{Path: path, Mode: fi.Mode()}
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, &NotRegularError{Path: path, Mode: fi.Mode()}
	}
	if max < 0 {
		return io.ReadAll(f)
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err == nil && int64(len(data)) > max {
		return nil, &TooLongError{Path: path, Max: max}
	}
	return data, err
}
