package probe

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/outrider-sidecar/outrider/internal/version"
)

// grpcProber asks the standard health service, over one plaintext client
// connection that it keeps for the next probe.
type grpcProber struct {
	mu   sync.Mutex
	addr string
	conn *grpc.ClientConn
}

// client returns the kept connection to addr. It replaces one to another
// address, and one in transient failure: gRPC would retry that only after
// an exponential backoff (up to two minutes) and fail every call until
// then, while an app that came back must be seen at the next probe.
func (p *grpcProber) client(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn != nil && p.addr == addr && p.conn.GetState() != connectivity.TransientFailure {
		return p.conn, nil
	}
	if p.conn != nil {
		_ = p.conn.Close()
		p.conn = nil
	}
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUserAgent(version.UserAgent()),
	)
	if err != nil {
		return nil, err
	}
	p.conn, p.addr = conn, addr
	return conn, nil
}

// forget closes conn if it is the kept one, so that the next probe dials
// afresh.
func (p *grpcProber) forget(conn *grpc.ClientConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn == conn {
		_ = p.conn.Close()
		p.conn = nil
	}
}

func (p *grpcProber) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn != nil {
		_ = p.conn.Close()
		p.conn = nil
	}
}

// probe calls grpc.health.v1.Health/Check: SERVING is success.
func (p *grpcProber) probe(ctx context.Context, spec Spec) Result {
	start := time.Now()
	if spec.Kind != KindGRPC || spec.Address == "" {
		return result(start, Error, "grpc probe of a %q spec without an address", spec.Kind)
	}
	what := "grpc health check of " + spec.Address
	if spec.Service != "" {
		what = fmt.Sprintf("grpc health check of service %q at %s", spec.Service, spec.Address)
	}
	conn, err := p.client(spec.Address)
	if err != nil {
		return result(start, Error, "%s: %v", what, err)
	}
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: spec.Service})
	if err != nil {
		if ctx.Err() != nil || deadlinePassed(ctx) {
			return failed(ctx, start, what, err)
		}
		st := status.Convert(err)
		switch st.Code() {
		case codes.Unimplemented:
			return result(start, Failure, "%s: the server does not implement grpc.health.v1.Health", what)
		case codes.NotFound:
			return result(start, Failure, "%s: unknown service", what)
		case codes.Unavailable:
			// The connection failed: the channel state may say so only
			// a moment later, so do not wait for client to notice it.
			p.forget(conn)
		}
		return withDetail(result(start, Failure, "%s: %s", what, st.Code()), st.Message())
	}
	if s := resp.GetStatus(); s != healthpb.HealthCheckResponse_SERVING {
		return result(start, Failure, "%s: %s", what, s)
	}
	return result(start, Success, "%s: SERVING", what)
}
