package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rawApp is an app that answers by writing bytes to its socket: for a
// request to /ok/ID it answers 200 "ok ID" correctly; for any other it
// calls misbehave, which writes whatever it likes and reports whether the
// connection is to be kept.
func rawApp(t *testing.T, misbehave func(nc net.Conn, req *http.Request) (keep bool)) string {
	t.Helper()
	return fakeApp(t, func(nc net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			if id, ok := strings.CutPrefix(req.URL.Path, "/ok/"); ok {
				body := "ok " + id
				if _, err := fmt.Fprintf(nc, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body); err != nil {
					return
				}
				continue
			}
			if !misbehave(nc, req) {
				return
			}
		}
	})
}

// writeLate writes head at once and body a moment later, as a careless
// framework that writes a body after a head it thought complete.
func writeLate(nc net.Conn, head, body string) {
	io.WriteString(nc, head)
	// The delay is the app's misbehaviour under test, not a wait: the
	// proxy must not take the connection as idle and clean meanwhile.
	<-time.After(5 * time.Millisecond)
	io.WriteString(nc, body)
}

// TestMisbehavingAppKeepsOthersApart alternates a request that the app
// answers badly, from one client, with a good request from another, each
// on a new connection (so that the second takes the first's app connection
// from the pool when it went back there): no good request may be affected.
func TestMisbehavingAppKeepsOthersApart(t *testing.T) {
	const rounds = 50
	cases := []struct {
		name      string
		method    string
		answer    func(nc net.Conn) (keep bool)
		wantCode  int
		wantBody  string // checked when not empty
		truncated bool   // the bad answer's body ends early
	}{
		{name: "body after HEAD, at once", method: "HEAD", wantCode: 200,
			answer: func(nc net.Conn) bool {
				io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
				return true
			}},
		{name: "body after HEAD, late", method: "HEAD", wantCode: 200,
			answer: func(nc net.Conn) bool {
				writeLate(nc, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "hello")
				return true
			}},
		{name: "body after 204", method: "GET", wantCode: 204,
			answer: func(nc net.Conn) bool {
				writeLate(nc, "HTTP/1.1 204 No Content\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nstolen")
				return true
			}},
		{name: "body after 304", method: "GET", wantCode: 304,
			answer: func(nc net.Conn) bool {
				io.WriteString(nc, "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello")
				return true
			}},
		{name: "Content-Length and Transfer-Encoding", method: "GET", wantCode: 200, wantBody: "hello",
			answer: func(nc net.Conn) bool {
				// Chunked wins (RFC 9112 6.3); an app that meant the length
				// would be out of step after it, so its connection goes.
				io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
				return true
			}},
		{name: "Transfer-Encoding gzip", method: "GET", wantCode: 502,
			answer: func(nc net.Conn) bool {
				io.WriteString(nc, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n\x1f\x8b\x08\x00\x00\x00\x00\x00")
				return true
			}},
		{name: "early close mid-body", method: "GET", wantCode: 200, truncated: true,
			answer: func(nc net.Conn) bool {
				io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
				return false
			}},
		{name: "early close mid-head", method: "GET", wantCode: 502,
			answer: func(nc net.Conn) bool {
				io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Le")
				return false
			}},
		{name: "garbage", method: "GET", wantCode: 502,
			answer: func(nc net.Conn) bool {
				io.WriteString(nc, "garbage\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nstolen")
				return true
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			app := rawApp(t, func(nc net.Conn, _ *http.Request) bool { return tc.answer(nc) })
			tp := startProxy(t, app, nil)
			affected := 0
			for i := range rounds {
				bad := dialRaw(t, tp.addr)
				bad.send(tc.method + " /bad HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
				resp := bad.response(tc.method)
				body, err := io.ReadAll(resp.Body)
				if resp.StatusCode != tc.wantCode || (tc.wantBody != "" && string(body) != tc.wantBody) || (err != nil) != tc.truncated {
					t.Fatalf("round %d, the bad request: got %d %q (%v), want %d %q", i, resp.StatusCode, body, err, tc.wantCode, tc.wantBody)
				}
				// The proxy closes the bad client's connection, and gives its
				// app connection back to the pool if it keeps it, before the
				// good request comes.
				bad.closed()
				bad.nc.Close()

				good := dialRaw(t, tp.addr)
				good.send(fmt.Sprintf("GET /ok/%d HTTP/1.1\r\nHost: a\r\n\r\n", i))
				resp, err = http.ReadResponse(good.br, &http.Request{Method: "GET"})
				if err != nil {
					t.Errorf("round %d, the good request: %v", i, err)
					affected++
					continue
				}
				body, err = io.ReadAll(resp.Body)
				if want := fmt.Sprintf("ok %d", i); err != nil || resp.StatusCode != 200 || string(body) != want {
					t.Errorf("round %d, the good request: got %d %q (%v), want 200 %q", i, resp.StatusCode, body, err, want)
					affected++
				}
				good.nc.Close()
			}
			if affected > 0 {
				t.Errorf("%d of %d good requests affected by the bad answers", affected, rounds)
			}
		})
	}
}

// TestAnswerNobodyAskedFor has the app write a second answer after a
// complete one, once the proxy is done with the exchange: the next request
// on that app connection, from the same client or from another one the
// pool hands it to, must get its own answer, never the one nobody asked for.
func TestAnswerNobodyAskedFor(t *testing.T) {
	for _, tc := range []struct {
		name       string
		sameClient bool
	}{
		{"the same client", true},
		{"the next client", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			answered, strayed := make(chan struct{}), make(chan struct{})
			app := rawApp(t, func(nc net.Conn, _ *http.Request) bool {
				io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
				<-answered
				io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nstolen")
				close(strayed)
				return true
			})
			tp := startProxy(t, app, nil)
			first := dialRaw(t, tp.addr)
			if tc.sameClient {
				first.send("GET /bad HTTP/1.1\r\nHost: a\r\n\r\n")
			} else {
				first.send("GET /bad HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
			}
			resp := first.response("GET")
			if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "first" {
				t.Fatalf("first request: got %d %q (%v), want 200 \"first\"", resp.StatusCode, b, err)
			}
			next := first
			if !tc.sameClient {
				// Closed by the proxy, which gave the app connection back
				// to the pool first.
				first.closed()
				next = dialRaw(t, tp.addr)
			}
			close(answered)
			<-strayed
			// On loopback the stray bytes are in the proxy's socket once
			// the app's write returned; the next request comes after them.
			next.send("GET /ok/1 HTTP/1.1\r\nHost: a\r\n\r\n")
			resp = next.response("GET")
			if b, err := io.ReadAll(resp.Body); err != nil || resp.StatusCode != 200 || string(b) != "ok 1" {
				t.Errorf("next request: got %d %q (%v), want 200 \"ok 1\"", resp.StatusCode, b, err)
			}
		})
	}
}
