// Command echo is the sample app for outrider's demo, tests and benchmarks:
// a small HTTP server whose health, speed and answers can be changed on
// request.
//
//	GET  /                 a fixed ~60-byte JSON body (the benchmark target)
//	GET  /healthz          200, or 503 after POST /admin/health?healthy=false
//	POST /admin/health     ?healthy=true|false sets what /healthz answers
//	GET  /slow?delay=2s    answers after the delay
//	POST /echo             streams the request body back
//	GET  /bytes?n=N        streams N bytes
//	GET  /chunked?n=N      N chunks, flushed one by one
//	GET  /status/{code}    answers with that status
//	GET  /abort?n=N        promises 2N bytes, sends N, then drops the connection
//	GET  /ws               a WebSocket that echoes every message back
//	GET  /headers          the request's header fields, as JSON
//
// It listens on -listen (default $ECHO_LISTEN, else 127.0.0.1:8080), stops
// gracefully on SIGTERM or SIGINT, and then exits with -exit-code.
package main

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// helloBody is the benchmark's response: small, fixed, JSON.
var helloBody = []byte(`{"service":"echo","message":"hello","ok":true,"v":1}` + "\n")

func main() {
	def := os.Getenv("ECHO_LISTEN")
	if def == "" {
		def = "127.0.0.1:8080"
	}
	listen := flag.String("listen", def, "address to listen on")
	exitCode := flag.Int("exit-code", 0, "exit status after a graceful stop")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)

	srv := &http.Server{
		Addr:              *listen,
		Handler:           newMux(),
		ReadHeaderTimeout: 5 * time.Second,
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Serve returns as soon as Shutdown begins; main waits for Shutdown to
	// finish the requests in flight, or exiting would cut them.
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		log.Printf("echo on %s: stop signal received, stopping", *listen)
		shutdown, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("echo: %v", err)
	}
	log.Printf("echo listening on %s (pid %d)", ln.Addr(), os.Getpid())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("echo: %v", err)
	}
	<-stopped
	log.Printf("echo stopped")
	os.Exit(*exitCode)
}

func newMux() *http.ServeMux {
	var unhealthy atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(helloBody)))
		_, _ = w.Write(helloBody)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if unhealthy.Load() {
			http.Error(w, "unhealthy on request", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("POST /admin/health", func(w http.ResponseWriter, r *http.Request) {
		healthy, err := strconv.ParseBool(r.URL.Query().Get("healthy"))
		if err != nil {
			http.Error(w, "want ?healthy=true or ?healthy=false", http.StatusBadRequest)
			return
		}
		unhealthy.Store(!healthy)
		fmt.Fprintf(w, "healthy=%t\n", healthy)
	})
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("delay"))
		if err != nil {
			http.Error(w, "want ?delay=<duration>, e.g. 2s", http.StatusBadRequest)
			return
		}
		select {
		case <-time.After(d):
			fmt.Fprintf(w, "slept %s\n", d)
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		if ct := r.Header.Get("Content-Type"); ct != "" {
			w.Header().Set("Content-Type", ct)
		}
		// HTTP/1 handlers are half-duplex by default: the server stops
		// reading the body once the response has started.
		_ = http.NewResponseController(w).EnableFullDuplex()
		_, _ = io.Copy(w, r.Body)
	})
	mux.HandleFunc("GET /bytes", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "want ?n=<bytes>", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		buf := make([]byte, 32<<10)
		for i := range buf {
			buf[i] = 'a' + byte(i%26)
		}
		for n > 0 {
			k := min(n, int64(len(buf)))
			if _, err := w.Write(buf[:k]); err != nil {
				return
			}
			n -= k
		}
	})
	mux.HandleFunc("GET /chunked", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil || n < 0 {
			http.Error(w, "want ?n=<chunks>", http.StatusBadRequest)
			return
		}
		flusher, _ := w.(http.Flusher)
		for i := range n {
			fmt.Fprintf(w, "chunk %d\n", i)
			if flusher != nil {
				flusher.Flush()
			}
		}
	})
	mux.HandleFunc("GET /status/{code}", func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(r.PathValue("code"))
		if err != nil || code < 200 || code > 599 {
			http.Error(w, "want /status/<200-599>", http.StatusBadRequest)
			return
		}
		w.WriteHeader(code)
		fmt.Fprintf(w, "status %d\n", code)
	})
	mux.HandleFunc("GET /abort", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil || n < 0 {
			n = 100
		}
		w.Header().Set("Content-Length", strconv.Itoa(2*n))
		_, _ = w.Write(bytes.Repeat([]byte("a"), n))
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		panic(http.ErrAbortHandler)
	})
	mux.HandleFunc("GET /ws", serveWebSocket)
	mux.HandleFunc("GET /headers", func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Clone()
		h.Set("Host", r.Host)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(h)
	})
	return mux
}

// serveWebSocket is a minimal RFC 6455 echo: it answers the handshake and
// sends every text or binary message back, unfragmented messages only.
func serveWebSocket(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Sec-WebSocket-Key")
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || key == "" {
		http.Error(w, "want a WebSocket handshake", http.StatusBadRequest)
		return
	}
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
		base64.StdEncoding.EncodeToString(sum[:]))
	if rw.Flush() != nil {
		return
	}
	for {
		var hdr [2]byte
		if _, err := io.ReadFull(rw, hdr[:]); err != nil {
			return
		}
		op, masked, n := hdr[0]&0x0f, hdr[1]&0x80 != 0, uint64(hdr[1]&0x7f)
		switch n {
		case 126:
			var b [2]byte
			if _, err := io.ReadFull(rw, b[:]); err != nil {
				return
			}
			n = uint64(binary.BigEndian.Uint16(b[:]))
		case 127:
			var b [8]byte
			if _, err := io.ReadFull(rw, b[:]); err != nil {
				return
			}
			n = binary.BigEndian.Uint64(b[:])
		}
		if n > 1<<20 {
			return
		}
		var mask [4]byte
		if masked {
			if _, err := io.ReadFull(rw, mask[:]); err != nil {
				return
			}
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(rw, payload); err != nil {
			return
		}
		if masked {
			for i := range payload {
				payload[i] ^= mask[i%4]
			}
		}
		out := []byte{0x80 | op}
		switch {
		case n < 126:
			out = append(out, byte(n))
		case n <= 0xffff:
			out = append(out, 126)
			out = binary.BigEndian.AppendUint16(out, uint16(n))
		default:
			out = append(out, 127)
			out = binary.BigEndian.AppendUint64(out, n)
		}
		if _, err := rw.Write(append(out, payload...)); err != nil || rw.Flush() != nil {
			return
		}
		if op == 0x8 { // close: echoed, then done
			return
		}
	}
}
