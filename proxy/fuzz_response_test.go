package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// exchangeResult is what one request forwarded to a scripted app came to.
type exchangeResult struct {
	client []byte // the bytes the client received
	keep   bool   // the client connection stays open
	kept   bool   // the app connection stays open for the next exchange
	used   int    // the app's bytes the proxy consumed
}

// exchangeOnce forwards one request with method through the real
// forwarding path to an app whose connection yields app and then ends.
func exchangeOnce(t *testing.T, p *Proxy, method string, app []byte) exchangeResult {
	t.Helper()
	cc := newMemConn([]byte(method + " / HTTP/1.1\r\nHost: a\r\n\r\n"))
	c := &conn{p: p, nc: cc, clientIP: []byte("192.0.2.1"), now: time.Now()}
	c.br = newReader(cc)
	if !c.readRequest(true) {
		t.Fatalf("the %s request was not read", method)
	}
	ac := newMemConn(app)
	u := &upConn{nc: ac, br: newReader(ac)}
	c.up = u
	keep := c.forward()
	r := exchangeResult{client: cc.w.Bytes(), keep: keep, kept: c.up == u}
	if r.kept {
		r.used = len(app) - len(u.br.buffered()) - ac.r.(*bytes.Reader).Len()
		u.close()
	}
	c.br.release()
	return r
}

// FuzzResponse feeds arbitrary answers from the app (heads, bodies, any
// framing, garbage, early ends) through the real forwarding path, and
// checks with net/http's response reader what the client receives: one
// well-framed answer per request, never the start of another; and when
// the app connection is kept for the next exchange, the proxy took exactly
// the bytes net/http frames as this answer, so that nothing of it can
// reach another client.
func FuzzResponse(f *testing.F) {
	for _, seed := range []struct {
		head bool
		app  string
	}{
		{false, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"},
		{false, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X\r\n\r\n5;e=1\r\nhello\r\n0\r\nX: 1\r\n\r\n"},
		{false, "HTTP/1.1 200 OK\r\n\r\nuntil close"},
		{false, "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		// Body after HEAD, 204 and 304.
		{true, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"},
		{true, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"},
		{false, "HTTP/1.1 204 No Content\r\n\r\nstray body"},
		{false, "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello"},
		// Both framings, and a coding other than chunked.
		{false, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{false, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n\x1f\x8b\x08\x00"},
		{false, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"},
		// Early close mid-body, garbage, extra bytes after the body.
		{false, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"},
		{false, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"},
		{false, "garbage\r\n\r\n"},
		{false, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno"},
		{false, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		{false, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"},
		{false, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!"},
		{false, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"},
	} {
		f.Add(seed.head, []byte(seed.app))
	}
	p, err := New(Config{Upstream: "app:8080"}, prometheus.NewRegistry())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, head bool, app []byte) {
		method := http.MethodGet
		if head {
			method = http.MethodHead
		}
		r := exchangeOnce(t, p, method, app)

		// What the client got: interim answers, then one final answer.
		br := bufio.NewReader(bytes.NewReader(r.client))
		req := &http.Request{Method: method}
		var resp *http.Response
		for {
			resp, err = http.ReadResponse(br, req)
			if err != nil {
				t.Fatalf("the client cannot read the answer: %v\nclient got %q\napp sent %q", err, r.client, app)
			}
			if resp.StatusCode >= 200 || resp.StatusCode == 101 {
				break
			}
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil && r.keep {
			t.Fatalf("a truncated answer (%v) on a connection kept open\nclient got %q\napp sent %q", err, r.client, app)
		}
		if err == nil && br.Buffered() > 0 {
			t.Fatalf("bytes after the answer: %q\nclient got %q\napp sent %q", r.client[len(r.client)-br.Buffered():], r.client, app)
		}
		if r.keep && resp.Close {
			t.Fatalf("the connection is kept but the answer says close\nclient got %q", r.client)
		}
		if !r.kept {
			return
		}

		// The app connection is reused: the proxy must have taken what
		// net/http frames as this answer, no more and no less.
		if head || resp.StatusCode == 204 || resp.StatusCode == 304 {
			t.Fatalf("app connection kept after an answer that has no body (%s %d)\napp sent %q", method, resp.StatusCode, app)
		}
		abr := bufio.NewReader(bytes.NewReader(app))
		aresp, err := http.ReadResponse(abr, req)
		if err != nil {
			// net/http is stricter than the proxy on some heads; the
			// proxy's own framing is checked above.
			return
		}
		abody, err := io.ReadAll(aresp.Body)
		if err != nil {
			t.Fatalf("app connection kept after an answer net/http cannot read whole: %v\napp sent %q", err, app)
		}
		if used := len(app) - abr.Buffered(); used != r.used {
			t.Fatalf("the proxy took %d bytes of the app's answer, net/http frames %d\napp sent %q", r.used, used, app)
		}
		if !bytes.Equal(abody, body) || aresp.StatusCode != resp.StatusCode {
			t.Fatalf("the client got %d %q, net/http reads %d %q from the app", resp.StatusCode, body, aresp.StatusCode, abody)
		}
	})
}
