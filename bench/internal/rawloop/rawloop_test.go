package rawloop

import (
	"syscall"
	"testing"
)

func TestAddr(t *testing.T) {
	tests := []struct {
		in   string
		want *syscall.SockaddrInet4 // nil: an error
	}{
		{"127.0.0.1:8080", &syscall.SockaddrInet4{Port: 8080, Addr: [4]byte{127, 0, 0, 1}}},
		{"0.0.0.0:0", &syscall.SockaddrInet4{}},
		{"[::1]:8080", nil},
		{"localhost:8080", nil},
		{"127.0.0.1", nil},
		{"127.0.0.1:99999", nil},
	}
	for _, tt := range tests {
		got, err := Addr(tt.in)
		switch {
		case tt.want == nil && err == nil:
			t.Errorf("Addr(%q) = %+v, want an error", tt.in, got)
		case tt.want != nil && err != nil:
			t.Errorf("Addr(%q): %v", tt.in, err)
		case tt.want != nil && *got != *tt.want:
			t.Errorf("Addr(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

// Two loops listen on the same port, as Main has them.
func TestListenSharesPort(t *testing.T) {
	a, err := Listen(&syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(a)
	sa, err := syscall.Getsockname(a)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Listen(sa.(*syscall.SockaddrInet4), 0)
	if err != nil {
		t.Fatalf("a second socket on port %d: %v", sa.(*syscall.SockaddrInet4).Port, err)
	}
	syscall.Close(b)
}
