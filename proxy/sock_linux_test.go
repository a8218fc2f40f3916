package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// rawPair returns a socket accepted through rawListen and the client
// connected to it.
func rawPair(t *testing.T) (*sock, net.Conn) {
	t.Helper()
	ln, err := Listen(t.Context(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wrapped, stop := rawListen(ln)
	if _, ok := wrapped.(*rawListener); !ok {
		t.Fatalf("rawListen(%T) did not wrap it", ln)
	}
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	nc, err := wrapped.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		client.Close()
		nc.Close()
		wrapped.Close()
		stop()
	})
	return nc.(*sock), client
}

// TestRawListenKeepsNetsOptions: a socket accepted with raw accept4 has
// the keep-alive and no-delay settings of net.Listen's connections, and
// the client's address.
func TestRawListenKeepsNetsOptions(t *testing.T) {
	s, client := rawPair(t)
	if got, want := s.RemoteAddr().String(), client.LocalAddr().String(); got != want {
		t.Errorf("RemoteAddr %s, want the client's %s", got, want)
	}
	if got, want := s.LocalAddr().String(), client.RemoteAddr().String(); got != want {
		t.Errorf("LocalAddr %s, want %s", got, want)
	}
	err := (*rawSock)(s).Control(func(fd uintptr) {
		for _, o := range []struct {
			name       string
			level, opt int
			want       int
		}{
			{"SO_KEEPALIVE", syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
			{"TCP_KEEPIDLE", syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, 15},
			{"TCP_NODELAY", syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1},
		} {
			v, err := syscall.GetsockoptInt(int(fd), o.level, o.opt)
			if err != nil || v != o.want {
				t.Errorf("%s: got %d, %v; want %d", o.name, v, err, o.want)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSockWaits: reads and writes wait for the poller, and a deadline or
// a Close ends the wait with the errors net's connections give.
func TestSockWaits(t *testing.T) {
	t.Run("a read waits for bytes", func(t *testing.T) {
		s, client := rawPair(t)
		go func() {
			time.Sleep(50 * time.Millisecond)
			client.Write([]byte("hello"))
		}()
		b := make([]byte, 16)
		n, err := s.Read(b)
		if err != nil || string(b[:n]) != "hello" {
			t.Errorf("Read: %q, %v; want hello", b[:n], err)
		}
	})
	t.Run("a deadline ends a read", func(t *testing.T) {
		s, _ := rawPair(t)
		s.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		start := time.Now()
		_, err := s.Read(make([]byte, 16))
		var ne net.Error
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("Read past the deadline: %v, want a timeout", err)
		}
		if d := time.Since(start); d < 40*time.Millisecond {
			t.Errorf("Read returned after %v, before the deadline", d)
		}
	})
	t.Run("a deadline in the past interrupts a waiting read", func(t *testing.T) {
		s, _ := rawPair(t)
		go func() {
			time.Sleep(50 * time.Millisecond)
			s.SetReadDeadline(aLongTimeAgo)
		}()
		if _, err := s.Read(make([]byte, 16)); !isTimeout(err) {
			t.Errorf("Read: %v, want a timeout", err)
		}
	})
	t.Run("a later deadline replaces an earlier one", func(t *testing.T) {
		s, client := rawPair(t)
		s.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		s.SetReadDeadline(time.Now().Add(time.Hour))
		go func() {
			time.Sleep(100 * time.Millisecond)
			client.Write([]byte("x"))
		}()
		if _, err := s.Read(make([]byte, 16)); err != nil {
			t.Errorf("Read: %v, want the byte sent after the first deadline", err)
		}
	})
	t.Run("Close ends a waiting read", func(t *testing.T) {
		s, _ := rawPair(t)
		go func() {
			time.Sleep(50 * time.Millisecond)
			s.Close()
		}()
		if _, err := s.Read(make([]byte, 16)); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read: %v, want net.ErrClosed", err)
		}
		if err := (*rawSock)(s).Control(func(uintptr) {}); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Control after Close: %v, want net.ErrClosed", err)
		}
	})
	t.Run("the end of the stream", func(t *testing.T) {
		s, client := rawPair(t)
		client.Close()
		if _, err := s.Read(make([]byte, 16)); err != io.EOF {
			t.Errorf("Read: %v, want io.EOF", err)
		}
	})
	t.Run("a write waits for room", func(t *testing.T) {
		s, client := rawPair(t)
		want := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB, more than the socket buffers
		got := make(chan []byte)
		go func() {
			time.Sleep(50 * time.Millisecond)
			b, _ := io.ReadAll(client)
			got <- b
		}()
		if n, err := s.Write(want); n != len(want) || err != nil {
			t.Errorf("Write: %d, %v; want %d", n, err, len(want))
		}
		s.CloseWrite()
		if b := <-got; !bytes.Equal(b, want) {
			t.Errorf("the client read %d bytes, want the %d written", len(b), len(want))
		}
	})
	t.Run("a closed listener ends Accept", func(t *testing.T) {
		ln, err := Listen(t.Context(), "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		wrapped, stop := rawListen(ln)
		defer stop()
		go func() {
			time.Sleep(50 * time.Millisecond)
			wrapped.Close()
		}()
		if _, err := wrapped.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept: %v, want net.ErrClosed", err)
		}
	})
}

// TestServeTakesClientSocketsOnOneP: Serve accepts with its own poller on
// one P, outrider's default, and leaves net's listener on more.
func TestServeTakesClientSocketsOnOneP(t *testing.T) {
	app := startEcho(t)
	for _, procs := range []int{1, 2} {
		t.Run(fmt.Sprintf("GOMAXPROCS=%d", procs), func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
			tp := startProxy(t, app, nil)
			getClose(t, tp.addr)
			tp.mu.Lock()
			_, raw := tp.ln.(*rawListener)
			tp.mu.Unlock()
			if want := procs == 1; raw != want {
				t.Errorf("client sockets on the proxy's poller: %v, want %v", raw, want)
			}
		})
	}
}
