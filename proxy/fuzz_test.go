package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"testing"
	"time"
)

// memConn is a net.Conn over byte buffers, for driving a pipe without a
// socket.
type memConn struct {
	r io.Reader
	w bytes.Buffer
}

func (c *memConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *memConn) Write(p []byte) (int, error)      { return c.w.Write(p) }
func (c *memConn) Close() error                     { return nil }
func (c *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

func newMemConn(in []byte) *memConn { return &memConn{r: bytes.NewReader(in)} }

func newFuzzProxy() *Proxy {
	p := &Proxy{}
	p.cfg.Upstream = "app:8080"
	p.cfg.setDefaults()
	return p
}

func readChunked(b []byte) ([]byte, error) {
	return io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(b)))
}

// decodeBody runs a request body through the proxy's body pipe, the way
// it is streamed to the app: the canonical bytes sent, the body decoded,
// and how many input bytes the body took.
func decodeBody(p *Proxy, h *head, in []byte, chunkedOut bool) (sent []byte, used int, err error) {
	src := newMemConn(in)
	c := &conn{p: p, nc: src, req: *h}
	c.br = newReader(src)
	dst := newMemConn(nil)
	pp := pipe{c: c, src: c.br, u: &upConn{nc: dst}, now: time.Now()}
	if h.chunked {
		pp.copyChunked(chunkedOut, false)
	} else {
		pp.copyLength(h.contentLength)
	}
	pp.flush()
	if pp.readErr != nil {
		return nil, 0, pp.readErr
	}
	rest := len(c.br.buffered()) + src.r.(*bytes.Reader).Len()
	return dst.w.Bytes(), len(in) - rest, nil
}

// FuzzRequest feeds arbitrary bytes to what the proxy parses itself: the
// request head and the request body's framing (and, for no panic, the
// response head). Whatever it accepts must be
// forwarded as one unambiguous request that net/http reads the same way:
// same method and target, same body, nothing left over to smuggle.
func FuzzRequest(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /x?y=1 HTTP/1.0\r\n\r\n",
		"\r\nGET / HTTP/1.1\nHost: a\n\n",
		"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
		"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello",
		"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\n",
		"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\n\tTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nhello",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-A\r\nX-A: 1\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
		"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello",
		"GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 6.6.6.6\r\nConnection: X_A\r\nX_A: 1\r\n\r\n",
		"GET http://shop.test:8080/cart?x=1 HTTP/1.1\r\nHost: other\r\n\r\n",
		"GET https://shop.test?x HTTP/1.1\r\nHost: other\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	p := newFuzzProxy()
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	f.Add([]byte("HTTP/1.0 204\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		// The same bytes as a response head from the app.
		var rh head
		if n, err := parseResponse(data, &rh, maxResponseFields); err == nil {
			if n <= 0 || n > len(data) || rh.status < 100 || rh.status > 599 {
				t.Fatalf("response head: length %d of %d, status %d", n, len(data), rh.status)
			}
			if rh.chunked && rh.contentLength >= 0 {
				t.Fatalf("response framed by both chunked and Content-Length")
			}
		}

		var h head
		n, err := parseRequest(data, &h, p.cfg.MaxHeaderFields)
		if err != nil {
			return
		}
		if n <= 0 || n > len(data) {
			t.Fatalf("head length %d of %d bytes", n, len(data))
		}
		if h.chunked && h.contentLength >= 0 {
			t.Fatalf("accepted both Content-Length and chunked")
		}
		c := &conn{p: p, req: h, clientIP: []byte("192.0.2.1")}
		out := c.appendRequestHead(nil, data[:n], false)

		// The forwarded head parses again, to the same request.
		var h2 head
		n2, err := parseRequest(out, &h2, 2*p.cfg.MaxHeaderFields)
		if err != nil || n2 != len(out) {
			t.Fatalf("forwarded head does not parse back (%v, %d of %d):\n%q", err, n2, len(out), out)
		}
		target := h.target.of(data)
		if h.rootTarget {
			target = append([]byte("/"), target...)
		}
		if h2.chunked != h.chunked || h2.contentLength != h.contentLength ||
			!bytes.Equal(h2.method.of(out), h.method.of(data)) || !bytes.Equal(h2.target.of(out), target) {
			t.Fatalf("forwarded head differs:\n%q\nfrom\n%q", out, data[:n])
		}

		// The body, streamed as the app receives it.
		var sent []byte
		if h.chunked || h.contentLength > 0 {
			var used int
			sent, used, err = decodeBody(p, &h, data[n:], true)
			if err != nil {
				return
			}
			if h.chunked {
				decoded, _, err := decodeBody(p, &h, data[n:], false)
				if err != nil {
					t.Fatalf("body accepted re-encoded but not decoded: %v", err)
				}
				again, err := readChunked(sent)
				if err != nil || !bytes.Equal(again, decoded) {
					t.Fatalf("re-encoded body reads as %q (%v), want %q", again, err, decoded)
				}
				// Where net/http also accepts the original, it must see the
				// same body: a differing end is request smuggling.
				if orig, err := readChunked(data[n : n+used]); err == nil && !bytes.Equal(orig, decoded) {
					t.Fatalf("net/http reads the body as %q, the proxy as %q", orig, decoded)
				}
			}
		}

		// net/http reads what the app is sent as exactly one request.
		msg := append(append([]byte(nil), out...), sent...)
		br := bufio.NewReader(bytes.NewReader(msg))
		req, err := http.ReadRequest(br)
		if err != nil {
			// net/http refuses some heads the proxy passes on (a Host it
			// finds malformed, say); the app answers those itself.
			return
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			t.Fatalf("net/http cannot read the forwarded body: %v\n%q", err, msg)
		}
		if h.absolute && req.Host != string(h.absHost.of(data)) {
			t.Fatalf("absolute-form target %q forwarded with Host %q", h.target.of(data), req.Host)
		}
		if h.chunked != (len(req.TransferEncoding) == 1) || (h.contentLength >= 0 && req.ContentLength != h.contentLength) {
			t.Fatalf("net/http frames the forwarded request differently: TE %v CL %d\n%q", req.TransferEncoding, req.ContentLength, msg)
		}
		if h.contentLength > 0 && int64(len(body)) != h.contentLength {
			t.Fatalf("net/http read %d body bytes, want %d", len(body), h.contentLength)
		}
		if br.Buffered() != 0 {
			t.Fatalf("bytes left after the forwarded request: %q", msg[len(msg)-br.Buffered():])
		}
	})
}
