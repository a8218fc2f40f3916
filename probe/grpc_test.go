package probe

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	accepted atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// startGRPC serves the standard health service, or none when hs is nil,
// on addr ("127.0.0.1:0" for any port).
func startGRPC(t *testing.T, addr string, hs healthpb.HealthServer) (*grpc.Server, *countingListener) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: ln}
	srv := grpc.NewServer()
	if hs != nil {
		healthpb.RegisterHealthServer(srv, hs)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(cl)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return srv, cl
}

// hungHealth is a health service that never answers before the deadline.
type hungHealth struct {
	healthpb.UnimplementedHealthServer
}

func (hungHealth) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// quitHealth is a health service that answers DEADLINE_EXCEEDED (its
// own call onwards timed out), after waiting until wait before the
// grpc-timeout it was sent when wait is set: an app that gives up a moment
// before the probe does.
type quitHealth struct {
	healthpb.UnimplementedHealthServer
	wait time.Duration
}

func (q quitHealth) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if dl, ok := ctx.Deadline(); ok && q.wait > 0 {
		time.Sleep(time.Until(dl) - q.wait)
	}
	return nil, status.Error(codes.DeadlineExceeded, "gave up")
}

func TestGRPCProber(t *testing.T) {
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("ready.v1", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("draining.v1", healthpb.HealthCheckResponse_NOT_SERVING)
	_, ok := startGRPC(t, "127.0.0.1:0", hs)
	_, bare := startGRPC(t, "127.0.0.1:0", nil)
	_, hung := startGRPC(t, "127.0.0.1:0", hungHealth{})
	_, early := startGRPC(t, "127.0.0.1:0", quitHealth{wait: 5 * time.Millisecond})
	_, quits := startGRPC(t, "127.0.0.1:0", quitHealth{})
	closed := closedAddr(t)

	tests := []struct {
		name       string
		spec       Spec
		timeout    time.Duration
		want       Outcome
		wantOutput []string
	}{
		{name: "server SERVING", spec: mustSpec(t, "grpc://"+ok.Addr().String()), want: Success, wantOutput: []string{"SERVING"}},
		{name: "service SERVING", spec: mustSpec(t, "grpc://"+ok.Addr().String()+"/ready.v1"), want: Success},
		{name: "service NOT_SERVING", spec: mustSpec(t, "grpc://"+ok.Addr().String()+"/draining.v1"), want: Failure,
			wantOutput: []string{`"draining.v1"`, "NOT_SERVING"}},
		{name: "unknown service", spec: mustSpec(t, "grpc://"+ok.Addr().String()+"/nope.v1"), want: Failure,
			wantOutput: []string{"unknown service"}},
		{name: "no health service", spec: mustSpec(t, "grpc://"+bare.Addr().String()), want: Failure,
			wantOutput: []string{"does not implement grpc.health.v1.Health"}},
		{name: "nothing listening", spec: mustSpec(t, "grpc://"+closed), want: Failure,
			wantOutput: []string{"Unavailable", "connection refused"}},
		{name: "no answer", spec: mustSpec(t, "grpc://"+hung.Addr().String()), timeout: 150 * time.Millisecond, want: Timeout,
			wantOutput: []string{"no answer within "}},
		{name: "the app gives up at the grpc-timeout", spec: mustSpec(t, "grpc://"+early.Addr().String()), timeout: 150 * time.Millisecond,
			want: Timeout, wantOutput: []string{"no answer within 150ms"}},
		{name: "the app answers DEADLINE_EXCEEDED at once", spec: mustSpec(t, "grpc://"+quits.Addr().String()), timeout: 10 * time.Second,
			want: Failure, wantOutput: []string{"DeadlineExceeded"}},
		{name: "no address", spec: Spec{Kind: KindGRPC}, want: Error, wantOutput: []string{"without an address"}},
		{name: "not a grpc spec", spec: mustSpec(t, "tcp://127.0.0.1:1"), want: Error},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newGRPCProber()
			t.Cleanup(p.close)
			checkResult(t, probeWithin(p.probe, tc.spec, tc.timeout), tc.want, tc.wantOutput...)
		})
	}
}

