package proxy

import (
	"context"
	"fmt"
	"net"
	"time"
)

// TCP keep-alive of client connections: net.Listen's defaults, the same
// on every system.
const (
	keepAliveIdle     = 15 * time.Second
	keepAliveInterval = 15 * time.Second
	keepAliveCount    = 9
)

// Listen opens the proxy's TCP listener on addr. Accepted connections get
// the TCP keep-alive net.Listen gives them (probes after 15 s of silence,
// every 15 s, 9 of them). On Linux, where accepted sockets inherit it,
// keep-alive is set once on the listening socket rather than with four
// system calls on each accepted connection. On Linux a connection is
// accepted once its client has sent something (TCP_DEFER_ACCEPT), or
// after a second if it sends nothing.
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	lc := listenConfig()
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return ln, nil
}
