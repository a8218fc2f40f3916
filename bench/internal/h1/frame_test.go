package h1

import "testing"

func TestFramerScan(t *testing.T) {
	tests := []struct {
		name   string
		resp   bool
		pieces []string
		heads  int
		ends   int
		clean  bool
		closed bool
	}{
		{name: "request without a body", pieces: []string{"GET / HTTP/1.1\r\nHost: a\r\n\r\n"}, heads: 1, ends: 1, clean: true},
		{name: "two pipelined requests", pieces: []string{"GET / HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n"}, heads: 2, ends: 2, clean: true},
		{name: "request head in pieces", pieces: []string{"GET / HTTP/1.1\r\nHo", "st: a\r", "\n\r\n"}, heads: 1, ends: 1, clean: true},
		{name: "request body by length", pieces: []string{"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab", "cde"}, heads: 1, ends: 1, clean: true},
		{name: "request body not all here", pieces: []string{"POST / HTTP/1.1\r\ncontent-length: 5\r\n\r\nab"}, heads: 1},
		{name: "connection close", pieces: []string{"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n"}, heads: 1, ends: 1, clean: true, closed: true},
		{name: "response by length", resp: true, pieces: []string{"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"}, heads: 1, ends: 1, clean: true},
		{name: "response 304 has no body", resp: true, pieces: []string{"HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n"}, heads: 1, ends: 1, clean: true},
		{name: "chunked response", resp: true, pieces: []string{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", "A;x=y\r\n0123456789\r\n0\r\n\r\n"}, heads: 1, ends: 1, clean: true},
		{name: "chunked response with a trailer", resp: true, pieces: []string{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n\r\n"}, heads: 1, ends: 1, clean: true},
		{name: "chunked response in pieces", resp: true, pieces: []string{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1", "0\r\n0123456789abcdef\r", "\n0\r\n", "\r\n"}, heads: 1, ends: 1, clean: true},
		{name: "response until close", resp: true, pieces: []string{"HTTP/1.0 200 OK\r\n\r\nabc"}, heads: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := Framer{Resp: tt.resp}
			var heads, ends int
			for _, p := range tt.pieces {
				h, e := f.Scan([]byte(p))
				heads, ends = heads+h, ends+e
			}
			if heads != tt.heads || ends != tt.ends || f.Clean() != tt.clean || f.Closed != tt.closed {
				t.Errorf("heads %d, ends %d, clean %v, closed %v; want %d, %d, %v, %v",
					heads, ends, f.Clean(), f.Closed, tt.heads, tt.ends, tt.clean, tt.closed)
			}
		})
	}
}

func TestBlankClose(t *testing.T) {
	h := []byte("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	if !blankClose(h) {
		t.Fatal("blankClose found no close")
	}
	if want := "GET / HTTP/1.1\r\nHost: a\r\nConnection:      \r\n\r\n"; string(h) != want {
		t.Errorf("head %q, want %q", h, want)
	}
}

func TestSayClose(t *testing.T) {
	tests := []struct {
		name string
		b    string
		at   int
		want string
		ok   bool
	}{
		{name: "head at the start", b: "HTTP/1.1 200 OK\r\nA: b\r\n\r\nhi", want: "HTTP/1.1 200 OK\r\nConnection: close\r\nA: b\r\n\r\nhi", ok: true},
		{name: "head after a body's end", b: "xyHTTP/1.1 204 No Content\r\n\r\n", at: 2, want: "xyHTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n", ok: true},
		{name: "first line not whole", b: "HTTP/1.1 200", ok: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := SayClose(nil, []byte(tt.b), tt.at)
			if ok != tt.ok || string(got) != tt.want {
				t.Errorf("SayClose(%q, %d) = %q, %v; want %q, %v", tt.b, tt.at, got, ok, tt.want, tt.ok)
			}
		})
	}
}
