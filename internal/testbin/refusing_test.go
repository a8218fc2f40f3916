package testbin

import (
	"errors"
	"net"
	"syscall"
	"testing"
)

func TestRefusingAddr(t *testing.T) {
	addr := RefusingAddr(t)
	if _, err := net.Dial("tcp", addr); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial %s: got %v, want connection refused", addr, err)
	}
	if ln, err := net.Listen("tcp", addr); !errors.Is(err, syscall.EADDRINUSE) {
		if err == nil {
			ln.Close()
		}
		t.Errorf("listen on %s: got %v, want address in use", addr, err)
	}
}
