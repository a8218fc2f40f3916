package probe

import (
	"context"
	"net"
	"time"
)

// probeTCP succeeds when a TCP connection to spec.Address opens.
func probeTCP(ctx context.Context, spec Spec) Result {
	start := time.Now()
	if spec.Kind != KindTCP || spec.Address == "" {
		return result(start, Error, "tcp probe of a %q spec without an address", spec.Kind)
	}
	what := "connect to " + spec.Address
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", spec.Address)
	if err != nil {
		return failed(ctx, start, what, err)
	}
	_ = conn.Close()
	return result(start, Success, "%s: connected", what)
}
