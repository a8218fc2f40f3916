package proxy

import (
	"bufio"
	"bytes"
	"net"
	"strconv"
	"testing"
)

// smallBody is the benchmark app's answer body, the size of the sample
// app's answer to /.
const smallBody = `{"service":"echo","path":"/","method":"GET","ok":true}` + "\n"

// smallAnswer is the benchmark app's whole answer.
var smallAnswer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
	strconv.Itoa(len(smallBody)) + "\r\n\r\n" + smallBody

// readHead reads from nc into buf until it holds a whole head, and returns
// how many bytes it read. Neither side of the benchmark allocates, so the
// allocations it reports are the proxy's.
func readHead(nc net.Conn, buf []byte) (int, error) {
	n := 0
	for {
		k, err := nc.Read(buf[n:])
		if err != nil {
			return 0, err
		}
		n += k
		if bytes.Contains(buf[:n], []byte("\r\n\r\n")) {
			return n, nil
		}
	}
}

// smallApp starts the benchmarks' app, which answers every request with
// smallAnswer, and returns its address.
func smallApp(b *testing.B) string {
	return fakeApp(b, func(nc net.Conn, _ *bufio.Reader) {
		buf, answer := make([]byte, 4<<10), []byte(smallAnswer)
		for {
			if _, err := readHead(nc, buf); err != nil {
				return
			}
			if _, err := nc.Write(answer); err != nil {
				return
			}
		}
	})
}

// BenchmarkSmallKeepAlive forwards small GET requests one after another on
// one keep-alive client connection, over loopback, to an app that answers
// smallAnswer. Its time per request depends on the machine and how busy it
// is; its allocations per request do not.
func BenchmarkSmallKeepAlive(b *testing.B) {
	tp := startProxy(b, smallApp(b), nil)
	nc, err := net.Dial("tcp", tp.addr)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	req := []byte("GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	buf := make([]byte, 4<<10)
	// The proxy's answer has the same length as the app's: its head is
	// rewritten field for field.
	want := len(smallAnswer)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := nc.Write(req); err != nil {
			b.Fatal(err)
		}
		n := 0
		for n < want {
			k, err := nc.Read(buf[n:])
			if err != nil {
				b.Fatalf("read answer: %v after %q", err, buf[:n])
			}
			n += k
		}
	}
}

// BenchmarkNewConnection forwards one small GET per client connection
// (Connection: close), as a client without keep-alive does. Its
// allocations per request include the benchmark's own dial and Go's net
// package's for the accepted socket, besides the proxy's.
func BenchmarkNewConnection(b *testing.B) {
	tp := startProxy(b, smallApp(b), nil)
	req := []byte("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	buf := make([]byte, 4<<10)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		nc, err := net.Dial("tcp", tp.addr)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := nc.Write(req); err != nil {
			b.Fatal(err)
		}
		// The proxy closes the connection after its answer.
		n := 0
		for {
			k, err := nc.Read(buf[n:])
			n += k
			if err != nil {
				break
			}
		}
		nc.Close()
		if !bytes.HasPrefix(buf[:n], []byte("HTTP/1.1 200 ")) {
			b.Fatalf("answer %q", buf[:n])
		}
	}
}
