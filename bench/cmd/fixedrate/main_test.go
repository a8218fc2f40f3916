package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestNewConfig(t *testing.T) {
	c, err := newConfig("http://127.0.0.1:8080/a?b=1", 5000, 50, 4*time.Second, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if c.interval != 10*time.Millisecond || c.perConn != 400 {
		t.Errorf("want a request every 10ms, 400 per connection; got every %v, %d", c.interval, c.perConn)
	}
	if got, want := string(c.request), "GET /a?b=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: fixedrate\r\n\r\n"; got != want {
		t.Errorf("request: want %q, got %q", want, got)
	}

	bad := []struct {
		name     string
		url      string
		rate     float64
		conns    int
		duration time.Duration
		wantErr  string
	}{
		{"https", "https://127.0.0.1:8080/", 1, 1, time.Second, "want http://IP:PORT/PATH"},
		{"host name", "http://localhost:8080/", 1, 1, time.Second, "the host must be an IP address and a port"},
		{"no port", "http://127.0.0.1/", 1, 1, time.Second, "the host must be an IP address and a port"},
		{"no connections", "http://127.0.0.1:1/", 1, 0, time.Second, "-connections 0: want at least 1"},
		{"no rate", "http://127.0.0.1:1/", 0, 1, time.Second, "-rate 0: want a positive rate"},
		{"too short", "http://127.0.0.1:1/", 10, 50, time.Second, "want at least one request per connection"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newConfig(tt.url, tt.rate, tt.conns, tt.duration, time.Second)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("want an error with %q, got %v", tt.wantErr, err)
			}
		})
	}
}

// TestRun sends requests at a fixed rate to a server that answers some
// with a plain body, some chunked, some with 503, and cuts one answer
// short: every answer is logged with its status, the cut one is counted
// as failed, its connection is dialed again, and no request goes out
// before its time.
func TestRun(t *testing.T) {
	var cut atomic.Int32 // requests on /cut
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/chunked":
			w.Write([]byte("part one "))
			w.(http.Flusher).Flush()
			w.Write([]byte("part two"))
		case "/busy":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "/cut":
			if cut.Add(1) == 3 {
				conn, _, _ := w.(http.Hijacker).Hijack()
				conn.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"))
				conn.Close()
				return
			}
			w.Write([]byte("whole"))
		default:
			w.Write([]byte("ok"))
		}
	}))
	defer srv.Close()

	tests := []struct {
		path          string
		wantSucceeded int // of 40
		wantDone      int
		wantStatus    int
	}{
		{"/", 40, 40, 200},
		{"/chunked", 40, 40, 200},
		{"/busy", 0, 40, 503},
		{"/cut", 39, 39, 200},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			// 4 connections, a request every 20 ms on each: 40 requests.
			c, err := newConfig(srv.URL+tt.path, 200, 4, 200*time.Millisecond, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			r := run(c)
			if r.total != 40 || r.done != tt.wantDone || r.succeeded != tt.wantSucceeded {
				t.Fatalf("want 40 total, %d done, %d succeeded; got %d, %d, %d (errors %v)",
					tt.wantDone, tt.wantSucceeded, r.total, r.done, r.succeeded, r.errs)
			}
			if len(r.errs) != 40-tt.wantDone {
				t.Errorf("want %d errors, got %v", 40-tt.wantDone, r.errs)
			}
			for i, e := range r.logs {
				if e.status != tt.wantStatus || e.took <= 0 {
					t.Fatalf("request %d: want status %d and a duration, got %d and %v", i, tt.wantStatus, e.status, e.took)
				}
				if i > 0 && e.sent.Before(r.logs[i-1].sent) {
					t.Fatalf("log not in the order sent at %d", i)
				}
			}
			// Each connection's 10th request is due 9 intervals after its
			// first, and none goes out early.
			if span := r.logs[len(r.logs)-1].sent.Sub(r.logs[0].sent); span < 9*c.interval {
				t.Errorf("requests went out faster than asked: all within %v", span)
			}
		})
	}
	if n := cut.Load(); n != 40 {
		t.Errorf("the server saw %d requests on /cut, want 40 (the failed one's successors sent on a new connection)", n)
	}
}

func TestRunRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c, err := newConfig("http://"+addr+"/", 100, 1, 50*time.Millisecond, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r := run(c)
	if r.done != 0 || len(r.errs) != r.total || !strings.Contains(r.errs[0].Error(), "connect to "+addr) {
		t.Fatalf("want every request failed to connect, got %d done, errors %v", r.done, r.errs)
	}
	if got := r.summary(); !strings.HasPrefix(got, "requests: 5 total, 0 done, 0 succeeded, 5 failed\nrate: 0.0 req/s") {
		t.Errorf("summary: got %q", got)
	}
}

func TestWriteLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "requests.log")
	sent := time.UnixMicro(1796029280404807)
	logs := []entry{{sent, 200, 90 * time.Microsecond}, {sent.Add(time.Millisecond), 503, 1500 * time.Microsecond}}
	if err := writeLog(path, logs); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := "1796029280404807\t200\t90\n1796029280405807\t503\t1500\n"; string(b) != want {
		t.Errorf("want %q, got %q", want, b)
	}
}
