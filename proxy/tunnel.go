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
// went either way for Config.TunnelIdleTimeout. A side that closes (its
// FIN) is passed on as a half-close, and the other way goes on, for as
// long as bytes go through it at least every Config.TunnelHalfCloseTimeout:
// a protocol that ends its input with a FIN gets its answer, and a client
// left silent by the app's close does not hold the tunnel.
type tunnel struct {
	idle, halfIdle time.Duration
	// last is when a byte last went through, either way, in Unix nanoseconds.
	last atomic.Int64
	// halfClosed is set once either side has closed.
	halfClosed atomic.Bool
}

// idleLimit is how long the tunnel may go without a byte now.
func (t *tunnel) idleLimit() time.Duration {
	if t.halfClosed.Load() {
		return t.halfIdle
	}
	return t.idle
}

// runTunnel relays the tunnel between the client and the app until it
// ends, counted in Status and outrider_proxy_tunnels meanwhile.
func (c *conn) runTunnel(u *upConn) {
	c.tunnel = true
	c.p.tunnels.Add(1)
	defer c.p.leaveTunnel()
	c.p.leaveActive()
	t := &tunnel{idle: c.p.cfg.TunnelIdleTimeout, halfIdle: c.p.cfg.TunnelHalfCloseTimeout}
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
// idle for its limit, or src has sent all it will: then it half-closes
// dst, bounds the wait for what dst still sends by t.halfIdle, and
// reports true, and the other way goes on. Both readers hold a buffer
// only while bytes wait, so an idle tunnel costs no buffer.
func (t *tunnel) pump(src *reader, srcConn net.Conn, dst *reader, dstConn net.Conn) (halfClosed bool) {
	for {
		if b := src.buffered(); len(b) > 0 {
			now := time.Now()
			t.last.Store(now.UnixNano())
			_ = dstConn.SetWriteDeadline(now.Add(t.idleLimit()))
			if err := dst.write(dstConn, b); err != nil {
				return false
			}
			src.discard(len(b))
			continue
		}
		limit := t.idleLimit()
		_ = srcConn.SetReadDeadline(time.Now().Add(limit))
		if limit != t.idleLimit() {
			// The other side closed between the two: its pump's shorter
			// deadline may have come before this one.
			continue
		}
		err := src.fill(bufSize)
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) {
			cw, ok := dstConn.(interface{ CloseWrite() error })
			if !ok || cw.CloseWrite() != nil {
				return false
			}
			// The other pump reads dst, maybe under the idle timeout's
			// deadline: from now on the shorter one.
			t.halfClosed.Store(true)
			_ = dstConn.SetReadDeadline(time.Now().Add(t.halfIdle))
			return true
		}
		// This side was quiet for the limit; the other may not have been.
		if !isTimeout(err) || time.Since(time.Unix(0, t.last.Load())) >= t.idleLimit() {
			return false
		}
	}
}

func closeBoth(c *conn, u *upConn) {
	_ = c.nc.Close()
	_ = u.nc.Close()
}
