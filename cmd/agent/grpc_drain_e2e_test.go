package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	"github.com/outrider-sidecar/outrider/internal/testbin"
	"github.com/outrider-sidecar/outrider/shutdown"
)

// startGRPCReplica starts a gRPC app (the health service) on a loopback
// port with outrider in front of it, and returns outrider and its proxy's
// address.
func startGRPCReplica(t *testing.T, env ...string) (outrider, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, health.NewServer())
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	app, proxy := ln.Addr().String(), testbin.FreeAddr(t)
	o := startOutrider(t, 20*time.Second, append([]string{
		"OUTRIDER_APP_ADDR=" + app, "OUTRIDER_PROXY_LISTEN=" + proxy, "OUTRIDER_PROBE=grpc://" + app,
	}, env...)...)
	return o, proxy
}

// TestShutdownGRPCLosesNoCall: a gRPC client balancing unary calls over
// two replicas through outrider (h2c with prior knowledge) loses none
// while one replica drains: the GOAWAY sent when the proxy stops
// accepting moves the client to the other, and a call it sent before
// reading the GOAWAY is one the GOAWAY names unprocessed, which gRPC
// retries. A server-streaming call on the drained replica that outlasts
// OUTRIDER_DRAIN_TIMEOUT is cut then, and counted.
func TestShutdownGRPCLosesNoCall(t *testing.T) {
	t.Parallel()
	env := []string{"OUTRIDER_DRAIN_DELAY=1s", "OUTRIDER_DRAIN_TIMEOUT=2s"}
	a, proxyA := startGRPCReplica(t, env...)
	_, proxyB := startGRPCReplica(t, env...)

	r := manual.NewBuilderWithScheme("replicas")
	r.InitialState(resolver.State{Addresses: []resolver.Address{{Addr: proxyA}, {Addr: proxyB}}})
	cc, err := grpc.NewClient("replicas:///health", grpc.WithResolvers(r),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	// A stream that never ends on its own, on the replica that drains.
	ccA, err := grpc.NewClient(proxyA, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer ccA.Close()
	watch, err := healthpb.NewHealthClient(ccA).Watch(t.Context(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatalf("watch: first message: %v", err)
	}
	watchEnd := make(chan error, 1)
	go func() {
		for {
			if _, err := watch.Recv(); err != nil {
				watchEnd <- err
				return
			}
		}
	}()

	var (
		calls, failed atomic.Int64
		firstErr      atomic.Value
		stop          atomic.Bool
		wg            sync.WaitGroup
	)
	hc := healthpb.NewHealthClient(cc)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
				cancel()
				calls.Add(1)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	code, body := httpDo(t, mustRequest(t, http.MethodPost, a.admin+"/prestop"))
	// Calls go on past the drain, on the replica left.
	time.Sleep(500 * time.Millisecond)
	stop.Store(true)
	wg.Wait()

	t.Logf("%d calls, %d failed; /prestop: %d %s", calls.Load(), failed.Load(), code, body)
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d calls failed, want none; first: %v", n, calls.Load(), firstErr.Load())
	}
	var rep shutdown.Report
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatalf("/prestop: %d %q: %v", code, body, err)
	}
	if code != http.StatusInternalServerError || rep.RequestsCut != 1 {
		t.Errorf("/prestop: %d with %d requests cut, want 500 and the stream cut", code, rep.RequestsCut)
	}
	select {
	case err := <-watchEnd:
		if status.Code(err) != codes.Unavailable {
			t.Errorf("the stream outlasting the drain ended with %v, want Unavailable", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("the stream outlasting the drain is still open")
	}
}