// TestGRPCProberOpensAConnectionPerProbe checks that no connection is
// kept from one probe to the next, as with the kubelet.
func TestGRPCProberOpensAConnectionPerProbe(t *testing.T) {
	hs := health.NewServer()
	_, ln := startGRPC(t, "127.0.0.1:0", hs)
	p := newGRPCProber()
	t.Cleanup(p.close)
	spec := mustSpec(t, "grpc://"+ln.Addr().String())
	for range 5 {
		checkResult(t, probeWithin(p.probe, spec, 10*time.Second), Success)
	}
	if n := ln.accepted.Load(); n != 5 {
		t.Errorf("5 probes opened %d connections, want 5", n)
	}
}

// TestGRPCProberSeesAnAppThatStopsAccepting checks that an app whose
// listener closed fails its next probe, though it still serves the
// connections it has: no client could reach it.
func TestGRPCProberSeesAnAppThatStopsAccepting(t *testing.T) {
	_, ln := startGRPC(t, "127.0.0.1:0", health.NewServer())
	p := newGRPCProber()
	t.Cleanup(p.close)
	spec := mustSpec(t, "grpc://"+ln.Addr().String())
	checkResult(t, probeWithin(p.probe, spec, 10*time.Second), Success)

	_ = ln.Listener.Close()
	for range 3 {
		checkResult(t, probeWithin(p.probe, spec, 10*time.Second), Failure, "refused")
	}
}

// TestGRPCProberSeesARestartAtOnce checks that no reconnect backoff is
// waited out after the app comes back.
func TestGRPCProberSeesARestartAtOnce(t *testing.T) {
	srv, ln := startGRPC(t, "127.0.0.1:0", health.NewServer())
	addr := ln.Addr().String()
	p := newGRPCProber()
	t.Cleanup(p.close)
	spec := mustSpec(t, "grpc://"+addr)
	checkResult(t, probeWithin(p.probe, spec, 10*time.Second), Success)

	srv.Stop()
	// Several failures in a row grow the backoff to seconds.
	for range 5 {
		checkResult(t, probeWithin(p.probe, spec, 10*time.Second), Failure)
	}
	startGRPC(t, addr, health.NewServer())
	start := time.Now()
	checkResult(t, probeWithin(p.probe, spec, 10*time.Second), Success)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the first probe after the restart took %s", d)
	}
}

// startH2C serves h with plaintext HTTP/2 (prior knowledge), as a gRPC
// server would, for answers that grpc-go's server never gives.
func startH2C(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// grpcAnswer writes a unary gRPC answer: msg, framed with flag, then the
// trailers.
func grpcAnswer(flag byte, msg []byte, status, message string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status, Grpc-Message")
		if msg != nil {
			prefix := []byte{flag, 0, 0, 0, 0}
			binary.BigEndian.PutUint32(prefix[1:], uint32(len(msg)))
			_, _ = w.Write(append(prefix, msg...))
		}
		w.Header().Set("Grpc-Status", status)
		if message != "" {
			w.Header().Set("Grpc-Message", message)
		}
	}
}

