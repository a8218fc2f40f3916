package probe

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
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

func TestGRPCProber(t *testing.T) {
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("ready.v1", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("draining.v1", healthpb.HealthCheckResponse_NOT_SERVING)
	_, ok := startGRPC(t, "127.0.0.1:0", hs)
	_, bare := startGRPC(t, "127.0.0.1:0", nil)
	_, hung := startGRPC(t, "127.0.0.1:0", hungHealth{})
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
		{name: "no address", spec: Spec{Kind: KindGRPC}, want: Error, wantOutput: []string{"without an address"}},
		{name: "not a grpc spec", spec: mustSpec(t, "tcp://127.0.0.1:1"), want: Error},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &grpcProber{}
			t.Cleanup(p.close)
			checkResult(t, probeWithin(p.probe, tc.spec, tc.timeout), tc.want, tc.wantOutput...)
		})
	}
}

func TestGRPCProberReusesItsConnection(t *testing.T) {
	hs := health.NewServer()
	_, ln := startGRPC(t, "127.0.0.1:0", hs)
	p := &grpcProber{}
	t.Cleanup(p.close)
	spec := mustSpec(t, "grpc://"+ln.Addr().String())
	for range 5 {
		checkResult(t, probeWithin(p.probe, spec, 10*time.Second), Success)
	}
	if n := ln.accepted.Load(); n != 1 {
		t.Errorf("5 probes opened %d connections, want 1", n)
	}
}

// TestGRPCProberSeesARestartAtOnce checks that the kept connection does
// not wait out gRPC's reconnect backoff after the app comes back.
func TestGRPCProberSeesARestartAtOnce(t *testing.T) {
	srv, ln := startGRPC(t, "127.0.0.1:0", health.NewServer())
	addr := ln.Addr().String()
	p := &grpcProber{}
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
