package regularfile

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestRead: a regular file, directly or through a symlink, is read; a
// named pipe without a writer, a pipe, a directory and a device are
// refused at once, naming what they are.
func TestRead(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(file, []byte("a: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.yaml")
	if err := os.Symlink(file, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	fifoLink := filepath.Join(dir, "fifo-link")
	if err := os.Symlink(fifo, fifoLink); err != nil {
		t.Fatal(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	if _, err := pw.WriteString("a: 2\n"); err != nil {
		t.Fatal(err)
	}
	// What a shell's <(…) gives: the pipe by its /dev/fd name. Fd would
	// make pr blocking, and its read deadline of no effect.
	rc, err := pr.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd uintptr
	if err := rc.Control(func(f uintptr) { fd = f }); err != nil {
		t.Fatal(err)
	}
	pipe := "/proc/self/fd/" + strconv.Itoa(int(fd))

	tests := []struct {
		name string
		path string
		want string // the content, or the kind refused
	}{
		{name: "regular file", path: file, want: "a: 1\n"},
		{name: "symlink to a regular file", path: link, want: "a: 1\n"},
		{name: "named pipe without a writer", path: fifo, want: "a pipe"},
		{name: "symlink to a named pipe", path: fifoLink, want: "a pipe"},
		{name: "pipe", path: pipe, want: "a pipe"},
		{name: "directory", path: dir, want: "a directory"},
		{name: "character device", path: "/dev/null", want: "a character device"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			type result struct {
				data []byte
				err  error
			}
			done := make(chan result, 1)
			go func() {
				data, err := Read(tc.path)
				done <- result{data, err}
			}()
			var r result
			select {
			case r = <-done:
			case <-time.After(5 * time.Second):
				t.Fatalf("Read(%s) still blocked after 5s", tc.path)
			}
			var nre *NotRegularError
			switch {
			case errors.As(r.err, &nre):
				if got := nre.Kind(); got != tc.want {
					t.Errorf("Read refused %s as %q, want %q", tc.path, got, tc.want)
				}
				if want := tc.path + ": not a regular file (" + tc.want + ")"; r.err.Error() != want {
					t.Errorf("error %q, want %q", r.err, want)
				}
			case r.err != nil:
				t.Errorf("Read: %v, want %q", r.err, tc.want)
			case string(r.data) != tc.want:
				t.Errorf("Read = %q, want %q", r.data, tc.want)
			}
		})
	}
	// The pipe's content is left to its reader.
	buf := make([]byte, 16)
	_ = pr.SetReadDeadline(time.Now().Add(time.Second)) // a bound, if the content is gone
	if n, _ := pr.Read(buf); string(buf[:n]) != "a: 2\n" {
		t.Errorf("the pipe holds %q after Read, want a: 2 still there", buf[:n])
	}
}

// TestReadAtMost: a file of up to max bytes is read whole; a longer one is
// refused, naming the bound.
func TestReadAtMost(t *testing.T) {
	tests := []struct {
		content string
		max     int64
		wantErr bool
	}{
		{"", 4, false},
		{"1234", 4, false},
		{"12345", 4, true},
		{"12345", -1, false},
	}
	for _, tc := range tests {
		path := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		data, err := ReadAtMost(path, tc.max)
		var tooLong *TooLongError
		switch {
		case tc.wantErr && !errors.As(err, &tooLong):
			t.Errorf("ReadAtMost(%q, %d) = %q, %v; want a TooLongError", tc.content, tc.max, data, err)
		case !tc.wantErr && (err != nil || string(data) != tc.content):
			t.Errorf("ReadAtMost(%q, %d) = %q, %v; want it whole", tc.content, tc.max, data, err)
		}
	}
}
