package exporter

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
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
	stuck := &stuckWriters{Listener: ln}
	srv.Listener = stuck
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
	// Until as many answers as there are slots are stuck in their
	// writes, the scrapes below would be answered whatever the handler
	// does with its slots.
	deadline := time.Now().Add(10 * time.Second)
	for stuck.count(200*time.Millisecond) < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s, %d answers stuck in their writes, want 4", stuck.count(200*time.Millisecond))
		}
		time.Sleep(10 * time.Millisecond)
	}

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

// stuckWriters gives each connection it accepts a small send buffer, and
// tells how many are stuck in a write.
type stuckWriters struct {
	net.Listener
	mu    sync.Mutex
	conns []*writeTimer
}

func (l *stuckWriters) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4096)
	}
	wt := &writeTimer{Conn: c}
	l.mu.Lock()
	l.conns = append(l.conns, wt)
	l.mu.Unlock()
	return wt, nil
}

// count returns how many connections have been in one write for at least d.
func (l *stuckWriters) count(d time.Duration) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, c := range l.conns {
		if since := c.since.Load(); since != 0 && time.Since(time.Unix(0, since)) >= d {
			n++
		}
	}
	return n
}

// writeTimer is a connection that records when its write in progress began.
type writeTimer struct {
	net.Conn
	since atomic.Int64
}

func (c *writeTimer) Write(b []byte) (int, error) {
	c.since.Store(time.Now().UnixNano())
	defer c.since.Store(0)
	return c.Conn.Write(b)
}
