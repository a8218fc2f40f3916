package proxy

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"time"
)

// tunnel is an upgraded connection (WebSocket) after its 101: bytes go
// both ways until both sides have closed, or either fails, or no byte
// went either way for Config.TunnelIdleTimeout. A side that half-closes
// (its FIN) is passed on as a half-close, and the other way goes on: a
// protocol that ends its input with a FIN gets its answer.
type tunnel struct {
	idle time.Duration
	// last is when a byte last went through, either way, in Unix nanoseconds.
	last atomic.Int64
}

// runTunnel relays the tunnel between the client and the app until it
// ends, counted in Status and outrider_proxy_tunnels meanwhile.
func (c *conn) runTunnel(u *upConn) {
	c.tunnel = true
	c.p.tunnels.Add(1)
	defer c.p.leaveTunnel()
	c.p.leaveActive()
	t := &tunnel{idle: c.p.cfg.TunnelIdleTimeout}
	t.last.Store(time.Now().UnixNano())
	_ = c.nc.SetDeadline(time.Time{})
	_ = u.nc.SetDeadline(time.Time{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		if !t.pump(c.br, c.nc, u.br, u.nc) {
			closeBoth(c, u)
		}
	}()
	if !t.pump(u.br, u.nc, c.br, c.nc) {
		closeBoth(c, u)
	}
	<-done
	closeBoth(c, u)
	u.close()
}

// pump copies from src to dst until either fails or the tunnel has been
// idle for t.idle, or src has sent all it will: then it half-closes dst
// and reports true, and the other way goes on. Both readers hold a buffer
// only while bytes wait, so an idle tunnel costs no buffer.
func (t *tunnel) pump(src *reader, srcConn net.Conn, dst *reader, dstConn net.Conn) (halfClosed bool) {
	for {
		if b := src.buffered(); len(b) > 0 {
			now := time.Now()
			t.last.Store(now.UnixNano())
			_ = dstConn.SetWriteDeadline(now.Add(t.idle))
			if err := dst.write(dstConn, b); err != nil {
				return false
			}
			src.discard(len(b))
			continue
		}
		_ = srcConn.SetReadDeadline(time.Now().Add(t.idle))
		err := src.fill(bufSize)
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) {
			cw, ok := dstConn.(interface{ CloseWrite() error })
			return ok && cw.CloseWrite() == nil
		}
		// This side was quiet for t.idle; the other may not have been.
		if !isTimeout(err) || time.Since(time.Unix(0, t.last.Load())) >= t.idle {
			return false
		}
	}
}

func closeBoth(c *conn, u *upConn) {
	_ = c.nc.Close()
	_ = u.nc.Close()
}
