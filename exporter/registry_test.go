package exporter

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A client that asks for /metrics again and again without reading the
// answers must not hold one of the handler's slots while its answers
// wait in the socket: four of them took every slot for as long as the
// server's write timeout, and each scrape in that time got 503.
func TestHandlerSlowReadersDoNotTakeTheSlots(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(Handler(NewRegistry()))
	srv.Listener.Close()
	srv.Listener = smallSendBuffers{ln}
	srv.Start()
	defer srv.Close()

	// Small socket buffers on both sides, so that a few answers fill them.
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		_ = c.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1024)
		})
		return err
	}}
	req := strings.Repeat("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 50)
	for range 8 { // twice the slots
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		go func() { _, _ = c.Write([]byte(req)) }()
	}
	time.Sleep(time.Second)

	client := &http.Client{Timeout: 5 * time.Second}
	for i := range 3 {
		resp, err := client.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("scrape %d beside clients that do not read: %s, want 200 OK", i, resp.Status)
		}
	}
}

// smallSendBuffers gives each connection it accepts a small send buffer.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4096)
	}
	return c, err
}