func TestGRPCProberAnswers(t *testing.T) {
	http1 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(http1.Close)
	var redirected atomic.Bool
	serving := startH2C(t, func(w http.ResponseWriter, r *http.Request) {
		redirected.Store(true)
		grpcAnswer(0, []byte{0x08, 0x01}, "0", "")(w, r)
	})
	tests := []struct {
		name       string
		h          http.HandlerFunc
		want       Outcome
		wantOutput []string
	}{
		{name: "SERVING with fields it does not know", want: Success,
			// status 1, then a string field 2 and a fixed64 field 3.
			h: grpcAnswer(0, []byte{0x08, 0x01, 0x12, 0x02, 'h', 'i', 0x19, 1, 2, 3, 4, 5, 6, 7, 8}, "0", "")},
		{name: "SERVICE_UNKNOWN", want: Failure, wantOutput: []string{"SERVICE_UNKNOWN"},
			h: grpcAnswer(0, []byte{0x08, 0x03}, "0", "")},
		{name: "empty message is UNKNOWN", want: Failure, wantOutput: []string{": UNKNOWN"},
			h: grpcAnswer(0, []byte{}, "0", "")},
		{name: "status with a message", want: Failure, wantOutput: []string{"Unavailable: shutting down: 50%"},
			h: grpcAnswer(0, nil, "14", "shutting down: 50%25")},
		{name: "a code without a name", want: Failure, wantOutput: []string{"Code(99)"},
			h: grpcAnswer(0, nil, "99", "")},
		{name: "no status", want: Failure, wantOutput: []string{"no valid grpc-status"},
			h: grpcAnswer(0, []byte{0x08, 0x01}, "", "")},
		{name: "compressed", want: Failure, wantOutput: []string{"compressed"},
			h: grpcAnswer(1, []byte{0x08, 0x01}, "0", "")},
		{name: "truncated field", want: Failure, wantOutput: []string{"not a HealthCheckResponse"},
			h: grpcAnswer(0, []byte{0x08}, "0", "")},
		{name: "OK without a message", want: Failure, wantOutput: []string{"OK without an answer"},
			h: grpcAnswer(0, nil, "0", "")},
		{name: "not gRPC", want: Failure, wantOutput: []string{`answered HTTP 404, not gRPC: Content-Type "text/plain; charset=utf-8"`},
			h: http.NotFound},
		// grpc-go never follows a redirect; neither does the kubelet's probe.
		{name: "a redirect to a serving server", want: Failure, wantOutput: []string{"answered HTTP 307, not gRPC"},
			h: func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "http://"+serving+r.URL.Path, http.StatusTemporaryRedirect)
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newGRPCProber()
			t.Cleanup(p.close)
			spec := mustSpec(t, "grpc://"+startH2C(t, tc.h))
			checkResult(t, probeWithin(p.probe, spec, 10*time.Second), tc.want, tc.wantOutput...)
		})
	}
	if redirected.Load() {
		t.Error("the probe followed a redirect to another server")
	}
	t.Run("an HTTP/1 server", func(t *testing.T) {
		p := newGRPCProber()
		t.Cleanup(p.close)
		spec := mustSpec(t, "grpc://"+http1.Listener.Addr().String())
		checkResult(t, probeWithin(p.probe, spec, 10*time.Second), Failure, "Unavailable")
	})
}

// TestGRPCProberRequest checks the request's bytes: the method, the
// framing, the service and the deadline the app is told.
func TestGRPCProberRequest(t *testing.T) {
	got := make(chan *http.Request, 1)
	body := make(chan []byte, 1)
	addr := startH2C(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- r
		body <- b
		grpcAnswer(0, []byte{0x08, 0x01}, "0", "")(w, r)
	})
	p := newGRPCProber()
	t.Cleanup(p.close)
	checkResult(t, probeWithin(p.probe, mustSpec(t, "grpc://"+addr+"/ready.v1"), 5*time.Second), Success)
	r, b := <-got, <-body
	if r.Method != http.MethodPost || r.URL.Path != "/grpc.health.v1.Health/Check" || r.ProtoMajor != 2 {
		t.Errorf("request %s %s %s, want POST /grpc.health.v1.Health/Check HTTP/2.0", r.Method, r.URL.Path, r.Proto)
	}
	for name, want := range map[string]string{"Content-Type": "application/grpc", "Te": "trailers"} {
		if v := r.Header.Get(name); v != want {
			t.Errorf("%s = %q, want %q", name, v, want)
		}
	}
	if ms, err := strconv.Atoi(strings.TrimSuffix(r.Header.Get("Grpc-Timeout"), "m")); err != nil || ms <= 0 || ms > 5000 {
		t.Errorf("Grpc-Timeout = %q, want at most 5000m", r.Header.Get("Grpc-Timeout"))
	}
	want := []byte{0, 0, 0, 0, 10, 0x0a, 8, 'r', 'e', 'a', 'd', 'y', '.', 'v', '1'}
	if !bytes.Equal(b, want) {
		t.Errorf("body = %v, want %v", b, want)
	}
}

func TestGRPCTimeout(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "1n"},
		{-time.Second, "1n"},
		{time.Microsecond, "1m"},
		{1500 * time.Millisecond, "1500m"},
		{99999999 * time.Millisecond, "99999999m"},
		{100000000 * time.Millisecond, "100000S"},
		{1000 * time.Hour * 1000, "99999999S"},
	} {
		if got := grpcTimeout(tc.d); got != tc.want {
			t.Errorf("grpcTimeout(%s) = %q, want %q", tc.d, got, tc.want)
		}
	}
}
